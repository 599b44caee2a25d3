"""Row A minus row B of `tta eval baton` at N=1, split by what makes each held-out prompt held out.

Each prompt falls in the first group that fits: it names an event by a held-out word, it uses a held-out template,
its event pair is held out, or none of these (DESIGN.md section 3). Per group and task it prints the prompts, both
rows' N=1 accuracy (the mean over the K candidates), their difference on those prompts, and that difference in
points of the whole task (that column sums to what `tta eval paired` reports), and what B gets wrong there in
points of the task: the most any row could gain on that group.

  python scripts/paired_by_novelty.py --a runs/bf/eval-b0/seed1/hd_rd --a runs/bf/eval-b0/seed2/hd_rd \
      --b runs/bf/eval-b0/seed1/base --b runs/bf/eval-b0/seed2/base
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from training.eval_baton import paired_candidate_sets
from training.eval_generator import uses_novel_template
from training.eval_rerank import heldout_task_specs, novel_word_prompts
from training.world.clips import has_heldout_pair
from training.world.oracle import SoundEventDetector, load_oracle

GROUPS = ("held-out words", "held-out template", "held-out pair", "neither")


def prompt_groups(directory: Path) -> list[str]:
    """Each prompt's group (GROUPS) in a held-out candidate set; an error if the set is not the seed's prompts."""
    novel = novel_word_prompts(directory)  # also checks the set holds its seed's held-out prompts
    settings = json.loads((directory / "dataset.json").read_text())
    specs = heldout_task_specs(settings["task"], len(novel), settings["seed"])
    return [GROUPS[0] if words else GROUPS[1] if uses_novel_template(s) else GROUPS[2] if has_heldout_pair(s.events) else GROUPS[3] for words, s in zip(novel, specs)]


def group_sums(pairs: list[tuple[Path, Path]], oracle: SoundEventDetector | None = None) -> dict[str, dict[str, tuple[int, float, float]]]:
    """task -> group -> (prompts, B's summed N=1 accuracy, A's) over every sample's (row A, row B); with `oracle`,
    every clip judged again by it."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0.0]))
    for row_a, row_b in pairs:
        for directory, task, labels_a, labels_b in paired_candidate_sets(row_a, row_b, oracle):
            for group, a, b in zip(prompt_groups(directory), labels_a.mean(1), labels_b.mean(1)):
                s = sums[task][group]
                s[0] += 1
                s[1] += float(b)
                s[2] += float(a)
    return {task: {g: (int(s[0]), s[1], s[2]) for g, s in groups.items()} for task, groups in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, action="append", required=True, help="a row directory (--work-dir/NAME); once per sample")
    parser.add_argument("--b", type=Path, action="append", required=True, help="the row to subtract, same samples in the same order")
    parser.add_argument("--oracle", type=Path, default=None, help="judge every clip again with this oracle checkpoint (default: the labels stored in the sets)")
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        raise SystemExit(f"got {len(args.a)} --a and {len(args.b)} --b; give one of each per sample")

    sums = group_sums(list(zip(args.a, args.b)), load_oracle(str(args.oracle)) if args.oracle else None)
    # B's errors in points of the task: the most any A could gain on that group, so what a goal can ask of it
    print("| task | held out by | prompts | B | A | A - B on these | A - B, points of the task | B's errors, points of the task |")
    print("|---|---|---|---|---|---|---|---|")
    for task in sorted(sums):
        total = sum(count for count, _, _ in sums[task].values())
        for group in GROUPS:
            if group in sums[task]:
                count, b, a = sums[task][group]
                print(
                    f"| {task} | {group} | {count} | {b / count:.3f} | {a / count:.3f} | {100 * (a - b) / count:+.1f} "
                    f"| {100 * (a - b) / total:+.1f} | {100 * (count - b) / total:.1f} |"
                )


if __name__ == "__main__":
    main()
