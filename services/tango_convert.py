"""Convert an original TANGO checkpoint directory into our generator layout, offline.

TANGO (and Tango 2, and BATON fine-tunes of either) ship:

    main_config.json          AudioDiffusion(text_encoder_name, scheduler_name, unet_model_config_path, snr_gamma)
    pytorch_model_main.bin    AudioDiffusion state: unet.* (diffusers UNet2DConditionModel) + text_encoder.* (FLAN-T5 encoder)
    pytorch_model_vae.bin     AudioLDM AutoencoderKL state in LDM key layout, which owns vocoder.* (HiFi-GAN)
    pytorch_model_stft.bin    TacotronSTFT buffers (mel_basis, stft_fn.*) - fixed functions of stft_config
    vae_config.json, stft_config.json

Fine-tuned checkpoints saved by accelerate name the main weights `pytorch_model.bin` or
`model.safetensors` and may carry a DDP `module.` prefix; they often lack the VAE/STFT files, which
then come from the base model's directory (`vae_from`). Every source key is accounted for: mapped
to a component, or (STFT buffers) checked against our mel front-end; anything else is an error.
Nothing is downloaded: the UNet and FLAN-T5-large configs ship in `services/configs/`, the
scheduler is SD-2.1's, and the tokenizer comes from a local directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.audio import MelConfig, mel_filterbank
from services.modeling import CheckpointError

CONFIGS = Path(__file__).parent / "configs"
MAIN_WEIGHT_NAMES = ("pytorch_model_main.bin", "pytorch_model.bin", "model.safetensors")
# SD-2.1's scheduler_config.json, which TANGO loads by name (stabilityai/stable-diffusion-2-1)
SD21_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
# AudioLDM's HIFIGAN_16K_64: strides and dilations cannot be read from weight shapes
HIFIGAN_16K_64 = {"upsample_rates": [5, 4, 2, 2, 2], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]}


@dataclass
class ConversionReport:
    source_keys: dict[str, int] = field(default_factory=dict)  # file -> number of keys
    mapped: dict[str, int] = field(default_factory=dict)  # component -> keys written
    verified: list[str] = field(default_factory=list)  # keys checked and not stored (STFT buffers, tied embeddings)

    def to_dict(self) -> dict:
        return {"source_keys": self.source_keys, "mapped": self.mapped, "verified": self.verified}


# ----------------------------------------------------------------------------- loading
def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .bin (weights_only: never unpickles objects) or .safetensors; DDP prefixes dropped."""
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or pickled-object file
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a flat tensor state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc


# ----------------------------------------------------------------------------- VAE (LDM layout -> diffusers)
def vae_config_from_tango(vae_config: dict) -> dict:
    dd = vae_config["ddconfig"]
    if dd.get("attn_resolutions"):
        raise CheckpointError(f"VAE with attention at resolutions {dd['attn_resolutions']} is not supported (TANGO's has none)")
    if int(vae_config.get("subband", 1)) != 1:
        raise CheckpointError("VAE with subband decomposition is not supported (TANGO uses subband 1)")
    n = len(dd["ch_mult"])
    return {
        "in_channels": dd["in_channels"],
        "out_channels": dd["out_ch"],
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [dd["ch"] * m for m in dd["ch_mult"]],
        "layers_per_block": dd["num_res_blocks"],
        "latent_channels": vae_config["embed_dim"],
        "norm_num_groups": 32,
        "sample_size": dd.get("resolution", 256),
        "scaling_factor": float(vae_config.get("scale_factor", 1.0)),
        "force_upcast": False,
    }


