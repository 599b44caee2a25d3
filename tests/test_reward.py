"""BATON's reward head (shape, loss), ONNX parity, metrics, per-prompt best-of-N, and the feedback
dataset builder (resume, refusal of a different build) on a tiny generator with the shipped oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.reward import ONNX_NAME, ClapReranker, OnnxRewardHead, RewardHead, RewardHeadConfig, RewardModel, export_onnx, load_reranker, reward_loss
from training.annotation import AnnotationRecord, Provenance
from training.eval_rerank import CandidateScores, pick_accuracy, picked_candidates, rerank_table
from training.train_reward import LabelledClips, request_keys, roc_auc, within_prompt_auc


def test_head_is_batons_mlp_1024_512_1_with_a_sigmoid():
    head = RewardHead(RewardHeadConfig())
    shapes = [tuple(p.shape) for p in head.parameters()]
    assert shapes == [(512, 1024), (512,), (1, 512), (1,)]
    r = head(torch.randn(5, 512), torch.randn(5, 512))
    assert r.shape == (5,) and bool(((r > 0) & (r < 1)).all())


def test_loss_is_binary_cross_entropy_against_the_label():
    torch.manual_seed(0)
    head = RewardHead(RewardHeadConfig(embed_dim=8, hidden_dim=4))
    a, t, y = torch.randn(6, 8), torch.randn(6, 8), torch.tensor([0, 1, 1, 0, 1, 0])
    p = head(a, t)
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert torch.allclose(reward_loss(head, a, t, y), expected, atol=1e-6)
    # the loss pulls the reward toward the label
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    before = reward_loss(head, a, t, y).item()
    for _ in range(20):
        opt.zero_grad()
        reward_loss(head, a, t, y).backward()
        opt.step()
    assert reward_loss(head, a, t, y).item() < before


def test_onnx_head_matches_torch_on_any_batch_size(tmp_path):
    torch.manual_seed(0)
    head = RewardHead(RewardHeadConfig()).eval()
    export_onnx(head, tmp_path / ONNX_NAME)
    session = OnnxRewardHead(tmp_path / ONNX_NAME, "cpu")
    assert session.providers[-1] == "CPUExecutionProvider"
    for n in (1, 3, 17):
        a, t = np.random.default_rng(n).standard_normal((2, n, 512)).astype(np.float32)
        with torch.no_grad():
            want = head(torch.from_numpy(a), torch.from_numpy(t)).numpy()
        assert np.abs(session(a, t) - want).max() < 1e-4


def test_cosine_skip_head_adds_a_learned_multiple_of_the_cosine(tmp_path):
    """`cosine_skip` adds one scalar w (10 at init) times the cosine of the two embeddings to the plain
    MLP's logit; the loss moves w, and the ONNX export keeps the extra term."""
    torch.manual_seed(0)
    plain, skip = RewardHead(RewardHeadConfig(embed_dim=8, hidden_dim=4)), RewardHead(RewardHeadConfig(embed_dim=8, hidden_dim=4, cosine_skip=True))
    skip.mlp.load_state_dict(plain.mlp.state_dict())
    assert [n for n, _ in skip.named_parameters()] == ["cosine_weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    a, t = torch.randn(6, 8), torch.randn(6, 8)
    assert torch.allclose(skip.logits(a, t), plain.logits(a, t) + 10 * torch.nn.functional.cosine_similarity(a, t, dim=-1))
    # clips that match their text (cosine 1) are rejected, the rest accepted: w must shrink
    t = torch.cat([a[:3], -a[3:]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    reward_loss(skip, a, t, y).backward()
    assert skip.cosine_weight.grad > 0
    export_onnx(skip.eval(), tmp_path / ONNX_NAME)
    with torch.no_grad():
        want = skip(a, t).numpy()
    assert np.abs(OnnxRewardHead(tmp_path / ONNX_NAME, "cpu")(a.numpy(), t.numpy()) - want).max() < 1e-5
    assert np.abs(want - plain(a, t).detach().numpy()).max() > 0.01


def test_roc_auc_counts_ordered_pairs_and_ties():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_within_prompt_auc_ignores_how_easy_a_prompt_is():
    prompts = ["easy"] * 4 + ["hard"] * 4
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    # scores that only know the prompt: a high pooled AUC, no use for picking among one prompt's clips
    by_prompt = np.array([0.9] * 4 + [0.1] * 4)
    assert roc_auc(by_prompt, labels) > 0.7 and within_prompt_auc(by_prompt, labels, prompts) == pytest.approx(0.5)
    by_clip = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.3, 0.2])
    assert within_prompt_auc(by_clip, labels, prompts) == pytest.approx(1.0)
    assert np.isnan(within_prompt_auc(by_clip, np.ones(8), prompts)), "no prompt with both labels"


def test_within_prompt_auc_keeps_two_requests_with_one_text_apart(tmp_path):
    """A built data set can hold one prompt text twice (two requests, each with its own candidates):
    best-of-N picks within each, so the metric must too; imported labels group by prompt text."""

    def record(prompt: str, name: str) -> AnnotationRecord:
        return AnnotationRecord(prompt=prompt, audio=name, task="integrity", label=0, annotator="t", provenance=Provenance(source="simulated"))

    built = [("a dog barks, then a bell rings", f"audio/{i:05d}_{k}.flac") for i in (0, 1) for k in (0, 1)]
    imported = [("rain falls", "clip_a.wav"), ("rain falls", "other.wav")]
    rows = built + imported
    clips = LabelledClips([record(p, n) for p, n in rows], [tmp_path / "set" / n for _, n in rows])
    keys = request_keys(clips)
    assert keys[0] == keys[1] != keys[2] == keys[3], "requests 0 and 1 share a text but not their candidates"
    assert keys[4] == keys[5] == "rain falls"
    # request 0 ranks its pair right, request 1 wrong: 0.5; pooled by text the mix would read 0.75
    scores, labels = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.5]), np.array([1, 0, 1, 0, 1, 0])
    assert within_prompt_auc(scores[:4], labels[:4], keys[:4]) == pytest.approx(0.5)
    assert within_prompt_auc(scores[:4], labels[:4], [p for p, _ in built]) == pytest.approx(0.75)


