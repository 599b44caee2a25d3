"""`tta eval oracle`: the oracle's own accuracy on held-out ground truth and its false positives.

Reported: event-presence F1 (micro over clips x classes), temporal-order accuracy on sequence
clips (all events detected, onsets in the true order), the same on degraded copies (noise and
blur, as a generator would produce) for information, and the false-positive rate per class on
audio that holds no event (silence, coloured noise, smeared textures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.annotation import judged_right
from training.world.captions import EVENT_PHRASINGS, OVERLAP_TEMPLATES, SEQUENCE2_TEMPLATES, SEQUENCE3_TEMPLATES, SINGLE_TEMPLATES
from training.world.clips import ClipSpec, has_heldout_pair, make_clip
from training.world.negatives import NEGATIVE_KINDS, make_negative
from training.world.oracle import Detection, SoundEventDetector
from training.world.prompts import PromptSpec

EVAL_SEED = 1  # the oracle trains on seed 0's train split; evaluation draws seed 1's held-out split
ORDER_GATE, F1_GATE, FPR_GATE = 0.97, 0.97, 0.03
# the share of ground truth accepted in the worst composition of at least COMPOSITION_MIN_CLIPS clips: catches a judge
# deaf to a whole kind of clip, which the pooled F1 dilutes (the first shipped oracle: 0.63 on held-out overlap pairs
# at F1 0.991); masking alone holds overlap of training pairs near 0.98
COMPOSITION_GATE, COMPOSITION_MIN_CLIPS = 0.85, 30


@dataclass
class OracleReport:
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    per_composition: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        m = self.metrics
        compositions_ok = m.get("min_composition_accepted", 1.0) >= COMPOSITION_GATE  # absent when every group is small
        return m["presence_f1"] >= F1_GATE and m["order_accuracy"] >= ORDER_GATE and m["max_class_fpr"] <= FPR_GATE and compositions_ok


def spec_from_prompt(p: PromptSpec, rng: np.random.Generator) -> ClipSpec:
    """A renderable spec for an outside prompt; the caption is the prompt itself."""
    relation = p.relation or ("single" if len(p.events) == 1 else ("sequence", "overlap")[int(rng.integers(2))])
    if relation == "overlap" and len(p.events) != 2:
        relation = "sequence"
    k = len(p.events)
    template = {"single": SINGLE_TEMPLATES[0], "overlap": OVERLAP_TEMPLATES[0]}.get(relation) or (SEQUENCE2_TEMPLATES[0] if k == 2 else SEQUENCE3_TEMPLATES[0])
    clauses = [EVENT_PHRASINGS[e].clauses[0] for e in p.events]
    nouns = [EVENT_PHRASINGS[e].nouns[0] for e in p.events]
    return ClipSpec(list(p.events), relation, template, clauses, nouns, extra={"prompt": p.prompt})


def score_detections(detections: list[Detection], truths: list[list[str]], ordered: list[bool], class_ids: list[str]) -> dict:
    tp = fp = fn = 0
    per = {c: {"tp": 0, "fp": 0, "fn": 0} for c in class_ids}
    order_ok = order_n = 0
    for det, events, is_seq in zip(detections, truths, ordered):
        got, want = det.present(), set(events)
        for c in class_ids:
            if c in got and c in want:
                per[c]["tp"] += 1
            elif c in got:
                per[c]["fp"] += 1
            elif c in want:
                per[c]["fn"] += 1
        tp += len(got & want)
        fp += len(got - want)
        fn += len(want - got)
        if is_seq:
            order_n += 1
            onsets = [det.onset(e) for e in events]
            if all(o is not None for o in onsets) and all(a < b for a, b in zip(onsets, onsets[1:])):
                order_ok += 1
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    per_f1 = {c: 2 * v["tp"] / max(1, 2 * v["tp"] + v["fp"] + v["fn"]) for c, v in per.items()}
    return {"f1": f1, "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "order": order_ok / max(1, order_n), "order_n": order_n, "per_class_f1": per_f1}


def composition(events: list[str], relation: str) -> str:
    """The group a ground-truth clip is judged in: its relation, and for two or more events whether they form a
    held-out pair (never together in the world's training clips)."""
    if len(events) == 1:
        return "single"
    return f"{relation}, {'held-out pair' if has_heldout_pair(events) else 'training pairs'}"


def judge_ground_truth(detections: list[Detection], truths: list[list[str]], relations: list[str]) -> dict[str, dict[str, float]]:
    """The evaluator's judgement of each ground-truth clip against its own events (integrity's for two events,
    temporal's for three), by composition: the share of true clips it accepts, i.e. the most any generator can
    score on such prompts."""
    groups: dict[str, list[bool]] = {}
    for det, events, relation in zip(detections, truths, relations):
        groups.setdefault(composition(events, relation), []).append(judged_right(det, events, in_order=len(events) == 3))
    return {g: {"clips": float(len(v)), "accepted": float(np.mean(v))} for g, v in sorted(groups.items())}


def degrade(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Generator-like damage in the waveform domain: additive coloured noise and spectral smearing."""
    from training.world.negatives import coloured_noise

    x = torch.from_numpy(audio.astype(np.float32))
    n_fft, hop = 1024, 256
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    mag, phase = spec.abs(), spec.angle()
    k = int(rng.integers(1, 4)) * 2 + 1  # blur magnitudes over frequency bins and frames
    mag = torch.nn.functional.avg_pool2d(mag[None, None], (k, 3), stride=1, padding=(k // 2, 1))[0, 0]
    phase = phase + torch.from_numpy(rng.normal(0, rng.uniform(0.2, 1.0), phase.shape).astype(np.float32))
    y = torch.istft(torch.polar(mag, phase), n_fft, hop, window=torch.hann_window(n_fft), length=len(audio)).numpy()
    snr_db = rng.uniform(10, 30)
    noise = coloured_noise(rng, rng.choice([0.0, -3.0, -6.0]), len(audio))
    y = y + noise * np.std(y) / 10 ** (snr_db / 20)
    return (y * 0.8 / (np.abs(y).max() + 1e-9)).astype(np.float32)


def evaluate_oracle(
    model: SoundEventDetector,
    n: int = 1000,
    seed: int = EVAL_SEED,
    prompts: list[PromptSpec] | None = None,
    n_negatives: int = 600,
    degraded: bool = True,
    progress: bool = True,
) -> OracleReport:
    class_ids = list(model.config.class_ids)
    audios, truths, ordered, relations = [], [], [], []
    if prompts:
        for i, p in enumerate(tqdm(prompts, desc="render prompts", disable=not progress)):
            rng = np.random.default_rng([seed, 7, i])
            clip = make_clip(seed, "heldout", i, spec=spec_from_prompt(p, rng))
            audios.append(clip.audio)
            truths.append([e.event for e in clip.truth.events])
            ordered.append(clip.truth.relation == "sequence")
            relations.append(clip.truth.relation)
    else:
        for clip in tqdm((make_clip(seed, "heldout", i) for i in range(n)), total=n, desc="render held-out", disable=not progress):
            audios.append(clip.audio)
            truths.append([e.event for e in clip.truth.events])
            ordered.append(clip.truth.relation == "sequence")
            relations.append(clip.truth.relation)
    batch = np.stack(audios)
    detections = model.detect(batch)
    clean = score_detections(detections, truths, ordered, class_ids)
    metrics = {
        "clips": float(len(audios)),
        "presence_f1": clean["f1"],
        "presence_precision": clean["precision"],
        "presence_recall": clean["recall"],
        "order_accuracy": clean["order"],
        "order_clips": float(clean["order_n"]),
    }
    per_class = {c: {"f1": clean["per_class_f1"][c]} for c in class_ids}
    if degraded:
        rng = np.random.default_rng([seed, 99])
        damaged = np.stack([degrade(a, rng) for a in tqdm(audios, desc="degrade", disable=not progress)])
        d = score_detections(model.detect(damaged), truths, ordered, class_ids)
        metrics["degraded_presence_f1"] = d["f1"]
        metrics["degraded_order_accuracy"] = d["order"]
        for c in class_ids:
            per_class[c]["degraded_f1"] = d["per_class_f1"][c]
    if n_negatives:
        negs = [make_negative(seed + 1000, i) for i in range(n_negatives)]
        dets = model.detect(np.stack([a for _, a in negs]))
        for c in class_ids:
            per_class[c]["fpr"] = float(np.mean([c in d.present() for d in dets]))
        for kind in NEGATIVE_KINDS:
            hits = [len(d.present()) > 0 for (k, _), d in zip(negs, dets) if k == kind]
            metrics[f"negatives_any_fp_{kind}"] = float(np.mean(hits)) if hits else 0.0
        metrics["max_class_fpr"] = max(per_class[c]["fpr"] for c in class_ids)
        metrics["negative_clips"] = float(n_negatives)
    per_composition = judge_ground_truth(detections, truths, relations)
    judged = [v["accepted"] for v in per_composition.values() if v["clips"] >= COMPOSITION_MIN_CLIPS]
    if judged:
        metrics["min_composition_accepted"] = min(judged)
    return OracleReport(metrics, per_class, per_composition)


DESCRIPTIONS = {
    "clips": "held-out ground-truth clips evaluated",
    "presence_f1": "event-presence F1, micro over clips x classes",
    "presence_precision": "event-presence precision",
    "presence_recall": "event-presence recall",
    "order_accuracy": "temporal-order accuracy: all events heard, onsets in true order",
    "order_clips": "sequence clips in the order accuracy",
    "degraded_presence_f1": "presence F1 on degraded copies (noise + spectral blur + phase damage)",
    "degraded_order_accuracy": "order accuracy on degraded copies",
    "max_class_fpr": "largest per-class false-positive rate on event-free clips",
    "negative_clips": "event-free clips (silence, coloured noise, smeared textures)",
    "min_composition_accepted": f"ground truth accepted in the worst composition of >= {COMPOSITION_MIN_CLIPS} clips (table below)",
}
GATES = {"presence_f1": f">= {F1_GATE}", "order_accuracy": f">= {ORDER_GATE}", "max_class_fpr": f"<= {FPR_GATE}", "min_composition_accepted": f">= {COMPOSITION_GATE}"}


def report_markdown(report: OracleReport) -> str:
    """Table whose metric column uses the same keys as the --json object."""
    lines = ["| metric | value | gate | meaning |", "|---|---|---|---|"]
    for key, value in report.metrics.items():
        meaning = DESCRIPTIONS.get(key) or f"clips of kind {key.rsplit('_', 1)[-1]} where any event was heard"
        shown = f"{int(value)}" if key in ("clips", "order_clips", "negative_clips") else f"{value:.4f}"
        lines.append(f"| {key} | {shown} | {GATES.get(key, '')} | {meaning} |")
    lines += ["", "| class | f1 | degraded_f1 | fpr |", "|---|---|---|---|"]
    for c, v in report.per_class.items():
        lines.append(f"| {c} | {v['f1']:.3f} | {v.get('degraded_f1', float('nan')):.3f} | {v.get('fpr', float('nan')):.3f} |")
    if report.per_composition:
        lines += ["", "Ground truth judged as a generated clip is (every prompted event heard, nothing else, in order for sequences):", ""]
        lines += ["| composition | clips | accepted |", "|---|---|---|"]
        lines += [f"| {g} | {int(v['clips'])} | {v['accepted']:.3f} |" for g, v in report.per_composition.items()]
    return "\n".join(lines)


def write_report(report: OracleReport, out: Path) -> None:
    """report.md, per_class.png (F1 clean/degraded and FP rate per class) and report.json."""
    from training.plots import bar_chart

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("# Oracle evaluation\n\n" + report_markdown(report) + "\n\n![per class](per_class.png)\n")
    (out / "report.json").write_text(json.dumps({"metrics": report.metrics, "per_class": report.per_class, "per_composition": report.per_composition}, indent=1) + "\n")
    series = {"F1 clean": {c: v["f1"] for c, v in report.per_class.items()}}
    if all("degraded_f1" in v for v in report.per_class.values()):
        series["F1 degraded"] = {c: v["degraded_f1"] for c, v in report.per_class.items()}
    if all("fpr" in v for v in report.per_class.values()):
        series["FP rate (event-free)"] = {c: v["fpr"] for c, v in report.per_class.items()}
    bar_chart(series, out / "per_class.png", "Oracle per class: held-out F1 and false-positive rate", gates={"F1 gate 0.97": (F1_GATE, "green"), "FP gate 0.03": (FPR_GATE, "red")})
