import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from services.audio import MelConfig, MelSpectrogram
from training.world import captions as cap
from training.world.clips import (
    CLIP_SAMPLES,
    CLIP_SECONDS,
    MIN_GAP_S,
    ClipTruth,
    clip_rng,
    has_heldout_pair,
    heldout_pairs,
    make_clip,
    make_scene_clip,
    sample_spec,
)
from training.world.events import EVENT_CLASSES, EVENT_IDS, synthesize_event
from training.world.scenes import SCENE_BY_ID
from tta.cli import main

REQUIRED = {"dog_bark", "bell", "siren", "car_horn", "bird_chirp", "door_knock", "rain", "engine_idle", "footsteps", "clock_tick", "phone_ring", "whistle"}


def test_vocabulary_has_required_classes():
    assert len(EVENT_IDS) >= 16
    assert REQUIRED <= set(EVENT_IDS)
    assert set(cap.EVENT_PHRASINGS) == set(EVENT_IDS)


def test_clip_is_deterministic_by_seed():
    a, b = make_clip(3, "train", 17), make_clip(3, "train", 17)
    assert np.array_equal(a.audio, b.audio)
    assert a.truth == b.truth
    assert not np.array_equal(a.audio, make_clip(3, "train", 18).audio)
    assert not np.array_equal(a.audio, make_clip(4, "train", 17).audio)
    assert not np.array_equal(a.audio, make_clip(3, "heldout", 17).audio)


def test_clip_shape_and_level():
    for i in range(20):
        c = make_clip(0, "train", i)
        assert c.audio.dtype == np.float32 and c.audio.shape == (CLIP_SAMPLES,)
        assert 0.3 < np.abs(c.audio).max() <= 1.0
        for e in c.truth.events:
            assert 0 <= e.onset < e.offset <= CLIP_SECONDS


def test_event_classes_are_distributions():
    # the same class drawn with different seeds differs in length or content, never a template
    for cls in EVENT_CLASSES:
        draws = [synthesize_event(cls.id, np.random.default_rng(s), 2.0) for s in range(4)]
        assert len({len(d) for d in draws}) > 1 or not np.allclose(draws[0][:1000], draws[1][:1000]), cls.id
        assert all(len(d) >= 0.05 * 16000 for d in draws), cls.id


