"""Audio that holds none of the world's events: silence, coloured noise, smeared textures.

The oracle must stay silent on these; a generator that has not learned yet produces exactly this
kind of audio, so they are both training negatives and a false-positive test set.
"""

from __future__ import annotations

import numpy as np
import torch

from training.world.clips import CLIP_SAMPLES, clip_rng

NEGATIVE_KINDS = ("silence", "white", "pink", "brown", "blue", "texture")
# coloured noise: spectral power slope in dB/octave
_SLOPES = {"white": 0.0, "pink": -3.0, "brown": -6.0, "blue": 3.0}


def coloured_noise(rng: np.random.Generator, slope_db: float, n: int = CLIP_SAMPLES) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 16000)
    spec *= (np.maximum(f, 20) / 1000) ** (slope_db / 2 / 3.0103)  # amplitude slope = half the power slope
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


def smeared_texture(rng: np.random.Generator, n: int = CLIP_SAMPLES) -> np.ndarray:
    """A random smooth log-magnitude field (coarse grid, upsampled) with random phase, inverted."""
    n_fft, hop = 1024, 256
    frames = n // hop + 1
    grid_f, grid_t = int(rng.integers(3, 12)), int(rng.integers(2, 16))
    coarse = torch.from_numpy(rng.standard_normal((1, 1, grid_f, grid_t)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(n_fft // 2 + 1, frames), mode="bicubic", align_corners=True)[0, 0]
    contrast = rng.uniform(1.0, 4.0)
    tilt = torch.linspace(0, -rng.uniform(0, 6), n_fft // 2 + 1)[:, None]
    mag = torch.exp(contrast * field + tilt)
    phase = torch.from_numpy(rng.uniform(-np.pi, np.pi, mag.shape).astype(np.float32))
    spec = torch.polar(mag, phase)
    x = torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft), length=n).numpy()
    return x / (np.std(x) + 1e-12)


def make_negative(seed: int, index: int, kind: str | None = None) -> tuple[str, np.ndarray]:
    """Negative clip (seed, index): its kind cycles through NEGATIVE_KINDS unless given."""
    rng = clip_rng(seed, "negative", index)
    kind = kind or NEGATIVE_KINDS[index % len(NEGATIVE_KINDS)]
    if kind == "silence":
        x = rng.standard_normal(CLIP_SAMPLES) * 10 ** (rng.uniform(-90, -60) / 20)
        return kind, x.astype(np.float32)
    if kind == "texture":
        x = smeared_texture(rng)
    elif kind in _SLOPES:
        x = coloured_noise(rng, _SLOPES[kind] + rng.uniform(-1, 1))
    else:
        raise ValueError(f"unknown negative kind {kind!r}; known: {NEGATIVE_KINDS}")
    x *= rng.uniform(0.05, 0.8) / (np.abs(x).max() + 1e-9)
    return kind, x.astype(np.float32)
