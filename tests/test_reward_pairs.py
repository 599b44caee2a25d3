"""World pairs for reward pretraining: labels follow BATON's rule on ground truth, prompts stay off the
held-out set, the chunk cache resumes, and pretraining on pairs teaches the head to rank one prompt's clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.annotation import AnnotationRecord, Provenance
from training.reward_pairs import PAIR_TASKS, WorldPairs, build_world_pairs, candidate_prompts, truth_label
from training.world import captions as cap
from training.world.clips import EventTruth, has_heldout_pair, make_clip
from training.world.prompts import PromptSpec


def _truth(*events: tuple[str, float]) -> list[EventTruth]:
    return [EventTruth(event=e, onset=t, offset=t + 0.5) for e, t in events]


def test_truth_label_checks_order_only_for_three_event_sequences():
    clip = _truth(("dog_bark", 0.1), ("bell", 1.5), ("rain", 2.8))
    assert truth_label(clip, PromptSpec(prompt="p", events=["dog_bark", "bell", "rain"], relation="sequence")) == 1
    assert truth_label(clip, PromptSpec(prompt="p", events=["bell", "dog_bark", "rain"], relation="sequence")) == 0
    # two of the three events: the third is an unprompted event
    assert truth_label(clip, PromptSpec(prompt="p", events=["dog_bark", "bell"], relation="sequence")) == 0
    two = _truth(("dog_bark", 0.1), ("bell", 1.5))
    # integrity prompts ask for presence: the order they name does not matter
    assert truth_label(two, PromptSpec(prompt="p", events=["bell", "dog_bark"], relation="sequence")) == 1
    assert truth_label(two, PromptSpec(prompt="p", events=["bell", "siren"], relation="sequence")) == 0


@pytest.mark.parametrize("index", range(6))
def test_candidate_prompts_are_the_caption_and_labelled_variations(index):
    task = PAIR_TASKS[index % 2]
    clip = make_clip(1, "train", 3_000_000 + index, task=task)
    prompts = candidate_prompts(clip.spec, np.random.default_rng(index))
    assert prompts[0].prompt == clip.truth.caption and prompts[0].events == clip.spec.events
    labels = [truth_label(clip.truth.events, p) for p in prompts]
    assert labels[:2] == [1, 1]  # its caption, and its events phrased anew
    assert all(not has_heldout_pair(p.events) for p in prompts)
    heldout_words = [f for f in cap.heldout_fragments() if len(f) > 6]
    assert not any(f in p.prompt for p in prompts[1:] for f in heldout_words)
    if len(prompts) == 5:  # nothing filtered out: reorder, swap one, drop or add one
        assert labels[2:] == ([1, 0, 0] if task == "integrity" else [0, 0, 0])


class TinyClap:
    """Deterministic 8-d embeddings (no model): enough to exercise the cache and the text table."""

    embed_dim, sample_rate = 8, 16000

    def embed_audio(self, waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        x = np.stack([np.abs(np.fft.rfft(w))[1:9] for w in waveforms])
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        x = np.array([[len(t), t.count(" "), t.count("then"), 1, 0, 0, 0, 0] for t in texts], dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_world_pairs_are_cached_per_chunk_and_resume(tmp_path):
    pairs = build_world_pairs(5, TinyClap(), None, tmp_path, tag="test", chunk=2, progress=False)
    assert pairs.audio_emb.shape == (5, 8) and len(pairs.text) == len(pairs) == len(pairs.clip)
    assert sorted(set(pairs.clip.tolist())) == list(range(5)) and set(pairs.label.tolist()) == {0.0, 1.0}
    parts = sorted(tmp_path.glob("pairs-test-*.npz"))
    assert len(parts) == 3
    parts[1].unlink()
    again = build_world_pairs(5, TinyClap(), None, tmp_path, tag="test", chunk=2, progress=False)
    assert again.text == pairs.text and np.array_equal(again.clip, pairs.clip) and np.allclose(again.audio_emb, pairs.audio_emb)
    assert again.embed_texts(TinyClap()).text_emb.shape == (len(again), 8)


def _synthetic_world(rng: np.random.Generator, classes: int = 6, dim: int = 16):
    """Audio of class a and text of class b (separate random directions); accepted iff a == b."""
    u, v = rng.standard_normal((classes, dim)), rng.standard_normal((classes, dim))

    def audio(a):
        return (u[a] + 0.3 * rng.standard_normal(dim)).astype(np.float32)

    return u, v, audio


def test_pretraining_on_pairs_teaches_the_head_to_rank_a_prompts_clips(tmp_path):
    from training.train_reward import LabelledClips, train_reward

    rng = np.random.default_rng(0)
    classes, dim = 6, 16
    _, v, audio = _synthetic_world(rng, classes, dim)
    # labelled generations: each prompt's clips match it with a prompt-specific probability (its difficulty)
    records, audio_emb, text_emb = [], [], []
    for i in range(60):
        b, p_match = i % classes, rng.uniform(0.1, 0.9)
        for j in range(5):
            a = b if rng.random() < p_match else int(rng.integers(classes))
            label = int(a == b)
            records.append(AnnotationRecord(prompt=f"prompt {i}", audio=f"{i}_{j}.flac", task="integrity", label=label, annotator="test", provenance=Provenance(source="simulated", oracle_label=label)))
            audio_emb.append(audio(a))
            text_emb.append(v[b].astype(np.float32))
    clips = LabelledClips(records, [tmp_path / r.audio for r in records], np.stack(audio_emb), np.stack(text_emb))
    # world pairs: clips heard against their own class and against others
    pair_audio = np.stack([audio(a) for a in range(classes) for _ in range(50)])
    clip_class = np.repeat(np.arange(classes), 50)
    clip_idx = np.repeat(np.arange(len(pair_audio)), 2)
    text_class = np.stack([clip_class, (clip_class + rng.integers(1, classes, len(clip_class))) % classes], 1).ravel()
    pairs = WorldPairs(pair_audio, clip_idx, [f"class {c}" for c in text_class], (clip_class[clip_idx] == text_class).astype(np.float32), v[text_class].astype(np.float32))

    torch.manual_seed(0)
    plain = train_reward(clips, None, tmp_path / "clap", tmp_path / "plain", epochs=5, seed=0)
    pretrained = train_reward(clips, None, tmp_path / "clap", tmp_path / "pre", epochs=5, seed=0, pairs=pairs, pretrain_epochs=20)
    assert pretrained["pretrained.validation.oracle_within_prompt_auc"] > 0.9
    assert pretrained["validation.oracle_within_prompt_auc"] > plain["validation.oracle_within_prompt_auc"] + 0.1
    manifest = json.loads((tmp_path / "pre" / "MANIFEST.json").read_text())
    assert manifest["training"]["world_pairs"]["pairs"] == len(pairs)
    history = json.loads((tmp_path / "pre" / "history.json").read_text())
    assert len(history["pretrain"]) == 20 and history["finetune"][0]["epoch"] == 0
    assert (tmp_path / "pre" / "curves.png").stat().st_size > 0 and "curves.png" in manifest["files"]


def test_order_contrast_adds_a_reordered_sibling_of_each_temporal_clip(tmp_path):
    """The sibling holds the same events in another order; heard against the first clip's prompts, its
    caption is now wrong (label 0) and its own caption is right (label 1). Integrity clips get none."""
    from training.reward_pairs import ORDER_SIBLING_OFFSET, PAIR_SEED, PAIR_SPLIT_INDEX, _chunk_pairs
    from training.world.clips import reordered_spec

    plain = build_world_pairs(4, TinyClap(), None, tmp_path, tag="t", chunk=4, progress=False)
    contrast = build_world_pairs(4, TinyClap(), None, tmp_path, tag="t", chunk=4, progress=False, order_contrast=True)
    assert len(plain.audio_emb) == 4 and len(contrast.audio_emb) == 6  # clips 1 and 3 are temporal
    assert contrast.summary()["order_contrast"] is True and plain.summary()["order_contrast"] is False
    audio, clip, text, label = _chunk_pairs(PAIR_SEED, 0, 2, order_contrast=True)
    first = make_clip(PAIR_SEED, "train", PAIR_SPLIT_INDEX + 1, task="temporal")
    sibling = [(t, y) for c, t, y in zip(clip, text, label) if c == 2]
    assert len(audio) == 3 and sibling[0] == (first.truth.caption, 0)
    spec = reordered_spec(first.spec, np.random.default_rng([PAIR_SEED, 71, 1]))
    assert sorted(spec.events) == sorted(first.spec.events) and spec.events != first.spec.events
    assert sibling[-1] == (spec.caption, 1)
    rendered = make_clip(PAIR_SEED, "train", PAIR_SPLIT_INDEX + ORDER_SIBLING_OFFSET + 1, spec=spec)
    assert [e.event for e in sorted(rendered.truth.events, key=lambda e: e.onset)] == spec.events
