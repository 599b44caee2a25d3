"""`tta train reward`: the BATON reward model on frozen CLAP embeddings.

Reads top to bottom: data (annotation records of built datasets and/or imported BATON label files,
their clips embedded once by the frozen CLAP and cached), split (20% of the prompts held out, by a
hash of the prompt, so no prompt is on both sides), model (`services.reward.RewardHead`: BATON's MLP
1024 -> 512 -> 1), optional pretraining on world pairs (`training.reward_pairs`: exactly labelled
(clip, prompt) pairs that teach the head to read the prompt against the audio), loop (BCE, Adam,
batch 32 as BATON; the epoch with the lowest held-out loss is kept, epoch 0 being the pretrained
head), export (safetensors + ONNX, parity checked) and the MANIFEST with the held-out metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from services.audio import read_audio
from services.clap import ClapEmbedder
from services.manifest import checkpoint_version, write_manifest
from services.reward import ONNX_NAME, OnnxRewardHead, RewardHead, RewardHeadConfig, export_onnx, reward_loss
from training.annotation import AnnotationRecord
from training.reward_pairs import WorldPairs

VALIDATION_FRACTION = 0.2


@dataclass
class LabelledClips:
    """Records with their audio files, and (once embedded) CLAP audio/text embeddings."""

    records: list[AnnotationRecord]
    paths: list[Path]
    audio_emb: np.ndarray | None = None
    text_emb: np.ndarray | None = None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[AnnotationRecord, Path]]) -> LabelledClips:
        return cls([r for r, _ in pairs], [p for _, p in pairs])

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.float32)

    @property
    def oracle_labels(self) -> np.ndarray:
        """Noise-free oracle labels where the records carry them (simulated), else the labels."""
        return np.array([r.provenance.oracle_label if r.provenance.oracle_label is not None else r.label for r in self.records], dtype=np.float32)

    def subset(self, mask: np.ndarray) -> LabelledClips:
        idx = np.flatnonzero(mask)
        return LabelledClips([self.records[i] for i in idx], [self.paths[i] for i in idx], None if self.audio_emb is None else self.audio_emb[idx], None if self.text_emb is None else self.text_emb[idx])


def is_validation_prompt(prompt: str) -> bool:
    return int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VALIDATION_FRACTION


# ----------------------------------------------------------------------------- data
def embed_clips(clips: LabelledClips, clap: ClapEmbedder, cache: Path | None = None, batch: int = 64) -> LabelledClips:
    """Fill audio/text embeddings; audio embeddings are cached by absolute path (the CLAP is frozen)."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        known = dict(zip(data["paths"].tolist(), data["audio"]))
    keys = [str(p.resolve()) for p in clips.paths]
    todo = [i for i, k in enumerate(keys) if k not in known]
    for s in tqdm(range(0, len(todo), batch), desc="embed clips", disable=not todo):
        rows = todo[s : s + batch]
        audios = [read_audio(clips.paths[i], clap.sample_rate) for i in rows]
        width = max(len(a) for a in audios)
        emb = clap.embed_audio(np.stack([np.pad(a, (0, width - len(a))) for a in audios]), clap.sample_rate)
        known.update({keys[i]: e for i, e in zip(rows, emb)})
    if cache is not None and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(list(known)), audio=np.stack(list(known.values())))
        tmp.replace(cache)
    prompts = sorted({r.prompt for r in clips.records})
    text = dict(zip(prompts, clap.embed_text(prompts)))
    clips.audio_emb = np.stack([known[k] for k in keys]).astype(np.float32)
    clips.text_emb = np.stack([text[r.prompt] for r in clips.records]).astype(np.float32)
    return clips


