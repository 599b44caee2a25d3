"""`tta eval rerank`: does picking the best of N by a scorer raise oracle accuracy?

For held-out integrity and temporal prompts, K candidates per prompt are generated once (a dataset
built by `training.build_dataset`, labelled by the noise-free oracle, cached under the work dir and
resumed), then every picker chooses among the first N of each prompt's candidates, never across
prompts: random (the expected accuracy of a uniform pick), CLAP (highest cosine between prompt and
audio), reward (highest reward-model score), and the oracle ceiling (any of the N accepted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.audio import read_audio
from services.clap import ClapEmbedder
from services.generator import TangoPipeline
from services.manifest import checkpoint_version
from services.reward import ClapReranker, RewardModel, judged_by_stretch
from services.timeline import parse_timeline
from services.wording import InKnownWords, KnownWording
from training.annotation import AnnotationRecord, SimulatedAnnotator, Task, judged_right, read_annotations
from training.build_dataset import BuildSettings, build_dataset
from training.eval_generator import EVAL_SEED, heldout_clip_specs, prompt_of, task_of, uses_novel_words
from training.stats import pooled_difference
from training.train_reward import within_prompt_auc
from training.world.clips import ClipSpec
from training.world.oracle import SoundEventDetector
from training.world.prompts import PromptSpec

RERANK_TASKS: tuple[Task, ...] = ("integrity", "temporal")


def heldout_task_specs(task: Task, n: int, seed: int = EVAL_SEED) -> list[ClipSpec]:
    """The clip specs of the first n held-out prompts of a task (the same prompts `tta eval generator` uses)."""
    return [s for s in heldout_clip_specs(n, seed) if task_of(prompt_of(s)) == task][:n]


def heldout_task_prompts(task: Task, n: int, seed: int = EVAL_SEED) -> list[PromptSpec]:
    """The first n held-out prompts of a task."""
    return [prompt_of(s) for s in heldout_task_specs(task, n, seed)]


def build_candidates(task: Task, n: int, k: int, work_dir: Path, pipe: TangoPipeline, generator_dir: Path, oracle: SoundEventDetector, seed: int = EVAL_SEED, progress: bool = True, generator_wording: Path | None = None) -> Path:
    """Generate (or resume) k candidates for each of n held-out prompts, labelled by the noise-free oracle.
    `generator_wording`: a known wording (`services.wording`) the generator gets every prompt in."""
    annotator = SimulatedAnnotator(oracle, flip_rate=0.0, seed=seed)
    reword = KnownWording.from_pretrained(generator_wording) if generator_wording is not None else None
    settings = BuildSettings(task=task, clips_per_prompt=k, seed=seed, generator=checkpoint_version(generator_dir), annotator=annotator.name, generator_wording=checkpoint_version(generator_wording) if generator_wording is not None else None)
    out = Path(work_dir) / (f"{task}-n{n}-k{k}" if seed == EVAL_SEED else f"{task}-n{n}-k{k}-seed{seed}")
    build_dataset(out, heldout_task_prompts(task, n, seed), pipe, settings, annotator, progress=progress, reword=reword)
    return out


# ----------------------------------------------------------------------------- picking
def timeline_scores(score_pairs, prompt: str, waveforms: np.ndarray, sample_rate: int, stretches: int = 0, whole: np.ndarray | None = None) -> np.ndarray:
    """`services.reward.judged_by_stretch` for candidates generated with `stretches` stretches (0: no timeline),
    the clauses parsed from the prompt; whole-clip scores when they do not match the stretches."""
    clauses = [c.text for c in parse_timeline(prompt) or []] if stretches else None
    return judged_by_stretch(score_pairs, prompt, waveforms, sample_rate, clauses if clauses and len(clauses) == stretches else None, whole=whole)


PICKERS = ("random", "clap", "reward", "clap_timeline", "reward_timeline", "ceiling")
NS = (1, 2, 4, 8)


@dataclass
class CandidateScores:
    """Per prompt: oracle labels, CLAP cosines and rewards of its K candidates (generation order)."""

    labels: np.ndarray  # [P, K] 0/1 (noise-free oracle)
    clap: np.ndarray  # [P, K]
    reward: np.ndarray  # [P, K]
    # the same scorers, each clause also judged on the stretch its timeline gave it (timeline_scores);
    # equal to the whole-clip scores for prompts without a timeline
    clap_timeline: np.ndarray | None = None
    reward_timeline: np.ndarray | None = None


def pick_per_prompt(scores: CandidateScores, picker: str, n: int) -> np.ndarray:
    """[P]: per prompt, the oracle accuracy of `picker` choosing among n candidates, averaged over the K // n
    disjoint groups of n that the prompt's K candidates make (K=8, N=4: candidates 0-3 and 4-7). "random" is the
    expectation of a uniform pick, "ceiling" whether any of the n is right; other pickers take their top score."""
    groups = scores.labels.shape[1] // n
    if groups < 1:
        raise ValueError(f"N={n} needs at least {n} candidates per prompt, there are {scores.labels.shape[1]}")
    labels = scores.labels[:, : groups * n].reshape(len(scores.labels), groups, n)
    if picker == "random":
        return labels.mean((1, 2))
    if picker == "ceiling":
        return labels.max(2).mean(1)
    return np.take_along_axis(scores.labels, picked_candidates(scores, picker, n), 1).mean(1)


def picked_candidates(scores: CandidateScores, picker: str, n: int) -> np.ndarray:
    """[P, K // n]: per prompt and disjoint group of n candidates (as in `pick_per_prompt`), the index among the
    prompt's K candidates of the one a scoring picker takes (its top score)."""
    score = getattr(scores, picker, None)
    if picker not in PICKERS or picker in ("random", "ceiling") or score is None:
        raise ValueError(f"no {picker!r} scores (pickers: {', '.join(PICKERS)}; *_timeline only for timeline candidates)")
    groups = scores.labels.shape[1] // n
    if groups < 1:
        raise ValueError(f"N={n} needs at least {n} candidates per prompt, there are {scores.labels.shape[1]}")
    return score[:, : groups * n].reshape(len(score), groups, n).argmax(2) + n * np.arange(groups)


def pick_accuracy(scores: CandidateScores, n: int) -> dict[str, float]:
    """Oracle accuracy of each picker choosing among n candidates of every prompt (`pick_per_prompt`).
    Every candidate counts at every N, which makes the estimate far less noisy than the first n alone
    would; at N=1 every picker reads the mean of all candidates, the expected single generation."""
    return {picker: float(pick_per_prompt(scores, picker, n).mean()) for picker in PICKERS if picker in ("random", "ceiling") or getattr(scores, picker) is not None}


def paired_picks(scored: list[CandidateScores], a: str, b: str, n: int, scored_b: list[CandidateScores] | None = None, rows: list[np.ndarray] | None = None) -> dict[str, float]:
    """Picker a minus picker b at N=n over candidate sets of one task (e.g. the samples --seed 1, 2, 3): the
    per-prompt differences pooled, so prompt difficulty cancels. `delta`, `se`, `prompts` and `per_sample`.
    scored_b: the same sets scored by other models for picker b (e.g. another CLAP); default `scored`.
    rows: per set, a [P] bool mask of the prompts to count (e.g. `novel_word_prompts`); default all."""
    scored_b = scored if scored_b is None else scored_b
    if len(scored_b) != len(scored) or any(not np.array_equal(x.labels, y.labels) for x, y in zip(scored, scored_b)):
        raise ValueError("pickers A and B must be scored on the same candidate sets")
    differences = [pick_per_prompt(x, a, n) - pick_per_prompt(y, b, n) for x, y in zip(scored, scored_b)]
    return pooled_difference(differences if rows is None else [d[m] for d, m in zip(differences, rows)])


def novel_word_prompts(directory: Path) -> np.ndarray:
    """[P] bool, per prompt of a held-out candidate set (as `build_candidates` writes it): does the prompt name
    an event by a held-out word? The clip specs are drawn again from the set's seed and checked against its
    prompts, so a set of other prompts is an error, not a wrong split."""
    records, labels = candidate_records(directory)
    settings = json.loads((directory / "dataset.json").read_text())
    k = labels.shape[1]
    prompts = [r.prompt for r in records[::k]]
    specs = heldout_task_specs(settings["task"], len(prompts), settings["seed"])
    if [prompt_of(s).prompt for s in specs] != prompts:
        raise ValueError(f"{directory}: its prompts are not the first {len(prompts)} held-out {settings['task']} prompts of seed {settings['seed']}")
    return np.array([uses_novel_words(s) for s in specs])


def candidate_records(directory: Path, oracle: SoundEventDetector | None = None) -> tuple[list[AnnotationRecord], np.ndarray]:
    """A candidate dataset's records (generation order, K per prompt) and their noise-free oracle labels [P, K]:
    those stored when the set was built, or with `oracle` that judge's, heard again from the stored audio."""
    records = read_annotations(directory / "records.jsonl")
    k = json.loads((directory / "dataset.json").read_text())["clips_per_prompt"]
    if len(records) % k:
        raise ValueError(f"{directory}: {len(records)} records are not a multiple of {k} candidates per prompt")
    if oracle is None:
        labels = np.array([r.provenance.oracle_label if r.provenance.oracle_label is not None else r.label for r in records])
    else:
        labels = np.array(rejudge(directory, records, oracle))
    return records, labels.reshape(len(records) // k, k)


def rejudge(directory: Path, records: list[AnnotationRecord], oracle: SoundEventDetector) -> list[int]:
    """Each record's clip judged again by `oracle` against the events its prompt names (records keep them in
    their provenance, in the prompt's order), the way the annotator judges: all heard, nothing else, and for
    temporal in that order."""
    missing = [r.audio for r in records if not r.provenance.events]
    if missing:
        raise ValueError(f"{directory}: {len(missing)} records name no prompted events in their provenance (e.g. {missing[0]}), so they cannot be judged again")
    labels = []
    for start in range(0, len(records), 64):
        chunk = records[start : start + 64]
        audio = np.stack([read_audio(directory / r.audio, oracle.mel_cfg.sample_rate) for r in chunk])
        labels += [int(judged_right(d, r.provenance.events, in_order=r.task == "temporal")) for d, r in zip(oracle.detect(audio), chunk)]
    return labels


def score_candidates(directory: Path, reward_model: RewardModel, clap: ClapEmbedder, timeline: bool = False, wording: KnownWording | None = None) -> CandidateScores:
    """Read a candidate dataset back and score every clip with CLAP and the reward model; with `timeline`
    (the candidates were generated with timelines) also by clause and stretch (`timeline_scores`). With
    `wording`, both judges read every prompt and clause in their known wording (`services.wording`)."""
    records, labels = candidate_records(directory)
    k = labels.shape[1]
    audio = np.stack([read_audio(directory / r.audio, clap.sample_rate) for r in records])
    written = [r.prompt for r in records]
    prompts = wording(written) if wording is not None else written
    clap_audio = clap.embed_audio(audio, clap.sample_rate)
    text = dict(zip(sorted(set(prompts)), clap.embed_text(sorted(set(prompts)))))
    clap_text = np.stack([text[p] for p in prompts])
    cosine = np.sum(clap_audio * clap_text, -1)
    # the reward model reads its own CLAP's embeddings (the same object when both are the shipped ones)
    if reward_model.clap is clap:
        reward = reward_model.reward_from_embeddings(clap_audio, clap_text)
    else:
        reward = reward_model.score_pairs(prompts, audio, clap.sample_rate)
    shape = labels.shape
    scores = CandidateScores(labels, cosine.reshape(shape), np.asarray(reward).reshape(shape))
    if timeline:
        for name, scorer, whole in (("clap_timeline", ClapReranker(clap), scores.clap), ("reward_timeline", reward_model, scores.reward)):
            scorer = InKnownWords(scorer, wording) if wording is not None else scorer
            rows = []
            for p, i in enumerate(range(0, len(records), k)):
                # the stretches are the written prompt's clauses, as the generator placed them
                segments = parse_timeline(written[i])
                rows.append(timeline_scores(scorer.score_pairs, written[i], audio[i : i + k], clap.sample_rate, len(segments) if segments else 0, whole=whole[p]))
            setattr(scores, name, np.stack(rows))
    return scores


def rerank_table(results: dict[str, CandidateScores], ns: tuple[int, ...] = NS) -> dict[str, float]:
    """{task}.{picker}.n{N} -> oracle accuracy."""
    out = {}
    for task, scores in results.items():
        for n in ns:
            if n > scores.labels.shape[1]:
                continue
            for picker, value in pick_accuracy(scores, n).items():
                out[f"{task}.{picker}.n{n}"] = value
        out[f"{task}.prompts"] = float(len(scores.labels))
        # can the score tell a prompt's good candidates from its bad ones? (0.5 = no better than chance)
        prompts = [str(i) for i in range(len(scores.labels)) for _ in range(scores.labels.shape[1])]
        for picker in PICKERS[1:-1]:
            if getattr(scores, picker) is not None:
                out[f"{task}.{picker}.within_prompt_auc"] = within_prompt_auc(getattr(scores, picker).ravel(), scores.labels.ravel(), prompts)
    return out


def rerank_markdown(table: dict[str, float], tasks: tuple[str, ...], ns: tuple[int, ...] = NS) -> str:
    lines = ["| task | picker | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for task in tasks:
        for picker in PICKERS:
            cells = [f"{table[f'{task}.{picker}.n{n}']:.3f}" if f"{task}.{picker}.n{n}" in table else "" for n in ns]
            if not any(cells):
                continue
            lines.append(f"| {task} | {picker} | " + " | ".join(cells) + " |")
    lines.append("")
    for picker in ("reward", "reward_timeline"):
        if f"temporal.{picker}.n4" in table:
            gain = table[f"temporal.{picker}.n4"] - table.get(f"temporal.{picker}.n1", float("nan"))
            lines.append(f"temporal: {picker} pick at N=4 minus N=1 = {gain * 100:+.1f} points (goal >= +15)")
    lines.append("")
    scorers = [p for p in PICKERS[1:-1] if any(f"{t}.{p}.within_prompt_auc" in table for t in tasks)]
    lines += ["| task | " + " | ".join(f"{p} within-prompt AUC" for p in scorers) + " |", "|---|" + "---|" * len(scorers)]
    lines += [f"| {task} | " + " | ".join(f"{table.get(f'{task}.{p}.within_prompt_auc', float('nan')):.3f}" for p in scorers) + " |" for task in tasks]
    return "\n".join(lines)


def rerank_plot(table: dict[str, float], tasks: tuple[str, ...], path: Path, ns: tuple[int, ...] = NS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for picker, style in zip(PICKERS, ("o--", "s-", "D-", "s-.", "D-.", "^:")):
            xs = [n for n in ns if f"{task}.{picker}.n{n}" in table]
            if not xs:
                continue
            ax.plot(xs, [table[f"{task}.{picker}.n{n}"] for n in xs], style, label=picker)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(ns), [str(n) for n in ns])
        ax.set_xlabel("candidates N")
        ax.set_ylabel("oracle accuracy of the picked clip")
        ax.set_title(f"{task} ({int(table.get(f'{task}.prompts', 0))} held-out prompts)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
