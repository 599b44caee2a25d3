"""World pairs: free, exactly labelled (clip, prompt) pairs to pretrain the reward head on.

The annotated generations are a few hundred clips. On them alone BATON's head learns which prompts
tend to be accepted, not which of a prompt's candidates is better (within-prompt AUC ~0.5, see
docs/results/reward). The world gives pairs for free: a rendered clip whose events and onsets are
known, heard against prompts made from its own events -- its caption, the events phrased anew, in
another order, with one swapped for an absent event, with one dropped or one added. Each pair is
labelled by BATON's own rule (`training.annotation.oracle_label`) applied to the clip's ground truth
instead of to a detector's output, so labels are exact, and positives and negatives share a clip:
the head has to read the text against the audio.

Clips come from a world seed the CLAP never trained on and go through the generator's codec (VAE +
vocoder round trip) so they sound like the generated candidates the head will score. Prompts use
training phrasings only and never a held-out event pair. Audio embeddings are cached per chunk of
clips (resumable), keyed by the generator and CLAP versions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.audio import SAMPLE_RATE
from services.clap import ClapEmbedder
from services.generator import TangoPipeline
from training.annotation import oracle_label
from training.eval_generator import prompt_of, task_of
from training.world import captions as cap
from training.world.clips import Clip, ClipSpec, EventTruth, has_heldout_pair, make_clip, phrase, reordered_spec
from training.world.events import EVENT_IDS
from training.world.oracle import Detection
from training.world.prompts import PromptSpec

PAIR_SEED = 1  # world seed of the pair clips; the CLAP trained on seed 0's clips
PAIR_SPLIT_INDEX = 3_000_000  # clip indices start here: a stream apart from every other use of the seed
PAIR_TASKS = ("integrity", "temporal")
ORDER_SIBLING_OFFSET = 500_000  # clip indices of the reordered siblings (`order_contrast`)


def caption_prompt(rng: np.random.Generator, events: list[str], relation: str = "sequence") -> PromptSpec:
    """A prompt asking for `events` (audio order) with a training template and training phrasings."""
    templates = cap.templates_for(relation, len(events), heldout=False)
    clauses, nouns = phrase(rng, events, heldout=False)
    return prompt_of(ClipSpec(list(events), relation, templates[int(rng.integers(len(templates)))], clauses, nouns))  # type: ignore[arg-type]


def candidate_prompts(spec: ClipSpec, rng: np.random.Generator) -> list[PromptSpec]:
    """The clip's own caption and five variations of its events (see the module docstring)."""
    events = list(spec.events)
    absent = [e for e in EVENT_IDS if e not in events]
    prompts = [prompt_of(spec), caption_prompt(rng, events, spec.relation)]
    orders = [list(p) for p in itertools.permutations(events) if list(p) != events]
    prompts.append(caption_prompt(rng, orders[int(rng.integers(len(orders)))]))
    swapped = events.copy()
    swapped[int(rng.integers(len(events)))] = absent[int(rng.integers(len(absent)))]
    prompts.append(caption_prompt(rng, swapped))
    if len(events) == 3:
        dropped = events.copy()
        del dropped[int(rng.integers(3))]
        prompts.append(caption_prompt(rng, dropped))
    else:
        added = events.copy()
        added.insert(int(rng.integers(len(events) + 1)), absent[int(rng.integers(len(absent)))])
        prompts.append(caption_prompt(rng, added))
    # a held-out event combination may appear only in evaluation prompts
    return [p for p in prompts if not has_heldout_pair(p.events)]


def truth_label(events: list[EventTruth], prompt: PromptSpec) -> int:
    """BATON's label for a clip with these ground-truth events and a prompt (its task from its shape)."""
    task = "temporal" if task_of(prompt) == "temporal" else "integrity"
    return oracle_label(Detection(presence={}, events=sorted(events, key=lambda e: e.onset)), prompt, task)