def test_pickers_choose_within_each_prompt_only():
    # prompt 0: the second candidate is right and scores highest; prompt 1: nothing is right but
    # its scores are the largest overall - a picker mixing prompts would pick from it twice
    labels = np.array([[0, 1, 0, 0], [0, 0, 0, 0]])
    scores = np.array([[0.1, 0.9, 0.2, 0.3], [5.0, 6.0, 7.0, 8.0]])
    s = CandidateScores(labels, clap=-scores, reward=scores)
    acc = pick_accuracy(s, 4)
    assert acc == {"random": pytest.approx(1 / 8), "clap": 0.0, "reward": 0.5, "ceiling": 0.5}
    # N=1: every candidate once, so every picker reads the mean (1 right of 8)
    assert pick_accuracy(s, 1) == {"random": pytest.approx(1 / 8), "clap": pytest.approx(1 / 8), "reward": pytest.approx(1 / 8), "ceiling": pytest.approx(1 / 8)}
    # N=2: groups (0, 1) and (2, 3) of each prompt; in prompt 0's first group the reward finds the right one, CLAP not
    assert pick_accuracy(s, 2) == {"random": pytest.approx(1 / 8), "clap": 0.0, "reward": pytest.approx(0.25), "ceiling": pytest.approx(0.25)}
    # which candidate each group's pick is, as an index among the prompt's 4: per prompt, [group (0, 1), group (2, 3)]
    assert picked_candidates(s, "reward", 2).tolist() == [[1, 3], [1, 3]]
    assert picked_candidates(s, "clap", 2).tolist() == [[0, 2], [0, 2]]
    assert picked_candidates(s, "reward", 4).tolist() == [[1], [3]]
    with pytest.raises(ValueError, match="no 'ceiling' scores"):
        picked_candidates(s, "ceiling", 2)
    table = rerank_table({"temporal": s}, (1, 2, 4, 8))
    assert table["temporal.reward.n4"] == 0.5 and "temporal.reward.n8" not in table
    # only prompt 0 has both kinds of candidate: the reward ranks its right one first, CLAP last
    assert table["temporal.reward.within_prompt_auc"] == 1.0 and table["temporal.clap.within_prompt_auc"] == 0.0


class CountingClap:
    """A real mini CLAP that records which clips each embed_audio call saw."""

    def __init__(self, clap) -> None:
        self.clap, self.calls = clap, []
        self.sample_rate, self.embed_dim = clap.sample_rate, clap.embed_dim

    def embed_text(self, texts):
        return self.clap.embed_text(texts)

    def embed_audio(self, waveforms, sample_rate):
        self.calls.append(len(waveforms))
        return self.clap.embed_audio(waveforms, sample_rate)

    def score(self, texts, waveforms, sample_rate):
        return self.clap.score(texts, waveforms, sample_rate)


