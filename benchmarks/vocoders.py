"""Vocoder comparison: what the oracle still hears after each vocoder resynthesises ground truth.

    python benchmarks/vocoders.py [--checkpoint DIR] [--n 200] [--out DIR]

Held-out world clips -> log-mel -> {the checkpoint's HiFi-GAN, Griffin-Lim} -> oracle. Prints, in one
run on the same clips: presence F1 and order accuracy per vocoder, time per clip, and the F1 of every
event class (the mini HiFi-GAN's losses sit in a few classes, not everywhere). With --out, also a PNG
of the per-class F1 and the table as Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from services.generator import VOCODERS, TangoPipeline  # noqa: E402
from training.eval_generator import heldout_ground_truth  # noqa: E402
from training.eval_oracle import score_detections  # noqa: E402
from training.world.oracle import load_oracle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="generator directory (default: the shipped one)")
    parser.add_argument("--n", type=int, default=200, help="held-out clips")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="write vocoders.md and vocoders.png here")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be >= 1")
    from services.checkpoints import shipped

    torch.set_grad_enabled(False)
    pipe = TangoPipeline.from_pretrained(args.checkpoint or shipped("generator"), device="cpu")
    oracle = load_oracle()
    audio, truths, ordered = heldout_ground_truth(args.n)
    class_ids = list(oracle.config.class_ids)
    rows = {"ground truth": (audio, 0.0)}
    for name in VOCODERS:
        t0 = time.perf_counter()
        wav = np.concatenate([pipe.reconstruct(audio[i : i + args.batch], through_vae=False, vocoder=name) for i in range(0, args.n, args.batch)])
        rows[name] = (wav, (time.perf_counter() - t0) / args.n)
    scores = {name: score_detections(oracle.detect(wav), truths, ordered, class_ids) for name, (wav, _) in rows.items()}

    lines = [f"{args.n} held-out clips, log-mel -> vocoder -> oracle, CPU ({torch.get_num_threads()} threads)", ""]
    lines += ["| audio | presence F1 | order accuracy | ms per clip |", "|---|---|---|---|"]
    lines += [f"| {name} | {scores[name]['f1']:.3f} | {scores[name]['order']:.3f} | {seconds * 1000:.0f} |" for name, (_, seconds) in rows.items()]
    support = {c: sum(c in t for t in truths) for c in class_ids}
    lines += ["", "| class | clips | " + " | ".join(rows) + " |", "|---" * (len(rows) + 2) + "|"]
    lines += [f"| {c} | {support[c]} | " + " | ".join(f"{scores[name]['per_class_f1'][c]:.2f}" for name in rows) + " |" for c in class_ids if support[c]]
    text = "\n".join(lines)
    print(text)
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "vocoders.md").write_text(text + "\n")
        fig, ax = plt.subplots(figsize=(11, 3.5))
        width = 0.8 / len(rows)
        for k, name in enumerate(rows):
            ax.bar(np.arange(len(class_ids)) + k * width, [scores[name]["per_class_f1"][c] for c in class_ids], width, label=name)
        ax.set_xticks(np.arange(len(class_ids)) + 0.4 - width / 2, class_ids, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="oracle F1", ylim=(0, 1.05), title="event classes the oracle still hears after each vocoder")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out / "vocoders.png", dpi=90)
        plt.close(fig)
        print(f"wrote {args.out / 'vocoders.md'} and vocoders.png")


if __name__ == "__main__":
    main()