# ----------------------------------------------------------------------------- metrics
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); nan with one class only."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def within_prompt_auc(scores: np.ndarray, labels: np.ndarray, prompts: list[str]) -> float:
    """Mean ROC AUC among each prompt's own clips (prompts with both an accepted and a rejected clip;
    nan if none). What best-of-N needs: a model that only learns which prompts are easy scores 0.5 here
    however high its pooled AUC."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    aucs = [roc_auc(scores[idx], labels[idx]) for idx in map(np.array, groups.values())]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


# `tta data build` names a clip audio/{prompt index:05d}_{candidate}.flac
_BUILT_CLIP_NAME = re.compile(r"^(\d+)_\d+$")


def request_keys(clips: LabelledClips) -> list[str]:
    """One key per clip, shared by the clips generated for one request: its data set and prompt index
    when the file is named as `tta data build` names it (two requests with the same text stay apart,
    as best-of-N sees them), else its prompt text (imported labels)."""
    keys = []
    for record, path in zip(clips.records, clips.paths):
        built = _BUILT_CLIP_NAME.match(Path(path).stem)
        keys.append(f"{Path(path).parent.parent}#{built.group(1)}" if built else record.prompt)
    return keys


def reward_metrics(rewards: np.ndarray, clips: LabelledClips) -> dict[str, float]:
    labels, oracle = clips.labels, clips.oracle_labels
    prompts = request_keys(clips)
    return {
        "accuracy": float(np.mean(np.abs(rewards - labels) < 0.5)),
        "roc_auc": roc_auc(rewards, labels),
        "oracle_agreement": float(np.mean((rewards >= 0.5) == (oracle >= 0.5))),
        "oracle_roc_auc": roc_auc(rewards, oracle),
        "oracle_within_prompt_auc": within_prompt_auc(rewards, oracle, prompts),
        "positive_rate": float(labels.mean()),
        "clips": float(len(labels)),
    }


@torch.no_grad()
def predict(head: RewardHead, clips: LabelledClips) -> np.ndarray:
    head.eval()
    return head(torch.from_numpy(clips.audio_emb), torch.from_numpy(clips.text_emb)).numpy()


# ----------------------------------------------------------------------------- training
def train_reward(
    clips: LabelledClips,
    clap: ClapEmbedder,
    clap_dir: Path,
    out: Path,
    epochs: int = 40,
    batch_size: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
    eval_sets: dict[str, LabelledClips] | None = None,
    command: str | None = None,
    sources: list[str] | None = None,
    pairs: WorldPairs | None = None,
    pretrain_epochs: int = 10,
    pretrain_lr: float = 1e-3,
    pair_replay: float = 0.0,
    cosine_skip: bool = False,
) -> dict[str, float]:
    """Pretrain on world pairs (when given), then fine-tune on the labelled clips; `pair_replay` > 0
    keeps a batch of pairs in every fine-tuning step with that weight."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    # split by prompt
    val_mask = np.array([is_validation_prompt(r.prompt) for r in clips.records])
    train, val = clips.subset(~val_mask), clips.subset(val_mask)
    if not len(train.records) or not len(val.records):
        raise ValueError(f"need prompts on both sides of the split, got {len(train.records)} train / {len(val.records)} validation clips")
    xa, xt, y = torch.from_numpy(train.audio_emb), torch.from_numpy(train.text_emb), torch.from_numpy(train.labels)
    va, vt, vy = torch.from_numpy(val.audio_emb), torch.from_numpy(val.text_emb), torch.from_numpy(val.labels)

    # model
    # the head names its CLAP relative to its own directory, so the pair moves together
    head = RewardHead(RewardHeadConfig(clap=os.path.relpath(Path(clap_dir).resolve(), Path(out).resolve()), embed_dim=xa.shape[1], cosine_skip=cosine_skip))
    metrics: dict[str, float] = {}

    def validate() -> dict[str, float]:
        """Validation loss and within-prompt AUC of the head as it is now."""
        head.eval()
        with torch.no_grad():
            val_loss = float(reward_loss(head, va, vt, vy))
        return {"val_loss": val_loss, "val_within_prompt_auc": reward_metrics(predict(head, val), val)["oracle_within_prompt_auc"]}

    # pretraining on world pairs: many exactly labelled pairs, positives and negatives sharing a clip
    pair_history = []
    if pairs is not None:
        pa, pt, py = torch.from_numpy(pairs.audio_emb[pairs.clip]), torch.from_numpy(pairs.text_emb), torch.from_numpy(pairs.label)
        opt = torch.optim.Adam(head.parameters(), lr=pretrain_lr)
        for epoch in tqdm(range(pretrain_epochs), desc="reward pretrain (world pairs)"):
            head.train()
            perm, total = torch.randperm(len(py), generator=g), 0.0
            for s in range(0, len(py), 256):
                idx = perm[s : s + 256]
                loss = reward_loss(head, pa[idx], pt[idx], py[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            pair_history.append({"epoch": epoch + 1, "pair_loss": total / len(py), **validate()})
        metrics.update({f"pretrained.validation.{k}": v for k, v in reward_metrics(predict(head, val), val).items()})
        for name, clips_ in (eval_sets or {}).items():
            metrics.update({f"pretrained.{name}.{k}": v for k, v in reward_metrics(predict(head, clips_), clips_).items()})

    # fine-tuning on the labelled clips: keep the epoch (0 = as pretrained) with the lowest validation loss
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best = validate()["val_loss"]
    best_state, history = {k: v.clone() for k, v in head.state_dict().items()}, [{"epoch": 0, "val_loss": best}]
    for epoch in tqdm(range(epochs), desc="reward"):
        head.train()
        perm = torch.randperm(len(y), generator=g)
        total = 0.0
        for s in range(0, len(y), batch_size):
            idx = perm[s : s + batch_size]
            loss = reward_loss(head, xa[idx], xt[idx], y[idx])
            total += loss.item() * len(idx)
            if pairs is not None and pair_replay > 0:
                pidx = torch.randint(len(py), (batch_size,), generator=g)
                loss = loss + pair_replay * reward_loss(head, pa[pidx], pt[pidx], py[pidx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append({"epoch": epoch + 1, "train_loss": total / len(y), **validate()})
        val_loss = history[-1]["val_loss"]
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)

    # metrics, export, manifest
    metrics.update({f"validation.{k}": v for k, v in reward_metrics(predict(head, val), val).items()})
    metrics.update({f"train.{k}": v for k, v in reward_metrics(predict(head, train), train).items()})
    for name, clips_ in (eval_sets or {}).items():
        metrics.update({f"{name}.{k}": v for k, v in reward_metrics(predict(head, clips_), clips_).items()})
    metrics["best_epoch"] = float(min(history, key=lambda h: h["val_loss"])["epoch"])
    out.mkdir(parents=True, exist_ok=True)
    head.save_pretrained(out)
    export_onnx(head, out / ONNX_NAME)
    onnx_out = OnnxRewardHead(out / ONNX_NAME, "cpu")(val.audio_emb, val.text_emb)
    metrics["onnx_max_abs_diff"] = float(np.abs(onnx_out - predict(head, val)).max())
    if metrics["onnx_max_abs_diff"] > 1e-4:
        raise RuntimeError(f"ONNX head differs from torch by {metrics['onnx_max_abs_diff']:.2e} (> 1e-4)")
    (out / "history.json").write_text(json.dumps({"pretrain": pair_history, "finetune": history}) + "\n")
    plot_reward_history(pair_history, history, out / "curves.png")
    training = {"clap": checkpoint_version(clap_dir), "data": sources or [], "epochs": epochs, "batch_size": batch_size, "lr": lr, "train_clips": len(train.records), "validation_clips": len(val.records)}
    if pairs is not None:
        training["world_pairs"] = {**pairs.summary(), "epochs": pretrain_epochs, "lr": pretrain_lr, "replay": pair_replay}
    write_manifest(out, command=command, seed=seed, metrics={k: round(v, 4) for k, v in metrics.items()}, extra={"training": training})
    return metrics


def plot_reward_history(pretrain: list[dict], finetune: list[dict], path: Path) -> Path:
    """Loss and validation within-prompt AUC over the pretraining epochs, then the fine-tuning ones."""
    from training.plots import training_curves

    p = len(pretrain)
    logs = {
        "pretrain (world pairs)": [{**r, "step": r["epoch"], "train_loss": r["pair_loss"]} for r in pretrain],
        "fine-tune (annotated clips)": [{**r, "step": p + r["epoch"]} for r in finetune],
    }
    return training_curves(logs, ("train_loss", "val_loss", "val_within_prompt_auc"), path, "reward head (x: epoch)", smooth=1)
