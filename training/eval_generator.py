"""`tta eval generator`: what the oracle hears in generated audio, on held-out prompts, at N=1.

- single: the prompted event is heard (presence);
- integrity (2 events): both heard and no unprompted event (BATON's integrity label);
- temporal (3 events in sequence): all heard, none extra, onsets in the stated order.

Beside them, the same oracle on the held-out ground truth (its own accuracy, which must stay >= 0.95
for the numbers to count) and on the ground truth passed through VAE + vocoder (the round trip),
plus the generation time per clip. Prompts come from the held-out split (novel phrasings and event
pairs) unless a prompt file is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from services.generator import TangoPipeline
from training.annotation import onsets_in_order, oracle_label
from training.eval_oracle import score_detections
from training.world.captions import EVENT_PHRASINGS, templates_for
from training.world.clips import ClipSpec, make_clip, sample_spec
from training.world.oracle import SoundEventDetector, load_oracle
from training.world.prompts import PromptSpec

EVAL_SEED = 1
TASKS = ("single", "integrity", "temporal")
GATES = {"single.presence": 0.85, "integrity.accuracy": 0.55, "temporal.accuracy": 0.30, "roundtrip.presence_f1": 0.95}
ORACLE_GATE = 0.95


def task_of(spec: PromptSpec) -> str:
    if len(spec.events) == 1:
        return "single"
    if len(spec.events) == 3 and spec.relation in (None, "sequence"):
        return "temporal"
    return "integrity"


def heldout_clip_specs(n: int, seed: int = EVAL_SEED) -> list[ClipSpec]:
    """n held-out clip specs per task; independent of the clip streams (their own rng)."""
    return [sample_spec(np.random.default_rng([seed, 31, k, i]), "heldout", task) for k, task in enumerate(TASKS) for i in range(n)]


def prompt_of(spec: ClipSpec) -> PromptSpec:
    """What the generator is asked for a clip spec."""
    return PromptSpec(prompt=spec.caption, events=spec.events, relation=None if spec.relation == "single" else spec.relation)


def heldout_prompts(n: int, seed: int = EVAL_SEED) -> list[PromptSpec]:
    """n held-out prompts per task."""
    return [prompt_of(s) for s in heldout_clip_specs(n, seed)]


def uses_novel_words(spec: ClipSpec) -> bool:
    """The caption names an event with a phrasing training never used ("a hound yaps"), as opposed
    to a novel template or event combination with familiar event words."""
    phrasings = [EVENT_PHRASINGS[e] for e in spec.events]
    return any(c in p.heldout_clauses or n in p.heldout_nouns for p, c, n in zip(phrasings, spec.clauses, spec.nouns))


def uses_novel_template(spec: ClipSpec) -> bool:
    """The caption's relation wording is one training never used ("{a}; after that {b}; finally {c}")."""
    return spec.template in templates_for(spec.relation, len(spec.events), heldout=True)


def stated_order_heard(detection, spec: PromptSpec) -> float | None:
    """For a prompt whose events are all heard: 1.0 if their onsets follow the stated order, else 0.0
    (chance is 1/k! for k events); None when some event is missing. Separates "knows the order" from
    "makes every event", which the temporal accuracy mixes."""
    if not set(spec.events) <= detection.present():
        return None
    return float(onsets_in_order(detection, spec.events))


def judge(detection, spec: PromptSpec) -> tuple[str, float]:
    task = task_of(spec)
    if task == "single":
        return task, float(spec.events[0] in detection.present())
    return task, float(oracle_label(detection, spec, "temporal" if task == "temporal" else "integrity"))


@dataclass
class GeneratorReport:
    metrics: dict[str, float]
    settings: dict
    examples: list[tuple[str, str, np.ndarray]] = field(default_factory=list)


def heldout_ground_truth(n: int, seed: int = EVAL_SEED) -> tuple[np.ndarray, list[list[str]], list[bool]]:
    """The first `n` held-out world clips: audio [n, samples], their events, and which are sequences
    (whose order the oracle is scored on)."""
    clips = [make_clip(seed, "heldout", i) for i in range(n)]
    return np.stack([c.audio for c in clips]), [[e.event for e in c.truth.events] for c in clips], [c.truth.relation == "sequence" for c in clips]


@torch.no_grad()
def roundtrip(pipe: TangoPipeline, oracle: SoundEventDetector, n: int, seed: int = EVAL_SEED, batch: int = 32, vocoder: str | None = None) -> dict[str, float]:
    """Oracle on held-out ground truth, on its vocoder resynthesis, and on the VAE + vocoder round trip."""
    audio, truths, ordered = heldout_ground_truth(n, seed)
    vocoded = [pipe.reconstruct(audio[i : i + batch], through_vae=False, vocoder=vocoder) for i in range(0, n, batch)]
    round_trip = [pipe.reconstruct(audio[i : i + batch], vocoder=vocoder) for i in range(0, n, batch)]
    class_ids = list(oracle.config.class_ids)
    out = {}
    for name, wav in (("ground_truth", audio), ("vocoder", np.concatenate(vocoded)), ("roundtrip", np.concatenate(round_trip))):
        s = score_detections(oracle.detect(wav[:, : audio.shape[1]]), truths, ordered, class_ids)
        out[f"{name}.presence_f1"] = s["f1"]
        out[f"{name}.order_accuracy"] = s["order"]
    return out


