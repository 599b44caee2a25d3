"""`tta eval baton`: BATON's table on the mini world, for several generators side by side.

Per generator (rows base, pretrain, hd, rd, hd+rd): n held-out integrity and temporal prompts with K=4 candidates
each (built and oracle-labelled by the dataset builder, cached, resumable), plus n single-event prompts.
Columns at N=1 (a plain generation: the mean over all four candidates, each an independent N=1 sample,
so the estimate rests on 4n clips rather than n) and, in "best-of-4" rows, with the reward model or the
CLAP cosine (the mini default's served picker) picking among the four: oracle integrity, oracle temporal,
CLAP score (cosine of the user's prompt and the clip, mean over both tasks) and single-event presence. Each task's
N=1 accuracy is also split by event wording (`{task}.n1_novel_words`: prompts naming events by held-out
phrasings; `{task}.n1_seen_words`: the rest). Each N=1 accuracy carries its standard error across
prompts (`{task}.n1_se`), and each row's difference from base the paired standard error
(`{task}.n1_delta_se`: same prompts, same seeds), so a difference can be told from noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.clap import ClapEmbedder
from services.generator import TangoPipeline
from services.manifest import MANIFEST
from services.reward import RewardModel
from training.eval_generator import EVAL_SEED, uses_novel_words
from training.eval_rerank import CandidateScores, build_candidates, candidate_records, heldout_task_specs, pick_per_prompt, score_candidates
from training.stats import pooled_difference, standard_error
from training.world.oracle import SoundEventDetector

# "pretrain": the pretraining term alone (no feedback), the ablation that tells what feedback itself adds
ROWS = ("base", "pretrain", "hd", "rd", "hd+rd")
K = 4
COLUMNS = ("integrity", "temporal", "clap", "single")


def row_directory(work_dir: Path, row: str) -> Path:
    """Where `tta eval baton --work-dir WORK_DIR` keeps a row's candidate sets ("hd+rd" in `hd_rd`)."""
    return Path(work_dir) / row.replace("+", "_")


def row_name(manifest: dict) -> str:
    """The table row a BATON fine-tune belongs in, from what its MANIFEST says it was trained on."""
    data = manifest.get("data") or {}
    trained_on = [name for name in ("hd", "rd") if isinstance(data, dict) and data.get(name)]
    if trained_on:
        return "+".join(trained_on)
    if "baton" in manifest and isinstance(data, dict):  # the pretraining term alone
        return "pretrain"
    raise ValueError("not a BATON fine-tune: its MANIFEST names no HD or RD data")


def default_rows(base_dir: Path, served_dir: Path) -> dict[str, Path]:
    """What `tta eval baton` compares when no --model is given: the shipped base and the served
    generator, in the row its fine-tuning data names (just the base when the served one is the base)."""
    manifest = json.loads((served_dir / MANIFEST).read_text())
    if "baton" not in manifest:
        return {"base": base_dir}
    return {"base": base_dir, row_name(manifest): served_dir}


def pick_metrics(scores: CandidateScores) -> dict[str, float]:
    """One task's oracle accuracy at N=1 (mean over every candidate: each is a plain generation), its
    standard error across prompts, and with the reward model (best_of_4) or CLAP (best_of_4_clap) picking
    the best of the K candidates."""
    per_prompt, k = scores.labels.mean(1), scores.labels.shape[1]
    return {
        "n1": float(per_prompt.mean()),
        "n1_se": standard_error(per_prompt),
        "best_of_4": float(pick_per_prompt(scores, "reward", k).mean()),
        "best_of_4_clap": float(pick_per_prompt(scores, "clap", k).mean()),
    }


