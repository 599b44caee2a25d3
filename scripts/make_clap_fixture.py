"""Write tests/fixtures/clap/laion_clap_keys.json: key names and shapes of original laion-clap checkpoints.

A tool step, run once by hand (laion-clap is not a dependency; DESIGN.md section 6 says why). It builds
laion-clap's own `CLAP` module with random weights for each released configuration and records its
state-dict keys and shapes, which is what `services.clap.convert_laion_clap_state_dict` must map.

    pip download laion-clap==1.1.7 torchlibrosa==0.1.0 --no-deps -d /tmp/laion
    (cd /tmp/laion && for w in *.whl; do unzip -o -q $w; done)
    python scripts/make_clap_fixture.py --laion-src /tmp/laion

What is stubbed, and why it does not change any key or shape:
- torchvision and h5py are imported by laion-clap's utils but unused by the model definition;
- librosa only fills torchlibrosa's mel filterbank and STFT window values (shapes are what we record);
- `RobertaModel.from_pretrained('roberta-base')` is replaced by a randomly initialised RobertaModel
  with roberta-base's published config (the released checkpoints use that text tower).
The released .pt files were saved from DistributedDataParallel with transformers 4.x, so their keys
carry a `module.` prefix and `text_branch.embeddings.position_ids` (a persistent buffer back then);
the converter strips the prefix and drops that buffer, and the test adds both to the fixture.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

# released checkpoints: (file, audio model, fusion)
RELEASES = {
    "630k-audioset-best.pt": ("HTSAT-tiny", False),
    "630k-audioset-fusion-best.pt": ("HTSAT-tiny", True),
}
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def install_stubs() -> None:
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
    tv.ops, ops.misc = ops, misc
    sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.misc": misc, "h5py": types.ModuleType("h5py")})
    librosa = types.ModuleType("librosa")
    filters = types.ModuleType("librosa.filters")
    filters.mel = lambda sr, n_fft, n_mels, fmin, fmax, **_: np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    filters.get_window = lambda window, n, fftbins=True: np.hanning(n + 1)[:-1] if fftbins else np.hanning(n)
    util = types.ModuleType("librosa.util")
    util.pad_center = lambda data, size, **_: np.pad(data, ((size - len(data)) // 2, size - len(data) - (size - len(data)) // 2))
    librosa.filters, librosa.util = filters, util
    sys.modules.update({"librosa": librosa, "librosa.filters": filters, "librosa.util": util})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laion-src", type=Path, required=True, help="directory holding the unpacked laion_clap and torchlibrosa packages")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/clap/laion_clap_keys.json"))
    args = parser.parse_args()
    import transformers  # before the stubs: transformers probes for torchvision when imported

    transformers.RobertaModel  # noqa: B018  (resolve the lazy import now)
    install_stubs()
    # the model module alone: laion_clap's package __init__ pulls tokenizers, ftfy and hub look-ups
    for name, sub in (("laion_clap", "laion_clap"), ("laion_clap.clap_module", "laion_clap/clap_module")):
        package = types.ModuleType(name)
        package.__path__ = [str(args.laion_src / sub)]
        sys.modules[name] = package
    sys.path.insert(0, str(args.laion_src))  # torchlibrosa

    transformers.RobertaModel.from_pretrained = classmethod(lambda cls, name, **_: cls(transformers.RobertaConfig(**ROBERTA_BASE)))
    from laion_clap.clap_module import model as laion_model

    laion_model.RobertaModel = transformers.RobertaModel
    fixture = {"laion_clap_version": "1.1.7", "roberta_base_config": ROBERTA_BASE, "checkpoints": {}}
    for name, (amodel, fusion) in RELEASES.items():
        cfg = json.loads((args.laion_src / "laion_clap/clap_module/model_configs" / f"{amodel}.json").read_text())
        cfg["text_cfg"]["model_type"] = "roberta"
        model = laion_model.CLAP(**cfg, enable_fusion=fusion, fusion_type="aff_2d" if fusion else "None")
        keys = {k: list(v.shape) for k, v in model.state_dict().items()}
        fixture["checkpoints"][name] = {"audio_model": amodel, "enable_fusion": fusion, "model_config": cfg, "keys": keys}
        print(f"{name}: {len(keys)} keys, {sum(int(np.prod(s)) for s in keys.values()) / 1e6:.1f}M values")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
