"""Clips of the synthetic world: specs, rendering with ground truth, and seeded sampling by split.

A clip is fully determined by (world seed, split, index). Splits:
  train    training phrasings only, never a held-out event combination;
  heldout  every clip is novel: a held-out event combination or a held-out phrasing (or both).
Tasks follow BATON: `integrity` (2 events, are both present?), `temporal` (3 events in sequence,
present and in order?); `single` clips (1 event) teach the models the vocabulary.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.audio import SAMPLE_RATE
from training.world import captions as cap
from training.world.events import EVENT_IDS, EVENTS, synthesize_event
from training.world.scenes import SCENES, Scene, sample_scene_events

CLIP_SECONDS = 4.096  # 65536 samples: 128 frames at hop 512, 256 at hop 256
CLIP_SAMPLES = int(round(CLIP_SECONDS * SAMPLE_RATE))
Split = Literal["train", "heldout"]
Task = Literal["single", "integrity", "temporal"]
SPLIT_CODES = {"train": 0, "heldout": 1, "negative": 2}
HELDOUT_PAIR_FRACTION = 0.12
EDGE_S = 0.05  # events never touch the clip boundary
MIN_GAP_S = 0.12  # silence between events in a sequence, so order is well defined


class EventTruth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str
    onset: float = Field(ge=0)
    offset: float = Field(gt=0)


class ClipTruth(BaseModel):
    """Ground truth of one clip, as written to the world's JSONL."""

    model_config = ConfigDict(extra="forbid")
    id: str
    seed: int
    split: str
    index: int
    task: Task
    relation: cap.Relation
    caption: str
    events: list[EventTruth]  # in audio order for sequences; foreground first for overlaps
    mentioned_order: list[str]  # events in the order the caption names them
    template: str
    heldout_phrasing: bool
    heldout_combination: bool
    scene: str | None = None
    open_prompt: str | None = None  # the scene description a user might type, for scene clips
    audio: str | None = None


@dataclass
class ClipSpec:
    """What to render: events (audio order), relation, and the phrasing to caption it with."""

    events: list[str]
    relation: cap.Relation
    template: str
    clauses: list[str]
    nouns: list[str]
    heldout_phrasing: bool = False
    scene: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def caption(self) -> str:
        return cap.render_caption(self.template, self.clauses, self.nouns)

    @property
    def task(self) -> Task:
        if len(self.events) == 1:
            return "single"
        if len(self.events) == 3 and self.relation == "sequence":
            return "temporal"
        return "integrity"


def reordered_spec(spec: ClipSpec, rng: np.random.Generator) -> ClipSpec:
    """The same events and phrasing in another audio order (its caption names them in that order)."""
    perms = [p for p in itertools.permutations(range(len(spec.events))) if list(p) != list(range(len(spec.events)))]
    p = perms[int(rng.integers(len(perms)))]
    return ClipSpec([spec.events[i] for i in p], spec.relation, spec.template, [spec.clauses[i] for i in p], [spec.nouns[i] for i in p])


@lru_cache(maxsize=1)
def heldout_pairs() -> frozenset[frozenset[str]]:
    """A fixed set of event pairs (about 12% of all) that never co-occur in training clips."""
    pairs = [frozenset(p) for p in itertools.combinations(EVENT_IDS, 2)]
    rng = np.random.default_rng(20231101)
    chosen: list[frozenset[str]] = []
    uses = dict.fromkeys(EVENT_IDS, 0)
    for i in rng.permutation(len(pairs)):
        p = pairs[i]
        if all(uses[e] < 2 for e in p):
            chosen.append(p)
            for e in p:
                uses[e] += 1
        if len(chosen) >= round(HELDOUT_PAIR_FRACTION * len(pairs)):
            break
    return frozenset(chosen)


def has_heldout_pair(events: list[str]) -> bool:
    return any(frozenset(p) in heldout_pairs() for p in itertools.combinations(set(events), 2))


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], index]))


# ----------------------------------------------------------------------------- spec sampling
def _choose_events(rng: np.random.Generator, k: int, want_heldout_pair: bool | None, overlap: bool) -> list[str]:
    """Draw k distinct events; `want_heldout_pair` True/False forces/forbids a held-out pair."""
    for _ in range(1000):
        if overlap:  # one foreground event over one continuous background event
            bg = [e for e in EVENT_IDS if EVENTS[e].background]
            b = bg[int(rng.integers(len(bg)))]
            a = [e for e in EVENT_IDS if e != b][int(rng.integers(len(EVENT_IDS) - 1))]
            events = [a, b]
        else:
            events = list(rng.choice(EVENT_IDS, size=k, replace=False))
        if want_heldout_pair is None or has_heldout_pair(events) == want_heldout_pair:
            return [str(e) for e in events]
    raise RuntimeError("could not draw an event set satisfying the held-out constraint")


