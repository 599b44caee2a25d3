"""`tta`: one command line for the world, training, evaluation and annotation."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights at run time

import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from tta import __version__  # noqa: E402


def _command_line() -> str:
    return shlex.join(["tta", *sys.argv[1:]])


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _load_oracle(checkpoint: Path | None):  # -> (SoundEventDetector, its directory)
    """The oracle from --checkpoint or the shipped one; a bad checkpoint is a clean CLI error."""
    from services.checkpoints import shipped
    from services.manifest import ManifestError
    from services.modeling import CheckpointError
    from training.world.oracle import load_oracle

    try:
        directory = checkpoint or shipped("oracle")
        return load_oracle(str(directory)), directory
    except (CheckpointError, ManifestError, FileNotFoundError) as exc:
        _fail(str(exc))


@click.group()
@click.version_option(__version__, prog_name="tta")
def main() -> None:
    """Aligned text-to-audio: synthetic world, oracle, training and evaluation."""


# ----------------------------------------------------------------------------- world
@main.group()
def world() -> None:
    """The synthetic sound world."""


@world.command("sample")
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=8, show_default=True, help="number of clips")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output directory")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--split", type=click.Choice(["train", "heldout"]), default="train", show_default=True)
@click.option("--task", type=click.Choice(["single", "integrity", "temporal"]), default=None, help="default: the world's task mix")
@click.option("--scenes", is_flag=True, help="clips realising open prompts (scene descriptions)")
def world_sample(n: int, out: Path, seed: int, split: str, task: str | None, scenes: bool) -> None:
    """Write N clips as WAV, clips.jsonl (captions, ground truth) and sheet.png (mel spectrograms)."""
    from training.world.sample import write_samples

    if scenes and task:
        _fail("--scenes and --task exclude each other: a scene decides its own events")
    sheet = write_samples(out, n, seed=seed, split=split, task=task, scenes=scenes)  # type: ignore[arg-type]
    click.echo(f"wrote {n} clips, {out / 'clips.jsonl'} and {sheet}")


@world.command("events")
def world_events() -> None:
    """List the event classes and their phrasings."""
    from training.world.captions import EVENT_PHRASINGS
    from training.world.events import EVENT_CLASSES

    for c in EVENT_CLASSES:
        click.echo(f"{c.id:12s} {c.label:16s} {' | '.join(EVENT_PHRASINGS[c.id].clauses)}")


# ----------------------------------------------------------------------------- train
@main.group()
def train() -> None:
    """Train a component; every run checkpoints periodically and resumes from its work dir."""


@train.command("oracle")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("services/checkpoints/oracle"), show_default=True)
@click.option("--steps", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--n-clips", type=click.IntRange(16), default=16000, show_default=True, help="rendered training clips")
@click.option("--n-negatives", type=click.IntRange(0), default=3200, show_default=True, help="event-free training clips")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/oracle"), show_default=True, help="train state, log; an existing state is resumed")
@click.option("--eval-n", type=click.IntRange(1), default=1000, show_default=True, help="held-out clips for the final evaluation")
@click.option("--device", default="cpu", show_default=True)
def train_oracle_cmd(out: Path, steps: int, batch_size: int, n_clips: int, n_negatives: int, lr: float, seed: int, work_dir: Path, eval_n: int, device: str) -> None:
    """Train the sound-event-detection oracle and write it with MANIFEST.json to --out."""
    from training.train_oracle import train_oracle

    metrics = train_oracle(out, steps=steps, batch_size=batch_size, n_clips=n_clips, n_negatives=n_negatives, lr=lr, seed=seed, work_dir=work_dir, eval_n=eval_n, device=device, command=_command_line())
    click.echo(json.dumps(metrics))


# ----------------------------------------------------------------------------- eval
@main.group(name="eval")
def eval_() -> None:
    """Evaluate a component; every command takes --json (one JSON object on the last stdout line)."""


@eval_.command("oracle")
@click.option("--n", "n", type=click.IntRange(1), default=1000, show_default=True, help="held-out ground-truth clips")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="default: the shipped oracle")
@click.option("--prompts", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSONL prompt file instead of the held-out split")
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True)
@click.option("--negatives", type=click.IntRange(0), default=600, show_default=True, help="event-free clips for the false-positive rate")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md and PNG plots here")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object on the last line")
@click.option("--strict", is_flag=True, help="exit 1 when a gate (F1, order >= 0.97, FP <= 0.03) fails")
def eval_oracle_cmd(n: int, checkpoint: Path | None, prompts: Path | None, seed: int, negatives: int, out: Path | None, as_json: bool, strict: bool) -> None:
    """The oracle's accuracy on held-out ground truth and its false positives on event-free audio."""
    from services.manifest import ManifestError
    from services.modeling import CheckpointError
    from training.eval_oracle import evaluate_oracle, report_markdown, write_report
    from training.world.oracle import load_oracle
    from training.world.prompts import PromptFileError, load_prompt_file

    try:
        specs = load_prompt_file(prompts) if prompts else None
        model = load_oracle(str(checkpoint) if checkpoint else None)
    except (PromptFileError, CheckpointError, ManifestError, FileNotFoundError) as exc:
        _fail(str(exc))
    report = evaluate_oracle(model, n=n, seed=seed, prompts=specs, n_negatives=negatives)
    click.echo(report_markdown(report))
    if out:
        write_report(report, out)
        click.echo(f"\nwrote {out / 'report.md'} and plots")
    click.echo(f"\noracle gates: {'PASS' if report.passed else 'FAIL'}")
    if as_json:
        click.echo(json.dumps({k: round(v, 6) for k, v in report.metrics.items()}))
    if strict and not report.passed:
        sys.exit(1)


