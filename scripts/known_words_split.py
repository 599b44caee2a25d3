"""Known wording (services.wording) on held-out candidate sets, split by whether it reworded a prompt right.

For every novel-word prompt (`training.eval_rerank.novel_word_prompts`) the prompt is reworded by the known wording
and the sounds the rewording names (`training.world.captions.mentioned_events`) are compared with the prompt's own:
"all reworded right" when it names no other sound, else "a wrong sound". Printed per task and split (and, last,
every wrong rewording with its count):
- judge rows: the shipped judges (CLAP by stretch, CLAP, reward head) reading the known wording minus reading the
  prompt as written, paired at N=4 on the cached candidates of --as-written;
- generator rows: N=1 oracle accuracy of candidates generated from the known wording (`tta eval rerank
  --generator-wording`, under --reworded) minus those generated from the prompt as written, per prompt; also over
  all prompts, with the per-sample means.

  python scripts/known_words_split.py --as-written runs/rerank-v3 --reworded runs/rerank-kw --seeds 1 2 3 4

Each directory holds the {task}-n60-k8[-seedS] sets of `tta eval rerank`. ~8 min on 2 CPU cores (every set is
scored twice by the by-stretch judges).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from services.checkpoints import shipped
from services.clauses import split_clauses
from services.reward import RewardModel
from services.wording import KnownWording
from training.eval_rerank import candidate_records, novel_word_prompts, paired_picks, score_candidates
from training.world.captions import mentioned_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--as-written", type=Path, required=True, help="work dir of the candidates generated from the prompts as written")
    parser.add_argument("--reworded", type=Path, default=None, help="work dir of the candidates generated from the known wording (optional)")
    parser.add_argument("--wording", type=Path, default=shipped("wording"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    wording = KnownWording.from_pretrained(args.wording)
    reward = RewardModel.from_pretrained(shipped("reward"))
    splits = ("novel, all reworded right", "novel, a wrong sound", "seen")
    wrong_clauses: Counter = Counter()  # (clause as written, its rewording) for every rewording naming another sound
    for task in ("integrity", "temporal"):
        known, written, masks, generated = [], [], {s: [] for s in splits}, {s: [] for s in splits}
        for seed in args.seeds:
            name = f"{task}-n{args.n}-k{args.k}" + ("" if seed == 1 else f"-seed{seed}")
            directory = args.as_written / name
            records, labels = candidate_records(directory)
            novel = novel_word_prompts(directory)
            right = np.array([set(mentioned_events(wording.reword(r.prompt))) <= set(r.provenance.events) for r in records[:: labels.shape[1]]])
            for r in records[:: labels.shape[1]]:
                for clause in split_clauses(r.prompt):
                    new = wording.reword(clause.text)
                    if new != clause.text and not set(mentioned_events(new)) <= set(r.provenance.events):
                        wrong_clauses[(clause.text, new)] += 1
            rows = dict(zip(splits, (novel & right, novel & ~right, ~novel)))
            for split, mask in rows.items():
                masks[split].append(mask)
            known.append(score_candidates(directory, reward, reward.clap, timeline=True, wording=wording))
            written.append(score_candidates(directory, reward, reward.clap, timeline=True))
            if args.reworded is not None and (args.reworded / name / "records.jsonl").is_file():
                diff = candidate_records(args.reworded / name)[1].mean(1) - labels.mean(1)
                for split, mask in rows.items():
                    generated[split].append(diff[mask])
        for split in splits:
            print(f"{task}, {split}: {sum(int(m.sum()) for m in masks[split])} prompts")
            for picker in ("clap_timeline", "clap", "reward"):
                r = paired_picks(known, picker, picker, 4, scored_b=written, rows=masks[split])
                print(f"  judge {picker}, known wording - as written, N=4: {100 * r['delta']:+.1f} ±{100 * r['se']:.1f}")
            if generated[split]:
                x = np.concatenate(generated[split])
                print(f"  generator from known wording - as written, N=1: {100 * x.mean():+.1f} ±{100 * x.std(ddof=1) / len(x) ** 0.5:.1f}")
        if generated[splits[0]]:
            per_sample = [np.concatenate(parts) for parts in zip(*generated.values())]
            x = np.concatenate(per_sample)
            print(f"{task}, all prompts: generator from known wording - as written, N=1: {100 * x.mean():+.1f} ±{100 * x.std(ddof=1) / len(x) ** 0.5:.1f} (per sample {' / '.join(f'{100 * p.mean():+.1f}' for p in per_sample)})")
    print("wrong rewordings (clause as written -> reworded: count):", ", ".join(f"{a!r} -> {b!r}: {c}" for (a, b), c in wrong_clauses.most_common()))


if __name__ == "__main__":
    main()