def test_event_classes_are_distinct_by_spectrogram():
    # A crude check (chance is 1/16): nearest centroid of per-band level and variability tells
    # fresh draws apart. The oracle's per-class F1 (test_oracle) is the strong version.
    mel = MelSpectrogram(MelConfig(hop_length=256))

    def profile(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            m = mel(torch.from_numpy(x))[0].numpy()
        m = np.maximum(m - m.max(), -10)
        return np.concatenate([m.mean(1), m.std(1)])

    centroids = {c: np.mean([profile(synthesize_event(c, np.random.default_rng(100 + s), 1.5)) for s in range(8)], axis=0) for c in EVENT_IDS}
    correct = total = 0
    for c in EVENT_IDS:
        for s in range(5):
            p = profile(synthesize_event(c, np.random.default_rng(900 + s), 1.5))
            guess = min(centroids, key=lambda k: np.linalg.norm(centroids[k] - p))
            correct += guess == c
            total += 1
    assert correct / total >= 0.85, f"only {correct}/{total} draws nearest their own class"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def test_sequence_relation_semantics():
    seen_after = seen_first = 0
    for i in range(300):
        c = make_clip(0, "train", i)
        t = c.truth
        if t.relation != "sequence":
            continue
        onsets = [e.onset for e in t.events]
        assert onsets == sorted(onsets)
        for a, b in zip(t.events, t.events[1:]):
            assert a.offset + MIN_GAP_S - 1e-3 <= b.onset, "sequence events must not overlap"
        # the audio is loud inside the events and near-silent in the gaps between them
        inside = max(_rms(c.audio[int(e.onset * 16000) : int(e.offset * 16000)]) for e in t.events)
        gap = c.audio[int(t.events[0].offset * 16000) + 80 : int(t.events[1].onset * 16000) - 80]
        if len(gap) > 400:
            assert _rms(gap) < 0.05 * inside
        if t.template == "{b} after {a}":
            seen_after += 1
            # "B after A": the caption names B first, but A is heard first
            assert t.mentioned_order == [t.events[1].event, t.events[0].event]
            assert t.caption.index(c.spec.clauses[1]) < t.caption.index(c.spec.clauses[0])
        else:
            assert t.mentioned_order == [e.event for e in t.events]
        if t.template.startswith("first"):
            seen_first += 1
    assert seen_after and seen_first


def test_overlap_relation_semantics():
    seen = 0
    for i in range(300):
        t = make_clip(0, "train", i).truth
        if t.relation != "overlap":
            continue
        seen += 1
        fg, bg = t.events
        assert bg.onset <= fg.onset and fg.offset <= bg.offset + 1e-3, "foreground lies inside the background"
    assert seen > 20


def test_caption_matches_ground_truth():
    for i in range(300):
        c = make_clip(0, "train", i)
        t = c.truth
        assert t.caption == cap.render_caption(t.template, c.spec.clauses, c.spec.nouns)
        assert sorted(t.mentioned_order) == sorted(e.event for e in t.events)
        assert {"single": 1, "integrity": 2, "temporal": 3}[t.task] == len(t.events)
        if t.task == "temporal":
            assert t.relation == "sequence"
        for event, clause, noun in zip(c.spec.events, c.spec.clauses, c.spec.nouns):
            ph = cap.EVENT_PHRASINGS[event]
            assert clause in ph.clauses and noun in ph.nouns
            assert clause in t.caption or noun in t.caption


def test_heldout_phrasings_and_combinations_never_in_training():
    fragments = cap.heldout_fragments()
    assert len(fragments) >= 2 * len(EVENT_IDS) + 4
    assert len(heldout_pairs()) >= 10
    for i in range(20000):
        spec = sample_spec(clip_rng(0, "train", i), "train")
        caption = spec.caption
        assert not any(f in caption for f in fragments), caption
        assert not has_heldout_pair(spec.events), spec.events
    for i in range(50):  # scene clips in training respect the held-out combinations too
        assert not has_heldout_pair(make_scene_clip(0, "train", i).spec.events)


def test_heldout_split_is_always_novel():
    kinds = {"combination": 0, "phrasing": 0}
    for i in range(2000):
        spec = sample_spec(clip_rng(0, "heldout", i), "heldout")
        novel_pair = len(spec.events) > 1 and has_heldout_pair(spec.events)
        novel_words = any(f in spec.caption for f in cap.heldout_fragments())
        assert novel_pair or novel_words, spec.caption
        kinds["combination"] += novel_pair
        kinds["phrasing"] += novel_words
    assert min(kinds.values()) > 300


def test_heldout_pairs_are_fixed_and_valid():
    pairs = heldout_pairs()
    assert all(len(p) == 2 and p <= set(EVENT_IDS) for p in pairs)
    assert len(pairs) < len(list(itertools.combinations(EVENT_IDS, 2))) // 4


def test_scene_clips_realise_their_scene():
    for i in range(20):
        c = make_scene_clip(0, "train", i)
        scene = SCENE_BY_ID[c.truth.scene]
        assert c.truth.open_prompt in scene.descriptions
        assert {e.event for e in c.truth.events} <= set(scene.events)


@pytest.mark.parametrize("task", ["integrity", "temporal"])
def test_tasks_follow_baton(task):
    for i in range(30):
        t = make_clip(0, "train", i, task=task).truth
        assert t.task == task
        assert len(t.events) == (2 if task == "integrity" else 3)


def test_world_sample_cli(tmp_path):
    out = tmp_path / "world"
    res = CliRunner().invoke(main, ["world", "sample", "--n", "3", "--out", str(out), "--seed", "5"])
    assert res.exit_code == 0, res.output
    rows = [ClipTruth.model_validate(json.loads(line)) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert (out / r.audio).is_file()
    assert (out / "sheet.png").stat().st_size > 10_000
    assert (out / "sheet.png").read_bytes()[:4] == b"\x89PNG"


def test_world_sample_cli_rejects_bad_arguments(tmp_path):
    res = CliRunner().invoke(main, ["world", "sample", "--n", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--n" in res.output
    res = CliRunner().invoke(main, ["world", "sample", "--n", "2", "--out", str(tmp_path), "--scenes", "--task", "temporal"])
    assert res.exit_code == 1 and "exclude" in res.output