_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _vae_key(key: str, n_levels: int) -> str | None:
    """One LDM VAE key -> diffusers AutoencoderKL key (None if it is not a VAE key)."""
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if m is None:
        return key if key.split(".")[0] in ("quant_conv", "post_quant_conv") else None
    side, rest = m.groups()
    simple = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out"}
    head, _, tail = rest.partition(".")
    if head in simple:
        return f"{side}.{simple[head]}.{tail}"
    if (mm := re.fullmatch(r"mid\.block_(\d)\.(\w+)\.(\w+)", rest)) is not None:
        i, layer, p = mm.groups()
        return f"{side}.mid_block.resnets.{int(i) - 1}.{_RESNET[layer]}.{p}"
    if (mm := re.fullmatch(r"mid\.attn_1\.(\w+)\.(\w+)", rest)) is not None:
        layer, p = mm.groups()
        return f"{side}.mid_block.attentions.0.{_ATTN[layer]}.{p}"
    if side == "encoder" and (mm := re.fullmatch(r"down\.(\d+)\.block\.(\d+)\.(\w+)\.(\w+)", rest)) is not None:
        i, j, layer, p = mm.groups()
        return f"encoder.down_blocks.{i}.resnets.{j}.{_RESNET[layer]}.{p}"
    if side == "encoder" and (mm := re.fullmatch(r"down\.(\d+)\.downsample\.conv\.(\w+)", rest)) is not None:
        return f"encoder.down_blocks.{mm.group(1)}.downsamplers.0.conv.{mm.group(2)}"
    # the decoder's up.{i} run from lowest resolution (i = n-1) to highest; diffusers counts the other way
    if side == "decoder" and (mm := re.fullmatch(r"up\.(\d+)\.block\.(\d+)\.(\w+)\.(\w+)", rest)) is not None:
        i, j, layer, p = mm.groups()
        return f"decoder.up_blocks.{n_levels - 1 - int(i)}.resnets.{j}.{_RESNET[layer]}.{p}"
    if side == "decoder" and (mm := re.fullmatch(r"up\.(\d+)\.upsample\.conv\.(\w+)", rest)) is not None:
        return f"decoder.up_blocks.{n_levels - 1 - int(mm.group(1))}.upsamplers.0.conv.{mm.group(2)}"
    return None