@torch.no_grad()
def evaluate_generator(
    pipe: TangoPipeline,
    n: int = 200,
    prompts: list[PromptSpec] | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str | None = None,
    seed: int = EVAL_SEED,
    oracle: SoundEventDetector | None = None,
    batch: int = 16,
    roundtrip_n: int | None = None,
    progress: bool = True,
    vocoder: str | None = None,
    timeline: bool | None = None,
) -> GeneratorReport:
    oracle = oracle or load_oracle()
    # on the held-out split, also split every score by whether the prompt uses event words training never saw
    novel = novel_template = None
    if prompts is None:
        clip_specs = heldout_clip_specs(n, seed)
        prompts = [prompt_of(s) for s in clip_specs]
        novel = [uses_novel_words(s) for s in clip_specs]
        novel_template = [uses_novel_template(s) for s in clip_specs]
    scores: dict[str, list[float]] = {t: [] for t in TASKS}
    by_novelty: dict[str, list[float]] = {}
    ordered: list[float | None] = []  # temporal prompts: stated order kept, when all events are heard
    examples = []
    generated = 0
    t0 = time.perf_counter()
    settings = {}
    for i in tqdm(range(0, len(prompts), batch), desc="generate", disable=not progress):
        chunk = prompts[i : i + batch]
        out = pipe.generate([p.prompt for p in chunk], num_candidates=1, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seed=[seed * 100_000 + i + j for j in range(len(chunk))], vocoder=vocoder, timeline=timeline)
        settings = out.settings
        wav = out.waveforms[:, 0]
        generated += len(wav)
        for j, (spec, det, w) in enumerate(zip(chunk, oracle.detect(wav), wav)):
            task, score = judge(det, spec)
            scores[task].append(score)
            if task == "temporal":
                ordered.append(stated_order_heard(det, spec))
            if novel is not None:
                by_novelty.setdefault(f"{task}|{'novel' if novel[i + j] else 'seen'}_words", []).append(score)
                by_novelty.setdefault(f"{task}|{'novel' if novel_template[i + j] else 'seen'}_template", []).append(score)
            if sum(e[0] == task for e in examples) < 2:  # two examples per task for the mel sheet
                examples.append((task, spec.prompt, w))
    seconds = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    names = {"single": "single.presence", "integrity": "integrity.accuracy", "temporal": "temporal.accuracy"}
    for task in TASKS:
        if scores[task]:
            metrics[names[task]] = float(np.mean(scores[task]))
            metrics[f"{task}.prompts"] = float(len(scores[task]))
    for task in TASKS:
        for split in ("seen_words", "novel_words", "seen_template", "novel_template"):
            if by_novelty.get(f"{task}|{split}"):
                metrics[f"{names[task]}.{split}"] = float(np.mean(by_novelty[f"{task}|{split}"]))
    heard = [o for o in ordered if o is not None]
    if ordered:
        metrics["temporal.all_heard"] = len(heard) / len(ordered)
    if heard:
        metrics["temporal.order_when_all_heard"] = float(np.mean(heard))
    metrics["seconds_per_clip"] = seconds / max(generated, 1)
    roundtrip_n = max(n, 100) if roundtrip_n is None else roundtrip_n
    if roundtrip_n:
        metrics.update(roundtrip(pipe, oracle, roundtrip_n, seed, vocoder=vocoder))
    return GeneratorReport(metrics, settings, examples)


DESCRIPTIONS = {
    "single.presence": "single-event prompts: the event is heard",
    "integrity.accuracy": "2-event prompts: both heard, nothing unprompted",
    "temporal.accuracy": "3-event sequences: all heard, nothing extra, in order",
    "temporal.all_heard": "3-event sequences: all three events heard (order aside)",
    "temporal.order_when_all_heard": "of those, onsets in the stated order (chance 1/6)",
    "seconds_per_clip": "wall time per generated clip (incl. text encoding and decoding)",
    **{f"{k}.{w}": f"same, prompts whose event words {'training never saw' if w == 'novel_words' else 'training used'}" for k in ("single.presence", "integrity.accuracy", "temporal.accuracy") for w in ("seen_words", "novel_words")},
    **{f"{k}.{w}": f"same, prompts whose relation wording {'training never saw' if w == 'novel_template' else 'training used'}" for k in ("single.presence", "integrity.accuracy", "temporal.accuracy") for w in ("seen_template", "novel_template")},
    "ground_truth.presence_f1": "oracle on held-out ground truth (must be >= 0.95)",
    "ground_truth.order_accuracy": "oracle order accuracy on held-out ground truth (must be >= 0.95)",
    "vocoder.presence_f1": "oracle on ground truth resynthesised by the vocoder from its mel",
    "vocoder.order_accuracy": "same, order accuracy",
    "roundtrip.presence_f1": "oracle on ground truth through VAE encode/decode + vocoder",
    "roundtrip.order_accuracy": "same, order accuracy",
}


