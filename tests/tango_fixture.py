"""Tiny models in TANGO's original file layout, with weights anyone can rebuild from a seed.

`scripts/make_tango_fixture.py` ran the original AudioLDM VAE and HiFi-GAN modules (package
`audioldm`, which TANGO vendors; its pins - numpy<=1.23.5, torchvision - keep it out of our
environment) with these weights and stored their key names, shapes and outputs under
`tests/fixtures/tango/`. Tests rebuild the same weights here, convert them and compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "tango"

# TANGO's vae_config.json with small widths (GroupNorm in LDM modules needs multiples of 32)
TINY_VAE_CONFIG = {
    "image_key": "fbank",
    "subband": 1,
    "embed_dim": 8,
    "time_shuffle": 1,
    "ddconfig": {"double_z": True, "z_channels": 8, "resolution": 256, "downsample_time": False, "in_channels": 1, "out_ch": 1, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0},
    "scale_factor": 0.9227914214134216,
}
# AudioLDM's HIFIGAN_16K_64 with small widths (same rates: hop 160)
TINY_HIFIGAN_CONFIG = {
    "resblock": "1",
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 64,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "num_mels": 64,
}
STFT_CONFIG = {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "n_mel_channels": 64, "sampling_rate": 16000, "mel_fmin": 0, "mel_fmax": 8000}
WEIGHT_SEED = 20240607
LATENT_SHAPE = (2, 8, 16, 16)  # [B, C, frames/4, mels/4]
MEL_SHAPE = (2, 64, 24)  # vocoder input [B, mels, frames]


def seeded_state(shapes: dict[str, list[int]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Deterministic weights for the given keys: norm scales near 1, others ~ N(0, 1/fan_in)."""
    state = {}
    for i, (key, shape) in enumerate(sorted(shapes.items())):
        rng = np.random.default_rng([seed, i])
        if len(shape) == 1 and ("norm" in key and key.endswith("weight")):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.05 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            value = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def load_fixture() -> dict:
    return json.loads((FIXTURE_DIR / "audioldm_keys.json").read_text())