@pytest.fixture(scope="module")
def tiny_reward_model():
    from services.clap import MiniClap, MiniClapConfig, MiniClapModel
    from services.text_encoder import MINILM, TextEncoder

    torch.manual_seed(0)
    clap = MiniClap(MiniClapModel(MiniClapConfig(channels=[4, 8, 8, 16], audio_layers=1, embed_dim=32)), TextEncoder.from_pretrained(MINILM, 32))
    return RewardModel(CountingClap(clap), RewardHead(RewardHeadConfig(embed_dim=32, hidden_dim=16)))


def test_pipeline_reranks_the_candidates_of_each_prompt_separately(tiny_reward_model):
    from services.pipeline import GeneratedAudio, rank_candidates

    rng = np.random.default_rng(0)
    wav = rng.standard_normal((2, 3, 8000)).astype(np.float32) * 0.1
    tiny_reward_model.clap.calls.clear()
    ranked = []
    for i, prompt in enumerate(["a dog barks", "a bell rings"]):
        audio = GeneratedAudio(waveforms=wav[i], seeds=[10 * i + j for j in range(3)], sample_rate=16000, settings={}, seconds=0.0, batch_waveforms=3)
        ranked.append(rank_candidates(prompt, audio, tiny_reward_model))
    assert tiny_reward_model.clap.calls == [3, 3]  # one prompt's candidates at a time
    for i, r in enumerate(ranked):
        rewards = [c.reward for c in r]
        assert rewards == sorted(rewards, reverse=True)
        own = tiny_reward_model.score(["a dog barks", "a bell rings"][i], wav[i], 16000)
        assert np.allclose(sorted(own, reverse=True), rewards, atol=1e-6)
    # the CLAP baseline reranker follows the same protocol
    assert ClapReranker(tiny_reward_model.clap).score("a dog barks", wav[0], 16000).shape == (3,)


def test_reward_model_directory_round_trip_with_onnx_backend(tiny_reward_model, tmp_path):
    tiny_reward_model.clap.clap.model.save_pretrained(tmp_path / "clap")
    head = RewardHead(RewardHeadConfig(clap="../clap", embed_dim=32, hidden_dim=16))
    head.load_state_dict(tiny_reward_model.head.state_dict())
    head.save_pretrained(tmp_path / "reward")
    export_onnx(head, tmp_path / "reward" / ONNX_NAME)
    wav = np.random.default_rng(1).standard_normal((4, 8000)).astype(np.float32) * 0.1
    torch_rm = RewardModel.from_pretrained(tmp_path / "reward")
    onnx_rm = RewardModel.from_pretrained(tmp_path / "reward", backend="onnx")
    assert onnx_rm.backend == "onnx" and torch_rm.backend == "torch"
    assert np.abs(torch_rm.score("a dog barks", wav, 16000) - onnx_rm.score("a dog barks", wav, 16000)).max() < 1e-4
    assert np.allclose(torch_rm.score("a dog barks", wav, 16000), tiny_reward_model.score("a dog barks", wav, 16000), atol=1e-5)
    with pytest.raises(ValueError, match="unknown backend"):
        RewardModel.from_pretrained(tmp_path / "reward", backend="tensorrt")


