"""`tta world sample`: WAVs, a JSONL of captions and ground truth, and a PNG sheet to look at."""

from __future__ import annotations

from pathlib import Path

from services.audio import write_wav
from training.plots import mel_sheet
from training.world.clips import Split, Task, make_clip, make_scene_clip


def write_samples(out: Path, n: int, seed: int = 0, split: Split = "train", task: Task | None = None, scenes: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    clips = [make_scene_clip(seed, split, i) if scenes else make_clip(seed, split, i, task) for i in range(n)]
    with open(out / "clips.jsonl", "w") as f:
        for c in clips:
            name = f"{c.truth.id}.wav"
            write_wav(out / name, c.audio)
            c.truth.audio = name
            f.write(c.truth.model_dump_json() + "\n")
    titles = [f"{c.truth.id} [{c.truth.task}/{c.truth.relation}] {c.truth.open_prompt + ' -> ' if c.truth.open_prompt else ''}{c.truth.caption}" for c in clips]
    spans = [[(e.event, e.onset, e.offset) for e in c.truth.events] for c in clips]
    return mel_sheet([c.audio for c in clips], titles, out / "sheet.png", spans)
