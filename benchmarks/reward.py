"""Reward-model benchmark: the torch head vs. its ONNX Runtime export, one run, same weights. Prints a Markdown table.

    python benchmarks/reward.py [--checkpoint DIR] [--repeats 50] [--device cpu|cuda]

1. Head alone (embeddings -> reward) at batch 8 (one request's candidates) and 256.
2. The whole scoring path of one request: CLAP audio + text embedding of 8 candidate clips, then the head.
3. The served CPU picker (CLAP cosine) on one request's 4 candidates of 4.1 s: whole clip, by stretch (2 and 3
   clauses), and by stretch in known wording (services.wording; a prompt not seen before, so MiniLM encodes it).
ONNX Runtime runs on the provider `onnx_providers` picks (CUDA when a GPU is present); the table says which.
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

from benchmarks.generator import timed  # noqa: E402
from services.reward import RewardModel  # noqa: E402

PROMPT = "a dog barks, then a bell rings"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="reward model directory (default: the shipped one)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from services.checkpoints import shipped

    directory = args.checkpoint or shipped("reward")
    torch_rm = RewardModel.from_pretrained(directory, args.device)
    onnx_rm = RewardModel.from_pretrained(directory, args.device, backend="onnx", clap=torch_rm.clap)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    d = torch_rm.head.config.embed_dim
    rows = []
    for n in (8, 256):
        a, t = rng.standard_normal((2, n, d)).astype(np.float32)
        pt = timed(lambda a=a, t=t: torch_rm.reward_from_embeddings(a, t), args.repeats, sync)
        ox = timed(lambda a=a, t=t: onnx_rm.reward_from_embeddings(a, t), args.repeats, sync)
        diff = float(np.abs(torch_rm.reward_from_embeddings(a, t) - onnx_rm.reward_from_embeddings(a, t)).max())
        rows.append((f"head, batch {n}", pt, ox, diff))
    clips = rng.standard_normal((8, 65536)).astype(np.float32) * 0.1
    repeats = max(5, args.repeats // 2)
    pt = timed(lambda: torch_rm.score(PROMPT, clips, 16000), repeats, sync)
    ox = timed(lambda: onnx_rm.score(PROMPT, clips, 16000), repeats, sync)
    rows.append(("CLAP + head, 8 clips of 4.1 s", pt, ox, float(np.abs(torch_rm.score(PROMPT, clips, 16000) - onnx_rm.score(PROMPT, clips, 16000)).max())))
    print(f"device {args.device}; ONNX providers {onnx_rm.onnx_head.providers}; median of repeats\n")
    print("| path | torch ms | onnx ms | torch / onnx | max abs diff |")
    print("|---|---|---|---|---|")
    for name, pt, ox, diff in rows:
        print(f"| {name} | {pt * 1e3:.3f} | {ox * 1e3:.3f} | {pt / ox:.2f}x | {diff:.1e} |")
    print_picker_costs(torch_rm, clips[:4], repeats, sync)


def print_picker_costs(reward: RewardModel, clips: np.ndarray, repeats: int, sync) -> None:
    """Table 3: what judging by stretch and in known wording add to the CLAP picker, one run, medians."""
    from services.checkpoints import shipped
    from services.reward import ByStretch, ClapReranker
    from services.wording import InKnownWords, KnownWording

    clap = ClapReranker(reward.clap)
    wording = KnownWording.from_pretrained(shipped("wording"))  # its own MiniLM, as a served reranker loads it
    pickers = {"whole clip": clap, "by stretch": ByStretch(clap), "by stretch, known wording": ByStretch(InKnownWords(clap, wording))}
    prompts = {2: "a puppy barks, then a bell chimes", 3: "a puppy barks, then a bell chimes, then a kitty mews"}

    def fresh(picker, prompt: str, clauses: list[str] | None):
        wording.clear_cache()  # a new prompt each request: the rewording is computed, not looked up
        return picker.score(prompt, clips, 16000, timeline=clauses)

    base = None
    print("\n| CLAP picker, 4 candidates of 4.1 s | clauses | ms | / whole clip |\n|---|---|---|---|")
    for name, picker in pickers.items():
        for k, prompt in prompts.items():
            clauses = [c.strip() for c in prompt.split(", then ")] if name != "whole clip" else None
            ms = timed(lambda p=picker, q=prompt, c=clauses: fresh(p, q, c), repeats, sync) * 1e3
            base = base if base is not None else ms
            print(f"| {name} | {k if clauses else '-'} | {ms:.1f} | {ms / base:.2f}x |")
            if name == "whole clip":
                break


if __name__ == "__main__":
    main()
