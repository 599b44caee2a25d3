"""The TANGO pipeline on a tiny random model: batching, guidance, seeds, schedulers, persistence, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.generator import GeneratorConfig, TangoPipeline, candidate_seeds, with_position_channels, with_token_positions
from services.manifest import ManifestError, write_manifest
from services.modeling import CheckpointError
from services.text_encoder import MINILM, TextEncoder

TINY_UNET = dict(
    sample_size=[8, 4],
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[16, 32],
    layers_per_block=1,
    cross_attention_dim=384,
    attention_head_dim=8,
    norm_num_groups=8,
)
TINY_VAE = dict(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=8)
TINY_VOCODER = dict(model_in_dim=16, upsample_initial_channel=16, upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False)
MEL = {"sample_rate": 16000, "n_fft": 256, "win_length": 256, "hop_length": 64, "n_mels": 16, "fmin": 0.0, "fmax": 8000.0, "log_floor": 1e-5}


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the signal (a random vocoder's output is tiny)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder.from_pretrained(MINILM, 32)


def tiny_pipeline(text_encoder: TextEncoder, unet=None, **overrides) -> TangoPipeline:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from training.train_generator import SCHEDULER

    torch.manual_seed(0)
    config = GeneratorConfig(text_encoder=MINILM, text_max_length=32, mel=MEL, default_steps=4, default_duration_s=0.256, max_duration_s=1.0, **overrides)
    return TangoPipeline(config, text_encoder, unet or UNet2DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE), SpeechT5HifiGan(SpeechT5HifiGanConfig(**TINY_VOCODER)), DDPMScheduler(**SCHEDULER))


@pytest.fixture(scope="module")
def pipe(text_encoder) -> TangoPipeline:
    return tiny_pipeline(text_encoder)


def test_shapes_dtype_and_seeds(pipe):
    out = pipe.generate(["a dog barks", "a bell rings"], num_candidates=3, seed=10)
    assert out.waveforms.shape == (2, 3, 4096) and out.waveforms.dtype == np.float32
    assert np.abs(out.waveforms).max() <= 0.99  # level-limited, so a 16-bit file never clips it
    assert out.seeds == [[10, 11, 12], [10, 11, 12]] and out.sample_rate == 16000
    assert set(out.timings) == {"encode_s", "denoise_s", "decode_s"}
    assert out.settings == {"steps": 4, "guidance_scale": 3.0, "scheduler": "ddpm", "duration_s": 0.256, "vocoder": "hifigan", "timeline": False, "dtype": "float32"}


def test_default_precision_follows_the_hardware(monkeypatch):
    """fp16 on CUDA; on a CPU bf16 only where the hardware computes it (elsewhere torch emulates it, slower than fp32)."""
    import services.generator as generator

    assert generator.default_dtype("cuda:0") == torch.float16
    monkeypatch.setattr(generator, "cpu_computes_bf16", lambda: True)
    assert generator.default_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(generator, "cpu_computes_bf16", lambda: False)
    assert generator.default_dtype(torch.device("cpu")) == torch.float32


def test_a_bf16_pipeline_on_cpu_says_so_and_generates(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "g")
    bf16 = TangoPipeline.from_pretrained(tmp_path / "g", device="cpu", dtype=torch.bfloat16)
    out = bf16.generate(["a dog barks"], num_candidates=2, seed=3)
    assert bf16.unet.dtype == bf16.vae.dtype == torch.bfloat16 and bf16.vocoder.dtype == torch.float32
    assert out.settings["dtype"] == "bfloat16" and out.waveforms.dtype == np.float32 and np.isfinite(out.waveforms).all()


def test_same_seed_same_audio_and_candidates_do_not_depend_on_the_batch(pipe):
    a = pipe.generate(["a dog barks", "rain falls"], num_candidates=2, seed=5).waveforms
    b = pipe.generate(["a dog barks", "rain falls"], num_candidates=2, seed=5).waveforms
    np.testing.assert_array_equal(a, b)
    alone = pipe.generate(["rain falls"], num_candidates=1, seed=6).waveforms  # candidate 1 of prompt 2 had seed 6
    assert rel_diff(alone[0, 0], a[1, 1]) < 1e-4
    other = pipe.generate(["a dog barks"], num_candidates=1, seed=99).waveforms
    assert rel_diff(other[0, 0], a[0, 0]) > 1e-2


def test_latents_come_back_only_when_asked_for(pipe):
    """Serving drops the denoised latents, so they are copied to the host only for training (return_latents):
    float16, one per candidate, and the waveforms are the same either way."""
    plain = pipe.generate(["a dog barks", "rain falls"], num_candidates=2, steps=2, seed=5)
    kept = pipe.generate(["a dog barks", "rain falls"], num_candidates=2, steps=2, seed=5, return_latents=True)
    assert plain.latents is None
    assert kept.latents.dtype == np.float16 and kept.latents.shape[:3] == (2, 2, pipe.vae.config.latent_channels)
    np.testing.assert_array_equal(plain.waveforms, kept.waveforms)


def test_guidance_runs_both_branches_of_all_candidates_in_one_unet_batch(pipe):
    batches = []
    hook = pipe.unet.register_forward_hook(lambda m, args, kwargs_out=None: batches.append(args[0].shape[0]))
    try:
        pipe.generate(["a", "b"], num_candidates=3, steps=2, seed=0)
        assert batches == [12, 12]
        batches.clear()
        pipe.generate(["a", "b"], num_candidates=3, steps=2, guidance_scale=1.0, seed=0)  # no guidance: no unconditional half
        assert batches == [6, 6]
    finally:
        hook.remove()


def test_negative_prompt_replaces_the_unconditional_branch(pipe):
    base = pipe.generate(["a dog barks"], seed=1).waveforms
    neg = pipe.generate(["a dog barks"], seed=1, negative_prompt="rain").waveforms
    assert rel_diff(neg, base) > 1e-3


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++"])
def test_every_scheduler_runs_and_is_deterministic(pipe, scheduler):
    a = pipe.generate(["a whistle"], num_candidates=2, steps=3, scheduler=scheduler, seed=3).waveforms
    b = pipe.generate(["a whistle"], num_candidates=2, steps=3, scheduler=scheduler, seed=3).waveforms
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_candidates": 0}, "num_candidates"),
        ({"duration_s": 5.0}, "duration_s"),
        ({"steps": 5000}, "steps"),
        ({"scheduler": "euler"}, "unknown scheduler"),
        ({"vocoder": "wavenet"}, "unknown vocoder"),
        ({"seed": [1, 2, 3]}, "seeds for 1 prompts"),
        ({"negative_prompt": ["x", "y"]}, "negative prompts"),
    ],
)
def test_bad_arguments_say_what_is_wrong(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe.generate(["a dog barks"], **kwargs)


def test_griffin_lim_vocoder_per_call_or_as_the_checkpoint_default(text_encoder, pipe, tmp_path):
    """The same latents through either vocoder: both give audio of the same length; Griffin-Lim is
    deterministic and is what a checkpoint whose config names it serves (and saves, and loads)."""
    hifigan = pipe.generate(["a dog barks"], num_candidates=2, seed=3)
    griffin = pipe.generate(["a dog barks"], num_candidates=2, seed=3, vocoder="griffin-lim")
    assert griffin.settings["vocoder"] == "griffin-lim" and griffin.waveforms.shape == hifigan.waveforms.shape
    assert np.isfinite(griffin.waveforms).all() and not np.allclose(griffin.waveforms, hifigan.waveforms)
    np.testing.assert_array_equal(griffin.waveforms, pipe.generate(["a dog barks"], num_candidates=2, seed=3, vocoder="griffin-lim").waveforms)
    default_gl = tiny_pipeline(text_encoder, default_vocoder="griffin-lim")
    default_gl.save_pretrained(tmp_path / "g")
    loaded = TangoPipeline.from_pretrained(tmp_path / "g", device="cpu", dtype=torch.float32)
    np.testing.assert_array_equal(loaded.generate(["a dog barks"], num_candidates=2, seed=3).waveforms, griffin.waveforms)
    audio = hifigan.waveforms[0]
    assert pipe.reconstruct(audio, through_vae=False, vocoder="griffin-lim").shape == audio.shape
    with pytest.raises(ValueError, match="default_vocoder"):
        GeneratorConfig(default_vocoder="wavenet")


def test_duration_sets_the_length(pipe):
    out = pipe.generate(["a dog barks"], duration_s=0.5, seed=0)
    assert out.waveforms.shape[-1] == 8000
    assert pipe.num_frames(0.5) % pipe.frame_multiple == 0


def test_random_seed_is_reported():
    seeds = candidate_seeds(None, 2, 2)
    assert seeds[0] == seeds[1] and seeds[0][1] == seeds[0][0] + 1


def test_save_load_round_trip_and_manifest(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "g")
    write_manifest(tmp_path / "g", command="test", seed=0, metrics={})
    manifest = json.loads((tmp_path / "g" / "MANIFEST.json").read_text())
    assert "unet/diffusion_pytorch_model.safetensors" in manifest["files"] and "pipeline.json" in manifest["files"]
    loaded = TangoPipeline.from_pretrained(tmp_path / "g", device="cpu", dtype=torch.float32)
    np.testing.assert_array_equal(pipe.generate(["a bell"], seed=2).waveforms, loaded.generate(["a bell"], seed=2).waveforms)
    weights = tmp_path / "g" / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ManifestError, match="vae/diffusion_pytorch_model.safetensors"):
        TangoPipeline.from_pretrained(tmp_path / "g", device="cpu")


def test_directory_errors_are_clear(tmp_path, pipe):
    with pytest.raises(CheckpointError, match="not a generator directory"):
        TangoPipeline.from_pretrained(tmp_path, device="cpu")
    pipe.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "pipeline.json").write_text('{"text_encoder": 3}')
    with pytest.raises(CheckpointError, match="invalid generator config"):
        TangoPipeline.from_pretrained(tmp_path / "g", device="cpu")


def test_components_that_do_not_fit_are_refused(text_encoder):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    config = GeneratorConfig(text_encoder=MINILM, mel=MEL)
    unet = UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 64})
    with pytest.raises(CheckpointError, match="cross_attention_dim 64"):
        TangoPipeline(config, text_encoder, unet, AutoencoderKL(**TINY_VAE), SpeechT5HifiGan(SpeechT5HifiGanConfig(**TINY_VOCODER)), DDPMScheduler())


def test_position_channels_give_the_unet_relative_time_and_band(text_encoder):
    from diffusers import UNet2DConditionModel

    from training.train_generator import widen_unet

    latents = torch.randn(3, 4, 8, 4)
    x = with_position_channels(latents, 2)
    assert x.shape == (3, 6, 8, 4) and torch.equal(x[:, :4], latents)
    assert torch.allclose(x[0, 4, :, 0], torch.linspace(-1, 1, 8)) and torch.all(x[:, 4] == x[0, 4, :, :1])  # time runs down the clip, same in every band
    assert torch.allclose(x[0, 5, 0], torch.linspace(-1, 1, 4)) and torch.all(x[:, 5] == x[0, 5, :1])
    assert with_position_channels(latents, 0) is latents
    assert torch.equal(with_position_channels(torch.zeros(1, 4, 16, 4), 1)[0, 4, [0, -1], 0], torch.tensor([-1.0, 1.0])), "relative: the ends are -1 and 1 at any length"

    # text states get sinusoids of the token index: the same word at another place differs
    states = torch.zeros(2, 7, 384)
    with_pos = with_token_positions(states, 8)
    assert with_pos.shape == (2, 7, 392) and torch.equal(with_pos[..., :384], states) and torch.equal(with_pos[0], with_pos[1])
    assert torch.equal(with_pos[0, 0, 384:], torch.tensor([0.0] * 4 + [1.0] * 4)) and not torch.allclose(with_pos[0, 1, 384:], with_pos[0, 3, 384:])
    assert with_token_positions(states, 0) is states
    with pytest.raises(ValueError, match="multiple"):
        GeneratorConfig(text_position_channels=3)

    # a UNet widened for both computes what it did before training uses them
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET).eval()
    wide = widen_unet(unet, 6, 392).eval()
    t, h = torch.tensor([3, 700, 999]), torch.randn(3, 5, 384)
    with torch.no_grad():
        assert torch.allclose(wide(x, t, encoder_hidden_states=with_token_positions(h, 8)).sample, unet(latents, t, encoder_hidden_states=h).sample, atol=1e-6)
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_unet(wide, 4)

    # the pipeline appends them when its config says so, and refuses a UNet that does not take them
    with pytest.raises(CheckpointError, match=r"\+ 2 position channels"):
        tiny_pipeline(text_encoder, position_channels=2)
    with pytest.raises(CheckpointError, match=r"cross_attention_dim 392 != text encoder width 384 \(\+ 0 text position channels\)"):
        tiny_pipeline(text_encoder, unet=wide, position_channels=2)
    out = tiny_pipeline(text_encoder, unet=wide, position_channels=2, text_position_channels=8).generate(["a dog barks", "rain"], num_candidates=2, seed=1)
    assert out.waveforms.shape[:2] == (2, 2) and np.isfinite(out.waveforms).all()


def test_cli_generate_writes_wavs_mels_and_metadata(pipe, tmp_path):
    from click.testing import CliRunner

    from services.audio import read_audio
    from tta.cli import main

    pipe.save_pretrained(tmp_path / "g")
    result = CliRunner().invoke(main, ["generate", "a dog barks, then a bell rings", "-n", "2", "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "g"), "--seed", "4", "--steps", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert [f["seed"] for f in meta["files"]] == [4, 5] and meta["settings"]["steps"] == 2
    for f in meta["files"]:
        assert read_audio(tmp_path / "out" / f["file"]).shape == (4096,)
    assert (tmp_path / "out" / "mels.png").stat().st_size > 1000
    bad = CliRunner().invoke(main, ["generate", "x", "-o", str(tmp_path / "o2"), "--checkpoint", str(tmp_path / "g"), "--duration", "5"])
    assert bad.exit_code != 0 and "maximum of 1.0 s" in bad.output
    missing = CliRunner().invoke(main, ["generate", "x", "-o", str(tmp_path / "o3"), "--checkpoint", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "not a generator directory" in missing.output


def test_shipped_generator_loads_and_generates():
    """The embedded default: hashes check out, its serving defaults are the measured ones, and it makes audio."""
    from services.checkpoints import shipped
    from services.manifest import verify_manifest

    directory = shipped("generator")
    manifest = verify_manifest(directory)
    assert {"single.presence", "integrity.accuracy", "temporal.accuracy", "roundtrip.presence_f1"} <= set(manifest["metrics"])
    pipe = TangoPipeline.from_pretrained(directory, device="cpu")
    assert pipe.config.text_encoder == MINILM
    out = pipe.generate(["a dog barks, then a bell rings"], num_candidates=2, steps=3, seed=0)
    assert out.waveforms.shape == (1, 2, 65536) and np.isfinite(out.waveforms).all()
    assert np.abs(out.waveforms).max() > 1e-3, "silence"


def test_served_generator_is_a_baton_fine_tune_of_the_shipped_base():
    """The served default is a `tta train baton` fine-tune of the shipped base (which stays for comparison): its
    MANIFEST names that base, unchanged since the fine-tune read it, and what it trained on; only the UNet's
    weights differ, the codec and every setting are the base's, except what clause channels change (the
    pipeline's switch and the UNet's text width), which the MANIFEST says were added."""
    from services.checkpoints import shipped
    from services.manifest import checkpoint_version, verify_manifest

    base, served = shipped("generator-base"), shipped("generator")
    base_manifest, manifest = verify_manifest(base), verify_manifest(served)
    assert set(base_manifest["training"]["stages"]) == {"vae", "vocoder", "unet"}
    assert manifest["command"].startswith("tta train baton") and {"hd", "rd"} <= set(manifest["data"]) and manifest["baton"]["steps"] > 0
    assert manifest["base"]["dir"] == "services/checkpoints/generator-base"
    assert manifest["base"]["version"].split("@")[1] == checkpoint_version(base).split("@")[1]
    assert {"single.presence", "integrity.accuracy", "temporal.accuracy"} <= set(manifest["metrics"])
    assert set(base_manifest["files"]) <= set(manifest["files"])
    if "init" in manifest:  # a fine-tune of an earlier fine-tune: that one is named, and where the repository held it
        assert manifest["init"]["version"] != checkpoint_version(served) and manifest["init"]["command"].startswith("tta train baton")
        assert len(manifest["init"]["in_repository_at"]) == 40
    widened = manifest["baton"].get("widened_for_clause_channels", False)
    text_width = TangoPipeline.from_pretrained(base).text_encoder.hidden_size

    def settings(path):  # diffusers notes where a config was loaded from; that is not a setting
        return {k: v for k, v in json.loads(path.read_text()).items() if k != "_name_or_path"}

    for name, entry in base_manifest["files"].items():
        if name.endswith(".json"):
            ours, theirs = settings(served / name), settings(base / name)
            if widened and name == "pipeline.json":
                assert ours.pop("clause_channels") and not theirs.pop("clause_channels", False)
            if widened and name == "unet/config.json":
                assert ours.pop("cross_attention_dim") == theirs.pop("cross_attention_dim") + text_width
            assert ours == theirs, name
        else:
            assert (entry["sha256"] == manifest["files"][name]["sha256"]) == (not name.startswith("unet/")), name


def test_reconstruct_keeps_what_the_oracle_hears():
    """The shipped codec round trip (log-mel -> VAE -> vocoder) returns audio of the input's length that
    still holds the input's events: the oracle finds most of them, far more than in another clip."""
    from services.checkpoints import shipped
    from training.eval_oracle import score_detections
    from training.world.clips import make_clip
    from training.world.oracle import SoundEventDetector

    pipe = TangoPipeline.from_pretrained(shipped("generator"), device="cpu")
    oracle = SoundEventDetector.from_pretrained(shipped("oracle"))
    clips = [make_clip(5, "heldout", i) for i in range(12)]
    audio = np.stack([c.audio for c in clips])
    truths = [[e.event for e in c.truth.events] for c in clips]
    out = pipe.reconstruct(audio)
    assert out.shape == audio.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, pipe.reconstruct(audio)), "the VAE's mode, not a sample"
    ids = list(oracle.config.class_ids)
    own = score_detections(oracle.detect(out), truths, [False] * 12, ids)["f1"]
    shifted = score_detections(oracle.detect(np.roll(out, 1, axis=0)), truths, [False] * 12, ids)["f1"]
    assert own >= 0.7 and own > shifted + 0.3, (own, shifted)
    vocoded = pipe.reconstruct(audio[:2], through_vae=False)
    assert vocoded.shape == (2, audio.shape[1]) and not np.allclose(vocoded, out[:2])
    assert pipe.reconstruct(audio[:2, :40001]).shape == (2, 40001), "a length off the hop grid comes back at that length"


