"""`tta eval rewriter`: the paper's table on the mini world, rows raw / sft / feedback.

Held-out open prompts (scene descriptions training never saw) go to the generator as typed (raw) or
rewritten greedily by each rewriter; every prompt gets S clips from the same S noise seeds in every
row, so rows differ only by the text the generator received. Columns:
- CLAP(user prompt, clip): cosine of the user's own words and the clip (mean; the shipped mini CLAP
  unless told otherwise), the paper's automatic measure;
- oracle scene consistency: per clip, the share of the events the oracle detects that belong to the
  prompt's scene (0 when it detects none: silence is not a farmyard), mean;
- SacreBLEU(prompt, rewrite): how much of the user's wording survives (the fidelity guard);
- pass-through SacreBLEU: world captions, already descriptive, against their rewrites (near 100 means
  the rewriter leaves them alone), once with training phrasings and once with held-out ones (words
  and templates the rewriter never saw);
- time per rewrite: greedy, one prompt per call, as a request would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.clap import ClapEmbedder
from services.generator import TangoPipeline
from services.rewriter import PromptRewriter
from training.stats import standard_error
from training.train_rewriter import open_prompts, sacrebleu_score, scene_of
from training.world.clips import clip_rng, sample_spec
from training.world.oracle import SoundEventDetector

ROWS = ("raw", "sft", "feedback")
COLUMNS = ("clap", "clap_se", "scene_consistency", "scene_consistency_se", "bleu", "passthrough_bleu_train", "passthrough_bleu_heldout", "rewrite_ms")
EVAL_SEED = 4242
N_EXAMPLES = 5


@dataclass
class RowResult:
    metrics: dict[str, float]
    examples: list[tuple[str, str]] = field(default_factory=list)  # (user prompt, what the generator got)
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict)  # column -> per-prompt mean, prompts in eval order


PAIRED = (("feedback", "sft"), ("sft", "raw"))  # row differences the paper's claim rests on


def paired_differences(results: dict[str, RowResult]) -> dict[str, float]:
    """`{a}-{b}.{column}` and `..._se`: mean and standard error of the per-prompt difference between two rows.
    Rows share prompts and noise seeds, so the pairing removes the prompt-to-prompt spread both rows share."""
    out = {}
    for a, b in PAIRED:
        if not (a in results and b in results and results[a].per_prompt and results[b].per_prompt):
            continue
        for column in ("clap", "scene_consistency"):
            diff = results[a].per_prompt[column] - results[b].per_prompt[column]
            out[f"{a}-{b}.{column}"] = float(diff.mean())
            out[f"{a}-{b}.{column}_se"] = standard_error(diff)
    return out


def scene_consistency(detected: list[set[str]], scene_events: list[set[str]]) -> np.ndarray:
    """Per clip: |detected & scene| / |detected|, 0 when nothing is detected."""
    return np.array([len(d & s) / len(d) if d else 0.0 for d, s in zip(detected, scene_events)])


def prompt_standard_error(per_clip: np.ndarray, seeds: int) -> float:
    """Standard error of a row's mean over prompts: clips come `seeds` per prompt, and a prompt's clips share its
    text, so the prompt (not the clip) is the independent unit."""
    return standard_error(np.asarray(per_clip, dtype=float).reshape(-1, seeds).mean(1))


def timed_rewrites(rewriter: PromptRewriter, prompts: list[str]) -> tuple[list[str], float]:
    """Greedy rewrites one prompt at a time (as a request would), and the mean seconds per rewrite."""
    t0 = time.perf_counter()
    out = [rewriter.rewrite([p])[0] for p in prompts]
    return out, (time.perf_counter() - t0) / max(1, len(prompts))


def evaluate_row(rewriter: PromptRewriter | None, pipe: TangoPipeline, clap: ClapEmbedder, oracle: SoundEventDetector, prompts: list[str], heldout: bool, seeds: int, n_passthrough: int = 100, batch_prompts: int = 4, progress: bool = True) -> RowResult:
    if rewriter is None:
        texts, seconds = list(prompts), 0.0
    else:
        rewriter.rewrite(prompts[:1])  # warm-up: the first call pays for lazy initialisation
        texts, seconds = timed_rewrites(rewriter, prompts)
    clap_scores, consistency = [], []
    steps = range(0, len(prompts), batch_prompts)
    for start in tqdm(steps, desc=f"generate {'raw' if rewriter is None else rewriter.version}", disable=not progress):
        idx = list(range(start, min(start + batch_prompts, len(prompts))))
        out = pipe.generate([texts[i] for i in idx], num_candidates=seeds, seed=[EVAL_SEED + i * seeds for i in idx])
        audio = out.waveforms.reshape(len(idx) * seeds, -1)
        users = [prompts[i] for i in idx for _ in range(seeds)]
        clap_scores.append(clap.score(users, audio, out.sample_rate))
        detected = [d.present() for d in oracle.detect(audio)]
        consistency.append(scene_consistency(detected, [set(scene_of(u, heldout).events) for u in users]))
    passthrough = {}
    for split in ("train", "heldout"):
        captions = [sample_spec(clip_rng(EVAL_SEED, split, i), split).caption for i in range(n_passthrough)]  # type: ignore[arg-type]
        passthrough[f"passthrough_bleu_{split}"] = sacrebleu_score(captions if rewriter is None else rewriter.rewrite(captions), captions)
    clap_all, consistency_all = np.concatenate(clap_scores), np.concatenate(consistency)
    metrics = {
        "clap": float(clap_all.mean()),
        "clap_se": prompt_standard_error(clap_all, seeds),
        "scene_consistency": float(consistency_all.mean()),
        "scene_consistency_se": prompt_standard_error(consistency_all, seeds),
        "bleu": sacrebleu_score(texts, prompts),
        **passthrough,
        "rewrite_ms": seconds * 1000,
        "prompts": float(len(prompts)),
        "clips": float(len(prompts) * seeds),
    }
    # one example per scene, the first N_EXAMPLES scenes
    picks = list(dict.fromkeys(scene_of(p, heldout).id for p in prompts))[:N_EXAMPLES]
    examples = [next((p, t) for p, t in zip(prompts, texts) if scene_of(p, heldout).id == sid) for sid in picks]
    per_prompt = {"clap": clap_all.reshape(-1, seeds).mean(1), "scene_consistency": consistency_all.reshape(-1, seeds).mean(1)}
    return RowResult(metrics, examples, per_prompt)


def evaluate_rewriters(rewriters: dict[str, PromptRewriter | None], pipe: TangoPipeline, clap: ClapEmbedder, oracle: SoundEventDetector, heldout: bool = True, seeds: int = 4, progress: bool = True) -> dict[str, RowResult]:
    prompts = open_prompts(heldout)
    return {name: evaluate_row(rw, pipe, clap, oracle, prompts, heldout, seeds, progress=progress) for name, rw in rewriters.items()}


def rewriter_table(results: dict[str, RowResult]) -> dict[str, float]:
    """{row}.{column} -> value, and {a}-{b}.{column}[_se] for the paired row differences."""
    return {**{f"{row}.{key}": value for row, r in results.items() for key, value in r.metrics.items()}, **paired_differences(results)}


def rewriter_markdown(results: dict[str, RowResult], clap_name: str) -> str:
    lines = [
        f"| row | CLAP(user prompt, clip) [{clap_name}] ± s.e. over prompts | oracle scene consistency ± s.e. | SacreBLEU(prompt, rewrite) | pass-through SacreBLEU, training / held-out phrasings | ms per rewrite |",
        "|---|---|---|---|---|---|",
    ]
    for row, r in results.items():
        m = r.metrics
        lines.append(f"| {row} | {m['clap']:.4f} ± {m['clap_se']:.4f} | {m['scene_consistency']:.3f} ± {m['scene_consistency_se']:.3f} | {m['bleu']:.1f} | {m['passthrough_bleu_train']:.1f} / {m['passthrough_bleu_heldout']:.1f} | {m['rewrite_ms']:.1f} |")
    paired = paired_differences(results)
    if paired:
        lines += ["", "Paired differences (same prompts and noise seeds; mean ± s.e. of the per-prompt difference):", "", "| rows | CLAP | scene consistency |", "|---|---|---|"]
        for a, b in PAIRED:
            if f"{a}-{b}.clap" in paired:
                lines.append(f"| {a} - {b} | {paired[f'{a}-{b}.clap']:+.4f} ± {paired[f'{a}-{b}.clap_se']:.4f} | {paired[f'{a}-{b}.scene_consistency']:+.3f} ± {paired[f'{a}-{b}.scene_consistency_se']:.3f} |")
    lines += ["", "Examples (user prompt -> what the generator received):", ""]
    for row, r in results.items():
        lines.append(f"**{row}**")
        lines.append("")
        lines += [f"- {p!r} -> {t!r}" for p, t in r.examples]
        lines.append("")
    return "\n".join(lines)


def rewriter_plot(results: dict[str, RowResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (key, title) in zip(axes, (("clap", "CLAP(user prompt, clip)"), ("scene_consistency", "oracle scene consistency"), ("bleu", "SacreBLEU(prompt, rewrite)"))):
        values = [results[r].metrics[key] for r in rows]
        errors = [results[r].metrics.get(f"{key}_se", 0.0) for r in rows]
        ax.bar(rows, values, yerr=errors, capsize=3, color=["#999999", "#4C72B0", "#DD8452", "#55A868", "#8172B2"])  # bar() cycles the colours
        ax.set_title(title, fontsize=10)
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.3f}" if key != "bleu" else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle("Prompt rewriter on held-out open prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
