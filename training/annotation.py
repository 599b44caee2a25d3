"""Annotation records (human or simulated), BATON label-file importers, and the simulated annotator.

One schema for every label: prompt, audio path, task, 0/1 label, annotator, provenance. Files are
validated row by row; a bad row is an error that names its row and reason, never a silent drop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.validation import describe
from training.world.oracle import Detection, SoundEventDetector
from training.world.prompts import PromptSpec

Task = Literal["integrity", "temporal"]


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)  # "simulated", "human", "baton-records", "baton-grouped", ...
    source_file: str | None = None
    source_row: int | None = Field(default=None, ge=1)
    oracle_sha256: str | None = None
    flip_rate: float | None = Field(default=None, ge=0, le=1)
    flipped: bool | None = None
    oracle_label: int | None = None
    detected: list[str] | None = None
    events: list[str] | None = None


class AnnotationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    audio: str = Field(min_length=1)
    task: Task
    label: int
    annotator: str = Field(min_length=1)
    provenance: Provenance

    @field_validator("label", mode="before")
    @classmethod
    def _binary(cls, v: Any) -> int:
        # bool is an int in Python; a label must be written as 0 or 1, not true/false or 0.7
        if isinstance(v, bool) or not isinstance(v, int) or v not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {v!r}")
        return v

    @field_validator("prompt", "audio")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class AnnotationFileError(ValueError):
    """A label file has invalid rows; the message lists every one with its row number."""

    def __init__(self, path: str | Path, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{path}: {len(errors)} invalid row(s):\n  " + "\n  ".join(errors[:50]) + ("\n  ..." if len(errors) > 50 else ""))


# ----------------------------------------------------------------------------- JSONL store
def write_annotations(path: str | Path, records: Iterable[AnnotationRecord]) -> int:
    n = 0
    with open(path, "w") as f:
        for r in records:
            f.write(r.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def read_annotations(path: str | Path) -> list[AnnotationRecord]:
    records, errors = [], []
    for row, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(AnnotationRecord.model_validate_json(line))
        except ValidationError as exc:
            errors.append(f"row {row}: {describe(exc)}")
    if errors:
        raise AnnotationFileError(path, errors)
    return records


# ----------------------------------------------------------------------------- BATON importers
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(path, [f"not JSON: {exc.msg} at line {exc.lineno}"]) from exc


AUDIO_KEYS = ("audio", "audio_path", "path", "file", "filename")


def import_baton_records(path: str | Path, task: Task, annotator: str = "human:baton") -> list[AnnotationRecord]:
    """BATON's list form: [{"prompt": ..., "audio" (or audio_path/path/file): ..., "label": 0|1}, ...]."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise AnnotationFileError(path, [f"expected a JSON list of records, got {type(data).__name__}"])
    records, errors = [], []
    for row, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            errors.append(f"row {row}: expected an object, got {type(item).__name__}")
            continue
        audio_key = next((k for k in AUDIO_KEYS if k in item), None)
        missing = [k for k in ("prompt", "label") if k not in item] + ([] if audio_key else ["audio"])
        if missing:
            errors.append(f"row {row}: missing field(s) {missing}")
            continue
        unknown = set(item) - {"prompt", "label", audio_key}
        try:
            records.append(
                AnnotationRecord(
                    prompt=item["prompt"],
                    audio=item[audio_key],
                    task=task,
                    label=item["label"],
                    annotator=annotator,
                    provenance=Provenance(source="baton-records", source_file=str(path), source_row=row),
                )
            )
        except ValidationError as exc:
            errors.append(f"row {row}: {describe(exc)}")
            continue
        if unknown:
            errors.append(f"row {row}: unknown field(s) {sorted(unknown)}")
    if errors:
        raise AnnotationFileError(path, errors)
    return records