def test_load_reranker_serves_the_reward_model_or_clap_cosine(tiny_reward_model, tmp_path):
    tiny_reward_model.clap.clap.model.save_pretrained(tmp_path / "clap")
    wav = np.random.default_rng(2).standard_normal((3, 8000)).astype(np.float32) * 0.1
    clap, directory = load_reranker("clap", tmp_path / "clap")
    assert isinstance(clap, ClapReranker) and directory == tmp_path / "clap" and clap.backend == "clap-cosine"
    expected = clap.clap.score(["a bell rings"] * 3, wav, 16000)
    assert np.allclose(clap.score("a bell rings", wav, 16000), expected, atol=1e-6)
    assert np.all(np.abs(expected) <= 1 + 1e-5)  # a cosine, not a probability
    with pytest.raises(ValueError, match="reranker must be one of reward, clap"):
        load_reranker("laion", tmp_path / "clap")
    # by stretch: a placed timeline also judges each clause on its own stretch; without one, the whole clip as before
    from services.reward import ByStretch, judged_by_stretch

    staged, _ = load_reranker("clap", tmp_path / "clap", by_stretch=True)
    assert isinstance(staged, ByStretch) and staged.backend == "clap-cosine+by-stretch" and staged.clap is staged.reranker.clap
    prompt, clauses = "a dog barks, then a bell rings", ["a dog barks", "a bell rings"]
    np.testing.assert_allclose(staged.score(prompt, wav, 16000), clap.score(prompt, wav, 16000), atol=1e-6)
    by_stretch = staged.score(prompt, wav, 16000, timeline=clauses)
    np.testing.assert_allclose(by_stretch, judged_by_stretch(clap.score_pairs, prompt, wav, 16000, clauses), atol=1e-6)
    assert not np.allclose(by_stretch, clap.score(prompt, wav, 16000), atol=1e-4)
    # in known words (the shipped wording): the judge reads the nearest training phrasing of each close clause
    from services.checkpoints import shipped
    from services.wording import InKnownWords

    worded, _ = load_reranker("clap", tmp_path / "clap", by_stretch=True, wording=shipped("wording"))
    assert isinstance(worded.reranker, InKnownWords) and worded.backend == "clap-cosine+known-words+by-stretch"
    np.testing.assert_allclose(worded.score("a kitty mews", wav, 16000), clap.score("a cat meows", wav, 16000), atol=1e-6)


def test_build_dataset_labels_resumes_and_refuses_another_build(tmp_path):
    from services.generator import TangoPipeline  # noqa: F401  (tiny pipeline comes from the generator tests)
    from services.text_encoder import MINILM, TextEncoder
    from tests.test_generator import tiny_pipeline
    from training.annotation import SimulatedAnnotator, read_annotations
    from training.build_dataset import BuildSettings, DatasetError, build_dataset, compose_prompts, load_dataset_records
    from training.world.oracle import load_oracle

    pipe = tiny_pipeline(TextEncoder.from_pretrained(MINILM, 32))
    prompts = compose_prompts("temporal", 3, seed=0)
    assert all(len(p.events) == 3 and p.relation == "sequence" for p in prompts)
    settings = BuildSettings(task="temporal", clips_per_prompt=2, seed=0, generator="tiny@test")
    annotator = SimulatedAnnotator(load_oracle(), flip_rate=0.5, seed=0)
    summary = build_dataset(tmp_path / "ds", prompts, pipe, settings, annotator, prompts_per_chunk=2, progress=False)
    assert summary["clips"] == 6 and summary["prompts"] == 3 and 0 <= summary["accept_rate"] <= 1
    records = read_annotations(tmp_path / "ds" / "records.jsonl")
    assert [r.audio for r in records] == [f"audio/{i:05d}_{j}.flac" for i in range(3) for j in range(2)]
    assert all((tmp_path / "ds" / r.audio).is_file() for r in records)
    assert len(load_dataset_records(tmp_path / "ds")) == 6
    # a rerun skips finished chunks: remove one chunk and only that one is made again, identically
    before = (tmp_path / "ds" / "audio" / "00002_1.flac").read_bytes()
    (tmp_path / "ds" / "parts" / "00001.clips.jsonl").unlink()
    (tmp_path / "ds" / "audio" / "00002_1.flac").unlink()
    mtime = (tmp_path / "ds" / "audio" / "00000_0.flac").stat().st_mtime_ns
    build_dataset(tmp_path / "ds", prompts, pipe, settings, annotator, prompts_per_chunk=2, progress=False)
    assert (tmp_path / "ds" / "audio" / "00002_1.flac").read_bytes() == before
    assert (tmp_path / "ds" / "audio" / "00000_0.flac").stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "ds" / "summary.json").read_text())["clips"] == 6
    # another build into the same directory is refused, naming what differs
    with pytest.raises(DatasetError, match="clips_per_prompt"):
        build_dataset(tmp_path / "ds", prompts, pipe, BuildSettings(task="temporal", clips_per_prompt=3, seed=0, generator="tiny@test"), annotator, progress=False)
    with pytest.raises(DatasetError, match="do not fit task 'temporal'"):
        build_dataset(tmp_path / "ds2", compose_prompts("integrity", 2), pipe, settings, annotator, progress=False)
    # reword: the generator gets other words (a served rewrite stage), the records keep the prompt as written
    first = prompts[:1]
    reworded = BuildSettings(task="temporal", clips_per_prompt=2, seed=0, generator="tiny@test", generator_wording="wording@test")
    build_dataset(tmp_path / "rw", first, pipe, reworded, annotator, progress=False, reword=lambda ps: [prompts[1].prompt for _ in ps])
    assert [r.prompt for r in read_annotations(tmp_path / "rw" / "records.jsonl")] == [first[0].prompt] * 2
    alone = pipe.generate([prompts[1].prompt], num_candidates=2, seed=[0]).waveforms[0]
    from services.audio import read_audio

    assert np.abs(read_audio(tmp_path / "rw" / "audio" / "00000_0.flac", pipe.sample_rate) - alone[0]).max() < 1e-3
    with pytest.raises(DatasetError, match="generator_wording"):
        build_dataset(tmp_path / "rw", first, pipe, BuildSettings(task="temporal", clips_per_prompt=2, seed=0, generator="tiny@test"), annotator, progress=False)