def evaluate_row(pipe: TangoPipeline, generator_dir: Path, n: int, work_dir: Path, oracle: SoundEventDetector, reward_model: RewardModel, clap: ClapEmbedder, progress: bool = True, seed: int = EVAL_SEED) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The row's metrics, and per task the per-prompt N=1 accuracy (for paired comparisons); `seed` picks the
    sample of the held-out split (prompts and generation seeds), as `tta eval rerank --seed` does."""
    from training.eval_generator import evaluate_generator, heldout_prompts, task_of

    out: dict[str, float] = {}
    per_prompt: dict[str, np.ndarray] = {}
    clap_n1, clap_n4, clap_n4_clap = [], [], []
    for task in ("integrity", "temporal"):
        directory = build_candidates(task, n, K, work_dir, pipe, generator_dir, oracle, seed, progress=progress)  # type: ignore[arg-type]
        scores = score_candidates(directory, reward_model, clap)
        out.update({f"{task}.{key}": value for key, value in pick_metrics(scores).items()})
        per_prompt[task] = scores.labels.mean(1)
        # where the misses are: prompts naming events by words training never saw ("a hound yaps"), and the rest
        novel = np.array([uses_novel_words(s) for s in heldout_task_specs(task, n, seed)])  # type: ignore[arg-type]
        for split, mask in (("novel_words", novel), ("seen_words", ~novel)):
            if mask.any():
                out[f"{task}.n1_{split}"] = float(per_prompt[task][mask].mean())
        clap_n1.append(scores.clap.reshape(-1))
        clap_n4.append(scores.clap[np.arange(len(scores.clap)), scores.reward.argmax(1)])
        clap_n4_clap.append(scores.clap.max(1))
    out["clap.n1"] = float(np.concatenate(clap_n1).mean())
    out["clap.best_of_4"] = float(np.concatenate(clap_n4).mean())
    out["clap.best_of_4_clap"] = float(np.concatenate(clap_n4_clap).mean())
    singles = [p for p in heldout_prompts(n, seed) if task_of(p) == "single"][:n]
    report = evaluate_generator(pipe, prompts=singles, oracle=oracle, roundtrip_n=0, progress=progress)
    single = out["single.n1"] = report.metrics["single.presence"]
    out["single.n1_se"] = float(np.sqrt(single * (1 - single) / len(singles)))
    out["prompts_per_task"] = float(n)
    return out, per_prompt


def add_paired_deltas(rows: dict[str, dict[str, float]], per_prompt: dict[str, dict[str, np.ndarray]]) -> None:
    """`{task}.n1_delta_se` on every row but base: the standard error of its per-prompt difference from base.
    Rows generate the same prompts from the same seeds, so prompt difficulty cancels out of the difference."""
    if "base" not in per_prompt:
        return
    for name, tasks in per_prompt.items():
        if name != "base":
            for task, values in tasks.items():
                rows[name][f"{task}.n1_delta_se"] = standard_error(values - per_prompt["base"][task])


def paired_difference(pairs: list[tuple[Path, Path]], oracle: SoundEventDetector | None = None) -> dict[str, dict]:
    """Row A minus row B in N=1 oracle accuracy, per task, over one or more samples of the held-out split.

    Each pair is two row directories of `tta eval baton` (its --work-dir/NAME) made with the same --n and
    --seed: the same prompts, the same generation seeds. Prompt difficulty cancels out of each per-prompt
    difference, so pooling the differences of every sample gives a far smaller standard error than the
    two rows' own errors would. Per task: `delta` and `se` over all prompts, `per_sample` (one per pair)
    and `prompts`. With `oracle`, every clip is judged again by that judge (`candidate_records`)."""
    if not pairs:
        raise ValueError("no pairs of row directories to compare")
    diffs: dict[str, list[np.ndarray]] = {}
    for a, b in pairs:
        for _, task, labels_a, labels_b in paired_candidate_sets(a, b, oracle):
            diffs.setdefault(task, []).append(labels_a.mean(1) - labels_b.mean(1))
    return {task: pooled_difference(d) for task, d in diffs.items()}


def paired_candidate_sets(a: Path, b: Path, oracle: SoundEventDetector | None = None) -> list[tuple[Path, str, np.ndarray, np.ndarray]]:
    """(A's set directory, its task, A's labels [P, K], B's labels) for every candidate set two row directories
    of one `tta eval baton --n N --seed S` hold; an error unless they hold the same sets of the same prompts."""
    tasks_a = {d.name: d for d in Path(a).iterdir() if (d / "records.jsonl").is_file()} if Path(a).is_dir() else {}
    tasks_b = {d.name: d for d in Path(b).iterdir() if (d / "records.jsonl").is_file()} if Path(b).is_dir() else {}
    if not tasks_a or tasks_a.keys() != tasks_b.keys():
        raise ValueError(f"{a} and {b} must hold the same candidate sets (rows of one `tta eval baton --n N --seed S`); they hold {sorted(tasks_a) or 'none'} and {sorted(tasks_b) or 'none'}")
    sets = []
    for name in sorted(tasks_a):
        (records_a, labels_a), (records_b, labels_b) = candidate_records(tasks_a[name], oracle), candidate_records(tasks_b[name], oracle)
        if [r.prompt for r in records_a] != [r.prompt for r in records_b] or labels_a.shape != labels_b.shape:
            raise ValueError(f"{tasks_a[name]} and {tasks_b[name]}: different prompts or candidate counts, so not a paired comparison")
        sets.append((tasks_a[name], records_a[0].task, labels_a, labels_b))
    return sets


def baton_table(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """{row}.{column}.{n1|n1_se|n1_delta_se|best_of_4|best_of_4_clap} -> value (single-event presence only at n1)."""
    return {f"{row}.{key}": value for row, metrics in rows.items() for key, value in metrics.items()}


def baton_markdown(rows: dict[str, dict[str, float]]) -> str:
    base = rows.get("base")
    lines = ["| generator | picking | oracle integrity | oracle temporal | CLAP score | single-event presence |", "|---|---|---|---|---|---|"]
    picks = [("N=1", "n1"), ("best-of-4 by reward", "best_of_4"), ("best-of-4 by CLAP", "best_of_4_clap")]
    for pick, suffix in picks:
        for row, m in rows.items():
            if f"integrity.{suffix}" not in m:
                continue
            cells = []
            for col in COLUMNS:
                key = f"{col}.{suffix}" if col != "single" else "single.n1"
                if col == "single" and suffix != "n1":
                    cells.append("")
                    continue
                value = m[key]
                paired = f" ±{m[key + '_delta_se'] * 100:.1f}" if key + "_delta_se" in m else ""
                delta = f" ({(value - base[key]) * 100:+.1f}{paired})" if base is not None and row != "base" and col != "clap" else ""
                se = f" ±{m[key + '_se']:.3f}" if key + "_se" in m else ""
                cells.append(f"{value:.4f}" if col == "clap" else f"{value:.3f}{se}{delta}")
            lines.append(f"| {row} | {pick} | " + " | ".join(cells) + " |")
    splits = [f"{task}.n1_{split}" for task in ("integrity", "temporal") for split in ("novel_words", "seen_words")]
    if any(key in m for m in rows.values() for key in splits):  # where each row gains or loses
        lines += ["", "N=1 by event wording (novel: the prompt names its events by held-out phrasings)", "", "| generator | integrity, novel words | integrity, seen words | temporal, novel words | temporal, seen words |", "|---|---|---|---|---|"]
        lines += [f"| {row} | " + " | ".join(f"{m[key]:.3f}" if key in m else "" for key in splits) + " |" for row, m in rows.items()]
    return "\n".join(lines)