def import_grouped_ratings(path: str | Path, task: Task, annotator: str = "human:baton") -> list[AnnotationRecord]:
    """BATON's grouped form: {"grouped_ratings": {prompt: {filename: 0|1}}} (or the inner mapping).

    Rows are numbered in file order across all prompts, starting at 1.
    """
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, dict) and "grouped_ratings" in data:
        data = data["grouped_ratings"]
    if not isinstance(data, dict):
        raise AnnotationFileError(path, [f"expected {{prompt: {{filename: label}}}}, got {type(data).__name__}"])
    records, errors, row = [], [], 0
    for prompt, files in data.items():
        if not isinstance(files, dict):
            row += 1
            errors.append(f"row {row} (prompt {prompt!r}): expected {{filename: label}}, got {type(files).__name__}")
            continue
        for filename, label in files.items():
            row += 1
            try:
                records.append(
                    AnnotationRecord(
                        prompt=prompt,
                        audio=filename,
                        task=task,
                        label=label,
                        annotator=annotator,
                        provenance=Provenance(source="baton-grouped", source_file=str(path), source_row=row),
                    )
                )
            except ValidationError as exc:
                errors.append(f"row {row} (prompt {prompt!r}, file {filename!r}): {describe(exc)}")
    if errors:
        raise AnnotationFileError(path, errors)
    return records


def export_baton_records(records: Iterable[AnnotationRecord]) -> list[dict]:
    return [{"prompt": r.prompt, "audio": r.audio, "label": r.label} for r in records]


def export_grouped_ratings(records: Iterable[AnnotationRecord]) -> dict:
    grouped: dict[str, dict[str, int]] = {}
    for r in records:
        files = grouped.setdefault(r.prompt, {})
        if r.audio in files and files[r.audio] != r.label:
            raise ValueError(f"conflicting labels for prompt {r.prompt!r}, file {r.audio!r}")
        files[r.audio] = r.label
    return {"grouped_ratings": grouped}


# ----------------------------------------------------------------------------- simulated annotator
def oracle_label(detection: Detection, spec: PromptSpec, task: Task) -> int:
    """BATON's judgement from what the oracle heard.

    integrity: every prompted event present and no salient unprompted event;
    temporal: that, and the prompted events' onsets in the stated order.
    """
    return int(judged_right(detection, spec.events, in_order=task == "temporal"))


def judged_right(detection: Detection, events: list[str], in_order: bool) -> bool:
    """Exactly `events` heard (none missing, nothing unprompted), and with `in_order` their onsets in that order."""
    return detection.present() == set(events) and (not in_order or onsets_in_order(detection, events))


def onsets_in_order(detection: Detection, events: list[str]) -> bool:
    """The heard onsets of `events` (all of them heard) strictly follow the order they are listed in."""
    onsets = [detection.onset(e) for e in events]
    return all(a < b for a, b in zip(onsets, onsets[1:]))


class SimulatedAnnotator:
    """Oracle judgements turned into BATON labels, with a flip rate mimicking human disagreement."""

    def __init__(self, oracle: SoundEventDetector, flip_rate: float = 0.1, seed: int = 0, oracle_sha256: str | None = None) -> None:
        if not 0 <= flip_rate <= 1:
            raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
        self.oracle, self.flip_rate, self.seed, self.oracle_sha256 = oracle, flip_rate, seed, oracle_sha256

    @property
    def name(self) -> str:
        return f"simulated:oracle(flip={self.flip_rate:g},seed={self.seed})"

    def annotate(self, audio: np.ndarray, specs: list[PromptSpec], audio_paths: list[str], task: Task, start_index: int = 0) -> list[AnnotationRecord]:
        """Label clips [B, samples] against their prompts. Flips are seeded per (seed, index)."""
        if not (len(audio) == len(specs) == len(audio_paths)):
            raise ValueError(f"got {len(audio)} clips, {len(specs)} prompts and {len(audio_paths)} paths")
        records = []
        for i, (det, spec, path) in enumerate(zip(self.oracle.detect(audio), specs, audio_paths)):
            truth = oracle_label(det, spec, task)
            flipped = bool(np.random.default_rng([self.seed, start_index + i]).random() < self.flip_rate)
            records.append(
                AnnotationRecord(
                    prompt=spec.prompt,
                    audio=path,
                    task=task,
                    label=1 - truth if flipped else truth,
                    annotator=self.name,
                    provenance=Provenance(
                        source="simulated",
                        oracle_sha256=self.oracle_sha256,
                        flip_rate=self.flip_rate,
                        flipped=flipped,
                        oracle_label=truth,
                        detected=sorted(det.present()),
                        events=list(spec.events),
                    ),
                )
            )
        return records
