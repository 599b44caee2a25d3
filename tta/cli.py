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

# spelled out here so --help needs no torch import; tests hold it equal to services.generator.VOCODERS
VOCODER_CHOICE = click.Choice(["hifigan", "griffin-lim"])


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


def _report(text: str, table: dict[str, float], out: Path | None, as_json: bool, plot=None) -> None:
    """An eval's Markdown table on stdout; with --out also report.md, report.json and `plot(out)`'s
    PNG; with --json the table as one JSON object on the last line."""
    click.echo(text)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        (out / "report.json").write_text(json.dumps(table, indent=2) + "\n")
        if plot is not None:
            click.echo(f"plot: {plot(out)}")
    if as_json:
        click.echo(json.dumps({key: round(v, 4) for key, v in table.items()}))


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
@click.option("--heldout-clips", type=click.IntRange(0, 10_000), default=4000, show_default=True, help="ground-truth clips of the held-out split added to training, so the judge hears held-out event pairs together (0: the first shipped oracle's recipe)")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=3e-3, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/oracle"), show_default=True, help="train state, log; an existing state is resumed")
@click.option("--eval-n", type=click.IntRange(1), default=1000, show_default=True, help="held-out clips for the final evaluation")
@click.option("--device", default="cpu", show_default=True)
def train_oracle_cmd(out: Path, steps: int, batch_size: int, n_clips: int, n_negatives: int, heldout_clips: int, lr: float, seed: int, work_dir: Path, eval_n: int, device: str) -> None:
    """Train the sound-event-detection oracle and write it with MANIFEST.json to --out."""
    from training.train_oracle import train_oracle

    metrics = train_oracle(out, steps=steps, batch_size=batch_size, n_clips=n_clips, n_negatives=n_negatives, n_heldout_clips=heldout_clips, lr=lr, seed=seed, work_dir=work_dir, eval_n=eval_n, device=device, command=_command_line())
    click.echo(json.dumps(metrics))