# ----------------------------------------------------------------------------- annotate
@main.group()
def annotate() -> None:
    """Annotation records: import BATON label files, export them, simulate annotators."""


@annotate.command("import")
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["records", "grouped"]), required=True, help="records: [{prompt, audio, label}]; grouped: {grouped_ratings: {prompt: {file: label}}}")
@click.option("--task", type=click.Choice(["integrity", "temporal"]), required=True)
@click.option("--annotator", default="human:baton", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="annotation JSONL to write")
def annotate_import(source: Path, fmt: str, task: str, annotator: str, out: Path) -> None:
    """Validate a BATON label file and write our annotation JSONL (all rows or nothing)."""
    from training.annotation import AnnotationFileError, import_baton_records, import_grouped_ratings, write_annotations

    importer = import_baton_records if fmt == "records" else import_grouped_ratings
    try:
        records = importer(source, task, annotator)  # type: ignore[arg-type]
    except AnnotationFileError as exc:
        _fail(str(exc))
    click.echo(f"imported {write_annotations(out, records)} records into {out}")


@annotate.command("export")
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["records", "grouped"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def annotate_export(source: Path, fmt: str, out: Path) -> None:
    """Write annotation JSONL back out in one of BATON's label-file shapes."""
    from training.annotation import AnnotationFileError, export_baton_records, export_grouped_ratings, read_annotations

    try:
        records = read_annotations(source)
    except AnnotationFileError as exc:
        _fail(str(exc))
    data = export_baton_records(records) if fmt == "records" else export_grouped_ratings(records)
    out.write_text(json.dumps(data, indent=1) + "\n")
    click.echo(f"exported {len(records)} records to {out}")


@annotate.command("simulate")
@click.argument("clips", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--task", type=click.Choice(["integrity", "temporal"]), required=True)
@click.option("--flip-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="probability of flipping a label (human disagreement)")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="oracle; default the shipped one")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def annotate_simulate(clips: Path, task: str, flip_rate: float, seed: int, checkpoint: Path | None, out: Path) -> None:
    """Label clips with the simulated annotator.

    CLIPS is a JSONL whose rows give the audio path (relative to the file) and the prompt either as
    a prompt-file row plus "audio", or as a `tta world sample` row (caption, events, relation).
    """
    import numpy as np

    from services.audio import read_audio
    from services.manifest import sha256_file
    from training.annotation import SimulatedAnnotator, write_annotations
    from training.world.prompts import PromptFileError, load_audio_prompt_rows

    try:
        rows = load_audio_prompt_rows(clips)
    except PromptFileError as exc:
        _fail(str(exc))
    oracle, directory = _load_oracle(checkpoint)
    sha = sha256_file(directory / "model.safetensors")
    annotator = SimulatedAnnotator(oracle, flip_rate=flip_rate, seed=seed, oracle_sha256=sha)
    records = []
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        audios = [read_audio(clips.parent / path) for _, path in chunk]
        width = max(len(a) for a in audios)
        batch = np.stack([np.pad(a, (0, width - len(a))) for a in audios])
        records += annotator.annotate(batch, [s for s, _ in chunk], [p for _, p in chunk], task, start_index=start)  # type: ignore[arg-type]
    n = write_annotations(out, records)
    click.echo(f"wrote {n} simulated annotations ({sum(r.label for r in records)} positive) to {out}")


if __name__ == "__main__":
    main()