def convert_vae(state: dict[str, torch.Tensor], vae_config: dict, report: ConversionReport):
    """LDM AutoencoderKL state (with vocoder.*) -> (diffusers AutoencoderKL, SpeechT5HifiGan)."""
    from diffusers import AutoencoderKL

    config = vae_config_from_tango(vae_config)
    n_levels = len(config["block_out_channels"])
    vae_state, vocoder_state, leftovers = {}, {}, []
    for key, value in state.items():
        if key.startswith("vocoder."):
            vocoder_state[key[len("vocoder.") :]] = value
            continue
        new = _vae_key(key, n_levels)
        if new is None:
            leftovers.append(key)
            continue
        if ".mid_block.attentions.0.to_" in new and new.endswith(".weight") and value.dim() == 4:
            value = value[:, :, 0, 0]  # 1x1 conv -> linear
        vae_state[new] = value
    if leftovers:
        raise CheckpointError(f"VAE keys with no mapping: {leftovers[:8]}{' ...' if len(leftovers) > 8 else ''}")
    vae = AutoencoderKL(**config)
    _load_exact(vae, vae_state, "VAE")
    report.mapped["vae"] = len(vae_state)
    vocoder = convert_vocoder(vocoder_state, report)
    report.mapped["vocoder"] = len(vocoder_state)  # source keys (weight_g/weight_v pairs fold into one weight)
    return vae, vocoder


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """weight_g/weight_v pairs (HiFi-GAN before remove_weight_norm) -> plain weights."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_v"):
            base = key[: -len("_v")]
            g = state[base + "_g"]
            dims = tuple(range(1, value.dim()))
            out[base] = g * value / value.norm(dim=dims, keepdim=True)
        elif not key.endswith(".weight_g"):
            out[key] = value
    return out


def convert_vocoder(state: dict[str, torch.Tensor], report: ConversionReport):
    """AudioLDM HiFi-GAN Generator state -> transformers SpeechT5HifiGan (the layout diffusers' AudioLDM uses)."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    state = _fold_weight_norm(state)
    n_up = len([k for k in state if re.fullmatch(r"ups\.\d+\.weight", k)])
    n_res = len([k for k in state if re.fullmatch(r"resblocks\.\d+\.convs1\.0\.weight", k)])
    if n_up != len(HIFIGAN_16K_64["upsample_rates"]) or "conv_pre.weight" not in state or n_res % n_up:
        raise CheckpointError(f"vocoder is not AudioLDM's HiFi-GAN layout ({n_up} upsamplers, {n_res} resblocks)")
    kernels = n_res // n_up
    config = SpeechT5HifiGanConfig(
        model_in_dim=state["conv_pre.weight"].shape[1],
        sampling_rate=16000,
        upsample_initial_channel=state["conv_pre.weight"].shape[0],
        upsample_rates=HIFIGAN_16K_64["upsample_rates"],
        upsample_kernel_sizes=[state[f"ups.{i}.weight"].shape[2] for i in range(n_up)],
        resblock_kernel_sizes=[state[f"resblocks.{k}.convs1.0.weight"].shape[2] for k in range(kernels)],
        resblock_dilation_sizes=HIFIGAN_16K_64["resblock_dilation_sizes"][:kernels],
        normalize_before=False,  # AudioLDM feeds raw log-mel
    )
    mapped = {re.sub(r"^ups\.", "upsampler.", k): v for k, v in state.items()}
    vocoder = SpeechT5HifiGan(config)
    mapped["mean"], mapped["scale"] = torch.zeros(config.model_in_dim), torch.ones(config.model_in_dim)
    _load_exact(vocoder, mapped, "vocoder")
    return vocoder.eval()


def _load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:6]}" if missing else "", f"unexpected {unexpected[:6]}" if unexpected else "", f"shape mismatch {wrong[:6]}" if wrong else ""]
        raise CheckpointError(f"{what} weights do not fit its config: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- STFT buffers: verified, not stored
def mel_config_from_stft(stft_config: dict) -> MelConfig:
    return MelConfig(
        sample_rate=stft_config["sampling_rate"],
        n_fft=stft_config["filter_length"],
        win_length=stft_config["win_length"],
        hop_length=stft_config["hop_length"],
        n_mels=stft_config["n_mel_channels"],
        fmin=float(stft_config["mel_fmin"]),
        fmax=float(stft_config["mel_fmax"]),
    )


def verify_stft(state: dict[str, torch.Tensor], mel: MelConfig, report: ConversionReport) -> None:
    """TacotronSTFT's buffers are functions of stft_config; check them against our front-end instead of storing them."""
    expected = {"mel_basis": (mel.n_mels, mel.n_fft // 2 + 1), "stft_fn.forward_basis": (mel.n_fft + 2, 1, mel.n_fft), "stft_fn.inverse_basis": (mel.n_fft + 2, 1, mel.n_fft)}
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"STFT keys with no mapping: {extra}")
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"STFT state lacks {key}")
        if tuple(state[key].shape) != shape:
            raise CheckpointError(f"STFT {key} has shape {tuple(state[key].shape)}, expected {shape} for {mel}")
    ours = torch.from_numpy(mel_filterbank(mel))
    err = float((state["mel_basis"].float() - ours).abs().max())
    if err > 1e-4 * float(ours.abs().max()):
        raise CheckpointError(f"STFT mel_basis differs from our Slaney filterbank by {err:.3g}: features would not match")
    report.verified += sorted(expected)


# ----------------------------------------------------------------------------- main model
def split_main(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    unet, text, leftovers = {}, {}, []
    for key, value in state.items():
        if key.startswith("unet."):
            unet[key[5:]] = value
        elif key.startswith("text_encoder."):
            text[key[13:]] = value
        else:
            leftovers.append(key)
    adapters = [k for k in leftovers if k.startswith(("group_in.", "group_out."))]
    if adapters:
        raise CheckpointError("this TANGO variant wraps a 4-channel Stable Diffusion UNet with group_in/group_out adapters; not supported")
    if leftovers:
        raise CheckpointError(f"main model keys with no mapping: {leftovers[:8]}")
    if not unet or not text:
        raise CheckpointError(f"main model has {len(unet)} unet.* and {len(text)} text_encoder.* keys; expected both")
    return unet, text


def convert_tango(
    src: str | Path,
    dst: str | Path,
    tokenizer: str | Path,
    vae_from: str | Path | None = None,
    unet_config: str | Path | None = None,
    text_encoder_config: str | Path | None = None,
    default_steps: int = 100,
) -> ConversionReport:
    """Write our generator directory for the TANGO checkpoint at `src`; returns the key accounting."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from services.generator import GeneratorConfig, TangoPipeline
    from services.text_encoder import TextEncoder

    src, dst = Path(src), Path(dst)
    vae_dir = Path(vae_from) if vae_from else src
    report = ConversionReport()
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a directory")
    main_path = next((src / n for n in MAIN_WEIGHT_NAMES if (src / n).is_file()), None)
    if main_path is None:
        raise CheckpointError(f"{src}: no main weights (looked for {', '.join(MAIN_WEIGHT_NAMES)})")
    main_config = _read_json(src / "main_config.json") if (src / "main_config.json").is_file() else {}
    if main_config.get("unet_model_name"):
        raise CheckpointError("main_config.json names a pretrained SD UNet (group_in/out adapter variant); not supported")

    # VAE + vocoder, STFT
    vae_state = load_state(vae_dir / "pytorch_model_vae.bin")
    report.source_keys["pytorch_model_vae.bin"] = len(vae_state)
    vae, vocoder = convert_vae(vae_state, _read_json(vae_dir / "vae_config.json"), report)
    mel = mel_config_from_stft(_read_json(vae_dir / "stft_config.json"))
    stft_state = load_state(vae_dir / "pytorch_model_stft.bin")
    report.source_keys["pytorch_model_stft.bin"] = len(stft_state)
    verify_stft(stft_state, mel, report)

    # UNet + text encoder
    main_state = load_state(main_path)
    report.source_keys[main_path.name] = len(main_state)
    unet_state, text_state = split_main(main_state)
    unet = UNet2DConditionModel.from_config(_read_json(Path(unet_config) if unet_config else CONFIGS / "tango_unet.json"))
    _load_exact(unet, unet_state, "UNet")
    report.mapped["unet"] = len(unet_state)
    t5_config = T5Config(**{k: v for k, v in _read_json(Path(text_encoder_config) if text_encoder_config else CONFIGS / "flan_t5_large_encoder.json").items() if not k.startswith("_")})
    encoder = T5EncoderModel(t5_config)
    # the encoder's token embedding is tied to `shared`; older checkpoints store both copies
    n_text = len(text_state)
    tied = "encoder.embed_tokens.weight"
    if tied in text_state and "shared.weight" in text_state:
        if not torch.equal(text_state[tied], text_state["shared.weight"]):
            raise CheckpointError("text encoder: encoder.embed_tokens.weight differs from shared.weight (expected tied)")
        report.verified.append("text_encoder." + tied)
    text_state.setdefault(tied, text_state.get("shared.weight"))
    _load_exact(encoder, text_state, "text encoder")
    report.mapped["text_encoder"] = n_text - (1 if "text_encoder." + tied in report.verified else 0)
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {tokenizer}: {exc}") from exc
    if len(tok) > t5_config.vocab_size:
        raise CheckpointError(f"tokenizer at {tokenizer} has {len(tok)} tokens; the text encoder embeds only {t5_config.vocab_size}")

    config = GeneratorConfig(text_encoder="text_encoder", text_max_length=min(int(tok.model_max_length), 512), mel=mel.to_dict(), default_steps=default_steps, default_duration_s=10.0, max_duration_s=30.0)
    pipe = TangoPipeline(config, TextEncoder(tok, encoder, config.text_max_length), unet, vae, vocoder, DDPMScheduler.from_config(SD21_SCHEDULER))
    pipe.save_pretrained(dst)
    (dst / "conversion.json").write_text(json.dumps({"source": str(src), "vae_from": str(vae_dir), "main_weights": main_path.name, **report.to_dict()}, indent=2) + "\n")
    return report


def accounted(report: ConversionReport) -> int:
    """Source keys mapped or verified; equals sum(report.source_keys.values()) for a complete conversion."""
    return sum(report.mapped.values()) + len(report.verified)