@train.command("clap")
@click.option("--scale", type=click.Choice(["mini"]), default="mini", show_default=True, help="full-scale CLAP is a converted LAION-CLAP checkpoint")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("services/checkpoints/clap"), show_default=True)
@click.option("--steps", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=96, show_default=True)
@click.option("--n-clips", type=click.IntRange(16), default=12000, show_default=True, help="rendered training clips (20% realise open prompts)")
@click.option("--eval-n", type=click.IntRange(10), default=1000, show_default=True, help="held-out clips for retrieval R@1/R@10")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/clap"), show_default=True, help="data cache, train state, log; an existing state is resumed")
@click.option("--checkpoint-every", type=click.IntRange(1), default=250, show_default=True)
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when present)")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="processes rendering the world")
@click.option("--codec-clips", type=click.IntRange(0), default=0, show_default=True, help="this many training clips (and every held-out one) also go through the generator's VAE + vocoder round trip, so the judge learns how generated audio sounds (~0.2 s a clip on 2 CPU cores, cached)")
@click.option("--codec-share", type=click.FloatRange(0, 1), default=0.25, show_default=True, help="share of each batch drawn from the round-trip clips")
@click.option("--generator", "generator_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="generator whose codec --codec-clips use (default: the shipped mini generator)")
@click.option("--init", "init_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="a mini CLAP directory to fine-tune instead of starting from random weights (e.g. after the served vocoder changed)")
@click.option("--teacher-share", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="share of captioned training clips that name their events by teacher words (never held-out words), as the generator's pretraining does")
def train_clap_cmd(scale: str, out: Path, steps: int, batch_size: int, n_clips: int, eval_n: int, lr: float, seed: int, work_dir: Path, checkpoint_every: int, device: str | None, workers: int, codec_clips: int, codec_share: float, generator_dir: Path | None, init_dir: Path | None, teacher_share: float) -> None:
    """Train the mini CLAP contrastively on the world; writes it with MANIFEST.json (retrieval metrics) to --out."""
    from services.checkpoints import shipped
    from training.train_clap import train_clap

    metrics = train_clap(
        out, steps=steps, batch_size=batch_size, n_clips=n_clips, eval_n=eval_n, lr=lr, seed=seed, work_dir=work_dir, checkpoint_every=checkpoint_every, device=device, workers=workers,
        command=_command_line(), codec_clips=codec_clips, codec_share=codec_share, generator_dir=generator_dir or shipped("generator"), init_dir=init_dir, teacher_share=teacher_share,
    )
    click.echo(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


@train.command("wording")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("services/checkpoints/wording"), show_default=True)
def train_wording_cmd(out: Path) -> None:
    """Write the mini judges' known wording (services.wording): each event's training phrasings, which a judge
    reads every clause of a prompt in when the clause is close to one; with MANIFEST.json (leave-one-out metrics)."""
    from services.manifest import write_manifest
    from services.wording import KnownWording
    from training.teacher_words import leave_one_out, world_known_wording

    config = world_known_wording()
    out.mkdir(parents=True, exist_ok=True)
    wording = KnownWording(config)
    wording.save_pretrained(out)
    metrics = leave_one_out(config, wording.encoder)
    write_manifest(out, command=_command_line(), seed=None, metrics=metrics, extra={"training": {"phrasings": "training.world.captions.EVENT_PHRASINGS clauses and nouns (no held-out phrasing)"}})
    click.echo(json.dumps(metrics))


@train.command("reward")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="dataset directory from `tta data build` (repeatable)")
@click.option("--labels", "label_files", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="BATON label file (repeatable; with --format, --task, --audio-root)")
@click.option("--format", "fmt", type=click.Choice(["records", "grouped"]), default="records", show_default=True, help="shape of the --labels files")
@click.option("--task", type=click.Choice(["integrity", "temporal"]), default=None, help="task of the --labels files")
@click.option("--audio-root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="directory the --labels files' audio paths are relative to")
@click.option("--eval-data", "eval_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="extra held-out dataset directories to report on (repeatable)")
@click.option("--clap", "clap_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="frozen CLAP (default: the shipped mini CLAP)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("services/checkpoints/reward"), show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=3e-4, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/reward"), show_default=True, help="embedding cache")
@click.option("--world-pairs", type=click.IntRange(0), default=0, show_default=True, help="pretrain on this many world clips, each heard against its caption and 4 variations labelled by BATON's rule (0: no pretraining)")
@click.option("--pretrain-epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--pretrain-lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--pair-replay", type=click.FloatRange(0), default=0.0, show_default=True, help="weight of a batch of world pairs kept in every fine-tuning step")
@click.option("--cosine-skip", is_flag=True, help="add a learned multiple of the CLAP cosine to the head's logit (BATON's head has none)")
@click.option("--order-contrast", is_flag=True, help="world pairs: each temporal clip also gets a sibling with the same events in another order, heard against the same prompts")
@click.option("--generator", "generator_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="codec the world-pair clips go through (default: the shipped generator)")
@click.option("--device", default="cpu", show_default=True, help="CLAP device for embedding the clips")
def train_reward_cmd(data_dirs: tuple[Path, ...], label_files: tuple[Path, ...], fmt: str, task: str | None, audio_root: Path | None, eval_dirs: tuple[Path, ...], clap_dir: Path | None, out: Path, epochs: int, batch_size: int, lr: float, seed: int, work_dir: Path, world_pairs: int, pretrain_epochs: int, pretrain_lr: float, pair_replay: float, cosine_skip: bool, order_contrast: bool, generator_dir: Path | None, device: str) -> None:
    """Train BATON's reward head (BCE) on frozen CLAP embeddings; writes safetensors + ONNX + MANIFEST."""
    from services.checkpoints import shipped
    from services.clap import load_clap
    from services.manifest import checkpoint_version
    from training.annotation import AnnotationFileError, import_baton_records, import_grouped_ratings
    from training.build_dataset import DatasetError, load_dataset_records
    from training.train_reward import LabelledClips, embed_clips, train_reward

    if not data_dirs and not label_files:
        _fail("give training data: --data DIR (from `tta data build`) and/or --labels FILE")
    if label_files and (task is None or audio_root is None):
        _fail("--labels needs --task and --audio-root (the directory its audio paths are relative to)")
    pairs = []
    try:
        for d in data_dirs:
            pairs += load_dataset_records(d)
        importer = import_baton_records if fmt == "records" else import_grouped_ratings
        for f in label_files:
            pairs += [(r, audio_root / r.audio) for r in importer(f, task)]  # type: ignore[arg-type, operator]
        evals = {f"heldout_{d.name}": LabelledClips.from_pairs(load_dataset_records(d)) for d in eval_dirs}
    except (DatasetError, AnnotationFileError) as exc:
        _fail(str(exc))
    missing = [str(p) for _, p in pairs if not p.is_file()]
    if missing:
        _fail(f"{len(missing)} audio file(s) do not exist, e.g. {missing[:3]}")
    clap_dir = clap_dir or shipped("clap")
    clap = load_clap(clap_dir, device)
    cache = work_dir / f"audio-embeddings-{checkpoint_version(clap_dir)}.npz"
    clips = embed_clips(LabelledClips.from_pairs(pairs), clap, cache)
    evals = {name: embed_clips(c, clap, cache) for name, c in evals.items()}
    sources = [str(d) for d in data_dirs] + [str(f) for f in label_files]
    pairs = None
    if world_pairs:
        from training.reward_pairs import build_world_pairs

        generator_dir = generator_dir or shipped("generator")
        pipe = _load_generator(generator_dir, device)
        tag = f"{checkpoint_version(generator_dir)}-{checkpoint_version(clap_dir)}"
        pairs = build_world_pairs(world_pairs, clap, pipe, work_dir / "pairs", tag, order_contrast=order_contrast).embed_texts(clap)
    elif order_contrast:
        _fail("--order-contrast shapes the world pairs: give --world-pairs N")
    metrics = train_reward(clips, clap, clap_dir, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, eval_sets=evals, command=_command_line(), sources=sources, pairs=pairs, pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr, pair_replay=pair_replay, cosine_skip=cosine_skip)
    click.echo(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


@train.command("baton")
@click.option("--init", "init_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="generator to fine-tune (default: the shipped base, generator-base, which the served generator was fine-tuned from); a converted TANGO works the same")
@click.option("--feedback", "hd_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="HD: labelled dataset directory (records.jsonl), r = label (repeatable)")
@click.option("--reward-data", "rd_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="RD: dataset directory (clips.jsonl), r = the reward model's score (repeatable)")
@click.option("--reward-model", "reward_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model scoring --reward-data (default: the shipped one)")
@click.option("--beta", type=click.FloatRange(0), default=0.25, show_default=True, help="weight of the pretraining term")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True, help="clips per term per step")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-4, show_default=True, help="BATON's 1e-5 scaled like the pretraining rates (TANGO 3e-5, our mini UNet 4e-4); use 1e-5 for a real TANGO")
@click.option("--n-pretrain", type=click.IntRange(1), default=2500, show_default=True, help="ground-truth world clips in the pretraining term")
@click.option("--pretrain-teacher-share", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="share of the pretraining clips captioned with teacher words for their events (never held-out words)")
@click.option("--pretrain-task", type=click.Choice(["any", "single", "integrity", "temporal"]), default="any", show_default=True, help="draw every pretraining clip of one task; single: one event each, none of the feedback tasks' compositions (as AudioCaps held none of BATON's)")
@click.option("--clause-channels", is_flag=True, help="give the generator clause channels first (services.clauses; its UNet widened with zero weights) when it has none")
@click.option("--clause-only-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="share of pretraining rows whose token states are hidden, so the UNet learns to read the clause channels alone (a generator with clause channels)")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="fine-tuned generator directory")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/baton/run"), show_default=True, help="latent cache, train state (resumes), log")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100, show_default=True)
@click.option("--eval-n", type=click.IntRange(0), default=0, show_default=True, help="held-out prompts per task to evaluate the result on (as `tta eval generator`; metrics go into its MANIFEST); 0 skips")
@click.option("--reencode-feedback", is_flag=True, help="train on the feedback audio re-encoded by the VAE even where the init stored its own latents when it built the set (the ablation)")
@click.option("--hard-prompt-share", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True, help="keep, of each feedback set, only this share of its prompts: those with the lowest mean r over their clips (the ones the init gets wrong most)")
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when present)")
def train_baton_cmd(init_dir: Path | None, hd_dirs: tuple[Path, ...], rd_dirs: tuple[Path, ...], reward_dir: Path | None, beta: float, steps: int, batch_size: int, lr: float, n_pretrain: int, pretrain_teacher_share: float, pretrain_task: str, clause_channels: bool, clause_only_rate: float, seed: int, out: Path, work_dir: Path, checkpoint_every: int, eval_n: int, reencode_feedback: bool, hard_prompt_share: float, device: str | None) -> None:
    """BATON fine-tuning: beta * pretraining loss + reward-weighted loss on generated clips (UNet only).
    With no feedback directories it trains the pretraining term alone (an ablation row)."""
    from services.checkpoints import shipped
    from training.build_dataset import DatasetError
    from training.train_baton import train_baton

    try:
        train_baton(
            init_dir or shipped("generator-base"),
            out,
            hd_dirs=list(hd_dirs),
            rd_dirs=list(rd_dirs),
            reward_model_dir=reward_dir or (shipped("reward") if rd_dirs else None),
            beta=beta,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            n_pretrain=n_pretrain,
            pretrain_teacher_share=pretrain_teacher_share,
            pretrain_task=None if pretrain_task == "any" else pretrain_task,
            clause_only_rate=clause_only_rate,
            clause_channels=clause_channels,
            seed=seed,
            work_dir=work_dir,
            checkpoint_every=checkpoint_every,
            device=device,
            command=_command_line(),
            eval_n=eval_n,
            reencode_feedback=reencode_feedback,
            hard_prompt_share=hard_prompt_share,
        )
    except (ValueError, DatasetError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(f"wrote {out}")


@train.command("rewriter")
@click.option("--stage", type=click.Choice(["sft", "feedback"]), required=True, help="sft: train from scratch on world pairs; feedback: CLAP-ranked margin-ranking fine-tune of --init")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="rewriter directory (model, tokenizer, MANIFEST.json)")
@click.option("--init", "init_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="feedback: the rewriter to fine-tune (an SFT output, or any local FLAN-T5 directory)")
@click.option("--steps", type=click.IntRange(1), default=None, help="default: 4000 (sft), 300 (feedback)")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="default: 32 pairs (sft), 8 prompts (feedback)")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="default: 1e-3 (sft), 1e-4 (feedback)")
@click.option("--passthrough", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="sft: share of caption -> KEEP (leave it as it is) pairs")
@click.option("--teacher-share", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="sft: share of scene pairs whose description is made of MiniLM's teacher words for the scene")
@click.option("--novel-word-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="sft: share of pass-through captions with one word swapped for a random vocabulary word (a caption is recognised whatever its nouns)")
@click.option("--semantic-dims", type=click.IntRange(1, 128), default=128, show_default=True, help="sft: word-embedding columns that are MiniLM's (frozen); the rest of the 128 train (96: the v3 recipe)")
@click.option("--n-prompts", type=click.IntRange(1), default=160, show_default=True, help="feedback: user prompts sampled for ranking (training descriptions and teacher-word descriptions)")
@click.option("--k", type=click.IntRange(2, 32), default=6, show_default=True, help="feedback: rewrites sampled per prompt")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=0.7, show_default=True, help="feedback: sampling temperature (at 1.0 78% of the mini rewriter's samples had words from outside the world's captions, at 0.7 23%)")
@click.option("--clips-per-rewrite", type=click.IntRange(1, 8), default=2, show_default=True, help="feedback: clips (noise seeds, shared by a prompt's candidates) whose mean CLAP judges a rewrite")
@click.option("--margin", type=click.FloatRange(0), default=0.05, show_default=True, help="feedback: ranking margin per rank step (scores are mean log-probs per token)")
@click.option("--min-judge-gap", type=click.FloatRange(0), default=0.1, show_default=True, help="feedback: rank two rewrites only when their CLAP scores are this far apart (below 0.1 the mini CLAP agreed with the oracle on 50% of 258 pairs: chance)")
@click.option("--mle-weight", type=click.FloatRange(0), default=1.0, show_default=True, help="feedback: weight of MLE on each prompt's best rewrite")
@click.option("--passthrough-weight", type=click.FloatRange(0), default=0.5, show_default=True, help="feedback: weight of MLE on caption -> caption pairs")
@click.option("--generator", "generator_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="feedback: generator making the clips (default: shipped)")
@click.option("--clap", "clap_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="feedback: CLAP judging them (default: shipped)")
@click.option("--oracle", "oracle_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="feedback: oracle for the CLAP-agreement diagnostic only (default: shipped)")
@click.option("--generation-steps", type=click.IntRange(1, 1000), default=None, help="feedback: denoising steps per clip (default: the generator's served default)")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="train state (resumes), log, feedback.jsonl (default: runs/rewriter/<stage>)")
@click.option("--checkpoint-every", type=click.IntRange(1), default=200, show_default=True)
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when present)")
def train_rewriter_cmd(stage: str, out: Path, init_dir: Path | None, steps: int | None, batch_size: int | None, lr: float | None, passthrough: float, teacher_share: float, novel_word_rate: float, semantic_dims: int, n_prompts: int, k: int, temperature: float, clips_per_rewrite: int, margin: float, min_judge_gap: float, mle_weight: float, passthrough_weight: float, generator_dir: Path | None, clap_dir: Path | None, oracle_dir: Path | None, generation_steps: int | None, seed: int, work_dir: Path | None, checkpoint_every: int, device: str | None) -> None:
    """The prompt rewriter: supervised from scratch (sft), then CLAP-feedback margin ranking (feedback)."""
    from services.checkpoints import shipped
    from services.manifest import ManifestError
    from services.modeling import CheckpointError
    from training.train_rewriter import train_feedback, train_sft

    work_dir = work_dir or Path("runs/rewriter") / stage
    try:
        if stage == "sft":
            if init_dir is not None:
                _fail("--init is for --stage feedback; sft trains from scratch")
            metrics = train_sft(out, steps or 4000, batch_size or 32, lr or 1e-3, seed, work_dir, passthrough, teacher_share, novel_word_rate, checkpoint_every, device, _command_line(), semantic_dims)
        else:
            if init_dir is None:
                _fail("--stage feedback needs --init (the SFT rewriter to fine-tune)")
            metrics = train_feedback(
                init_dir, out, steps or 300, batch_size or 8, lr or 1e-4, margin, mle_weight, passthrough_weight, n_prompts, k, temperature, seed, work_dir,
                generator_dir or shipped("generator"), clap_dir or shipped("clap"), oracle_dir, checkpoint_every, device, _command_line(), generation_steps, clips_per_rewrite, min_judge_gap,
            )
    except (ValueError, CheckpointError, ManifestError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(metrics, indent=2))
    click.echo(f"wrote {out}")


@train.command("generator")
@click.option("--scale", type=click.Choice(["mini"]), default="mini", show_default=True, help="full-scale TANGO comes from `tta convert-tango`")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("services/checkpoints/generator-base"), show_default=True, help="the pretrained base; `tta train baton` fine-tunes it into the served generator")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--n-clips", type=click.IntRange(64), default=20000, show_default=True, help="rendered training clips")
@click.option("--n-audio", type=click.IntRange(16), default=3000, show_default=True, help="of which waveforms are kept for the vocoder")
@click.option("--vae-steps", type=click.IntRange(1), default=800, show_default=True)
@click.option("--vocoder-steps", type=click.IntRange(1), default=800, show_default=True)
@click.option("--unet-steps", type=click.IntRange(1), default=2400, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="UNet batch")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/generator"), show_default=True, help="per-stage train state and logs; existing state is resumed")
@click.option("--eval-n", type=click.IntRange(1), default=200, show_default=True, help="held-out prompts per task for the final evaluation")
@click.option("--stage", type=click.Choice(["all", "vae", "vocoder", "unet"]), default="all", show_default=True, help="train only one component (vocoder and UNet can run side by side once the VAE is done); 'all' trains what is missing, assembles and evaluates")
@click.option("--serve-steps", type=click.IntRange(1, 1000), default=100, show_default=True, help="default steps written into the generator (pick from `tta eval generator --steps ...`)")
@click.option("--serve-scheduler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default="ddpm", show_default=True)
@click.option("--serve-vocoder", type=VOCODER_CHOICE, default="hifigan", show_default=True, help="default vocoder written into the generator (compare with `tta eval generator --vocoder hifigan,griffin-lim`)")
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when present)")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="processes rendering the world (default: all cores)")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100, show_default=True, help="steps between train-state saves (what an interruption can lose)")
@click.option("--init", "init_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="a generator directory: keep its VAE and vocoder, train its UNet further")
@click.option("--position-channels", type=click.IntRange(0, 2), default=0, show_default=True, help="relative time (and mel band) maps appended to the UNet input; an --init UNet without them gets zero-initialised input weights")
@click.option("--unet-lr", type=click.FloatRange(min=0, min_open=True), default=4e-4, show_default=True, help="UNet peak learning rate (lower it to fine-tune an --init UNet)")
@click.option("--text-position-channels", type=click.IntRange(0, 64), default=0, show_default=True, help="token-index sinusoids appended to the text states the UNet attends to (even); an --init UNet gets zero-initialised key/value weights for them")
@click.option("--clause-channels", is_flag=True, help="the UNet also reads each token's clause encoded alone (services/clauses.py); an --init UNet without them gets zero-initialised key/value weights for them")
@click.option("--snr-gamma", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Min-SNR-gamma loss weight of the UNet; 0 trains on plain v-MSE")
def train_generator_cmd(scale: str, out: Path, seed: int, n_clips: int, n_audio: int, vae_steps: int, vocoder_steps: int, unet_steps: int, batch_size: int, work_dir: Path, eval_n: int, stage: str, serve_steps: int, serve_scheduler: str, serve_vocoder: str, device: str | None, workers: int | None, checkpoint_every: int, init_dir: Path | None, position_channels: int, unet_lr: float, snr_gamma: float, text_position_channels: int, clause_channels: bool) -> None:
    """Train the mini TANGO (VAE, vocoder, UNet) on the world; resumable, writes --out with MANIFEST.json."""
    from training.train_generator import train_generator

    if n_audio > n_clips:
        _fail(f"--n-audio ({n_audio}) cannot exceed --n-clips ({n_clips})")
    try:
        metrics = train_generator(out, scale=scale, seed=seed, n_clips=n_clips, n_audio=n_audio, vae_steps=vae_steps, vocoder_steps=vocoder_steps, unet_steps=unet_steps, batch_size=batch_size, work_dir=work_dir, eval_n=eval_n, command=_command_line(), stage=stage, serve_steps=serve_steps, serve_scheduler=serve_scheduler, serve_vocoder=serve_vocoder, device=device, workers=workers, checkpoint_every=checkpoint_every, init=init_dir, position_channels=position_channels, unet_lr=unet_lr, snr_gamma=snr_gamma, text_position_channels=text_position_channels, clause_channels=clause_channels)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(metrics))


# ----------------------------------------------------------------------------- convert
@main.command("convert-tango")
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tokenizer", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True, help="local FLAN-T5 tokenizer directory (TANGO checkpoints do not include one)")
@click.option("--vae-from", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="take VAE/STFT files from this base checkpoint (fine-tunes often ship only the main weights)")
@click.option("--unet-config", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="default: TANGO's UNet config (services/configs/tango_unet.json)")
@click.option("--text-encoder-config", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="default: FLAN-T5-large encoder")
@click.option("--steps", "default_steps", type=click.IntRange(1, 1000), default=100, show_default=True, help="the converted generator's default steps (TANGO's default)")
def convert_tango_cmd(src: Path, dst: Path, tokenizer: Path, vae_from: Path | None, unet_config: Path | None, text_encoder_config: Path | None, default_steps: int) -> None:
    """Convert an original TANGO / Tango 2 / BATON-fine-tuned checkpoint directory into our generator layout."""
    from services.modeling import CheckpointError
    from services.tango_convert import accounted, convert_tango

    try:
        report = convert_tango(src, dst, tokenizer, vae_from=vae_from, unet_config=unet_config, text_encoder_config=text_encoder_config, default_steps=default_steps)
    except CheckpointError as exc:
        _fail(str(exc))
    total = sum(report.source_keys.values())
    click.echo(f"source keys: {', '.join(f'{k} {v}' for k, v in report.source_keys.items())}")
    click.echo(f"mapped: {', '.join(f'{k} {v}' for k, v in report.mapped.items())}; verified and not stored: {len(report.verified)}")
    click.echo(f"accounted for {accounted(report)} of {total} keys ({'all' if accounted(report) == total else 'INCOMPLETE'}); wrote {dst}")


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
@click.option("--strict", is_flag=True, help="exit 1 when a gate (F1, order >= 0.97, FP <= 0.03, every composition >= 0.85) fails")
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


DTYPE_HELP = "UNet/VAE precision (default, as served: fp16 on CUDA; bf16 on a CPU with bf16 hardware, else fp32)"


def _load_generator(checkpoint: Path | None, device: str | None = None, dtype: str | None = None):
    """The generator at `checkpoint` (default: the shipped mini default); exits cleanly on a bad directory."""
    from services.checkpoints import shipped
    from services.generator import DTYPES, TangoPipeline
    from services.manifest import ManifestError
    from services.modeling import CheckpointError

    torch_dtype = DTYPES[dtype] if dtype else None
    try:
        return TangoPipeline.from_pretrained(checkpoint or shipped("generator"), device=device, dtype=torch_dtype)
    except (CheckpointError, ManifestError, FileNotFoundError, OSError, ValueError) as exc:
        _fail(str(exc))


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not values or any(not 1 <= v <= 1000 for v in values):
        raise click.BadParameter(f"steps must be in [1, 1000], got {value!r}")
    return values


def _choice_list(kind: str, choices_name: str):
    """A click callback reading a comma list of names from services.generator's `choices_name` (imported late: torch)."""

    def parse(ctx, param, value: str | None) -> list[str] | None:
        import services.generator

        if value is None:
            return None
        choices = getattr(services.generator, choices_name)
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in names if v not in choices]
        if not names or unknown:
            raise click.BadParameter(f"unknown {kind}(s) {unknown or value!r}; choose from {', '.join(choices)}")
        return names

    return parse


_scheduler_list = _choice_list("scheduler", "SCHEDULERS")
_vocoder_list = _choice_list("vocoder", "VOCODERS")


def _on_off_list(ctx, param, value: str | None) -> list[bool] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or any(v not in ("on", "off") for v in names):
        raise click.BadParameter(f"expected on, off or on,off; got {value!r}")
    return [v == "on" for v in names]


TIMELINE_HELP = "prompts that state a sequence ('a, then b') get each clause in its own stretch of the clip (default: the checkpoint's)"


GENERATION_OPTIONS = [
    click.option("--steps", type=click.IntRange(1, 1000), default=None, help="denoising steps (default: the checkpoint's)"),
    click.option("--guidance", type=click.FloatRange(0, 50), default=None, help="classifier-free guidance scale (default: the checkpoint's)"),
    click.option("--scheduler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default=None, help="sampler (default: the checkpoint's)"),
]


def _generation_options(f):
    for option in reversed(GENERATION_OPTIONS):
        f = option(f)
    return f


# ----------------------------------------------------------------------------- generate
@main.command("generate")
@click.argument("prompts", nargs=-1, required=True)
@click.option("-n", "--num-candidates", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="directory for WAVs, mels.png and generation.json")
@_generation_options
@click.option("--vocoder", type=VOCODER_CHOICE, default=None, help="mel -> audio: the trained HiFi-GAN or Griffin-Lim (default: the checkpoint's)")
@click.option("--timeline/--no-timeline", default=None, help=TIMELINE_HELP)
@click.option("--negative-prompt", default=None, help="replaces the empty prompt as the unconditional branch")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None, help="candidate j uses seed + j (default: random, reported)")
@click.option("--duration", "duration_s", type=click.FloatRange(0.1, 60), default=None, help="seconds (default: the checkpoint's)")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="generator directory (default: the shipped mini default)")
@click.option("--device", default=None, help="cpu or cuda[:i] (default: cuda when present)")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help=DTYPE_HELP)
@click.option("--rewrite", is_flag=True, help="rewrite each prompt with the prompt rewriter first (as the service does by default)")
@click.option("--rewriter", "rewriter_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="rewriter directory for --rewrite (default: the shipped one)")
def generate_cmd(prompts: tuple[str, ...], num_candidates: int, out: Path, steps: int | None, guidance: float | None, scheduler: str | None, vocoder: str | None, timeline: bool | None, negative_prompt: str | None, seed: int | None, duration_s: float | None, checkpoint: Path | None, device: str | None, dtype: str | None, rewrite: bool, rewriter_dir: Path | None) -> None:
    """Generate N candidate clips per prompt; writes WAVs and a PNG of their mel spectrograms."""
    from services.audio import write_wav
    from training.plots import mel_sheet

    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        _fail(f"prompt(s) {blank} are blank")
    if rewriter_dir is not None and not rewrite:
        _fail("--rewriter only applies with --rewrite")
    texts = list(prompts)
    if rewrite:
        from services.manifest import ManifestError
        from services.modeling import CheckpointError
        from services.rewriter import load_rewriter

        try:
            texts = load_rewriter(rewriter_dir).rewrite(texts)
        except (CheckpointError, ManifestError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        for prompt, text in zip(prompts, texts):
            click.echo(f"rewrote {prompt!r} -> {text!r}")
    pipe = _load_generator(checkpoint, device, dtype)
    if duration_s is not None and duration_s > pipe.config.max_duration_s:
        _fail(f"--duration {duration_s} exceeds this generator's maximum of {pipe.config.max_duration_s} s")
    result = pipe.generate(texts, num_candidates=num_candidates, steps=steps, guidance_scale=guidance, negative_prompt=negative_prompt, seed=seed, duration_s=duration_s, scheduler=scheduler, progress=True, vocoder=vocoder, timeline=timeline)
    out.mkdir(parents=True, exist_ok=True)
    files, titles, audios = [], [], []
    for i, prompt in enumerate(prompts):
        for j in range(num_candidates):
            name = f"p{i:02d}-c{j:02d}-seed{result.seeds[i][j]}.wav"
            write_wav(out / name, result.waveforms[i, j], result.sample_rate)
            files.append({"prompt": prompt, "rewritten_prompt": texts[i] if rewrite else None, "timeline": result.timelines[i], "candidate": j, "seed": result.seeds[i][j], "file": name})
            titles.append(f"{prompt!r}{f' -> {texts[i]!r}' if rewrite else ''} (seed {result.seeds[i][j]})")
            audios.append(result.waveforms[i, j])
    mel_sheet(audios, titles, out / "mels.png")
    (out / "generation.json").write_text(json.dumps({"settings": result.settings, "timings": result.timings, "files": files}, indent=2) + "\n")
    for f in files:
        click.echo(f"{out / f['file']}  {f['prompt']!r} seed {f['seed']}")
    click.echo(f"{out / 'mels.png'}; {sum(result.timings.values()):.1f} s ({', '.join(f'{k} {v:.2f}' for k, v in result.timings.items())})")


@eval_.command("generator")
@click.option("--n", "n", type=click.IntRange(1), default=200, show_default=True, help="held-out prompts per task (single, integrity, temporal)")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="default: the shipped generator")
@click.option("--prompts", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSONL prompt file instead of the held-out split")
@click.option("--steps", callback=_int_list, default=None, help="denoising steps; a comma list sweeps (e.g. 10,25,50,100)")
@click.option("--guidance", type=click.FloatRange(0, 50), default=None, help="guidance scale (default: the checkpoint's)")
@click.option("--scheduler", callback=_scheduler_list, default=None, help="ddpm, ddim or dpm++; a comma list sweeps")
@click.option("--vocoder", callback=_vocoder_list, default=None, help="hifigan or griffin-lim (default: the checkpoint's); a comma list compares")
@click.option("--timeline", callback=_on_off_list, default=None, help="on, off, or on,off to compare; " + TIMELINE_HELP)
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True)
@click.option("--roundtrip-n", type=click.IntRange(0), default=None, help="ground-truth clips for the VAE/vocoder round trip (default: max(n, 100))")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md, report.json and PNGs here")
@click.option("--device", default=None, help="cpu or cuda[:i]")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help=DTYPE_HELP)
@click.option("--batch", type=click.IntRange(1, 1024), default=16, show_default=True, help="prompts per generation call")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object on the last line")
def eval_generator_cmd(n: int, checkpoint: Path | None, prompts: Path | None, steps: list[int] | None, guidance: float | None, scheduler: list[str] | None, vocoder: list[str] | None, timeline: list[bool] | None, seed: int, roundtrip_n: int | None, out: Path | None, device: str | None, dtype: str | None, batch: int, as_json: bool) -> None:
    """Oracle accuracy of generated audio on held-out prompts (N=1), round trip, time per clip."""
    from training.eval_generator import evaluate_generator, write_report
    from training.world.prompts import PromptFileError, load_prompt_file

    try:
        specs = load_prompt_file(prompts) if prompts else None
    except PromptFileError as exc:
        _fail(str(exc))
    pipe = _load_generator(checkpoint, device, dtype)
    oracle, _ = _load_oracle(None)
    settings = [(voc, sch, st, tl) for voc in (vocoder or [None]) for sch in (scheduler or [None]) for st in (steps or [None]) for tl in (timeline or [None])]
    reports = {}
    for k, (voc, sch, st, tl) in enumerate(settings):
        first_of_vocoder = k == 0 or voc != settings[k - 1][0]  # the round trip depends on the vocoder only
        report = evaluate_generator(pipe, n=n, prompts=specs, steps=st, guidance_scale=guidance, scheduler=sch, seed=seed, oracle=oracle, batch=batch, roundtrip_n=roundtrip_n if first_of_vocoder else 0, vocoder=voc, timeline=tl)
        s = report.settings
        reports[f"{s['vocoder']}:{s['scheduler']}@{s['steps']}{'+timeline' if s['timeline'] else ''}"] = report
    text = write_report(reports, out)
    click.echo(text)
    if as_json:
        only = next(iter(reports.values())) if len(reports) == 1 else None
        payload = {k: round(v, 6) for k, v in only.metrics.items()} if only else {name: {k: round(v, 6) for k, v in r.metrics.items()} for name, r in reports.items()}
        click.echo(json.dumps(payload))


@eval_.command("baton")
@click.option("--model", "models", multiple=True, metavar="NAME=DIR", help="a row: base, pretrain (the pretraining term alone), hd, rd or hd+rd and its generator directory (repeatable; default: the shipped base and the served fine-tune)")
@click.option("--n", "n", type=click.IntRange(1), default=50, show_default=True, help="held-out prompts per task")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/baton-eval"), show_default=True, help="generated candidates are cached here per row and resumed")
@click.option("--reward", "reward_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model for best-of-4 (default: the shipped one)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md and report.json here")
@click.option("--device", default=None, help="cpu or cuda[:i]")
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True, help="which held-out prompts and generation seeds (another seed: another sample of the held-out split)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (keys like hd+rd.temporal.n1) on the last line")
def eval_baton_cmd(models: tuple[str, ...], n: int, work_dir: Path, reward_dir: Path | None, out: Path | None, device: str | None, seed: int, as_json: bool) -> None:
    """BATON's table: base vs HD / RD / HD+RD fine-tuned generators, N=1 and best-of-4 by reward and by CLAP."""
    from services.checkpoints import shipped
    from services.reward import RewardModel
    from training.eval_baton import ROWS, add_paired_deltas, baton_markdown, baton_table, default_rows, evaluate_row, row_directory

    rows = dict(_named_dir("--model", spec, ROWS) for spec in models) if models else default_rows(shipped("generator-base"), shipped("generator"))
    oracle, _ = _load_oracle(None)
    results, per_prompt = {}, {}
    for name, directory in rows.items():
        pipe = _load_generator(directory, device)
        reward = RewardModel.from_pretrained(reward_dir or shipped("reward"), pipe.device)
        results[name], per_prompt[name] = evaluate_row(pipe, directory, n, row_directory(work_dir, name), oracle, reward, reward.clap, seed=seed)
    add_paired_deltas(results, per_prompt)
    text = baton_markdown(results)
    click.echo(text)
    table = baton_table(results)
    if out:
        from training.plots import training_curves
        from training.train_baton import TRAINING_LOG

        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text + "\n")
        (out / "report.json").write_text(json.dumps(table, indent=2) + "\n")
        logs = {name: [json.loads(line) for line in (d / TRAINING_LOG).read_text().splitlines()] for name, d in rows.items() if (d / TRAINING_LOG).is_file()}
        if logs:
            click.echo(f"plot: {training_curves(logs, ('loss', 'pretrain', 'feedback'), out / 'training.png', 'BATON fine-tuning (moving average)')}")
    if as_json:
        click.echo(json.dumps({k: round(v, 4) for k, v in table.items()}))


