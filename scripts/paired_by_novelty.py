"""Row A minus row B of `tta eval baton` at N=1, split by what makes each held-out prompt held out.

Each prompt falls in the first group that fits: it names an event by a held-out word, it uses a held-out template,
its event pair is held out, or none of these (DESIGN.md section 3). Per group and task it prints the prompts, both
rows' N=1 accuracy (the mean over the K candidates), their difference on those prompts, and that difference in
points of the whole task, so the last column sums to what `tta eval paired` reports.

  python scripts/paired_by_novelty.py --a runs/bf/eval-b0/seed1/hd_rd --a runs/bf/eval-b0/seed2/hd_rd \
      --b runs/bf/eval-b0/seed1/base --b runs/bf/eval-b0/seed2/base
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from gap_by_word import TASKS, named_heldout_phrasings

from training.eval_generator import uses_novel_template
from training.eval_rerank import heldout_task_specs
from training.world.clips import has_heldout_pair

GROUPS = ("held-out words", "held-out template", "held-out pair", "neither")


def candidate_set(row: Path, task: str) -> tuple[Path, int, int, int]:
    """The one `{task}-n{N}-k{K}[-seedS]` set under a row directory, with N, K and the sample seed."""
    found = sorted(row.glob(f"{task}-n*-k*"))
    if len(found) != 1:
        raise SystemExit(f"{row}: expected one {task}-n*-k* set, found {[p.name for p in found]}")
    parts = found[0].name.split("-")
    seed = int(parts[3].removeprefix("seed")) if len(parts) > 3 else 1
    return found[0], int(parts[1][1:]), int(parts[2][1:]), seed


def accepted_per_prompt(directory: Path, k: int) -> tuple[list[str], list[float]]:
    records = [json.loads(line) for line in (directory / "records.jsonl").read_text().splitlines() if line.strip()]
    prompts = [records[i]["prompt"] for i in range(0, len(records), k)]
    return prompts, [sum(r["label"] for r in records[i : i + k]) / k for i in range(0, len(records), k)]


def group_of(prompt: str, spec) -> str:
    if named_heldout_phrasings(prompt, spec.events, spec.clauses, spec.nouns):
        return "held-out words"
    if uses_novel_template(spec):
        return "held-out template"
    return "held-out pair" if has_heldout_pair(spec.events) else "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, action="append", required=True, help="a row directory (--work-dir/NAME); once per sample")
    parser.add_argument("--b", type=Path, action="append", required=True, help="the row to subtract, same samples in the same order")
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        raise SystemExit(f"got {len(args.a)} --a and {len(args.b)} --b; give one of each per sample")

    print("| task | held out by | prompts | B | A | A - B on these | A - B, points of the task |")
    print("|---|---|---|---|---|---|---|")
    for task in TASKS:
        sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        total = 0
        for row_a, row_b in zip(args.a, args.b):
            set_a, n, k, seed = candidate_set(row_a, task)
            set_b, n_b, k_b, seed_b = candidate_set(row_b, task)
            if (n, k, seed) != (n_b, k_b, seed_b):
                raise SystemExit(f"{set_a} and {set_b} are not the same sample")
            prompts, acc_a = accepted_per_prompt(set_a, k)
            prompts_b, acc_b = accepted_per_prompt(set_b, k)
            if prompts != prompts_b:
                raise SystemExit(f"{set_a} and {set_b} hold different prompts")
            for prompt, spec, a, b in zip(prompts, heldout_task_specs(task, n, seed), acc_a, acc_b):
                s = sums[group_of(prompt, spec)]
                s[0] += 1
                s[1] += b
                s[2] += a
            total += n
        for group in GROUPS:
            if group in sums:
                count, b, a = sums[group]
                print(f"| {task} | {group} | {int(count)} | {b / count:.3f} | {a / count:.3f} | {100 * (a - b) / count:+.1f} | {100 * (a - b) / total:+.1f} |")


if __name__ == "__main__":
    main()
