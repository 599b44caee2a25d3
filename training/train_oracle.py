"""`tta train oracle`: train the sound-event-detection oracle on the world's ground truth.

Reads top to bottom: data (rendered once and cached), model, loop with augmentation, checkpoint.
Augmentations make it robust to what a generator produces (noise, spectral smoothing, gain, time
shift, band limits, grain), and event-free audio (silence, coloured noise, smeared textures) is
in every batch so that it learns to stay silent on garbage.
"""

from __future__ import annotations

import json
import math
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from services.audio import MelSpectrogram
from services.manifest import current_commit, write_manifest
from training.eval_oracle import evaluate_oracle, report_markdown, score_detections
from training.world.clips import make_clip
from training.world.negatives import NEGATIVE_KINDS, make_negative
from training.world.oracle import OracleConfig, SoundEventDetector, frame_targets, output_frames

# ----------------------------------------------------------------------------- data
# Held-out-split clips of the training seed from index 0 may join the training set (--heldout-clips): the oracle is the
# judge, not a model under test, and trained on training clips alone it never hears a held-out event pair together.
# Validation reads the same split from this index on, so the two never share a clip.
HELDOUT_VAL_START = 10_000


def _render_chunk(args: tuple[int, int, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, start, stop, n_train, n_heldout, time_pool = args
    torch.set_num_threads(1)
    cfg = OracleConfig()
    model = SoundEventDetector(cfg)
    n_out = output_frames(cfg)
    feats, targets = [], []
    for i in range(start, stop):
        if i < n_train + n_heldout:
            clip = make_clip(seed, "train", i) if i < n_train else make_clip(seed, "heldout", i - n_train)
            audio, y = clip.audio, frame_targets(clip.truth.events, cfg.class_ids, n_out, model.frame_seconds)
        else:
            _, audio = make_negative(seed, i - n_train - n_heldout)
            y = np.zeros((n_out, len(cfg.class_ids)), dtype=np.float32)
        with torch.no_grad():
            feats.append(model.features(torch.from_numpy(audio)[None])[0].numpy().astype(np.float16))
        targets.append(y.astype(np.uint8))
    return np.stack(feats), np.stack(targets)


def build_dataset(seed: int, n_clips: int, n_negatives: int, cache_dir: Path, workers: int = 2, n_heldout_clips: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features and frame targets of `n_clips` train clips + `n_heldout_clips` held-out-split clips
    + `n_negatives` negatives, cached."""
    if not 0 <= n_heldout_clips <= HELDOUT_VAL_START:
        raise ValueError(f"n_heldout_clips must be in [0, {HELDOUT_VAL_START}] (the validation clips start there), got {n_heldout_clips}")
    held = f"-h{n_heldout_clips}" if n_heldout_clips else ""
    cache = cache_dir / f"oracle-data-s{seed}-p{n_clips}{held}-n{n_negatives}.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["feats"], data["targets"]
    total = n_clips + n_heldout_clips + n_negatives
    chunk = 250
    jobs = [(seed, s, min(s + chunk, total), n_clips, n_heldout_clips, OracleConfig().time_pool) for s in range(0, total, chunk)]
    feats, targets = [], []
    with Pool(workers) as pool:
        for f, t in tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc="render train clips"):
            feats.append(f)
            targets.append(t)
    feats_arr, targets_arr = np.concatenate(feats), np.concatenate(targets)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, feats=feats_arr, targets=targets_arr)
    return feats_arr, targets_arr


def noise_bank(seed: int, n: int, mel: MelSpectrogram) -> torch.Tensor:
    """Mel power of event-free noises, each scaled to mean power 1, for additive-noise augmentation."""
    kinds = [k for k in NEGATIVE_KINDS if k != "silence"]
    clips = [make_negative(seed + 500, i, kinds[i % len(kinds)])[1] for i in range(n)]
    with torch.no_grad():
        p = mel.power(torch.from_numpy(np.stack(clips)))
    t = p.shape[-1] // 2 * 2
    return p[..., :t] / p[..., :t].mean(dim=(1, 2), keepdim=True)


def _gaussian_kernels(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    k = torch.exp(-0.5 * (x[None] / sigmas.clamp_min(1e-3)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def augment(logmel: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, g: torch.Generator, time_pool: int, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator-like damage on a batch of log-mels [B, F, T] with frame targets [B, T', C]."""
    B, nf, T = logmel.shape

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, generator=g)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(B, generator=g) < p).float()

    p = logmel.exp() * (10 ** (u(-20, 6) / 10))[:, None, None]  # gain
    idx = torch.randint(len(noise), (B,), generator=g)
    level = p.mean(dim=(1, 2)) / 10 ** (u(-5, 30) / 10) * coin(0.5)
    p = p + noise[idx, :, :T] * level[:, None, None]  # additive noise, SNR -5..30 dB
    cutoff = torch.randint(28, nf, (B,), generator=g)
    band = (torch.arange(nf)[None, :] >= cutoff[:, None]).float() * coin(0.2)[:, None]
    p = p * (10 ** (-band * u(10, 40)[:, None] / 10))[:, :, None]  # band limit
    x = torch.log(p.clamp_min(floor))

    blur = coin(0.5)
    kf = _gaussian_kernels(u(0.3, 2.5) * blur + 1e-3 * (1 - blur), 9)
    kt = _gaussian_kernels(u(0.3, 1.5) * blur + 1e-3 * (1 - blur), 5)
    x = _sep_blur(x, kf, kt)  # spectral smoothing over frequency and time
    grain = coin(0.3)[:, None, None] * torch.randn(B, nf, T, generator=g) * u(0.1, 0.6)[:, None, None]
    x = x + _sep_blur(grain, _gaussian_kernels(torch.full((B,), 1.0), 5), _gaussian_kernels(torch.full((B,), 0.7), 5))

    shifts = (torch.randint(-8, 9, (B,), generator=g) * coin(0.5)).long()
    for i in range(B):
        s = int(shifts[i])
        if s:
            x[i] = torch.roll(x[i], s * time_pool, dims=-1)
            y[i] = torch.roll(y[i], s, dims=0)
            fill = x[i].min()
            if s > 0:
                x[i, :, : s * time_pool], y[i, :s] = fill, 0
            else:
                x[i, :, s * time_pool :], y[i, s:] = fill, 0
    return x, y


def _sep_blur(x: torch.Tensor, kf: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
    """Per-sample separable blur: kf [B, kF] over frequency, kt [B, kT] over time."""
    B = x.shape[0]
    z = F.conv2d(x[None], kf[:, None, :, None], padding=(kf.shape[1] // 2, 0), groups=B)
    z = F.conv2d(z, kt[:, None, None, :], padding=(0, kt.shape[1] // 2), groups=B)
    return z[0]


def _val_f1(model: SoundEventDetector, audio: np.ndarray, truths: list[list[str]]) -> float:
    return score_detections(model.detect(audio), truths, [False] * len(truths), list(model.config.class_ids))["f1"]


# ----------------------------------------------------------------------------- main
def train_oracle(
    out: Path,
    steps: int = 3000,
    batch_size: int = 64,
    n_clips: int = 16000,
    n_negatives: int = 3200,
    n_heldout_clips: int = 4000,
    lr: float = 3e-3,
    seed: int = 0,
    work_dir: Path = Path("runs/oracle"),
    cache_dir: Path = Path(".cache"),
    eval_every: int = 500,
    checkpoint_every: int = 100,
    eval_n: int = 1000,
    eval_negatives: int = 600,
    val_n: int = 200,
    device: str = "cpu",
    command: str | None = None,
) -> dict:
    commit_at_start = current_commit()  # the code that trained, even if the tree moves on meanwhile
    torch.manual_seed(seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = open(work_dir / "log.jsonl", "a")

    # data
    feats, targets = build_dataset(seed, n_clips, n_negatives, cache_dir, n_heldout_clips=n_heldout_clips)
    feats_t, targets_t = torch.from_numpy(feats), torch.from_numpy(targets)
    config = OracleConfig()
    model = SoundEventDetector(config).to(device)
    noise = noise_bank(seed, 240, model.frontend)
    val = [make_clip(seed, "heldout", HELDOUT_VAL_START + i) for i in range(val_n)]
    val_audio, val_truth = np.stack([c.audio for c in val]), [[e.event for e in c.truth.events] for c in val]
    floor = model.mel_cfg.log_floor

    # model, optimiser, resume
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    state_path = work_dir / "train_state.pt"
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        print(f"resumed from {state_path} at step {start}")
    g = torch.Generator().manual_seed(seed * 1000 + start)

    # loop
    model.train()
    t0 = time.time()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train oracle")
    for step in bar:
        idx = torch.randint(len(feats_t), (batch_size,), generator=g)
        x, y = augment(feats_t[idx].float(), targets_t[idx].float(), noise, g, config.time_pool, floor)
        logits = model(x.to(device))
        y = y.to(device)
        frame_loss = F.binary_cross_entropy_with_logits(logits, y)
        clip_loss = F.binary_cross_entropy_with_logits(logits.max(dim=1).values, y.max(dim=1).values)
        loss = frame_loss + clip_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        record = {"step": step + 1, "loss": loss.item(), "frame_loss": frame_loss.item(), "clip_loss": clip_loss.item(), "elapsed_s": time.time() - t0}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            record["val_f1"] = _val_f1(model, val_audio, val_truth)
            model.train()
            tqdm.write(f"step {step + 1}: val presence F1 {record['val_f1']:.4f}")
        log.write(json.dumps(record) + "\n")
        log.flush()
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": torch.tensor(step + 1)}, tmp)
            tmp.replace(state_path)

    # checkpoint: weights, evaluation, manifest
    model.eval()
    model.save_pretrained(out)
    report = evaluate_oracle(model, n=eval_n, n_negatives=eval_negatives)
    (work_dir / "eval.md").write_text(report_markdown(report) + "\n")
    print(report_markdown(report))
    metrics = {k: round(v, 5) for k, v in report.metrics.items()}
    write_manifest(out, command=command, seed=seed, metrics=metrics, git_commit=commit_at_start, extra={"training": {"steps": steps, "batch_size": batch_size, "n_clips": n_clips, "n_negatives": n_negatives, "n_heldout_clips": n_heldout_clips, "lr": lr, "eval": f"tta eval oracle --n {eval_n} --negatives {eval_negatives}"}})
    return metrics