def test_shipped_generator_serves_a_vocoder_that_keeps_steady_tones():
    """Why the shipped default is Griffin-Lim: whistles and bird chirps survive its codec round trip
    (the mini HiFi-GAN resynthesises neither; docs/results/generator/vocoder)."""
    from services.checkpoints import shipped
    from training.world.clips import make_clip
    from training.world.oracle import SoundEventDetector

    pipe = TangoPipeline.from_pretrained(shipped("generator"), device="cpu")
    assert pipe.config.default_vocoder == "griffin-lim"
    oracle = SoundEventDetector.from_pretrained(shipped("oracle"))
    tonal = [c for c in (make_clip(3, "heldout", i) for i in range(60)) if [e.event for e in c.truth.events] in (["whistle"], ["bird_chirp"])][:4]
    assert len(tonal) >= 2
    heard = oracle.detect(pipe.reconstruct(np.stack([c.audio for c in tonal])))
    assert all(c.truth.events[0].event in d.present() for c, d in zip(tonal, heard)), [sorted(d.present()) for d in heard]


def test_cli_eval_generator_compares_vocoders_on_the_same_prompts(pipe, tmp_path):
    """`tta eval generator --vocoder hifigan,griffin-lim`: one report per vocoder, each with its own
    round trip, and a comparison table; the CLI's spelled-out choices are the pipeline's."""
    from click.testing import CliRunner

    from services.generator import VOCODERS
    from tta.cli import VOCODER_CHOICE, main

    assert tuple(VOCODER_CHOICE.choices) == VOCODERS
    pipe.save_pretrained(tmp_path / "g")
    args = ["eval", "generator", "--checkpoint", str(tmp_path / "g"), "--n", "2", "--steps", "2", "--roundtrip-n", "2", "--vocoder", "hifigan,griffin-lim", "--out", str(tmp_path / "r"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output.strip().splitlines()[-1])
    assert set(reports) == {"hifigan:ddpm@2", "griffin-lim:ddpm@2"}
    for metrics in reports.values():
        assert {"single.presence", "integrity.accuracy", "temporal.accuracy", "roundtrip.presence_f1", "vocoder.presence_f1"} <= set(metrics)
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["settings"]["vocoder"] for r in saved.values()] == ["hifigan", "griffin-lim"]
    assert "| vocoder | scheduler | steps |" in (tmp_path / "r" / "report.md").read_text()
    bad = CliRunner().invoke(main, ["eval", "generator", "--checkpoint", str(tmp_path / "g"), "--vocoder", "wavenet"])
    assert bad.exit_code != 0 and "unknown vocoder(s) ['wavenet']" in bad.output


def test_shipped_generator_keeps_the_stated_order_with_its_timeline():
    """The shipped default's timeline (docs/results/generator/timeline): on 3-event sequences in training
    phrasings, the oracle hears the events in the stated order far more often with it than without."""
    from services.checkpoints import shipped
    from training.eval_generator import judge, prompt_of
    from training.world.clips import sample_spec
    from training.world.oracle import SoundEventDetector

    pipe = TangoPipeline.from_pretrained(shipped("generator"), device="cpu")
    assert pipe.config.default_timeline is True
    oracle = SoundEventDetector.from_pretrained(shipped("oracle"))
    specs = [sample_spec(np.random.default_rng([7, 99, i]), "train", "temporal") for i in range(8)]
    correct = {}
    for timeline in (True, False):
        out = pipe.generate([s.caption for s in specs], seed=[100 + i for i in range(len(specs))], timeline=timeline)
        correct[timeline] = sum(judge(d, prompt_of(s))[1] for s, d in zip(specs, oracle.detect(out.waveforms[:, 0])))
    assert correct[True] >= 6 and correct[True] >= correct[False] + 4, correct
