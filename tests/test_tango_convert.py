"""`tta convert-tango`: tiny random models in TANGO's original layout convert exactly.

The VAE + vocoder reference outputs were produced by the original AudioLDM modules
(scripts/make_tango_fixture.py); the UNet and FLAN-T5 encoder are diffusers/transformers classes in
both layouts, so their reference is the same class loaded from the original state dict.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tango_fixture import FIXTURE_DIR, LATENT_SHAPE, MEL_SHAPE, STFT_CONFIG, TINY_VAE_CONFIG, load_fixture, seeded_input, seeded_state

from services.audio import MelConfig, mel_filterbank
from services.generator import TangoPipeline
from services.modeling import CheckpointError
from services.tango_convert import accounted, convert_tango, load_state
from services.text_encoder import MINILM, resolve_location

TINY_UNET = {
    "sample_size": [16, 4],
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": [2, 4],
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "use_linear_projection": True,
    "upcast_attention": True,
}
TINY_T5 = {"model_type": "t5", "vocab_size": 30528, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": True, "tie_word_embeddings": False}
MAIN_CONFIG = {"text_encoder_name": "google/flan-t5-large", "scheduler_name": "stabilityai/stable-diffusion-2-1", "unet_model_name": None, "unet_model_config_path": "configs/diffusion_model_config.json", "snr_gamma": 5.0}


def _tiny_main_modules():
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET).eval()
    encoder = T5EncoderModel(T5Config(**{k: v for k, v in TINY_T5.items() if k != "model_type"})).eval()
    return unet, encoder


def _stft_state(mel: MelConfig) -> dict[str, torch.Tensor]:
    basis = torch.zeros(mel.n_fft + 2, 1, mel.n_fft)
    return {"mel_basis": torch.from_numpy(mel_filterbank(mel)), "stft_fn.forward_basis": basis, "stft_fn.inverse_basis": basis.clone()}


def write_tango_dir(root: Path, main_name: str = "pytorch_model_main.bin", prefix: str = "", with_vae: bool = True) -> Path:
    """A checkpoint directory exactly as TANGO lays it out (tiny widths)."""
    root.mkdir(parents=True, exist_ok=True)
    unet, encoder = _tiny_main_modules()
    main = {f"{prefix}unet.{k}": v for k, v in unet.state_dict().items()} | {f"{prefix}text_encoder.{k}": v for k, v in encoder.state_dict().items()}
    if main_name.endswith(".safetensors"):
        save_file({k: v.contiguous().clone() for k, v in main.items()}, str(root / main_name))
    else:
        torch.save(main, root / main_name)
    (root / "main_config.json").write_text(json.dumps(MAIN_CONFIG))
    if with_vae:
        torch.save(seeded_state(load_fixture()["shapes"]), root / "pytorch_model_vae.bin")
        torch.save(_stft_state(MelConfig()), root / "pytorch_model_stft.bin")
        (root / "vae_config.json").write_text(json.dumps(TINY_VAE_CONFIG))
        (root / "stft_config.json").write_text(json.dumps(STFT_CONFIG))
    return root


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("configs")
    (d / "unet.json").write_text(json.dumps(TINY_UNET))
    (d / "t5.json").write_text(json.dumps(TINY_T5))
    return {"unet_config": d / "unet.json", "text_encoder_config": d / "t5.json", "tokenizer": resolve_location(MINILM)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, configs) -> tuple[Path, object]:
    src = write_tango_dir(tmp_path_factory.mktemp("tango"))
    dst = tmp_path_factory.mktemp("ours") / "generator"
    report = convert_tango(src, dst, **configs)
    return dst, report


def test_every_original_key_is_accounted_for(converted):
    _, report = converted
    n_vae = len(load_fixture()["shapes"])
    assert report.source_keys["pytorch_model_vae.bin"] == n_vae
    assert report.source_keys["pytorch_model_stft.bin"] == 3
    assert accounted(report) == sum(report.source_keys.values())
    assert report.mapped["vae"] + report.mapped["vocoder"] == n_vae
    assert report.mapped["vocoder"] > 0 and report.mapped["unet"] > 0 and report.mapped["text_encoder"] > 0


def test_vae_and_vocoder_reproduce_the_original_audioldm_modules(converted):
    dst, _ = converted
    pipe = TangoPipeline.from_pretrained(dst, device="cpu", dtype=torch.float32)
    ref = load_file(str(FIXTURE_DIR / "audioldm_outputs.safetensors"))
    latents = seeded_input(LATENT_SHAPE, 1)
    with torch.no_grad():
        mel = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        posterior = pipe.vae.encode(seeded_input((2, 1, 64, 64), 2)).latent_dist
        wav = pipe.vocoder(seeded_input(MEL_SHAPE, 3).transpose(1, 2))
        decoded = pipe.decode(latents)
    assert (mel - ref["decode_mel"]).abs().max() < 1e-5
    assert (posterior.mean - ref["posterior_mean"]).abs().max() < 1e-5
    assert (posterior.std - ref["posterior_std"]).abs().max() < 1e-5
    assert (wav - ref["vocoder_wav"]).abs().max() < 1e-5
    assert (decoded - ref["decoded_wav"]).abs().max() < 1e-5
    assert pipe.vae.config.scaling_factor == pytest.approx(TINY_VAE_CONFIG["scale_factor"])


def test_unet_and_text_encoder_match_the_original_modules(converted):
    dst, _ = converted
    pipe = TangoPipeline.from_pretrained(dst, device="cpu", dtype=torch.float32)
    unet, encoder = _tiny_main_modules()
    x, t = seeded_input((2, 8, 16, 16), 4), torch.tensor([10, 900])
    ids = torch.tensor([[5, 17, 300, 1], [9, 2, 1, 0]])
    with torch.no_grad():
        h_ref = encoder(input_ids=ids).last_hidden_state
        h = pipe.text_encoder.encoder(input_ids=ids).last_hidden_state
        assert (h - h_ref).abs().max() < 1e-6
        out_ref = unet(x, t, encoder_hidden_states=h_ref).sample
        out = pipe.unet(x, t, encoder_hidden_states=h).sample
    assert (out - out_ref).abs().max() < 1e-6


def test_converted_pipeline_generates_with_tango_defaults(converted):
    dst, _ = converted
    pipe = TangoPipeline.from_pretrained(dst, device="cpu", dtype=torch.float32)
    assert pipe.config.default_scheduler == "ddpm" and pipe.config.default_guidance_scale == 3.0
    assert pipe.scheduler_config["prediction_type"] == "v_prediction" and pipe.scheduler_config["beta_schedule"] == "scaled_linear"
    out = pipe.generate(["a dog barks"], num_candidates=2, steps=3, seed=7, duration_s=0.5)
    assert out.waveforms.shape == (1, 2, 8000) and out.waveforms.dtype == np.float32
    assert np.isfinite(out.waveforms).all()


@pytest.mark.parametrize("variant", ["tango2", "baton-accelerate-bin", "baton-safetensors"])
def test_tango2_and_baton_finetunes_convert_the_same(tmp_path, configs, converted, variant):
    """Tango 2 ships the same files; BATON/accelerate fine-tunes name the main weights differently,
    may carry DDP's `module.` prefix and take the VAE from the base checkpoint."""
    base = write_tango_dir(tmp_path / "base")
    if variant == "tango2":
        src, vae_from = base, None
    elif variant == "baton-accelerate-bin":
        src, vae_from = write_tango_dir(tmp_path / "ft", main_name="pytorch_model.bin", prefix="module.", with_vae=False), base
    else:
        src, vae_from = write_tango_dir(tmp_path / "ft", main_name="model.safetensors", with_vae=False), base
    report = convert_tango(src, tmp_path / "out", vae_from=vae_from, **configs)
    assert accounted(report) == sum(report.source_keys.values())
    ref_dir, _ = converted
    a, b = TangoPipeline.from_pretrained(ref_dir, device="cpu", dtype=torch.float32), TangoPipeline.from_pretrained(tmp_path / "out", device="cpu", dtype=torch.float32)
    for name in ("unet", "vae", "vocoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weight_normed_vocoder_folds_to_the_same_weights(tmp_path, configs, converted):
    src = write_tango_dir(tmp_path / "wn")
    state = torch.load(src / "pytorch_model_vae.bin", weights_only=True)
    conv = "vocoder.conv_post.weight"
    w = state.pop(conv)
    norm = w.norm(dim=(1, 2), keepdim=True)
    state[conv + "_g"], state[conv + "_v"] = norm, w / norm * 2.0  # v's scale must not matter
    torch.save(state, src / "pytorch_model_vae.bin")
    convert_tango(src, tmp_path / "out", **configs)
    ref_dir, _ = converted
    a = TangoPipeline.from_pretrained(ref_dir, device="cpu", dtype=torch.float32).vocoder.conv_post.weight
    b = TangoPipeline.from_pretrained(tmp_path / "out", device="cpu", dtype=torch.float32).vocoder.conv_post.weight
    assert (a - b).abs().max() < 1e-6


def _corrupt(src: Path, kind: str) -> None:
    if kind == "leftover main key":
        state = torch.load(src / "pytorch_model_main.bin", weights_only=True)
        state["ema.decay"] = torch.tensor(0.999)
        torch.save(state, src / "pytorch_model_main.bin")
    elif kind == "sd adapter":
        state = torch.load(src / "pytorch_model_main.bin", weights_only=True)
        state["group_in.0.weight"] = torch.zeros(512, 8)
        torch.save(state, src / "pytorch_model_main.bin")
    elif kind == "leftover vae key":
        state = torch.load(src / "pytorch_model_vae.bin", weights_only=True)
        state["encoder.down.0.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
        torch.save(state, src / "pytorch_model_vae.bin")
    elif kind == "wrong mel basis":
        state = torch.load(src / "pytorch_model_stft.bin", weights_only=True)
        state["mel_basis"] = state["mel_basis"] * 1.5
        torch.save(state, src / "pytorch_model_stft.bin")
    elif kind == "missing vae":
        (src / "pytorch_model_vae.bin").unlink()
    elif kind == "pickled object":
        torch.save({"unet.x": Path("/etc/passwd")}, src / "pytorch_model_main.bin")  # any non-tensor object: refused unread
    elif kind == "wrong unet shape":
        state = torch.load(src / "pytorch_model_main.bin", weights_only=True)
        state["unet.conv_in.weight"] = torch.zeros(32, 4, 3, 3)
        torch.save(state, src / "pytorch_model_main.bin")


@pytest.mark.parametrize(
    "kind, message",
    [
        ("leftover main key", "ema.decay"),
        ("sd adapter", "group_in"),
        ("leftover vae key", "encoder.down.0.attn.0.q.weight"),
        ("wrong mel basis", "mel_basis"),
        ("missing vae", "pytorch_model_vae.bin"),
        ("pickled object", "cannot read weights"),
        ("wrong unet shape", "conv_in.weight"),
    ],
)
def test_bad_checkpoints_are_refused_by_name(tmp_path, configs, kind, message):
    src = write_tango_dir(tmp_path / "src")
    _corrupt(src, kind)
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        convert_tango(src, tmp_path / "out", **configs)
    assert not (tmp_path / "out" / "pipeline.json").exists()


def test_load_state_strips_ddp_prefix_and_reads_safetensors(tmp_path):
    save_file({"module.a": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    assert list(load_state(tmp_path / "m.safetensors")) == ["a"]


def test_cli_convert_tango(tmp_path, configs):
    from click.testing import CliRunner

    from tta.cli import main

    src = write_tango_dir(tmp_path / "src")
    args = ["convert-tango", str(src), str(tmp_path / "out"), "--tokenizer", str(configs["tokenizer"]), "--unet-config", str(configs["unet_config"]), "--text-encoder-config", str(configs["text_encoder_config"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "all" in result.output and (tmp_path / "out" / "conversion.json").is_file()
    shutil.rmtree(tmp_path / "out")
    result = CliRunner().invoke(main, ["convert-tango", str(src), str(tmp_path / "out")])
    assert result.exit_code != 0 and "--tokenizer" in result.output
