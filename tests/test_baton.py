"""BATON fine-tuning: the objective's two properties BATON relies on, and `train_baton` end to end at
tiny size, on the mini layout and on a real TANGO layout converted by `tta convert-tango`."""

from __future__ import annotations

import json
import re

import pytest
import torch

from services.generator import TangoPipeline
from tests.test_generator import TINY_UNET, tiny_pipeline
from training.train_baton import baton_loss


def _grads(unet, scheduler, z, hidden, mask, weight, is_pretrain, beta):
    unet.zero_grad(set_to_none=True)
    loss, _ = baton_loss(unet, scheduler, z, hidden, mask, weight, is_pretrain, beta, torch.Generator().manual_seed(0))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def unet_batch():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from training.train_generator import SCHEDULER

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)
    c, (h, w) = TINY_UNET["in_channels"], TINY_UNET["sample_size"]
    z = torch.randn(4, c, h, w)
    hidden = torch.randn(4, 5, TINY_UNET["cross_attention_dim"])
    mask = torch.ones(4, 5, dtype=torch.bool)
    is_pretrain = torch.tensor([True, True, False, False])
    return unet, DDPMScheduler(**SCHEDULER), z, hidden, mask, is_pretrain


def test_a_clip_with_r_zero_contributes_no_gradient(unet_batch):
    unet, sched, z, hidden, mask, pre = unet_batch
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])
    g = _grads(unet, sched, z, hidden, mask, weight, pre, beta=0.25)
    z2, h2 = z.clone(), hidden.clone()
    z2[3], h2[3] = torch.randn_like(z[3]) * 5, torch.randn_like(hidden[3])  # anything at all for the rejected clip
    assert torch.equal(g, _grads(unet, sched, z2, h2, mask, weight, pre, beta=0.25))
    z2[2] = torch.randn_like(z[2]) * 5  # an accepted clip does move the gradient (the check can fail)
    assert not torch.allclose(g, _grads(unet, sched, z2, h2, mask, weight, pre, beta=0.25))
    # r scales its clip's pull: r = 0.5 on both feedback clips halves the feedback term's gradient
    only_fb = _grads(unet, sched, z, hidden, mask, torch.tensor([1.0, 1.0, 1.0, 1.0]), pre, beta=0.0)
    half_fb = _grads(unet, sched, z, hidden, mask, torch.tensor([1.0, 1.0, 0.5, 0.5]), pre, beta=0.0)
    torch.testing.assert_close(half_fb, only_fb / 2, rtol=1e-4, atol=1e-7)


def test_position_channels_reach_the_unet(unet_batch):
    """A generator whose UNet takes position channels is fine-tuned with them: a widened copy (zero
    weights on the new inputs) gives the same loss, and the new input weights get a gradient."""
    from training.train_generator import widen_unet

    unet, sched, z, hidden, mask, pre = unet_batch
    wide = widen_unet(unet, TINY_UNET["in_channels"] + 2, TINY_UNET["cross_attention_dim"] + 4)
    args = (sched, z, hidden, mask, torch.ones(4), pre, 0.25)
    loss, _ = baton_loss(unet, *args, torch.Generator().manual_seed(0))
    wide_loss, _ = baton_loss(wide, *args, torch.Generator().manual_seed(0), position_channels=2, text_position_channels=4)
    torch.testing.assert_close(wide_loss, loss)
    wide_loss.backward()
    assert wide.conv_in.weight.grad[:, -2:].abs().sum() > 0
    key = next(m for name, m in wide.named_modules() if name.endswith("attn2.to_k"))
    assert key.weight.grad[:, -4:].abs().sum() > 0


def test_beta_zero_removes_the_pretraining_term(unet_batch):
    unet, sched, z, hidden, mask, pre = unet_batch
    weight = torch.ones(4)
    z2 = z.clone()
    z2[0] = torch.randn_like(z[0]) * 5
    assert torch.equal(_grads(unet, sched, z, hidden, mask, weight, pre, 0.0), _grads(unet, sched, z2, hidden, mask, weight, pre, 0.0))
    assert not torch.allclose(_grads(unet, sched, z, hidden, mask, weight, pre, 0.25), _grads(unet, sched, z2, hidden, mask, weight, pre, 0.25))