def manifest_evaluation(pipe: TangoPipeline, n: int) -> tuple[dict[str, float], dict]:
    """What a generator's MANIFEST says about it: the metrics on n held-out prompts per task (N=1, with the
    VAE/vocoder round trip on n clips), rounded, and the settings they were measured under."""
    report = evaluate_generator(pipe, n=n, roundtrip_n=n)
    metrics = {k: round(v, 5) for k, v in report.metrics.items()}
    return metrics, {"device": str(pipe.device), "settings": report.settings, "prompts_per_task": n, "seed": EVAL_SEED}


def report_markdown(report: GeneratorReport) -> str:
    s = report.settings
    lines = [
        f"settings: scheduler {s.get('scheduler')}, {s.get('steps')} steps, guidance {s.get('guidance_scale')}, {s.get('duration_s')} s, vocoder {s.get('vocoder')}, timeline {'on' if s.get('timeline') else 'off'}, {s.get('dtype', 'float32')}, N=1",
        "",
        "| metric | value | bar | meaning |",
        "|---|---|---|---|",
    ]
    for key, value in report.metrics.items():
        if key.endswith(".prompts"):
            continue
        bar = f">= {GATES[key]}" if key in GATES else (f">= {ORACLE_GATE}" if key.startswith("ground_truth") else "")
        shown = f"{value:.3f} s" if key == "seconds_per_clip" else f"{value:.3f}"
        lines.append(f"| {key} | {shown} | {bar} | {DESCRIPTIONS.get(key, '')} |")
    counts = ", ".join(f"{t} {int(report.metrics[f'{t}.prompts'])}" for t in TASKS if f"{t}.prompts" in report.metrics)
    lines += ["", f"prompts: {counts}"]
    return "\n".join(lines)


def sweep_markdown(reports: dict[str, GeneratorReport]) -> str:
    """One row per (vocoder, scheduler, steps, timeline): the quality/time trade-off."""
    keys = ("single.presence", "integrity.accuracy", "temporal.accuracy", "temporal.all_heard", "temporal.order_when_all_heard", "roundtrip.presence_f1")
    lines = [f"| vocoder | scheduler | steps | timeline | {' | '.join(keys)} | seconds_per_clip |", "|---" * (len(keys) + 5) + "|"]
    for r in reports.values():
        m, st = r.metrics, r.settings
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in keys]
        lines.append(f"| {st.get('vocoder', '-')} | {st['scheduler']} | {st['steps']} | {'on' if st.get('timeline') else 'off'} | {' | '.join(cells)} | {m['seconds_per_clip']:.3f} |")
    return "\n".join(lines)


def sweep_plot(reports: dict[str, GeneratorReport], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
    by_sched: dict[str, list[GeneratorReport]] = {}
    for r in reports.values():
        by_sched.setdefault(f"{r.settings['scheduler']} {r.settings.get('vocoder', '')}{' timeline' if r.settings.get('timeline') else ''}".strip(), []).append(r)
    for sched, rs in by_sched.items():
        rs = sorted(rs, key=lambda r: r.settings["steps"])
        x = [r.settings["steps"] for r in rs]
        for key, style in (("single.presence", ":"), ("integrity.accuracy", "--"), ("temporal.accuracy", "-")):
            if all(key in r.metrics for r in rs):
                ax.plot(x, [r.metrics[key] for r in rs], style, marker="o", label=f"{sched} {key.split('.')[0]}")
        ax_t.plot(x, [r.metrics["seconds_per_clip"] for r in rs], marker="o", label=sched)
    ax.set(xscale="log", xlabel="denoising steps", ylabel="oracle accuracy (N=1)", title="quality vs steps", ylim=(0, 1))
    ax_t.set(xscale="log", xlabel="denoising steps", ylabel="s per clip", title="time per clip")
    ax.legend(fontsize=7)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(reports: dict[str, GeneratorReport], out: Path | None) -> str:
    """The Markdown for one or several settings; with `out`, also report.md/json, a mel sheet and the sweep plot."""
    first = next(iter(reports.values()))
    text = report_markdown(first)
    if len(reports) > 1:
        text += "\n\n## Quality vs settings\n\n" + sweep_markdown(reports)
    if out is None:
        return text
    from training.plots import mel_sheet

    out.mkdir(parents=True, exist_ok=True)
    body = "# Generator evaluation\n\n" + text + "\n\n![examples](examples.png)\n"
    if len(reports) > 1:
        sweep_plot(reports, out / "steps.png")
        body += "\n![quality vs steps](steps.png)\n"
    mel_sheet([w for _, _, w in first.examples], [f"[{t}] {p}" for t, p, _ in first.examples], out / "examples.png")
    (out / "report.md").write_text(body)
    (out / "report.json").write_text(json.dumps({name: {"settings": r.settings, "metrics": r.metrics} for name, r in reports.items()}, indent=1) + "\n")
    return text + f"\n\nwrote {out / 'report.md'} and plots"
