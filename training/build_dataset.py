"""`tta data build`: BATON-style feedback datasets made by our own generator.

Prompts are composed from event labels and conjunctions (the world's caption templates, training
phrasings only), K clips are generated per prompt, and each clip is labelled by the simulated
annotator (or left for people). The dataset directory:

    dataset.json    what made it (task, K, seed, generator version and settings); a rerun must match
    prompts.jsonl   the composed prompts (prompt-file rows: prompt, events, relation)
    audio/          PPPPP_K.flac, one per clip
    parts/          one file per chunk of prompts, written atomically: a rerun skips finished chunks;
                    PPPPP.latents.safetensors holds the chunk's generated latents (keyed by audio path)
    clips.jsonl     every clip as a prompt-file row plus "audio" (what `tta annotate simulate` reads)
    records.jsonl   annotation records (absent with --label none)
    summary.json    label rates and prompts with at least one accepted clip, beside BATON's human rates
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from services.audio import encode_audio
from services.generator import TangoPipeline
from training.annotation import AnnotationRecord, SimulatedAnnotator, Task, write_annotations
from training.eval_generator import prompt_of
from training.world.clips import ClipSpec, sample_spec
from training.world.prompts import PromptSpec

TASK_CODES = {"integrity": 0, "temporal": 1}
# BATON's human annotations (paper, table 1): single-clip acceptance and prompts with >= 1 accepted of 5
BATON_HUMAN = {"integrity": {"accept_rate": 0.63, "prompts_with_accepted": 0.995}, "temporal": {"accept_rate": 0.45, "prompts_with_accepted": 0.986}}


class DatasetError(ValueError):
    """A dataset directory is inconsistent with the requested build, or unreadable."""


WORDINGS = ("training", "teacher")
# how a prompt names an event by one of its teacher words ("a canine", "the sound of sparrow")
TEACHER_PHRASES = ("a {0}", "the {0}", "the sound of {0}")


def compose_prompts(task: Task, n: int, seed: int = 0, wording: str = "training", teacher_words: dict[str, list[str]] | None = None) -> list[PromptSpec]:
    """n prompts of a task (each from its own rng stream): training event combinations and templates, the
    events named by the world's training phrasings, or with `wording="teacher"` by their teacher words
    (`training.teacher_words`; computed when not given), which no caption contains."""
    if wording not in WORDINGS:
        raise ValueError(f"unknown wording {wording!r}; choose from {WORDINGS}")
    if wording == "teacher" and teacher_words is None:
        from training.teacher_words import teacher_event_words

        teacher_words = teacher_event_words()
    prompts = []
    for i in range(n):
        rng = np.random.default_rng([seed, 41, TASK_CODES[task], i])
        spec = sample_spec(rng, "train", task)
        if wording == "teacher":
            teacher_worded(spec, rng, teacher_words)  # type: ignore[arg-type]
        prompts.append(prompt_of(spec))
    return prompts


def teacher_worded(spec: ClipSpec, rng: np.random.Generator, teacher_words: dict[str, list[str]]) -> ClipSpec:
    """`spec` with every event named by one of its teacher words ("a canine", "the sound of sparrow"), in place;
    the template (and so the relation and order words) stays."""
    for j, event in enumerate(spec.events):
        words = teacher_words[event]
        if not words:
            raise ValueError(f"event {event!r} has no teacher words")
        text = TEACHER_PHRASES[int(rng.integers(len(TEACHER_PHRASES)))].format(words[int(rng.integers(len(words)))])
        spec.clauses[j] = spec.nouns[j] = text
    return spec


def teacher_rewording(wording_rng: np.random.Generator, share: float, teacher_words: dict[str, list[str]] | None):
    """The `reword` for `make_clip` of one training clip: `teacher_worded` with probability `share` (drawn from
    the clip's own wording stream, so the clips themselves do not change with the share), else None."""
    if teacher_words is None or wording_rng.random() >= share:
        return None
    return functools.partial(teacher_worded, rng=wording_rng, teacher_words=teacher_words)


def check_task_prompts(prompts: list[PromptSpec], task: Task) -> None:
    """Integrity prompts name 2 events, temporal prompts 3 in sequence; say which rows do not."""
    want = 2 if task == "integrity" else 3
    bad = [i for i, p in enumerate(prompts, 1) if len(p.events) != want or (task == "temporal" and p.relation == "overlap")]
    if bad:
        raise DatasetError(f"{len(bad)} prompt(s) do not fit task {task!r} ({want} events{', in sequence' if task == 'temporal' else ''}): rows {bad[:10]}")


@dataclass
class BuildSettings:
    task: Task
    clips_per_prompt: int
    seed: int
    generator: str  # version of the generator checkpoint
    steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None
    label: str = "simulated"  # or "none"
    annotator: str | None = None
    wording: str = "training"  # of composed prompts (WORDINGS); "training" for a prompt file
    generator_wording: str | None = None  # known wording (services.wording) the generator got each prompt in, if any

    def to_dict(self) -> dict:
        return asdict(self)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _prepare(out: Path, prompts: list[PromptSpec], settings: BuildSettings) -> None:
    """Create the directory, or check that an existing one holds the same build (so resume is safe)."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    meta, prompt_file = out / "dataset.json", out / "prompts.jsonl"
    prompt_rows = _jsonl([p.model_dump() for p in prompts])
    if meta.is_file():
        old = json.loads(meta.read_text())
        new = settings.to_dict()
        recorded = {k: old.get(k, getattr(BuildSettings, k, None)) for k in new}  # a key an older build did not record had its default then
        diff = {k: (recorded[k], v) for k, v in new.items() if recorded[k] != v}
        if diff:
            raise DatasetError(f"{out} holds a dataset built with other settings {diff} (old, new); use another --out")
        if prompt_file.read_text() != prompt_rows:
            raise DatasetError(f"{out} holds a dataset of other prompts; use another --out")
        return
    _write_atomic(prompt_file, prompt_rows)
    _write_atomic(meta, json.dumps(settings.to_dict(), indent=2) + "\n")


def build_dataset(
    out: Path,
    prompts: list[PromptSpec],
    pipe: TangoPipeline,
    settings: BuildSettings,
    annotator: SimulatedAnnotator | None,
    prompts_per_chunk: int = 8,
    progress: bool = True,
    reword: Callable[[list[str]], list[str]] | None = None,
) -> dict:
    """Generate, store and label K clips per prompt; resumable chunk by chunk. Returns the summary. `reword`: what
    the generator gets for the prompts (a served rewrite stage, e.g. `services.wording.KnownWording`); records
    keep the prompt as written, which the labels and judges read."""
    check_task_prompts(prompts, settings.task)
    out = Path(out)
    _prepare(out, prompts, settings)
    k = settings.clips_per_prompt
    chunks = list(range(0, len(prompts), prompts_per_chunk))
    todo = [c for c in chunks if not (out / "parts" / f"{c // prompts_per_chunk:05d}.clips.jsonl").is_file()]
    done = sum(len(prompts[c : c + prompts_per_chunk]) for c in chunks if c not in todo)
    bar = tqdm(total=len(prompts) * k, initial=done * k, desc=f"build {settings.task}", unit="clip", disable=not progress)
    for start in todo:
        part = start // prompts_per_chunk
        chunk = prompts[start : start + prompts_per_chunk]
        seeds = [settings.seed * 10_000_000 + (start + i) * 1000 for i in range(len(chunk))]
        written = [p.prompt for p in chunk]
        result = pipe.generate(reword(written) if reword is not None else written, num_candidates=k, steps=settings.steps, guidance_scale=settings.guidance_scale, scheduler=settings.scheduler, seed=seeds, return_latents=True)
        clip_rows, flat_specs, flat_paths, flat_audio = [], [], [], []
        for i, (spec, wavs) in enumerate(zip(chunk, result.waveforms)):
            for j, wav in enumerate(wavs):
                rel = f"audio/{start + i:05d}_{j}.flac"
                (out / rel).write_bytes(encode_audio(wav, "flac", result.sample_rate))
                clip_rows.append({**spec.model_dump(), "audio": rel, "seed": result.seeds[i][j]})
                flat_specs.append(spec)
                flat_paths.append(rel)
                flat_audio.append(wav)
        if result.latents is not None:
            flat_latents = result.latents.reshape(-1, *result.latents.shape[2:])
            tmp = out / "parts" / f"{part:05d}.latents.tmp"
            save_file({rel: torch.from_numpy(np.ascontiguousarray(z)) for rel, z in zip(flat_paths, flat_latents)}, str(tmp))
            os.replace(tmp, out / "parts" / f"{part:05d}.latents.safetensors")
        if annotator is not None:
            records = annotator.annotate(np.stack(flat_audio), flat_specs, flat_paths, settings.task, start_index=start * k)
            _write_atomic(out / "parts" / f"{part:05d}.labels.jsonl", "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records))
        # the clips file is written last: its presence marks the chunk as done
        _write_atomic(out / "parts" / f"{part:05d}.clips.jsonl", _jsonl(clip_rows))
        bar.update(len(clip_rows))
    bar.close()
    return finish_dataset(out, len(chunks), labelled=annotator is not None)


def finish_dataset(out: Path, n_parts: int, labelled: bool) -> dict:
    """Join the parts into clips.jsonl / records.jsonl and write summary.json."""
    clips = "".join((out / "parts" / f"{p:05d}.clips.jsonl").read_text() for p in range(n_parts))
    _write_atomic(out / "clips.jsonl", clips)
    settings = json.loads((out / "dataset.json").read_text())
    n_clips = len(clips.splitlines())
    summary: dict = {"task": settings["task"], "prompts": n_clips // settings["clips_per_prompt"], "clips": n_clips}
    if labelled:
        records = [AnnotationRecord.model_validate_json(line) for p in range(n_parts) for line in (out / "parts" / f"{p:05d}.labels.jsonl").read_text().splitlines()]
        write_annotations(out / "records.jsonl.tmp", records)
        os.replace(out / "records.jsonl.tmp", out / "records.jsonl")
        summary.update(label_summary(records, settings["clips_per_prompt"]))
        summary["baton_human"] = BATON_HUMAN[settings["task"]]
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def label_summary(records: list[AnnotationRecord], clips_per_prompt: int) -> dict:
    """Acceptance per clip, and share of prompts with >= 1 accepted clip, for labels and noise-free oracle labels."""
    by_prompt: dict[str, list[AnnotationRecord]] = {}
    for r in records:
        by_prompt.setdefault(r.prompt, []).append(r)
    labels = np.array([r.label for r in records])
    oracle = np.array([r.provenance.oracle_label if r.provenance.oracle_label is not None else r.label for r in records])
    return {
        "accept_rate": float(labels.mean()) if len(labels) else 0.0,
        "prompts_with_accepted": float(np.mean([any(r.label for r in rs) for rs in by_prompt.values()])) if by_prompt else 0.0,
        "oracle_accept_rate": float(oracle.mean()) if len(oracle) else 0.0,
        "oracle_prompts_with_accepted": float(np.mean([any(r.provenance.oracle_label for r in rs) for rs in by_prompt.values()])) if by_prompt else 0.0,
        "flipped": int(sum(bool(r.provenance.flipped) for r in records)),
        "clips_per_prompt": clips_per_prompt,
    }


def summary_markdown(summary: dict) -> str:
    rows = [
        ("clips", summary["clips"], ""),
        ("prompts", summary["prompts"], ""),
    ]
    if "accept_rate" in summary:
        human = summary["baton_human"]
        rows += [
            ("accepted clips (labels)", f"{summary['accept_rate']:.3f}", f"{human['accept_rate']:.3f}"),
            (f"prompts with >= 1 accepted of {summary['clips_per_prompt']} (labels)", f"{summary['prompts_with_accepted']:.3f}", f"{human['prompts_with_accepted']:.3f}"),
            ("accepted clips (noise-free oracle)", f"{summary['oracle_accept_rate']:.3f}", ""),
            ("prompts with >= 1 accepted (noise-free oracle)", f"{summary['oracle_prompts_with_accepted']:.3f}", ""),
            ("labels flipped by the annotator", summary["flipped"], ""),
        ]
    lines = [f"task: {summary['task']}", "", "| | value | BATON human labels |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {ref} |" for name, value, ref in rows]
    return "\n".join(lines)


def sampling_settings(directory: Path) -> dict:
    """How a built dataset's clips were generated (generator version, steps, guidance, sampler; null = that
    generator's default), from its dataset.json; {} for an imported set that does not say."""
    meta = Path(directory) / "dataset.json"
    if not meta.is_file():
        return {}
    settings = json.loads(meta.read_text())
    return {key: settings[key] for key in ("generator", "steps", "guidance_scale", "scheduler") if key in settings}


def stored_latents(directory: Path) -> dict[str, torch.Tensor]:
    """The generated latents a dataset stored beside its audio, by audio path ({} for sets built before
    latents were stored, or imported ones)."""
    found: dict[str, torch.Tensor] = {}
    for path in sorted((Path(directory) / "parts").glob("*.latents.safetensors")):
        found.update(load_file(str(path)))
    return found


def load_dataset_records(directory: Path) -> list[tuple[AnnotationRecord, Path]]:
    """Records of a built dataset with their audio paths resolved against the directory."""
    from training.annotation import read_annotations

    directory = Path(directory)
    path = directory / "records.jsonl"
    if not path.is_file():
        raise DatasetError(f"{directory}: no records.jsonl (not built, or built with --label none)")
    return [(r, directory / r.audio) for r in read_annotations(path)]

