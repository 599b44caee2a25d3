"""Matplotlib figures people look at instead of reading numbers: mel sheets and metric bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from services.audio import MelConfig, MelSpectrogram  # noqa: E402

SHEET_MEL = MelConfig(hop_length=256)


def mel_sheet(audios: list[np.ndarray], titles: list[str], path: str | Path, events: list[list[tuple[str, float, float]]] | None = None, cols: int = 2) -> Path:
    """One PNG of labelled log-mel spectrograms; ground-truth events drawn as spans under each."""
    mel = MelSpectrogram(SHEET_MEL)
    rows = (len(audios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(audios) :]:
        ax.axis("off")
    for i, (audio, title) in enumerate(zip(audios, titles)):
        ax = axes.flat[i]
        with torch.no_grad():
            spec = mel(torch.from_numpy(np.asarray(audio, dtype=np.float32)))[0].numpy()
        dur = len(audio) / SHEET_MEL.sample_rate
        ax.imshow(spec, origin="lower", aspect="auto", extent=(0, dur, 0, SHEET_MEL.n_mels), cmap="magma", vmin=spec.max() - 12)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
        ax.set_xlabel("s")
        for j, (name, on, off) in enumerate((events or [[]] * len(audios))[i]):
            y = 2 + 7 * j
            ax.plot([on, off], [y, y], color="cyan", lw=3)
            ax.text(on, y + 1.2, name, color="cyan", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def bar_chart(values: dict[str, dict[str, float]], path: str | Path, title: str, gates: dict[str, tuple[float, str]] | None = None) -> Path:
    """Grouped bars: values[series][category]; optional dashed gate line per series."""
    series = list(values)
    cats = list(values[series[0]])
    x = np.arange(len(cats))
    w = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(cats)), 4))
    for i, s in enumerate(series):
        ax.bar(x + i * w - 0.4 + w / 2, [values[s][c] for c in cats], w, label=s)
    for name, (level, style) in (gates or {}).items():
        ax.axhline(level, ls="--", color=style, lw=1, label=name)
    ax.set_xticks(x, cats, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def training_curves(logs: dict[str, list[dict]], keys: tuple[str, ...], path: str | Path, title: str, smooth: int = 25) -> Path:
    """One panel per key: each run's logged value against its step, moving-averaged over `smooth` steps."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, rows in logs.items():
            rows = [r for r in rows if key in r]
            if not rows:
                continue
            steps, values = np.array([r["step"] for r in rows]), np.array([r[key] for r in rows], dtype=float)
            k = max(1, min(smooth, len(values)))
            ax.plot(steps[k - 1 :], np.convolve(values, np.ones(k) / k, mode="valid"), label=name)
        ax.set(title=key, xlabel="step")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def stacked_bars(bars: dict[str, dict[str, float]], path: str | Path, title: str, ylabel: str) -> Path:
    """One bar per key of `bars`, stacked from its parts (the same part names in every bar, in order)."""
    parts = list(next(iter(bars.values())))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(bars), 4.2))
    bottom = np.zeros(len(bars))
    for part in parts:
        heights = np.array([b[part] for b in bars.values()])
        ax.bar(list(bars), heights, bottom=bottom, label=part)
        bottom += heights
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{total:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
