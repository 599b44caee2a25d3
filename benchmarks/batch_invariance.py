"""Does a request's audio depend on its batch mates? One run, shipped generator, each dtype asked for.

    python benchmarks/batch_invariance.py [--dtypes fp32,bf16] [--steps 25]

Four prompts x 2 candidates run as one batch and each prompt alone with the same seeds. Prints, per
dtype, the largest drift between batched and alone (waveform, relative to the peak; log-mel, mean
absolute difference) next to the log-mel difference between two seeds of the same prompt, the scale
of "another clip". Griffin-Lim's phase magnifies waveform drift, so the log-mel is the fair measure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from services.audio import MelSpectrogram  # noqa: E402
from services.generator import DTYPES, TangoPipeline  # noqa: E402

PROMPTS = ["a dog barks", "rain falls", "a bell rings, then a siren wails", "a siren wails"]


def log_mel(mel: MelSpectrogram, wav: np.ndarray) -> torch.Tensor:
    return mel(torch.from_numpy(np.ascontiguousarray(wav)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    from services.checkpoints import shipped

    print("| dtype | waveform drift (max, of peak) | log-mel drift (max mean abs) | log-mel, seed vs seed (min) |")
    print("|---|---|---|---|")
    for name in args.dtypes.split(","):
        pipe = TangoPipeline.from_pretrained(shipped("generator"), device=args.device, dtype=DTYPES[name])
        mel = MelSpectrogram(pipe.mel)
        batched = pipe.generate(PROMPTS, num_candidates=2, steps=args.steps, seed=list(range(len(PROMPTS)))).waveforms
        wave, spec, seeds = [], [], []
        for i, prompt in enumerate(PROMPTS):
            alone = pipe.generate([prompt], num_candidates=2, steps=args.steps, seed=i).waveforms[0]
            wave.append(float(np.abs(alone - batched[i]).max() / np.abs(alone).max()))
            spec.append(float((log_mel(mel, alone) - log_mel(mel, batched[i])).abs().mean()))
            seeds.append(float((log_mel(mel, batched[i, 0]) - log_mel(mel, batched[i, 1])).abs().mean()))
        print(f"| {name} | {max(wave):.2e} | {max(spec):.3f} | {min(seeds):.3f} |")


if __name__ == "__main__":
    main()