@dataclass
class WorldPairs:
    """Pairs as row indices into per-clip audio embeddings, with their prompt texts and labels."""

    audio_emb: np.ndarray  # [clips, D]
    clip: np.ndarray  # [pairs] row of audio_emb
    text: list[str]  # [pairs]
    label: np.ndarray  # [pairs] 0/1
    text_emb: np.ndarray | None = None  # [pairs, D] once embedded
    order_contrast: bool = False  # temporal clips came with reordered siblings

    def __len__(self) -> int:
        return len(self.label)

    def embed_texts(self, clap: ClapEmbedder, batch: int = 512) -> WorldPairs:
        unique = sorted(set(self.text))
        table = np.concatenate([clap.embed_text(unique[s : s + batch]) for s in tqdm(range(0, len(unique), batch), desc="embed pair texts")])
        row = {t: i for i, t in enumerate(unique)}
        self.text_emb = table[[row[t] for t in self.text]].astype(np.float32)
        return self

    def summary(self) -> dict[str, float | bool]:
        return {"clips": float(len(self.audio_emb)), "pairs": float(len(self)), "positive_rate": float(self.label.mean()), "order_contrast": self.order_contrast}


def _chunk_pairs(seed: int, start: int, n: int, order_contrast: bool = False) -> tuple[list[np.ndarray], list[int], list[str], list[int]]:
    """Render clips start..start+n (alternating integrity and temporal), their prompts and labels.

    With `order_contrast`, each temporal clip gets a sibling clip of the same events in another order,
    heard against the first clip's prompts and its own caption. The pairs above fix the audio and vary
    the text; a reranker fixes the text and varies the audio, and on temporal prompts its candidates
    mostly hold the same three events (only their order differs), which these siblings show it."""
    audio, clip, text, label = [], [], [], []

    def add(c: Clip, prompts: list[PromptSpec]) -> None:
        audio.append(c.audio)
        for p in prompts:
            clip.append(len(audio) - 1)
            text.append(p.prompt)
            label.append(truth_label(c.truth.events, p))

    for i in range(start, start + n):
        c = make_clip(seed, "train", PAIR_SPLIT_INDEX + i, task=PAIR_TASKS[i % 2])  # type: ignore[arg-type]
        prompts = candidate_prompts(c.spec, np.random.default_rng([seed, 67, i]))
        add(c, prompts)
        if order_contrast and c.spec.task == "temporal":
            spec = reordered_spec(c.spec, np.random.default_rng([seed, 71, i]))
            add(make_clip(seed, "train", PAIR_SPLIT_INDEX + ORDER_SIBLING_OFFSET + i, spec=spec), [*prompts, prompt_of(spec)])
    return audio, clip, text, label


def build_world_pairs(n_clips: int, clap: ClapEmbedder, pipe: TangoPipeline | None, cache_dir: Path, tag: str, seed: int = PAIR_SEED, chunk: int = 128, progress: bool = True, order_contrast: bool = False) -> WorldPairs:
    """n_clips world clips (through `pipe`'s codec unless it is None) and their labelled prompts, plus a
    reordered sibling of each temporal clip with `order_contrast` (see `_chunk_pairs`).

    `tag` names the generator and CLAP versions the cached embeddings belong to."""
    if order_contrast:
        tag = f"{tag}-order"
    cache_dir.mkdir(parents=True, exist_ok=True)
    audio_parts, clips, texts, labels = [], [], [], []
    for start in tqdm(range(0, n_clips, chunk), desc="world pairs", unit="chunk", disable=not progress):
        n = min(chunk, n_clips - start)
        part = cache_dir / f"pairs-{tag}-{seed}-{start}-{n}.npz"
        if not part.is_file():
            audio, clip, text, label = _chunk_pairs(seed, start, n, order_contrast)
            wav = np.stack(audio)
            rate = SAMPLE_RATE
            if pipe is not None:
                wav = np.concatenate([pipe.reconstruct(wav[s : s + 32]) for s in range(0, len(wav), 32)])
                rate = pipe.sample_rate
            emb = np.concatenate([clap.embed_audio(wav[s : s + 64], rate) for s in range(0, len(wav), 64)])
            tmp = part.with_suffix(".tmp.npz")
            np.savez(tmp, audio_emb=emb.astype(np.float32), clip=np.array(clip), text=np.array(text), label=np.array(label))
            tmp.replace(part)
        data = np.load(part, allow_pickle=False)
        clips.append(data["clip"] + sum(len(a) for a in audio_parts))
        audio_parts.append(data["audio_emb"])
        texts += data["text"].tolist()
        labels.append(data["label"])
    return WorldPairs(np.concatenate(audio_parts), np.concatenate(clips), texts, np.concatenate(labels).astype(np.float32), order_contrast=order_contrast)
