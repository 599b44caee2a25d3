"""BATON's table pooled over several samples of the held-out split: the per-seed `tta eval baton` reports averaged
(weighted by prompts per task), and each row's N=1 difference from base paired per prompt over all samples.

  python scripts/pool_baton_reports.py --sets runs/bf2/eval-b0 --seeds 1 2 3 4

Expects what `tta eval baton --work-dir SETS/seed{S} --out SETS/seed{S}/report` writes: the report's report.json
and each row's candidate sets under SETS/seed{S}. Seconds, no generation.
"""
import argparse
import json
from pathlib import Path

from training.eval_baton import ROWS, paired_difference, row_directory

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sets", type=Path, required=True, help="a directory holding seed{S}/report/report.json per sample")
parser.add_argument("--seeds", type=int, nargs="+", required=True)
args = parser.parse_args()

reports = {}
for seed in args.seeds:
    path = args.sets / f"seed{seed}" / "report" / "report.json"
    if not path.is_file():
        parser.error(f"{path} is missing: run `tta eval baton --seed {seed} --work-dir {path.parent.parent} --out {path.parent}` first")
    reports[seed] = json.loads(path.read_text())
rows = [r for r in ROWS if all(f"{r}.integrity.n1" in rep for rep in reports.values())]
if "base" not in rows:
    parser.error("every report needs a base row")


def pooled(key: str) -> float:
    weights = [rep["base.prompts_per_task"] for rep in reports.values()]
    return sum(w * rep[key] for w, rep in zip(weights, reports.values())) / sum(weights)


def row_dir(seed: int, row: str) -> Path:
    return row_directory(args.sets / f"seed{seed}", row)


prompts = int(sum(rep["base.prompts_per_task"] for rep in reports.values()))
print(f"Pooled over seeds {', '.join(map(str, args.seeds))} ({prompts} prompts per task). N=1: mean accuracy (paired difference "
      "from base ± its standard error, in points; then per sample). Best-of-4: integrity / temporal. Novel-word columns "
      "weight each sample by its prompts, not by its novel-word prompts, hence approximate.\n")
print("| row | integrity N=1 | temporal N=1 | single | CLAP score | integrity / temporal, novel words | best-of-4 by reward | best-of-4 by CLAP |")
print("|---|---|---|---|---|---|---|---|")
for row in rows:
    cells = []
    diffs = None if row == "base" else paired_difference([(row_dir(s, row), row_dir(s, "base")) for s in args.seeds])
    for task in ("integrity", "temporal"):
        cell = f"{pooled(f'{row}.{task}.n1'):.3f}"
        if diffs:
            d = diffs[task]
            samples = " / ".join(f"{100 * x:+.1f}" for x in d["per_sample"])
            cell += f" ({100 * d['delta']:+.1f} ±{100 * d['se']:.1f}; {samples})"
        cells.append(cell)
    single = pooled(f"{row}.single.n1")
    cells.append(f"{single:.3f}" + ("" if row == "base" else f" ({100 * (single - pooled('base.single.n1')):+.1f})"))
    cells.append(f"{pooled(f'{row}.clap.n1'):.3f}")
    cells.append(" / ".join(f"{pooled(f'{row}.{t}.n1_novel_words'):.3f}" for t in ("integrity", "temporal")))
    for pick in ("best_of_4", "best_of_4_clap"):
        cells.append(" / ".join(f"{pooled(f'{row}.{t}.{pick}'):.3f}" for t in ("integrity", "temporal")))
    print(f"| {row} | " + " | ".join(cells) + " |")