def phrase(rng: np.random.Generator, events: list[str], heldout: bool) -> tuple[list[str], list[str]]:
    clauses, nouns = [], []
    for e in events:
        p = cap.EVENT_PHRASINGS[e]
        cl = p.heldout_clauses if heldout else p.clauses
        no = p.heldout_nouns if heldout else p.nouns
        clauses.append(cl[int(rng.integers(len(cl)))])
        nouns.append(no[int(rng.integers(len(no)))])
    return clauses, nouns


def sample_spec(rng: np.random.Generator, split: Split, task: Task | None = None) -> ClipSpec:
    """Draw a clip spec for a split. Task mix by default: 25% single, 45% integrity, 30% temporal."""
    if task is None:
        task = ("single", "integrity", "temporal")[int(rng.choice(3, p=[0.25, 0.45, 0.30]))]
    if task == "single":
        relation, k = "single", 1
    elif task == "temporal":
        relation, k = "sequence", 3
    elif task == "integrity":
        relation, k = ("sequence", "overlap")[int(rng.integers(2))], 2
    else:
        raise ValueError(f"unknown task {task!r}")

    if split == "train":
        want_pair, heldout_template, heldout_words = False, False, False
    elif split == "heldout":
        # every held-out clip is novel in at least one way: combination, template or event words
        novelty = int(rng.integers(3)) if k > 1 else 1 + int(rng.integers(2))
        want_pair = novelty == 0
        heldout_template = novelty == 1 or bool(rng.random() < 0.3)
        heldout_words = novelty == 2 or bool(rng.random() < 0.3)
    else:
        raise ValueError(f"unknown split {split!r}")

    events = _choose_events(rng, k, want_pair if k > 1 else None, relation == "overlap")
    templates = cap.templates_for(relation, k, heldout_template)
    template = templates[int(rng.integers(len(templates)))]
    clauses, nouns = phrase(rng, events, heldout_words)
    return ClipSpec(events, relation, template, clauses, nouns, heldout_phrasing=heldout_template or heldout_words)


def sample_scene_spec(rng: np.random.Generator, heldout: bool = False) -> tuple[str, ClipSpec]:
    """An open prompt (scene description) and a captioned clip spec that realises it."""
    scene = SCENES[int(rng.integers(len(SCENES)))]
    descs = scene.heldout_descriptions if heldout else scene.descriptions
    prompt = descs[int(rng.integers(len(descs)))]
    return prompt, scene_spec(rng, scene, heldout)


def scene_spec(rng: np.random.Generator, scene: Scene, heldout: bool = False) -> ClipSpec:
    """A captioned clip spec of 2-3 events the scene produces (held-out event pairs only if `heldout`)."""
    k = 2 + int(rng.integers(2))
    events = sample_scene_events(scene, rng, k, allowed=lambda ev: heldout or not has_heldout_pair(ev))
    relation = "sequence" if len(events) == 3 or rng.random() < 0.5 else "overlap"
    if relation == "overlap" and not EVENTS[events[1]].background:
        relation = "sequence"
    template = cap.templates_for(relation, len(events), False)
    clauses, nouns = phrase(rng, events, False)
    return ClipSpec(events, relation, template[int(rng.integers(len(template)))], clauses, nouns, scene=scene.id)


# ----------------------------------------------------------------------------- rendering
def _layout_sequence(rng: np.random.Generator, events: list[str]) -> list[tuple[str, np.ndarray, int]]:
    k = len(events)
    room = CLIP_SECONDS - 2 * EDGE_S - MIN_GAP_S * (k - 1)
    budgets = [room / k * rng.uniform(0.7, 1.0) for _ in events]
    sigs = [synthesize_event(e, rng, max(b, EVENTS[e].min_s)) for e, b in zip(events, budgets)]
    total = sum(len(s) for s in sigs)
    slack = CLIP_SAMPLES - int(2 * EDGE_S * SAMPLE_RATE) - int(MIN_GAP_S * SAMPLE_RATE) * (k - 1) - total
    if slack < 0:  # should not happen with the budgets above; shrink the longest to be safe
        raise RuntimeError(f"events {events} do not fit in a {CLIP_SECONDS}s clip")
    cuts = np.sort(rng.uniform(0, slack, k))  # distribute slack among the k+1 gaps
    gaps = np.diff(np.concatenate([[0], cuts, [slack]])).astype(int)
    placed, pos = [], int(EDGE_S * SAMPLE_RATE) + gaps[0]
    for i, (e, s) in enumerate(zip(events, sigs)):
        placed.append((e, s, pos))
        pos += len(s) + int(MIN_GAP_S * SAMPLE_RATE) + (gaps[i + 1] if i + 1 < k else 0)
    return placed