def test_cli_eval_rerank_refuses_candidates_cached_for_another_generator(tmp_path):
    """Cached candidates from another generator version are never mixed in: a clear error, no traceback."""
    from click.testing import CliRunner

    from tta.cli import main

    cached = tmp_path / "integrity-n2-k2"
    cached.mkdir()
    (cached / "dataset.json").write_text(json.dumps({"task": "integrity", "generator": "generator@000000000000"}))
    result = CliRunner().invoke(main, ["eval", "rerank", "--n", "2", "--k", "2", "--work-dir", str(tmp_path)])
    assert result.exit_code != 0 and "pass another --work-dir" in result.output and "generator@000000000000" in result.output
    assert "Traceback" not in result.output


def test_the_by_stretch_picker_judges_each_clause_on_its_own_stretch():
    """`tta eval rerank`'s *_timeline pickers: a candidate generated with a timeline scores (whole clip + its
    worst clause on that clause's stretch alone) / 2; without one (or when the prompt's clauses do not match
    the stretches) its whole-clip score."""
    from services.reward import stretch_only
    from training.eval_rerank import timeline_scores

    wav = np.arange(2 * 9, dtype=np.float32).reshape(2, 9) + 1
    np.testing.assert_array_equal(stretch_only(wav, 1, 3), [[0, 0, 0, 4, 5, 6, 0, 0, 0], [0, 0, 0, 13, 14, 15, 0, 0, 0]])
    seen = []

    def loudness_of_text(texts, waveforms, sample_rate):  # a transparent scorer: what it was asked, and a number
        seen.append((texts[0], np.flatnonzero(waveforms[0]).tolist()))
        return waveforms.sum(-1) / 100

    prompt = "a dog barks, then a bell rings"
    scores = timeline_scores(loudness_of_text, prompt, wav, 16000, stretches=2)
    assert [t for t, _ in seen] == [prompt, "a dog barks", "a bell rings"]
    assert seen[1][1] == [0, 1, 2, 3] and seen[2][1] == [4, 5, 6, 7, 8], "each clause hears its own stretch only"
    np.testing.assert_allclose(scores, (wav.sum(-1) + wav[:, :4].sum(-1)) / 100 / 2)
    seen.clear()
    for stretches, text in ((0, prompt), (3, prompt), (2, "a dog barks")):  # no timeline; 2 clauses for 3 stretches; no clauses
        np.testing.assert_allclose(timeline_scores(loudness_of_text, text, wav, 16000, stretches), wav.sum(-1) / 100)
    assert len(seen) == 3, "whole clip only"


def test_a_head_refuses_a_clap_other_than_the_one_it_was_trained_on(tmp_path):
    """The shipped head loads with the shipped CLAP beside it; give the same place another CLAP (here the same
    weights under another MANIFEST, so another version) and loading says which CLAP the head needs."""
    import shutil

    from services.checkpoints import shipped
    from services.modeling import CheckpointError

    shutil.copytree(shipped("reward"), tmp_path / "reward")
    shutil.copytree(shipped("clap"), tmp_path / "clap")
    assert RewardModel.from_pretrained(tmp_path / "reward").clap.embed_dim == 512
    manifest = json.loads((tmp_path / "clap" / "MANIFEST.json").read_text())
    (tmp_path / "clap" / "MANIFEST.json").write_text(json.dumps({**manifest, "command": "another training run"}))
    with pytest.raises(CheckpointError, match="trained on the embeddings of clap@"):
        RewardModel.from_pretrained(tmp_path / "reward")