def test_a_timeline_generator_is_fine_tuned_with_its_timeline(unet_batch):
    """A generator serving timelines trains with the masks it generates with: encode_set gives a sequence
    caption the same token-by-time visibility generation uses (and a plain caption none), and baton_loss
    hands it to the UNet: an all-visible mask changes nothing, a real one changes the loss."""
    import numpy as np

    from services.text_encoder import MINILM, TextEncoder
    from services.timeline import TimelineAttnProcessor, parse_timeline, token_time_mask
    from training.train_baton import encode_set

    texts = ["a dog barks, then a bell rings", "rain falls"]
    timeline_pipe = tiny_pipeline(TextEncoder.from_pretrained(MINILM, 32), default_timeline=True)
    s = encode_set(timeline_pipe, texts, [np.zeros(100, np.float32)] * 2, np.ones(2, np.float32))
    frames = s.mean.shape[2]
    spans = timeline_pipe.text_encoder.token_spans(texts)
    assert torch.equal(s.visible[0], token_time_mask(spans[0], parse_timeline(texts[0]), frames))
    assert not s.visible[0].all() and s.visible[1].all()
    assert s.padded(s.hidden.shape[1] + 3).visible[:, -3:].all(), "padding tokens stay visible (the key mask hides them)"
    plain = encode_set(tiny_pipeline(TextEncoder.from_pretrained(MINILM, 32)), texts, [np.zeros(100, np.float32)] * 2, np.ones(2, np.float32))
    assert plain.visible.all(), "a generator without timelines trains without them"
    # a clip with its own stored latent needs no waveform: its mean is the latent unscaled, with no spread;
    # the audio rows of the same batch are encoded as before
    z = torch.randn(s.mean.shape[1:])
    mixed = encode_set(timeline_pipe, texts, [None, np.zeros(100, np.float32)], np.ones(2, np.float32), latents=[z, None])
    torch.testing.assert_close(mixed.mean[0].float(), (z / timeline_pipe.vae.config.scaling_factor).half().float())
    assert not mixed.std[0].any()
    torch.testing.assert_close(mixed.mean[1], s.mean[1], rtol=1e-2, atol=1e-3)  # encoded alone rather than in a batch of two
    torch.testing.assert_close(mixed.std[1], s.std[1], rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match=r"a\.flac: its stored latent has shape"):
        encode_set(timeline_pipe, texts, [None, None], np.ones(2, np.float32), latents=[z[:, :-1], z], names=["a.flac", "b.flac"])
    with pytest.raises(ValueError, match="clip 1: neither a waveform nor a stored latent"):
        encode_set(timeline_pipe, texts, [None, None], np.ones(2, np.float32), latents=[z, None])

    unet, sched, z, hidden, mask, pre = unet_batch
    unet.set_attn_processor(TimelineAttnProcessor())
    args = (unet, sched, z, hidden, mask, torch.ones(4), pre, 0.25)
    base, _ = baton_loss(*args, torch.Generator().manual_seed(0))
    visible = torch.ones(4, hidden.shape[1], z.shape[2], dtype=torch.bool)
    torch.testing.assert_close(baton_loss(*args, torch.Generator().manual_seed(0), visible=visible)[0], base, rtol=0, atol=0)
    visible[:, 1:, : z.shape[2] // 2] = False  # the first half of the clip sees only token 0
    assert not torch.allclose(baton_loss(*args, torch.Generator().manual_seed(0), visible=visible)[0], base)


@pytest.fixture(scope="module")
def feedback(tmp_path_factory):
    """A tiny mini-layout generator, an HD dataset it made (simulated labels, and named as made by this init)
    and an RD one (unlabelled, named as made by another generator)."""
    from services.manifest import checkpoint_version
    from services.text_encoder import MINILM, TextEncoder
    from training.annotation import SimulatedAnnotator
    from training.build_dataset import BuildSettings, build_dataset, compose_prompts
    from training.world.oracle import load_oracle

    root = tmp_path_factory.mktemp("baton")
    pipe = tiny_pipeline(TextEncoder.from_pretrained(MINILM, 32))
    pipe.save_pretrained(root / "init")
    prompts = compose_prompts("temporal", 2, seed=0)
    build_dataset(root / "hd", prompts, pipe, BuildSettings(task="temporal", clips_per_prompt=2, seed=0, generator=checkpoint_version(root / "init")), SimulatedAnnotator(load_oracle(), flip_rate=0.5, seed=1), progress=False)
    build_dataset(root / "rd", prompts, pipe, BuildSettings(task="temporal", clips_per_prompt=2, seed=1, generator="tiny@test", label="none"), None, progress=False)
    return root


def test_train_baton_end_to_end_tiny_and_resumes(feedback, tmp_path):
    from services.checkpoints import shipped
    from services.manifest import checkpoint_version, verify_manifest
    from training.train_baton import train_baton

    work, out = tmp_path / "work", tmp_path / "tuned"
    kwargs = dict(hd_dirs=[feedback / "hd"], rd_dirs=[feedback / "rd"], reward_model_dir=shipped("reward"), batch_size=2, n_pretrain=3, work_dir=work, checkpoint_every=2, lr=1e-3, device="cpu", command="test")
    train_baton(feedback / "init", out, steps=3, **kwargs)
    manifest = verify_manifest(out)
    assert manifest["base"]["version"] == checkpoint_version(feedback / "init")
    assert manifest["baton"]["feedback_clips"] == 8 and manifest["baton"]["n_pretrain"] == 3 and manifest["baton"]["steps"] == 3
    assert [d["clips"] for d in manifest["data"]["hd"]] == [4]
    # how the feedback was sampled travels into the MANIFEST
    hd = manifest["data"]["hd"][0]
    assert hd["sampling"] == {"generator": checkpoint_version(feedback / "init"), "steps": None, "guidance_scale": None, "scheduler": None}
    # the init's own clips train on the latents it denoised (no vocoder round trip); another generator's are re-encoded
    assert hd["targets"] == "stored latents" and manifest["data"]["rd"][0]["targets"] == "re-encoded audio"
    from training.build_dataset import load_dataset_records, stored_latents

    stored = stored_latents(feedback / "hd")
    records = load_dataset_records(feedback / "hd")
    assert sorted(stored) == sorted(r.audio for r, _ in records)
    cached = torch.load(work / "latents.pt", weights_only=True)["feedback"]
    scaling = TangoPipeline.from_pretrained(feedback / "init").vae.config.scaling_factor
    for i, (record, _) in enumerate(records):  # HD rows come first, in records order
        torch.testing.assert_close(cached["mean"][i].float(), stored[record.audio].float() / scaling, rtol=1e-3, atol=1e-3)
        assert not cached["std"][i].any(), "a stored sample has no posterior spread"
    assert cached["std"][len(records) :].float().gt(0).all(), "re-encoded clips keep the VAE posterior"
    # RD weights are the shipped reward model's probabilities (near 0 for a random tiny generator's noise)
    rd = manifest["data"]["rd"][0]
    assert rd["reward_model"] == checkpoint_version(shipped("reward")) and rd["clips"] == 4 and 0 <= rd["mean_reward"] < 1
    log = [json.loads(line) for line in (work / "unet" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)
    assert [json.loads(line)["step"] for line in (out / "baton_log.jsonl").read_text().splitlines()] == [1, 2, 3], "the curves ship with the weights"
    init, tuned = TangoPipeline.from_pretrained(feedback / "init"), TangoPipeline.from_pretrained(out)
    changed = [n for n, p in tuned.unet.named_parameters() if not torch.equal(p, dict(init.unet.named_parameters())[n])]
    assert changed, "the UNet was trained"
    assert all(torch.equal(a, b) for a, b in zip(tuned.vae.state_dict().values(), init.vae.state_dict().values())), "the VAE is frozen"
    assert tuned.generate("a dog barks", seed=0, steps=2).waveforms.shape == (1, 1, 4096)
    assert manifest["metrics"] == {} and manifest["evaluation"] is None
    # asking for more steps resumes from the saved state (step 3), reusing the cached latents; --eval-n
    # puts the generator evaluation's metrics into the MANIFEST
    train_baton(feedback / "init", out, steps=5, eval_n=1, **kwargs)
    log = [json.loads(line) for line in (work / "unet" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    manifest = verify_manifest(out)
    assert manifest["evaluation"]["prompts_per_task"] == 1
    assert {"single.presence", "integrity.accuracy", "temporal.accuracy", "roundtrip.presence_f1"} <= set(manifest["metrics"])


def test_hardest_prompts_keeps_each_sets_least_accepted_prompts():
    import numpy as np

    from training.train_baton import hardest_prompts

    prompts = ["easy", "easy", "hard", "hard", "mid", "mid", "never", "never"]
    labels = np.array([1, 1, 0, 1, 1, 1, 0, 0], np.float32)
    assert hardest_prompts(prompts, labels, 0.5).tolist() == [False, False, True, True, False, False, True, True]
    assert hardest_prompts(prompts, labels, 1.0).all()
    # a reward head's scores rank the same way, whatever their scale
    assert hardest_prompts(prompts, labels * 0.3 + 0.1, 0.25).tolist() == [False] * 6 + [True, True]
    assert hardest_prompts(prompts, labels, 0.01).sum() == 2, "at least one prompt survives"
    with pytest.raises(ValueError, match="share"):
        hardest_prompts(prompts, labels, 0.0)


def test_feedback_clips_cut_to_the_hardest_prompts_say_so(feedback):
    from training.build_dataset import load_dataset_records
    from training.train_baton import feedback_clips

    records = load_dataset_records(feedback / "hd")
    prompts, paths, r, described, _ = feedback_clips([feedback / "hd"], [], None, hard_prompt_share=0.5)
    every = {q: [float(x.label) for x, _ in records if x.prompt == q] for q in {x.prompt for x, _ in records}}
    assert len(set(prompts)) == 1 and len(prompts) == 2
    assert sum(every[prompts[0]]) == min(sum(v) for v in every.values()), "the kept prompt is the least accepted"
    assert described["hd"][0]["clips"] == 4 and described["hd"][0]["hardest_prompts"] == {"share": 0.5, "prompts": 1, "clips": 2, "mean_r": float(r.mean())}


def test_train_baton_refuses_missing_data(feedback, tmp_path):
    from training.train_baton import train_baton

    with pytest.raises(ValueError, match="nothing to train on"):
        train_baton(feedback / "init", tmp_path / "x", beta=0.0)
    with pytest.raises(ValueError, match="pretrain_teacher_share"):
        train_baton(feedback / "init", tmp_path / "x", pretrain_teacher_share=1.5)
    with pytest.raises(ValueError, match="needs a generator with clause channels"):
        train_baton(feedback / "init", tmp_path / "x", clause_only_rate=0.5, work_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="needs a reward model"):
        train_baton(feedback / "init", tmp_path / "x", rd_dirs=[feedback / "rd"], work_dir=tmp_path / "w")


def test_the_pretraining_term_alone_trains_and_is_its_own_row(feedback, tmp_path):
    """No feedback directories and beta > 0: the ablation row that tells what feedback itself adds."""
    from services.manifest import verify_manifest
    from training.eval_baton import row_name
    from training.train_baton import train_baton

    out = tmp_path / "pretrain-only"
    train_baton(feedback / "init", out, beta=1.0, batch_size=2, n_pretrain=3, steps=2, work_dir=tmp_path / "w", lr=1e-3, device="cpu", command="test")
    manifest = verify_manifest(out)
    assert manifest["baton"]["feedback_clips"] == 0 and manifest["data"] == {"hd": [], "rd": []}
    log = [json.loads(line) for line in (out / "baton_log.jsonl").read_text().splitlines()]
    assert all(r["feedback"] == 0 and r["pretrain"] > 0 for r in log)
    init, tuned = TangoPipeline.from_pretrained(feedback / "init"), TangoPipeline.from_pretrained(out)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.unet.parameters(), init.unet.parameters())), "the UNet was trained"
    assert row_name(manifest) == "pretrain"


def test_clause_only_rows_teach_the_clause_channels(feedback, tmp_path):
    """On a generator widened for clause channels (zero weights on them), pretraining rows whose token states
    are hidden train the new key/value columns."""
    from services.manifest import checkpoint_version, verify_manifest
    from training.train_baton import train_baton

    width = TangoPipeline.from_pretrained(feedback / "init").text_encoder.hidden_size
    train_baton(feedback / "init", tmp_path / "tuned", beta=1.0, clause_channels=True, clause_only_rate=1.0, batch_size=2, n_pretrain=3, steps=2, work_dir=tmp_path / "w", lr=1e-3, device="cpu", command="test")
    tuned = TangoPipeline.from_pretrained(tmp_path / "tuned")
    new_columns = [p[:, width:] for n, p in tuned.unet.named_parameters() if n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]
    assert len(new_columns) > 1 and all(c.shape[1] == width and c.abs().sum() > 0 for c in new_columns), "the clause channels' weights moved off zero"
    first = verify_manifest(tmp_path / "tuned")
    assert tuned.config.clause_channels and first["baton"]["widened_for_clause_channels"] and "init" not in first
    # a fine-tune of that fine-tune names the same base, the fine-tune it started from, and the widening done before it
    train_baton(tmp_path / "tuned", tmp_path / "again", beta=1.0, clause_only_rate=1.0, batch_size=2, n_pretrain=3, steps=1, work_dir=tmp_path / "w2", lr=1e-3, device="cpu", command="test again")
    again = verify_manifest(tmp_path / "again")
    assert again["base"] == first["base"] and again["base"]["version"] == checkpoint_version(feedback / "init")
    assert again["init"]["version"] == checkpoint_version(tmp_path / "tuned") and again["init"]["command"] == "test"
    assert again["baton"]["widened_for_clause_channels"] and again["baton"]["clause_channels"]


def test_teacher_worded_pretraining_clips_keep_their_sounds():
    """A teacher-worded pretraining clip is the same audio as without the option, under a caption that names
    its events by their teacher words only; the share is per clip."""
    import numpy as np

    from tests.test_teacher_words import TEACHER
    from training.train_baton import world_clips
    from training.world.captions import mentioned_events

    plain_captions, plain_audio = world_clips(40, 0)
    captions, audio = world_clips(40, 0, teacher_share=0.5, teacher_words=TEACHER)
    assert all(np.array_equal(a, b) for a, b in zip(audio, plain_audio))
    worded = [(c, p) for c, p in zip(captions, plain_captions) if c != p]
    assert 10 <= len(worded) <= 30, len(worded)
    for caption, plain in worded:
        assert mentioned_events(caption) == [], f"a training phrasing left in {caption!r}"
        assert set(re.findall(r"[a-z]+oid", caption)) == {TEACHER[e][0] for e in mentioned_events(plain)}
    assert world_clips(40, 0, teacher_share=1.0, teacher_words=TEACHER)[0] != plain_captions


def test_single_event_pretraining_clips_hold_no_composition():
    """--pretrain-task single: every pretraining clip is one event under its caption, so the pretraining term
    holds none of the compositions the integrity and temporal feedback asks for."""
    from training.train_baton import world_clips
    from training.world.captions import mentioned_events

    captions, audio = world_clips(30, 0, task="single")
    assert len(captions) == len(audio) == 30
    assert all(len(mentioned_events(c)) == 1 for c in captions), captions
    mixed, _ = world_clips(30, 0)
    assert any(len(mentioned_events(c)) > 1 for c in mixed)


def test_the_same_command_fine_tunes_a_converted_tango(feedback, tmp_path):
    from services.tango_convert import convert_tango
    from tests.test_tango_convert import TINY_T5, write_tango_dir
    from tests.test_tango_convert import TINY_UNET as TANGO_TINY_UNET
    from training.train_baton import train_baton

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "unet.json").write_text(json.dumps(TANGO_TINY_UNET))
    (configs / "t5.json").write_text(json.dumps(TINY_T5))
    from services.text_encoder import MINILM, resolve_location

    converted = tmp_path / "tango-ours"
    convert_tango(write_tango_dir(tmp_path / "tango"), converted, unet_config=configs / "unet.json", text_encoder_config=configs / "t5.json", tokenizer=resolve_location(MINILM))
    out = tmp_path / "tango-tuned"
    train_baton(converted, out, hd_dirs=[feedback / "hd"], batch_size=1, n_pretrain=1, steps=2, work_dir=tmp_path / "w", device="cpu", command="test")
    tuned = TangoPipeline.from_pretrained(out)
    assert tuned.config.text_encoder == TangoPipeline.from_pretrained(converted).config.text_encoder, "only the UNet changed"
    assert tuned.generate("a dog barks", seed=0, steps=1, duration_s=0.5).waveforms.shape[0] == 1


def test_pick_metrics_count_every_candidate_at_n1():
    """N=1 is the mean over all K candidates (each is one plain generation), not the first one alone."""
    import numpy as np

    from training.eval_baton import pick_metrics
    from training.eval_rerank import CandidateScores

    labels = np.array([[0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    reward = np.array([[0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.8, 0.3], [0.5, 0.4, 0.3, 0.2]])
    clap = np.array([[0.1, 0.9, 0.2, 0.3], [0.9, 0.2, 0.1, 0.3], [0.5, 0.4, 0.3, 0.2]])
    m = pick_metrics(CandidateScores(labels=labels, clap=clap, reward=reward))
    assert m["n1"] == pytest.approx(5 / 12)  # the first candidates alone would say 0
    assert m["best_of_4"] == pytest.approx(1 / 3)  # picks 0 (rejected), 2 (accepted), 0 (rejected)
    assert m["best_of_4_clap"] == pytest.approx(1 / 3)  # picks 1 (accepted), 0 (rejected), 0 (rejected)
    assert m["n1_se"] == pytest.approx(np.std([0.5, 0.75, 0.0], ddof=1) / np.sqrt(3))


def test_paired_deltas_cancel_prompt_difficulty():
    """A row that gains the same on every prompt has a paired standard error of zero, however much the
    prompts differ; the base row gets none."""
    import numpy as np

    from training.eval_baton import add_paired_deltas, baton_markdown

    base = np.array([0.0, 0.25, 1.0, 0.5])
    rows = {name: {"integrity.n1": float(v.mean()), "temporal.n1": 0.0, "clap.n1": 0.5, "single.n1": 1.0, "integrity.best_of_4": 0.0, "temporal.best_of_4": 0.0, "clap.best_of_4": 0.5} for name, v in (("base", base), ("hd", base + 0.25), ("rd", base[::-1]))}
    add_paired_deltas(rows, {"base": {"integrity": base}, "hd": {"integrity": base + 0.25}, "rd": {"integrity": base[::-1]}})
    assert "integrity.n1_delta_se" not in rows["base"]
    assert rows["hd"]["integrity.n1_delta_se"] == pytest.approx(0.0)
    assert rows["rd"]["integrity.n1_delta_se"] == pytest.approx(np.std(base[::-1] - base, ddof=1) / 2)
    assert "(+25.0 ±0.0)" in baton_markdown(rows).splitlines()[3]


def test_cli_eval_baton_prints_the_table_from_every_candidate(feedback, tmp_path):
    """`tta eval baton` at tiny size: rows named as given, the same generator twice gives deltas of zero,
    and --out writes the report and the training curves of a fine-tuned row."""
    from click.testing import CliRunner

    from training.eval_generator import uses_novel_words
    from training.eval_rerank import heldout_task_specs
    from training.train_baton import train_baton
    from tta.cli import main

    tuned = tmp_path / "tuned"
    train_baton(feedback / "init", tuned, hd_dirs=[feedback / "hd"], batch_size=1, n_pretrain=1, steps=2, work_dir=tmp_path / "w", device="cpu", command="test")
    work, out = tmp_path / "eval", tmp_path / "report"
    args = ["eval", "baton", "--model", f"base={feedback / 'init'}", "--model", f"hd={feedback / 'init'}", "--model", f"rd={tuned}", "--n", "2", "--work-dir", str(work), "--out", str(out), "--device", "cpu", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = json.loads(result.output.strip().splitlines()[-1])
    for key in ("integrity.n1", "integrity.n1_se", "temporal.best_of_4", "clap.n1", "single.n1"):
        assert table[f"hd.{key}"] == table[f"base.{key}"], key
    assert {"rd.temporal.n1", "rd.single.n1"} <= set(table)
    for task in ("integrity", "temporal"):  # the split by event wording partitions the same prompts
        novel = [uses_novel_words(s) for s in heldout_task_specs(task, 2)]
        parts = [(table[f"base.{task}.n1_{split}"], count) for split, count in (("novel_words", sum(novel)), ("seen_words", 2 - sum(novel))) if count]
        assert sum(v * c for v, c in parts) / 2 == pytest.approx(table[f"base.{task}.n1"])
    main_table, by_wording = (out / "report.md").read_text().split("\n\n", 1)
    lines = main_table.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["base", "hd", "rd"] * 3
    assert [line.split("|")[1].strip() for line in by_wording.strip().splitlines()[4:]] == ["base", "hd", "rd"]
    assert "best-of-4 by CLAP" in lines[-1] and table["hd.temporal.best_of_4_clap"] == table["base.temporal.best_of_4_clap"]
    assert "(+0.0)" in lines[3] and (out / "training.png").stat().st_size > 0
    # tta eval paired: the same generator differs by nothing; another row by its table delta, pooled over samples
    def paired(*args: str) -> dict:
        result = CliRunner().invoke(main, ["eval", "paired", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    assert all(r["delta"] == 0 and r["se"] == 0 and r["prompts"] == 2 for r in paired("--a", str(work / "hd"), "--b", str(work / "base")).values())
    twice = paired("--a", str(work / "rd"), "--b", str(work / "base"), "--a", str(work / "rd"), "--b", str(work / "base"))
    for task in ("integrity", "temporal"):
        assert twice[task]["delta"] == pytest.approx(table[f"rd.{task}.n1"] - table[f"base.{task}.n1"]) and twice[task]["prompts"] == 4
    uneven = CliRunner().invoke(main, ["eval", "paired", "--a", str(work / "rd"), "--a", str(work / "hd"), "--b", str(work / "base")])
    assert uneven.exit_code != 0 and "one --b per --a" in uneven.output
    # tta eval picks: pickers compared on the same cached candidates; CLAP's best of 4 over the mean is the table's
    sets = [str(work / "rd" / f"{task}-n2-k4") for task in ("integrity", "temporal")]
    picks = CliRunner().invoke(main, ["eval", "picks", *[a for d in sets for a in ("--candidates", d)], "--a", "clap", "--b", "random", "--at", "4", "--json"])
    assert picks.exit_code == 0, picks.output
    for task, r in json.loads(picks.output.strip().splitlines()[-1]).items():
        assert r["delta"] == pytest.approx(table[f"rd.{task}.best_of_4_clap"] - table[f"rd.{task}.n1"]) and r["prompts"] == 2
    # --a-clap: the same picker under a CLAP given by directory (here the shipped one again, scored apart)
    from services.checkpoints import shipped

    same = CliRunner().invoke(main, ["eval", "picks", "--candidates", sets[1], "--a", "clap_timeline", "--a-clap", str(shipped("clap")), "--b", "clap_timeline", "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.output.strip().splitlines()[-1])["temporal"]["delta"] == 0
    same = CliRunner().invoke(main, ["eval", "picks", "--candidates", sets[1], "--a", "reward", "--a-reward", str(shipped("reward")), "--b", "reward", "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.output.strip().splitlines()[-1])["temporal"]["delta"] == 0
    # --a-known-words: the judges read the prompts in a known wording; the same wording on both sides differs by nothing
    wording = str(shipped("wording"))
    same = CliRunner().invoke(main, ["eval", "picks", "--candidates", sets[1], "--a", "clap_timeline", "--a-known-words", wording, "--b", "clap_timeline", "--b-known-words", wording, "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.output.strip().splitlines()[-1])["temporal"]["delta"] == 0
    missing = CliRunner().invoke(main, ["eval", "picks", "--candidates", sets[1], "--a", "clap", "--a-known-words", str(work), "--b", "clap"])
    assert missing.exit_code != 0 and "no known_wording.json" in missing.output
    # --by-wording: the prompts naming an event by a held-out word and the others, pooled apart, partition the whole
    split = CliRunner().invoke(main, ["eval", "picks", *[a for d in sets for a in ("--candidates", d)], "--a", "clap", "--b", "random", "--by-wording", "--json"])
    assert split.exit_code == 0, split.output
    split = json.loads(split.output.strip().splitlines()[-1])
    for task in ("integrity", "temporal"):
        parts = [split[k] for k in (f"{task}, novel words", f"{task}, seen words") if k in split]
        assert sum(r["prompts"] for r in parts) == split[task]["prompts"] == 2
        assert sum(r["delta"] * r["prompts"] for r in parts) / 2 == pytest.approx(split[task]["delta"])
        assert split.get(f"{task}, novel words", {"prompts": 0})["prompts"] == sum(uses_novel_words(s) for s in heldout_task_specs(task, 2))
    unknown = CliRunner().invoke(main, ["eval", "picks", "--candidates", sets[0], "--a", "oracle", "--b", "clap"])
    assert unknown.exit_code != 0 and "no 'oracle' scores" in unknown.output
    # --seed: another sample of the held-out split, cached beside the first
    other = CliRunner().invoke(main, ["eval", "baton", "--model", f"base={feedback / 'init'}", "--n", "2", "--seed", "3", "--work-dir", str(work), "--device", "cpu"])
    assert other.exit_code == 0, other.output
    from training.eval_rerank import heldout_task_prompts
    from training.world.prompts import load_prompt_file

    for task in ("integrity", "temporal"):
        assert load_prompt_file(work / "base" / f"{task}-n2-k4-seed3" / "prompts.jsonl") == heldout_task_prompts(task, 2, 3)
        assert heldout_task_prompts(task, 2, 3) != heldout_task_prompts(task, 2)
    unpaired = CliRunner().invoke(main, ["eval", "paired", "--a", str(work / "hd"), "--b", str(work / "base")])  # base now holds seed 3 too
    assert unpaired.exit_code != 0 and "must hold the same candidate sets" in unpaired.output
    bad = CliRunner().invoke(main, ["eval", "baton", "--model", f"best={tuned}"])
    assert bad.exit_code != 0 and "NAME one of base, pretrain, hd, rd, hd+rd" in bad.output


def test_eval_baton_names_the_served_fine_tune_by_its_data(tmp_path):
    """With no --model, `tta eval baton` compares the shipped base with the served generator, in the row
    its MANIFEST's feedback data names; a served generator that is no fine-tune is just the base."""
    from training.eval_baton import default_rows, row_name

    assert row_name({"data": {"hd": [{"dir": "a"}], "rd": []}}) == "hd"
    assert row_name({"data": {"hd": [], "rd": [{"dir": "b"}]}}) == "rd"
    assert row_name({"data": {"hd": [{"dir": "a"}], "rd": [{"dir": "b"}]}}) == "hd+rd"
    assert row_name({"baton": {"beta": 1.0}, "data": {"hd": [], "rd": []}}) == "pretrain"
    with pytest.raises(ValueError, match="names no HD or RD data"):
        row_name({"data": {"hd": [], "rd": []}})
    base, served = tmp_path / "generator-base", tmp_path / "generator"
    for directory, manifest in ((base, {"training": {}}), (served, {"baton": {"beta": 0.25}, "data": {"hd": [], "rd": [{"dir": "b"}]}})):
        directory.mkdir()
        (directory / "MANIFEST.json").write_text(json.dumps(manifest))
    assert default_rows(base, served) == {"base": base, "rd": served}
    assert default_rows(base, base) == {"base": base}