def _layout_overlap(rng: np.random.Generator, events: list[str]) -> list[tuple[str, np.ndarray, int]]:
    fg_id, bg_id = events
    edge = int(EDGE_S * SAMPLE_RATE)
    bg = synthesize_event(bg_id, rng, rng.uniform(2.4, CLIP_SECONDS - 2 * EDGE_S))
    bg_start = edge + int(rng.integers(0, max(1, CLIP_SAMPLES - 2 * edge - len(bg))))
    fg = synthesize_event(fg_id, rng, min(1.6, len(bg) / SAMPLE_RATE * 0.8))
    # the foreground lies inside the background's span, so the two truly overlap
    lo, hi = bg_start, bg_start + len(bg) - len(fg)
    fg_start = int(rng.integers(lo, max(lo + 1, hi)))
    return [(fg_id, fg, fg_start), (bg_id, bg, bg_start)]


def render(spec: ClipSpec, rng: np.random.Generator) -> tuple[np.ndarray, list[EventTruth]]:
    """Mix the spec's events into a clip; returns float32 audio and per-event ground truth."""
    if spec.relation == "overlap":
        placed = _layout_overlap(rng, spec.events)
    else:
        placed = _layout_sequence(rng, spec.events)
    mix = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    truth = []
    background_gain = 10 ** (rng.uniform(-12, -6) / 20)
    for i, (e, sig, start) in enumerate(placed):
        gain = 10 ** (rng.uniform(-6, 0) / 20)
        if spec.relation == "overlap" and i == 1 and "background" in spec.template:
            gain *= background_gain
        mix[start : start + len(sig)] += gain * sig
        truth.append(EventTruth(event=e, onset=round(start / SAMPLE_RATE, 4), offset=round((start + len(sig)) / SAMPLE_RATE, 4)))
    # a faint noise floor, so no clip is digitally silent between events
    floor = rng.standard_normal(CLIP_SAMPLES) * 0.1 * 10 ** (rng.uniform(-55, -40) / 20)
    mix += floor
    mix *= rng.uniform(0.4, 0.9) / (np.abs(mix).max() + 1e-9)
    return mix.astype(np.float32), truth


@dataclass
class Clip:
    audio: np.ndarray
    truth: ClipTruth
    spec: ClipSpec


def make_clip(seed: int, split: Split, index: int, task: Task | None = None, spec: ClipSpec | None = None, reword: Callable[[ClipSpec], ClipSpec] | None = None) -> Clip:
    """The clip (seed, split, index): deterministic, independent of any other clip. `reword` changes the
    drawn spec's words only (its caption), so the audio is that of the clip without it."""
    rng = clip_rng(seed, split, index)
    spec = spec or sample_spec(rng, split, task)
    if reword is not None:
        spec = reword(spec)
    audio, events = render(spec, rng)
    order = cap.text_order(spec.template, len(spec.events)) if len(spec.events) > 1 else [0]
    truth = ClipTruth(
        id=f"{split}-{seed}-{index:06d}",
        seed=seed,
        split=split,
        index=index,
        task=spec.task,
        relation=spec.relation,
        caption=spec.caption,
        events=events,
        mentioned_order=[spec.events[i] for i in order],
        template=spec.template,
        heldout_phrasing=spec.heldout_phrasing,
        heldout_combination=len(spec.events) > 1 and has_heldout_pair(spec.events),
        scene=spec.scene,
        open_prompt=spec.extra.get("open_prompt"),
    )
    return Clip(audio, truth, spec)


def make_scene_clip(seed: int, split: Split, index: int) -> Clip:
    """A clip realising an open prompt (scene description); its JSONL row carries both texts."""
    rng = clip_rng(seed, split, 1_000_000 + index)  # a stream apart from the captioned clips
    prompt, spec = sample_scene_spec(rng, heldout=split == "heldout")
    spec.extra["open_prompt"] = prompt
    return make_clip(seed, split, 1_000_000 + index, spec=spec)


def iter_clips(seed: int, split: Split, n: int, start: int = 0, task: Task | None = None) -> Iterator[Clip]:
    for i in range(start, start + n):
        yield make_clip(seed, split, i, task)
