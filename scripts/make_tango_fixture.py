"""Tool step: record the original AudioLDM VAE + HiFi-GAN key layout and outputs for the conversion tests.

Run once with the `audioldm` wheel unpacked somewhere (its code, not its dependencies):

    pip download audioldm==0.1.1 --no-deps -d /tmp/a && unzip -q /tmp/a/audioldm-*.whl -d /tmp/a/x
    pip install --target /tmp/einops einops
    python scripts/make_tango_fixture.py --audioldm /tmp/a/x --extra-path /tmp/einops

It imports only the VAE and HiFi-GAN modules (the package's __init__ pulls in its whole pipeline),
builds them from tests/tango_fixture.py's tiny configs, fills them with seeded weights and writes
tests/fixtures/tango/audioldm_keys.json (key -> shape) and audioldm_outputs.safetensors.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tango_fixture import FIXTURE_DIR, LATENT_SHAPE, MEL_SHAPE, TINY_HIFIGAN_CONFIG, TINY_VAE_CONFIG, seeded_input, seeded_state  # noqa: E402


def import_audioldm(src: Path):
    # an empty package object so that `import audioldm.x.y` skips audioldm/__init__.py
    pkg = types.ModuleType("audioldm")
    pkg.__path__ = [str(src / "audioldm")]
    sys.modules["audioldm"] = pkg
    sys.modules.setdefault("progressbar", types.ModuleType("progressbar"))  # imported by audioldm.utils, unused here
    import audioldm.hifigan.models as hifigan_models
    import audioldm.hifigan.utilities as hifigan_utilities
    from audioldm.variational_autoencoder.autoencoder import AutoencoderKL

    return AutoencoderKL, hifigan_models, hifigan_utilities


class AttrDict(dict):
    __getattr__ = dict.__getitem__


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--audioldm", type=Path, required=True, help="directory containing the unpacked audioldm package")
    ap.add_argument("--extra-path", type=Path, action="append", default=[], help="where einops is installed")
    args = ap.parse_args()
    for p in args.extra_path:
        sys.path.insert(0, str(p))
    AutoencoderKL, hifigan_models, hifigan_utilities = import_audioldm(args.audioldm)

    def tiny_vocoder(config, device):  # the original get_vocoder, at the fixture's widths
        vocoder = hifigan_models.Generator(AttrDict(TINY_HIFIGAN_CONFIG))
        vocoder.eval()
        vocoder.remove_weight_norm()
        return vocoder

    import audioldm.variational_autoencoder.autoencoder as ae_module

    ae_module.get_vocoder = tiny_vocoder
    kwargs = {k: v for k, v in TINY_VAE_CONFIG.items() if k != "scale_factor"}  # the wheel's class predates TANGO's scale_factor argument
    vae = AutoencoderKL(**kwargs).eval()
    shapes = {k: list(v.shape) for k, v in vae.state_dict().items()}
    vae.load_state_dict(seeded_state(shapes))

    latents = seeded_input(LATENT_SHAPE, 1)
    mel_in = seeded_input((2, 1, 64, 64), 2)
    voc_in = seeded_input(MEL_SHAPE, 3)
    with torch.no_grad():
        z = latents / TINY_VAE_CONFIG["scale_factor"]  # TANGO's decode_first_stage
        mel = vae.decode(z)
        posterior = vae.encode(mel_in)
        wav = vae.vocoder(voc_in).squeeze(1)  # vocoder_infer, before its int16 conversion
        decoded_wav = vae.vocoder(mel.squeeze(1).permute(0, 2, 1)).squeeze(1)  # decode_to_waveform
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    (FIXTURE_DIR / "audioldm_keys.json").write_text(json.dumps({"source": "audioldm 0.1.1 (AutoencoderKL with its HiFi-GAN vocoder)", "vae_config": TINY_VAE_CONFIG, "hifigan_config": TINY_HIFIGAN_CONFIG, "shapes": shapes}, indent=1) + "\n")
    outputs = {"decode_mel": mel, "posterior_mean": posterior.mean, "posterior_std": posterior.std, "vocoder_wav": wav, "decoded_wav": decoded_wav}
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(FIXTURE_DIR / "audioldm_outputs.safetensors"))
    print(f"{len(shapes)} keys; outputs {', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())}")


if __name__ == "__main__":
    main()
