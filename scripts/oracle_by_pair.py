"""How often each oracle accepts ground-truth overlap clips, per event pair.

Renders the first --n clips of a seed's held-out split, keeps those where two events overlap, and judges each against
its own events the way the annotator judges a generated clip (`training.annotation.judged_right`: both heard,
nothing else). Prints one row per pair (held-out pairs first, then the worst training pairs) and one column per
oracle, so a judge's blind spots and a retrained judge's repair read side by side.

  python scripts/oracle_by_pair.py --oracle services/checkpoints/oracle --oracle runs/oracle-h/model --n 1500 --seed 7

~1 min to render 1500 clips on 2 CPU cores, then seconds per oracle.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.annotation import judged_right
from training.world.clips import heldout_pairs, make_clip
from training.world.oracle import load_oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oracle", type=Path, action="append", required=True, help="an oracle checkpoint directory; repeat to compare")
    parser.add_argument("--n", type=int, default=1500, help="held-out clips rendered (about one in eight is a two-event overlap)")
    parser.add_argument("--seed", type=int, default=7, help="world seed of the held-out split (the oracles train on seed 0)")
    parser.add_argument("--training-pairs", type=int, default=5, help="also show this many training pairs, the worst by the first oracle")
    args = parser.parse_args()
    if args.n < 1 or args.training_pairs < 0:
        raise SystemExit("--n must be >= 1 and --training-pairs >= 0")

    clips = [c for c in tqdm((make_clip(args.seed, "heldout", i) for i in range(args.n)), total=args.n, desc="render") if c.truth.relation == "overlap" and len(c.truth.events) == 2]
    if not clips:
        raise SystemExit(f"no two-event overlap clips among the first {args.n} held-out clips of seed {args.seed}")
    audio = np.stack([c.audio for c in clips])
    events = [[e.event for e in c.truth.events] for c in clips]
    accepted: dict[frozenset[str], list[list[bool]]] = defaultdict(lambda: [[] for _ in args.oracle])
    for j, directory in enumerate(args.oracle):
        for det, ev in zip(load_oracle(str(directory)).detect(audio), events):
            accepted[frozenset(ev)][j].append(judged_right(det, ev, in_order=False))

    def row(pair: frozenset[str]) -> str:
        judged = accepted[pair]
        return f"| {' + '.join(sorted(pair))} | {'held out' if pair in heldout_pairs() else 'training'} | {len(judged[0])} | " + " | ".join(f"{np.mean(v):.2f}" for v in judged) + " |"

    held = sorted((p for p in accepted if p in heldout_pairs()), key=lambda p: np.mean(accepted[p][0]))
    trained = sorted((p for p in accepted if p not in heldout_pairs()), key=lambda p: np.mean(accepted[p][0]))[: args.training_pairs]
    print("| pair | pair is | clips | " + " | ".join(str(d) for d in args.oracle) + " |")
    print("|---|---|---|" + "---|" * len(args.oracle))
    for pair in held + trained:
        print(row(pair))
    for name, group in (("held-out pairs", [p for p in accepted if p in heldout_pairs()]), ("training pairs", [p for p in accepted if p not in heldout_pairs()])):
        if group:
            cells = " | ".join(f"{np.mean([x for p in group for x in accepted[p][j]]):.3f}" for j in range(len(args.oracle)))
            print(f"| all {name} | | {sum(len(accepted[p][0]) for p in group)} | {cells} |")


if __name__ == "__main__":
    main()
