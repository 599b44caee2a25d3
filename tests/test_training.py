"""Training machinery on tiny settings: the loop runs, checkpoints, and resumes where it stopped."""

import json

from services.manifest import verify_manifest
from training.train_oracle import train_oracle


def test_oracle_training_resumes(tmp_path):
    kwargs = dict(batch_size=8, n_clips=40, n_negatives=8, n_heldout_clips=4, work_dir=tmp_path / "run", cache_dir=tmp_path / "cache", eval_every=1000, checkpoint_every=1, eval_n=6, eval_negatives=6, val_n=8, command="test")
    train_oracle(tmp_path / "out", steps=2, **kwargs)
    assert (tmp_path / "run" / "train_state.pt").is_file()
    assert list((tmp_path / "cache").glob("*.npz")), "rendered data is cached for the next run"
    train_oracle(tmp_path / "out", steps=4, **kwargs)  # picks up at step 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    manifest = verify_manifest(tmp_path / "out")
    assert manifest["command"] == "test" and "presence_f1" in manifest["metrics"]
    assert manifest["training"]["n_heldout_clips"] == 4 and list((tmp_path / "cache").glob("*-h4-*.npz"))


def test_generator_training_end_to_end_and_resume(tmp_path):
    """All three stages at toy size, the assembled generator with MANIFEST, then a resume that adds UNet steps."""
    import json

    from services.generator import TangoPipeline
    from training.train_generator import train_generator

    kwargs = dict(n_clips=64, n_audio=16, vae_steps=2, vocoder_steps=2, batch_size=4, work_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", checkpoint_every=1, export_every=0, eval_n=1, serve_steps=2, command="test")
    metrics = train_generator(tmp_path / "gen", unet_steps=2, **kwargs)
    assert {"single.presence", "integrity.accuracy", "temporal.accuracy", "roundtrip.presence_f1", "seconds_per_clip"} <= set(metrics)
    manifest = json.loads((tmp_path / "gen" / "MANIFEST.json").read_text())
    assert manifest["metrics"] == metrics and "unet/diffusion_pytorch_model.safetensors" in manifest["files"]
    pipe = TangoPipeline.from_pretrained(tmp_path / "gen", device="cpu")
    assert pipe.config.default_steps == 2 and pipe.generate(["a dog barks"], seed=0).waveforms.shape == (1, 1, 65536)
    # asking for more UNet steps resumes from the saved state instead of starting over
    train_generator(tmp_path / "gen", unet_steps=3, **kwargs)
    steps = [json.loads(line)["step"] for line in (tmp_path / "runs" / "unet" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

    # --init: keep that generator's VAE and vocoder, train its UNet further with position channels added
    import pytest

    from services.manifest import checkpoint_version

    init_kwargs = {**kwargs, "work_dir": tmp_path / "runs-init", "command": "test-init"}
    with pytest.raises(ValueError, match="only the UNet trains further"):
        train_generator(tmp_path / "gen2", unet_steps=2, init=tmp_path / "gen", stage="vocoder", **init_kwargs)
    train_generator(tmp_path / "gen2", unet_steps=2, init=tmp_path / "gen", position_channels=2, clause_channels=True, unet_lr=1e-4, **init_kwargs)
    assert not (tmp_path / "runs-init" / "vae").exists() and not (tmp_path / "runs-init" / "vocoder").exists(), "nothing but the UNet trained"
    first, second = (json.loads((tmp_path / g / "MANIFEST.json").read_text()) for g in ("gen", "gen2"))
    for kept in ("vae/diffusion_pytorch_model.safetensors", "vocoder/model.safetensors"):
        assert second["files"][kept] == first["files"][kept]
    assert second["files"]["unet/diffusion_pytorch_model.safetensors"] != first["files"]["unet/diffusion_pytorch_model.safetensors"]
    assert second["training"]["init"] == checkpoint_version(tmp_path / "gen") and second["training"]["position_channels"] == 2
    assert second["training"]["stages"]["vae"] == first["training"]["stages"]["vae"], "the kept VAE's record travels with it"
    pipe2 = TangoPipeline.from_pretrained(tmp_path / "gen2", device="cpu")
    assert pipe2.config.position_channels == 2 and pipe2.unet.config.in_channels == pipe.vae.config.latent_channels + 2
    # clause channels: the UNet reads twice the encoder's width, trained on captions encoded the way generation encodes
    assert second["training"]["clause_channels"] and pipe2.config.clause_channels
    assert pipe2.unet.config.cross_attention_dim == 2 * pipe2.text_encoder.hidden_size
    assert pipe2.generate(["a dog barks while rain falls"], seed=0).waveforms.shape == (1, 1, 65536)
    with pytest.raises(ValueError, match="reads clause channels; pass --clause-channels"):
        train_generator(tmp_path / "gen3", unet_steps=2, init=tmp_path / "gen2", position_channels=2, **{**init_kwargs, "work_dir": tmp_path / "runs-3"})


def test_generator_stages_run_separately_and_are_recorded(tmp_path):
    """vae, then vocoder and unet as separate runs (side by side on a GPU), then 'all' only assembles:
    the MANIFEST names the command that trained each stage; the UNet refuses to start without the VAE."""
    import json

    import pytest

    from training.train_generator import train_generator

    kwargs = dict(n_clips=64, n_audio=16, vae_steps=2, vocoder_steps=2, unet_steps=2, batch_size=4, work_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", checkpoint_every=1, export_every=0, eval_n=1, serve_steps=2)
    with pytest.raises(FileNotFoundError, match="train the VAE first"):
        train_generator(tmp_path / "gen", stage="unet", command="unet-too-early", **kwargs)
    for stage in ("vae", "vocoder", "unet"):
        assert train_generator(tmp_path / "gen", stage=stage, command=f"cmd-{stage}", **kwargs) == {}
        assert (tmp_path / "runs" / stage / "final" / "stage.json").is_file()
    assert not (tmp_path / "gen").exists(), "single stages do not assemble a generator"
    train_generator(tmp_path / "gen", stage="all", command="cmd-all", **kwargs)
    manifest = json.loads((tmp_path / "gen" / "MANIFEST.json").read_text())
    stages = manifest["training"]["stages"]
    assert {k: v["command"] for k, v in stages.items()} == {"vae": "cmd-vae", "vocoder": "cmd-vocoder", "unet": "cmd-unet"}
    assert all(v["steps"] == 2 and v["device"] == "cpu" for v in stages.values())
    # 'all' found every stage finished: nothing was trained again (one log line per step, two steps each)
    for stage in ("vae", "vocoder", "unet"):
        assert len((tmp_path / "runs" / stage / "log.jsonl").read_text().splitlines()) == 2


def test_clap_training_hears_clips_through_the_generator_codec_and_resumes(tmp_path):
    """The codec clips are the same clips as the clean ones (each round trip is closest to its own clean
    log-mel), the MANIFEST reports held-out retrieval on both, and a second run resumes with the cache."""
    import numpy as np
    import pytest

    from services.checkpoints import shipped
    from training.train_clap import build_codec_logmel, build_dataset, train_clap

    kwargs = dict(batch_size=8, n_clips=48, eval_n=12, work_dir=tmp_path / "run", checkpoint_every=1, command="test", codec_clips=8, codec_share=0.5, generator_dir=shipped("generator"))
    metrics = train_clap(tmp_path / "out", steps=2, **kwargs)
    assert {"text_to_audio.r10", "codec_heldout.text_to_audio.r10", "codec_heldout.order_accuracy"} <= set(metrics)
    manifest = verify_manifest(tmp_path / "out")
    assert manifest["training"]["codec_clips"] == 8 and manifest["training"]["generator"].startswith("generator@")

    clean = build_dataset(0, 48, "train", tmp_path / "run" / "cache")["logmel"][:8].astype(np.float32)
    codec = build_codec_logmel(0, 8, "train", shipped("generator"), tmp_path / "run" / "cache").astype(np.float32)
    assert codec.shape == clean.shape and not np.allclose(codec, clean)
    distance = ((codec[:, None] - clean[None]) ** 2).mean(axis=(2, 3))
    assert (distance.argmin(1) == np.arange(8)).all()

    train_clap(tmp_path / "out", steps=3, **kwargs)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "clap" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    with pytest.raises(ValueError, match="generator_dir"):
        train_clap(tmp_path / "out2", steps=1, **{**kwargs, "generator_dir": None})


def test_min_snr_weight_and_plain_v_loss():
    """Min-SNR-5 for v-prediction is min(SNR, 5) / (SNR + 1): near 0 at both ends, the noisiest steps
    included; gamma 0 is plain v-MSE."""
    import torch
    from diffusers import DDPMScheduler

    from training.train_generator import SCHEDULER, min_snr_weight

    sched = DDPMScheduler(**SCHEDULER)
    t = torch.tensor([0, 500, 999])
    w = min_snr_weight(sched, t, 5.0)
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    torch.testing.assert_close(w, snr.clamp(max=5.0) / (snr + 1))
    assert w[0] < 0.01 and w[2] < 0.01 and w[1] > 0.25
    assert torch.equal(min_snr_weight(sched, t, 0.0), torch.ones(3))


def test_retrieval_recalls_count_any_clip_of_an_identical_caption_as_found():
    """Two clips share the caption 'a': the text 'a' cannot tell them apart, so retrieving either is a
    hit by caption, while the strict score still wants clip i for text i. Identical texts embed alike, so
    their rows are equal, and audio->text needs no such variant: a tie with the duplicate is not a loss."""
    import pytest
    import torch

    from training.train_clap import retrieval_recalls

    sim = torch.tensor([[0.1, 0.9, 0.5], [0.1, 0.9, 0.5], [0.0, 0.1, 0.7]])  # text x clip
    recalls = retrieval_recalls(sim, ["a", "a", "b"])
    assert recalls["text_to_audio.r1"] == pytest.approx(2 / 3)  # text 0 finds clip 1 first
    assert recalls["text_to_audio_by_caption.r1"] == 1.0  # clip 1 is also captioned 'a'
    assert recalls["audio_to_text.r1"] == 1.0
    assert recalls["text_to_audio.r10"] == recalls["text_to_audio_by_caption.r10"] == 1.0


def test_clap_fine_tune_starts_from_the_init_checkpoint(tmp_path):
    """--init: a fine-tune with a vanishing learning rate keeps the init's weights, records the init's
    version in the MANIFEST, and a config that differs from the init's is refused."""
    import pytest
    import torch

    from services.checkpoints import shipped
    from services.clap import MiniClapConfig, MiniClapModel
    from services.manifest import checkpoint_version
    from training.train_clap import train_clap

    kwargs = dict(steps=1, batch_size=8, n_clips=32, eval_n=12, lr=1e-12, work_dir=tmp_path / "run", command="test", init_dir=shipped("clap"))
    train_clap(tmp_path / "out", **kwargs)
    assert verify_manifest(tmp_path / "out")["training"]["init"] == checkpoint_version(shipped("clap"))
    init, tuned = (dict(MiniClapModel.from_pretrained(d).named_parameters()) for d in (shipped("clap"), tmp_path / "out"))
    assert init.keys() == tuned.keys() and all(torch.allclose(init[k], tuned[k], atol=1e-6) for k in init)  # batch-norm statistics move; weights do not
    with pytest.raises(ValueError, match="differs from the one of the --init CLAP"):
        train_clap(tmp_path / "out2", config=MiniClapConfig(audio_layers=1), **{**kwargs, "work_dir": tmp_path / "run2"})