@eval_.command("paired")
@click.option("--a", "rows_a", multiple=True, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="a row directory of `tta eval baton` (its --work-dir/NAME, e.g. runs/baton-eval/hd_rd); repeat once per sample")
@click.option("--b", "rows_b", multiple=True, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="the row to subtract, from the same --n and --seed as the --a in the same place")
@click.option("--oracle", "oracle_checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="judge every clip again with this oracle instead of reading the labels stored when the sets were built")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on the last line")
def eval_paired_cmd(rows_a: tuple[Path, ...], rows_b: tuple[Path, ...], oracle_checkpoint: Path | None, as_json: bool) -> None:
    """Row A minus row B at N=1, per task, pooled over samples: per-prompt differences, so prompt difficulty cancels."""
    from training.eval_baton import paired_difference

    if len(rows_a) != len(rows_b):
        _fail(f"give one --b per --a: got {len(rows_a)} --a and {len(rows_b)} --b")
    oracle = _load_oracle(oracle_checkpoint)[0] if oracle_checkpoint is not None else None
    try:
        result = paired_difference(list(zip(rows_a, rows_b)), oracle)
    except ValueError as exc:
        _fail(str(exc))
    _echo_pooled("A - B", result, as_json)


@eval_.command("picks")
@click.option("--candidates", "directories", multiple=True, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="a candidate set cached by `tta eval rerank` or `tta eval baton` (a {task}-n{N}-k{K}[-seedS] directory); repeat once per sample and task")
@click.option("--a", "picker_a", required=True, help="the picker to measure: random, clap, reward, clap_timeline, reward_timeline or ceiling")
@click.option("--b", "picker_b", required=True, help="the picker to subtract (the same names)")
@click.option("--at", "n", type=click.IntRange(1), default=4, show_default=True, help="N: candidates to pick from (in the K // N disjoint groups of each prompt)")
@click.option("--reward", "reward_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model for the reward pickers (default: the shipped one; its CLAP scores the clap pickers)")
@click.option("--a-reward", "reward_a", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model for picker A's reward pickers instead (e.g. a candidate head)")
@click.option("--b-reward", "reward_b", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model for picker B's reward pickers instead")
@click.option("--a-clap", "clap_a", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="CLAP that scores picker A's clap pickers (default: the reward model's own), e.g. a candidate CLAP")
@click.option("--b-clap", "clap_b", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="CLAP that scores picker B's clap pickers (default: the reward model's own)")
@click.option("--a-known-words", "wording_a", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="picker A's judges read every prompt and clause in this known wording (services.wording; e.g. services/checkpoints/wording)")
@click.option("--b-known-words", "wording_b", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="picker B's judges read in this known wording")
@click.option("--by-wording", is_flag=True, help="also pool the prompts that name an event by a held-out word, and the others, apart (held-out candidate sets only)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on the last line")
def eval_picks_cmd(directories: tuple[Path, ...], picker_a: str, picker_b: str, n: int, reward_dir: Path | None, reward_a: Path | None, reward_b: Path | None, clap_a: Path | None, clap_b: Path | None, wording_a: Path | None, wording_b: Path | None, by_wording: bool, as_json: bool) -> None:
    """Picker A minus picker B at N, per task, pooled over samples: per-prompt differences, so prompt difficulty
    cancels. --a-clap / --b-clap, --a-reward / --b-reward and --a-known-words / --b-known-words compare one picker
    across two models or wordings."""
    from services.checkpoints import shipped
    from services.clap import load_clap
    from services.reward import RewardModel
    from services.wording import KnownWording
    from training.eval_rerank import candidate_records, novel_word_prompts, paired_picks, score_candidates

    try:
        rewards = {d: RewardModel.from_pretrained(d) for d in {r or reward_dir or shipped("reward") for r in (reward_a, reward_b)}}
        sides = []  # score_candidates' models for picker A, then B
        for reward_side, clap_side, wording_side in ((reward_a, clap_a, wording_a), (reward_b, clap_b, wording_b)):
            reward = rewards[reward_side or reward_dir or shipped("reward")]
            clap = reward.clap if clap_side is None else load_clap(clap_side)
            sides.append({"reward_model": reward, "clap": clap, "wording": KnownWording.from_pretrained(wording_side) if wording_side else None})
        same = (reward_a, clap_a, wording_a) == (reward_b, clap_b, wording_b)
        timeline = any(p.endswith("_timeline") for p in (picker_a, picker_b))
        by_task: dict[str, list[list]] = {}
        novel: dict[str, list] = {}
        for directory in directories:
            records, _ = candidate_records(directory)
            a = score_candidates(directory, **sides[0], timeline=timeline)
            b = a if same else score_candidates(directory, **sides[1], timeline=timeline)
            by_task.setdefault(records[0].task, [[], []])
            by_task[records[0].task][0].append(a)
            by_task[records[0].task][1].append(b)
            if by_wording:
                novel.setdefault(records[0].task, []).append(novel_word_prompts(directory))
        result = {}
        for task, (sa, sb) in by_task.items():
            result[task] = paired_picks(sa, picker_a, picker_b, n, scored_b=sb)
            for wording, rows in (("novel", novel.get(task)), ("seen", [~m for m in novel.get(task, [])])) if by_wording else ():
                if any(m.any() for m in rows):  # a wording no prompt uses gets no row
                    result[f"{task}, {wording} words"] = paired_picks(sa, picker_a, picker_b, n, scored_b=sb, rows=rows)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    _echo_pooled(f"{picker_a} - {picker_b} at N={n}", result, as_json)


def _echo_pooled(title: str, result: dict[str, dict], as_json: bool) -> None:
    """A per-task table of pooled differences (training.stats.pooled_difference), in points, and the JSON."""
    click.echo(f"| task | {title}, per sample | pooled | prompts |\n|---|---|---|---|")
    for task, r in result.items():
        click.echo(f"| {task} | {' / '.join(f'{100 * x:+.1f}' for x in r['per_sample'])} | {100 * r['delta']:+.1f} ±{100 * r['se']:.1f} | {r['prompts']} |")
    if as_json:
        click.echo(json.dumps(result))


def _named_dir(option: str, spec: str, names: tuple[str, ...] | None = None) -> tuple[str, Path]:
    """NAME=DIR of a row option, checked: NAME (one of `names` when given) and an existing directory."""
    name, sep, directory = spec.partition("=")
    if not sep or not name or (names is not None and name not in names):
        _fail(f"{option} takes NAME=DIR" + (f" with NAME one of {', '.join(names)}" if names else "") + f"; got {spec!r}")
    if not Path(directory).is_dir():
        _fail(f"{option} {name}: {directory} is not a directory")
    return name, Path(directory)


@eval_.command("rewriter")
@click.option("--sft", "sft_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="row sft: rewriter directory (default: the shipped rewriter-sft, the served rewriter's initialisation)")
@click.option("--feedback", "feedback_dir", default=None, help="row feedback: rewriter directory, or 'none' to leave the row out (default: the shipped, served rewriter: SFT + CLAP feedback)")
@click.option("--row", "extra_rows", multiple=True, metavar="NAME=DIR", help="an extra row to compare, e.g. an earlier rewriter (repeatable)")
@click.option("--prompts", "which", type=click.Choice(["heldout", "train"]), default="heldout", show_default=True, help="open prompts: held-out scene descriptions, or the training ones")
@click.option("--seeds", type=click.IntRange(1, 16), default=4, show_default=True, help="clips per prompt (the same noise seeds in every row)")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="generator (default: the shipped one)")
@click.option("--clap", "clap_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="CLAP for the CLAP column (default: the shipped mini CLAP)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md, report.json and rewriter.png here")
@click.option("--device", default=None, help="cpu or cuda[:i]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (keys like feedback.clap) on the last line")
def eval_rewriter_cmd(sft_dir: Path | None, feedback_dir: str | None, extra_rows: tuple[str, ...], which: str, seeds: int, checkpoint: Path | None, clap_dir: Path | None, out: Path | None, device: str | None, as_json: bool) -> None:
    """The rewriter table: raw prompt vs SFT rewrite vs SFT + CLAP feedback, on open prompts."""
    from services.checkpoints import shipped
    from services.clap import load_clap
    from services.manifest import ManifestError, checkpoint_version
    from services.modeling import CheckpointError
    from services.rewriter import PromptRewriter
    from training.eval_rewriter import evaluate_rewriters, rewriter_markdown, rewriter_plot, rewriter_table

    try:
        dirs = {"sft": sft_dir or shipped("rewriter-sft")}
        if feedback_dir != "none":
            dirs["feedback"] = _named_dir("--feedback", f"feedback={feedback_dir}")[1] if feedback_dir else shipped("rewriter")
        dirs |= dict(_named_dir("--row", spec) for spec in extra_rows)
        rewriters: dict[str, PromptRewriter | None] = {"raw": None, **{name: PromptRewriter.from_pretrained(d) for name, d in dirs.items()}}
        clap_dir = clap_dir or shipped("clap")
        clap = load_clap(clap_dir)
    except (CheckpointError, ManifestError, FileNotFoundError) as exc:
        _fail(str(exc))
    pipe = _load_generator(checkpoint, device)
    oracle, _ = _load_oracle(None)
    results = evaluate_rewriters(rewriters, pipe, clap, oracle, heldout=which == "heldout", seeds=seeds)
    _report(rewriter_markdown(results, checkpoint_version(clap_dir)), rewriter_table(results), out, as_json, lambda d: rewriter_plot(results, d / "rewriter.png"))


@eval_.command("clap")
@click.option("--clap", "clap_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="mini CLAP directory, repeatable for a side-by-side table (default: the shipped one)")
@click.option("--n", "n", type=click.IntRange(10), default=1000, show_default=True, help="held-out clips")
@click.option("--generator", "generator_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="also score the clips through this generator's VAE + vocoder (default: the shipped one)")
@click.option("--no-codec", is_flag=True, help="clean clips only")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/clap/cache"), show_default=True, help="rendered clips are cached here")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md and report.json here")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (keys like clap@abc.text_to_audio.r10) on the last line")
def eval_clap_cmd(clap_dirs: tuple[Path, ...], n: int, generator_dir: Path | None, no_codec: bool, work_dir: Path, out: Path | None, as_json: bool) -> None:
    """Mini CLAP on held-out clips: text<->audio retrieval R@1/R@10 and order accuracy (true caption above
    the same events in another order), on clean clips and on the same clips through the generator's codec."""
    from services.checkpoints import shipped
    from services.clap import MiniClap, load_clap
    from services.manifest import checkpoint_version
    from training.train_clap import build_codec_logmel, build_dataset, heldout_metrics

    heldout = build_dataset(0, n, "heldout", work_dir)
    codec = None if no_codec else build_codec_logmel(0, n, "heldout", generator_dir or shipped("generator"), work_dir)
    table: dict[str, float] = {}
    lines = ["| CLAP | text->audio R@1 | R@10 | by caption: R@1 | R@10 | audio->text R@1 | R@10 | order acc. | codec: text->audio R@1 | R@10 | by caption: R@10 | order acc. |", "|---" * 12 + "|"]
    for directory in clap_dirs or (shipped("clap"),):
        clap = load_clap(directory)
        if not isinstance(clap, MiniClap):
            raise click.UsageError(f"{directory}: only a mini CLAP reads the cached log-mel clips")
        name = checkpoint_version(directory)
        metrics = heldout_metrics(clap, heldout, codec)
        table.update({f"{name}.{k}": v for k, v in metrics.items()})
        cells = [metrics.get(k, float("nan")) for k in (
            "text_to_audio.r1", "text_to_audio.r10", "text_to_audio_by_caption.r1", "text_to_audio_by_caption.r10", "audio_to_text.r1", "audio_to_text.r10", "heldout.order_accuracy",
            "codec_heldout.text_to_audio.r1", "codec_heldout.text_to_audio.r10", "codec_heldout.text_to_audio_by_caption.r10", "codec_heldout.order_accuracy",
        )]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    text = "\n".join([f"held-out clips: {n}; codec: {'none' if no_codec else checkpoint_version(generator_dir or shipped('generator'))}; 'by caption': any clip with the query's exact caption counts", "", *lines])
    _report(text, table, out, as_json)


@eval_.command("rerank")
@click.option("--n", "n", type=click.IntRange(1), default=30, show_default=True, help="held-out prompts per task (integrity, temporal)")
@click.option("--k", "k", type=click.IntRange(1, 16), default=8, show_default=True, help="candidates generated per prompt (the largest N)")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/rerank"), show_default=True, help="generated candidates are cached here and resumed")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="generator (default: the shipped one)")
@click.option("--reward", "reward_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="reward model (default: the shipped one)")
@click.option("--clap", "clap_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="CLAP for the CLAP picker (default: the shipped mini CLAP)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write report.md, report.json and rerank.png here")
@click.option("--seed", type=click.IntRange(0), default=1, show_default=True, help="which held-out prompts and generation seeds (another seed: another sample of the held-out split)")
@click.option("--device", default=None, help="cpu or cuda[:i]")
@click.option("--judge-wording", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="the CLAP and reward judges read every prompt and clause in this known wording (services.wording; e.g. services/checkpoints/wording)")
@click.option("--generator-wording", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="the generator gets every prompt in this known wording (use another --work-dir: the candidates differ)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (keys like temporal.reward.n4) on the last line")
def eval_rerank_cmd(n: int, k: int, work_dir: Path, checkpoint: Path | None, reward_dir: Path | None, clap_dir: Path | None, out: Path | None, seed: int, device: str | None, judge_wording: Path | None, generator_wording: Path | None, as_json: bool) -> None:
    """Best-of-N on held-out prompts: oracle accuracy with random, CLAP and reward picks, and the ceiling."""
    from services.checkpoints import shipped
    from services.clap import load_clap
    from services.reward import RewardModel
    from services.wording import KnownWording
    from training.eval_rerank import NS, RERANK_TASKS, build_candidates, rerank_markdown, rerank_plot, rerank_table, score_candidates

    generator_dir = checkpoint or shipped("generator")
    pipe = _load_generator(generator_dir, device)
    oracle, _ = _load_oracle(None)
    clap = load_clap(clap_dir or shipped("clap"), pipe.device)
    reward = RewardModel.from_pretrained(reward_dir or shipped("reward"), pipe.device, clap=clap if clap_dir is None and reward_dir is None else None)
    from training.build_dataset import DatasetError

    try:
        wording = KnownWording.from_pretrained(judge_wording) if judge_wording is not None else None
        results = {task: score_candidates(build_candidates(task, n, k, work_dir, pipe, generator_dir, oracle, seed, generator_wording=generator_wording), reward, clap, timeline=pipe.config.default_timeline, wording=wording) for task in RERANK_TASKS}
    except DatasetError as exc:  # e.g. cached candidates from another generator version: say so, no traceback
        _fail(f"cached candidates in {work_dir} do not fit this run (pass another --work-dir): {exc}")
    ns = tuple(x for x in NS if x <= k)
    table = rerank_table(results, ns)
    _report(rerank_markdown(table, RERANK_TASKS, ns), table, out, as_json, lambda d: rerank_plot(table, RERANK_TASKS, d / "rerank.png", ns))


# ----------------------------------------------------------------------------- serve
@main.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="Ray Serve config YAML (default: deployments/configs/serve-cpu.yaml)")
@click.option("--host", default=None, help="address the HTTP proxy binds (default: the config's, 127.0.0.1 on CPU)")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default: the config's, 8000)")
@click.option("--checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="generator directory (default: the config's, else the shipped mini default)")
@click.option("--device", default=None, help="cpu or cuda[:i] for the generator and reward model (default: the config's)")
@click.option("--reward", "reward_checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="the reranker's directory: a reward model, or a CLAP with --reranker clap (default: the config's, else the shipped one)")
@click.option("--reranker", type=click.Choice(["reward", "clap", "none"]), default=None, help="reward: BATON's reward model; clap: CLAP cosine; none: candidates in generation order (default: the config's)")
@click.option("--rerank-by-stretch/--rerank-whole-clip", "by_stretch", default=None, help="also judge each clause of a timeline on its own stretch of the clip, or the whole clip only (default: the config's)")
@click.option("--rerank-known-words/--rerank-as-written", "known_words", default=None, help="the reranker reads each clause of the prompt in the nearest phrasing its judge was trained on (the shipped known wording), or the prompt as written (default: the config's)")
@click.option("--rewriter", type=click.Choice(["model", "none"]), default=None, help="none: prompts go to the generator as sent (default: the config's)")
@click.option("--rewriter-checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="rewriter directory, any local FLAN-T5-class model (default: the config's, else the shipped one)")
@click.option("--num-cpus", type=click.IntRange(1), default=None, help="CPUs Ray may use (default: all)")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Ray's Prometheus endpoint (GET /metrics) with the service's ray_tta_* metrics")
def serve_cmd(config_path: Path | None, host: str | None, port: int | None, checkpoint: Path | None, device: str | None, reward_checkpoint: Path | None, reranker: str | None, by_stretch: bool | None, known_words: bool | None, rewriter: str | None, rewriter_checkpoint: Path | None, num_cpus: int | None, metrics_port: int) -> None:
    """Start Ray, deploy the service from a serve config and serve HTTP until interrupted (OpenAPI at /docs)."""
    import signal
    import time

    from deployments.config import ServeConfigError, deploy, read_config, shipped_config, start_ray, validate, with_overrides

    try:
        args = {"checkpoint": checkpoint and str(checkpoint), "device": device, "reward_checkpoint": reward_checkpoint and str(reward_checkpoint), "reranker": reranker, "rerank_by_stretch": by_stretch, "rerank_known_words": known_words}
        args |= {"rewriter": rewriter, "rewriter_checkpoint": rewriter_checkpoint and str(rewriter_checkpoint)}
        config = with_overrides(read_config(config_path or shipped_config("cpu")), host=host, port=port, args=args)
        validate(config)  # before Ray starts: a bad config costs nothing
    except ServeConfigError as exc:
        _fail(str(exc))
    from ray import serve

    start_ray(num_cpus, metrics_port)
    try:
        url = deploy(config)
    except (RuntimeError, TimeoutError) as exc:
        serve.shutdown()
        _fail(str(exc))
    click.echo(f"serving on {url} (OpenAPI at {url}/docs, metrics at http://127.0.0.1:{metrics_port}/metrics); Ctrl-C or SIGTERM stops")

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt

    # SIGTERM (docker stop, a process manager) shuts down as cleanly as Ctrl-C; so does SIGINT where a
    # background launch left it ignored
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("shutting down")
        serve.shutdown()


# ----------------------------------------------------------------------------- batch client
@main.command("batch")
@click.argument("prompts_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output directory (a rerun into it skips finished prompts)")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="the service's base URL")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="requests in flight")
@click.option("-n", "--num-candidates", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=None, help="every prompt uses this seed (default: random, recorded per prompt)")
@click.option("--steps", type=click.IntRange(1, 1000), default=None)
@click.option("--guidance", "guidance_scale", type=click.FloatRange(0, 50), default=None)
@click.option("--scheduler", type=click.Choice(["ddpm", "ddim", "dpm++"]), default=None)
@click.option("--negative-prompt", default=None)
@click.option("--duration", "duration_s", type=click.FloatRange(0, 30, min_open=True), default=None)
@click.option("--format", "response_format", type=click.Choice(["wav", "flac"]), default="wav", show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 3600, min_open=True), default=None, help="per-prompt deadline in seconds (server side; default the server's)")
@click.option("--retries", type=click.IntRange(0, 20), default=4, show_default=True, help="retries per prompt on 503/429/408 and connection errors, with backoff")
def batch_cmd(prompts_file: Path, out: Path, url: str, concurrency: int, retries: int, **params) -> None:
    """Generate every prompt of PROMPTS_FILE (one per line, '#' comments) through the REST API.

    Writes OUT/audio/<key>.<format> (the best candidate) and OUT/results.jsonl (rewritten prompt,
    reward, seed, file per prompt); failures go to OUT/failures.jsonl and the exit status is 1."""
    import asyncio

    from clients.batch import BatchSettingsError, run_batch
    from clients.sdk import RetryPolicy

    try:
        summary = asyncio.run(run_batch(prompts_file, out, url, params, concurrency=concurrency, retry=RetryPolicy(max_retries=retries)))
    except BatchSettingsError as exc:
        _fail(str(exc))
    click.echo(f"{summary.total} prompts: {summary.already_done} already done, {summary.succeeded} generated, {summary.failed} failed -> {out / 'results.jsonl'}")
    if summary.failed:
        click.echo(f"failures: {out / 'failures.jsonl'} (rerun the same command to retry them)", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Feedback datasets: generated clips with (simulated or human) labels."""


def _prompt_source(ctx, param, value: str):
    """--prompts: a count of prompts to compose, or a JSONL prompt file."""
    if value.isdigit():
        if int(value) < 1:
            raise click.BadParameter("the prompt count must be >= 1")
        return int(value)
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value!r} is neither a prompt count nor an existing prompt file")
    return path


@data.command("build")
@click.option("--task", type=click.Choice(["integrity", "temporal"]), required=True)
@click.option("--prompts", "prompt_source", callback=_prompt_source, required=True, help="number of prompts to compose from event labels and conjunctions, or a JSONL prompt file")
@click.option("--wording", type=click.Choice(["training", "teacher"]), default="training", show_default=True, help="composed prompts name events by the world's training phrasings, or by words MiniLM places near them that no caption contains (training/teacher_words.py)")
@click.option("--clips-per-prompt", type=click.IntRange(1, 16), default=5, show_default=True, help="K generated clips per prompt (BATON: 5)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="dataset directory; an unfinished build there is resumed")
@click.option("--label", type=click.Choice(["simulated", "none"]), default="simulated", show_default=True, help="none: leave clips.jsonl for people to label")
@click.option("--flip-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="simulated annotator's label flip rate")
@click.option("--seed", type=click.IntRange(0, 200), default=0, show_default=True, help="prompt composition, generation seeds and label flips")
@_generation_options
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="generator (default: the shipped mini default)")
@click.option("--oracle", "oracle_checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None, help="simulated annotator's oracle (default: the shipped one)")
@click.option("--device", default=None, help="cpu or cuda[:i]")
@click.option("--prompts-per-chunk", type=click.IntRange(1, 256), default=8, show_default=True, help="prompts per generation call (and per resumable part)")
def data_build(task: str, prompt_source, wording: str, clips_per_prompt: int, out: Path, label: str, flip_rate: float, seed: int, steps: int | None, guidance: float | None, scheduler: str | None, checkpoint: Path | None, oracle_checkpoint: Path | None, device: str | None, prompts_per_chunk: int) -> None:
    """Compose prompts, generate K clips each, label them; prints label rates beside BATON's."""
    from services.checkpoints import shipped
    from services.manifest import checkpoint_version, sha256_file
    from training.annotation import SimulatedAnnotator
    from training.build_dataset import BuildSettings, DatasetError, build_dataset, check_task_prompts, compose_prompts, summary_markdown
    from training.world.prompts import PromptFileError, load_prompt_file

    if wording != "training" and not isinstance(prompt_source, int):
        _fail(f"--wording {wording} applies to composed prompts; {prompt_source} is a prompt file, whose wording is its own")
    try:
        prompts = compose_prompts(task, prompt_source, seed, wording) if isinstance(prompt_source, int) else load_prompt_file(prompt_source)  # type: ignore[arg-type]
        check_task_prompts(prompts, task)  # type: ignore[arg-type]
    except (PromptFileError, DatasetError) as exc:
        _fail(str(exc))
    pipe = _load_generator(checkpoint, device)
    annotator = None
    if label == "simulated":
        oracle, directory = _load_oracle(oracle_checkpoint)
        annotator = SimulatedAnnotator(oracle, flip_rate=flip_rate, seed=seed, oracle_sha256=sha256_file(directory / "model.safetensors"))
    settings = BuildSettings(
        task=task,  # type: ignore[arg-type]
        clips_per_prompt=clips_per_prompt,
        seed=seed,
        generator=checkpoint_version(checkpoint or shipped("generator")),
        steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        label=label,
        annotator=annotator.name if annotator else None,
        wording=wording,
    )
    try:
        summary = build_dataset(out, prompts, pipe, settings, annotator, prompts_per_chunk=prompts_per_chunk)
    except DatasetError as exc:
        _fail(str(exc))
    click.echo(summary_markdown(summary))


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
