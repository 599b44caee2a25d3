"""Where best-of-N loses to its ceiling, by held-out event word.

For the candidate sets of `tta eval rerank` (one per sample), every group of N candidates that holds a right clip
but where the picker took a wrong one (`training.eval_rerank.picked_candidates`) is charged to what the taken clip
got wrong (`training.annotation.oracle_label`): each sound it misses (shared equally), else an unprompted sound it
holds, else "out of order". Summed per task, the charges are the gap at N (the any-of-N ceiling minus the picker),
in points of the task's accuracy; the same rule over every wrong candidate gives the errors at N=1. It prints:
- both, by kind of fault, and the prompts in training words by what makes them held out (pair or template);
- per held-out event phrasing, how the judges' text side reads it: the nearest sound of the shipped CLAP's text
  embedding (cosine to the mean embedding of each sound's training phrasings, with the margin to the next sound)
  and the known wording's rewording (`services.wording`, MiniLM; "kept" when no phrasing is close enough);
- how the generator reads it: the share of candidates that miss the sound it names (beside the same sound named
  in training words), and the sound most often heard instead;
- the gap points charged to a taken clip missing that sound.

  python scripts/gap_by_word.py --candidates runs/rerank-v3 --seeds 1 2 3 4 --picker reward --at 4

~1 min per sample on 2 CPU cores for the whole-clip pickers, more for the by-stretch ones (every set is scored again).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from services.checkpoints import shipped
from services.reward import RewardModel
from services.wording import KnownWording
from training.eval_generator import uses_novel_template
from training.eval_rerank import PICKERS, candidate_records, heldout_task_specs, novel_word_prompts, pick_per_prompt, picked_candidates, score_candidates
from training.world.captions import EVENT_PHRASINGS, mentioned_events
from training.world.clips import has_heldout_pair

TASKS = ("integrity", "temporal")


def named_heldout_phrasings(prompt: str, events: list[str], clauses: list[str], nouns: list[str]) -> list[tuple[str, str]]:
    """(event, phrasing) for every event the prompt names by a held-out clause or noun."""
    low = prompt.lower()
    named = []
    for event, clause, noun in zip(events, clauses, nouns):
        p = EVENT_PHRASINGS[event]
        for phrasing in (clause, noun):
            if phrasing in p.heldout_clauses + p.heldout_nouns and phrasing.lower() in low:
                named.append((event, phrasing))
                break
    return named


def what_went_wrong(events: list[str], named: dict[str, str], heard: set[str]) -> list[tuple[tuple[str, str], float]]:
    """A wrong clip's fault as (key, share): each sound it misses, shared equally ((event, held-out phrasing), or
    ("in training words", event)), else ("unprompted", the sounds, whether the prompt names a sound by a held-out
    word) when it holds one, else ("all heard", "out of order"), following `training.annotation.oracle_label`."""
    lacking = [e for e in events if e not in heard]
    if lacking:
        return [((e, named[e]) if e in named else ("in training words", e), 1 / len(lacking)) for e in lacking]
    unprompted = sorted(heard - set(events))
    return [(("unprompted", ",".join(unprompted), bool(named)) if unprompted else ("all heard", "out of order"), 1.0)]


def clap_reading(reward: RewardModel, phrasings: list[str]) -> dict[str, tuple[str, float]]:
    """Each phrasing's nearest sound for the CLAP text tower, and its margin over the next sound."""
    events = list(EVENT_PHRASINGS)
    centroids = []
    for e in events:
        emb = reward.clap.embed_text(list(EVENT_PHRASINGS[e].clauses + EVENT_PHRASINGS[e].nouns))
        c = emb.mean(0)
        centroids.append(c / np.linalg.norm(c))
    sim = reward.clap.embed_text(phrasings) @ np.stack(centroids).T
    out = {}
    for phrasing, row in zip(phrasings, sim):
        order = np.argsort(-row)
        out[phrasing] = (events[order[0]], float(row[order[0]] - row[order[1]]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=Path, required=True, help="work dir of `tta eval rerank` ({task}-n{N}-k{K}[-seedS] sets)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--picker", choices=[p for p in PICKERS if p not in ("random", "ceiling")], default="reward")
    parser.add_argument("--at", type=int, default=4, help="N, the candidates the picker chooses among")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the first table as stacked bars (PNG)")
    args = parser.parse_args()

    reward = RewardModel.from_pretrained(shipped("reward"))
    wording = KnownWording.from_pretrained(shipped("wording"))
    gap = {t: Counter() for t in TASKS}  # task -> (event, held-out phrasing) or a category -> summed charge
    wrong_at_1 = {t: Counter() for t in TASKS}  # the same for every wrong candidate: 1 - accuracy at N=1
    prompts = dict.fromkeys(TASKS, 0)
    mentions: Counter = Counter()  # (event, phrasing) -> candidates naming it
    missed: Counter = Counter()
    heard_instead: dict[tuple[str, str], Counter] = defaultdict(Counter)
    seen_mentions: Counter = Counter()  # event -> candidates naming it in training words
    seen_missed: Counter = Counter()
    # prompts in training words, by what makes them held out: task -> (novelty, "prompts" | "wrong at N=1" | "gap")
    seen_prompts = {t: Counter() for t in TASKS}
    for task in TASKS:
        for seed in args.seeds:
            directory = args.candidates / (f"{task}-n{args.n}-k{args.k}" + ("" if seed == 1 else f"-seed{seed}"))
            novel = novel_word_prompts(directory)  # also checks that the set holds the seed's held-out prompts
            records, labels = candidate_records(directory)
            specs = heldout_task_specs(task, len(labels), seed)
            scores = score_candidates(directory, reward, reward.clap, timeline=args.picker.endswith("_timeline"))
            picked = picked_candidates(scores, args.picker, args.at)
            prompts[task] += len(labels)
            charged_before = sum(gap[task].values())
            for i, spec in enumerate(specs):
                named = dict(named_heldout_phrasings(records[i * args.k].prompt, spec.events, spec.clauses, spec.nouns))
                if bool(named) != bool(novel[i]):
                    raise ValueError(f"{directory}: prompt {i} ({records[i * args.k].prompt!r}): held-out words {named}, novel_word_prompts says {bool(novel[i])}")
                heard = [set(records[i * args.k + j].provenance.detected or []) for j in range(args.k)]
                novelty = None if named else " and ".join(n for n, hit in (("event pair", has_heldout_pair(spec.events)), ("template", uses_novel_template(spec))) if hit) or "neither"
                if novelty:
                    seen_prompts[task][(novelty, "prompts")] += 1
                    seen_prompts[task][(novelty, "wrong at N=1")] += 1 - labels[i].mean()
                for j, detected in enumerate(heard):
                    if not labels[i, j]:
                        for key, share in what_went_wrong(spec.events, named, detected):
                            wrong_at_1[task][key] += share / args.k
                    extra = sorted(detected - set(spec.events))
                    for e in spec.events:
                        if e in named:
                            mentions[(e, named[e])] += 1
                            if e not in detected:
                                missed[(e, named[e])] += 1
                                heard_instead[(e, named[e])].update(extra or ["nothing"])
                        else:
                            seen_mentions[e] += 1
                            seen_missed[e] += e not in detected
                for g, c in enumerate(picked[i]):
                    group = labels[i, g * args.at : (g + 1) * args.at]
                    if labels[i, c] or not group.any():
                        continue
                    for key, share in what_went_wrong(spec.events, named, heard[c]):
                        gap[task][key] += share / picked.shape[1]
                    if novelty:
                        seen_prompts[task][(novelty, "gap")] += 1 / picked.shape[1]
            lost = pick_per_prompt(scores, "ceiling", args.at) - pick_per_prompt(scores, args.picker, args.at)
            if abs(sum(gap[task].values()) - charged_before - lost.sum()) > 1e-6:  # every lost group charged once
                raise AssertionError(f"{directory}: charged {sum(gap[task].values()) - charged_before:.4f} prompts, the ceiling minus the picker is {lost.sum():.4f}")

    keys = sorted(mentions, key=lambda k: -sum(gap[t][k] for t in TASKS))
    clap_read = clap_reading(reward, [p for _, p in keys])
    minilm = dict(zip([p for _, p in keys], wording.nearest([p for _, p in keys])))
    points = {t: {k: 100 * v / prompts[t] for k, v in gap[t].items()} for t in TASKS}
    rows = []
    for event, phrasing in keys:
        known = minilm[phrasing]
        rows.append({
            "event": event, "phrasing": phrasing,
            "clap_reads_as": clap_read[phrasing][0], "clap_margin": clap_read[phrasing][1],
            "known_wording_reads_as": "kept" if known == phrasing else ",".join(mentioned_events(known)),
            "candidates": mentions[(event, phrasing)], "missed": missed[(event, phrasing)] / mentions[(event, phrasing)],
            "missed_in_training_words": seen_missed[event] / seen_mentions[event] if seen_mentions[event] else None,
            "heard_instead": heard_instead[(event, phrasing)].most_common(1)[0][0] if heard_instead[(event, phrasing)] else "",
            **{f"{t}_gap_points": points[t].get((event, phrasing), 0.0) for t in TASKS},
        })
    misread = {(r["event"], r["phrasing"]) for r in rows if r["clap_reads_as"] != r["event"]}

    def by_kind(charged: Counter, task: str) -> dict:
        pts = {k: 100 * v / prompts[task] for k, v in charged.items()}
        return {
            "total": sum(pts.values()),
            "held-out word, CLAP text misreads it": sum(v for k, v in pts.items() if k in misread),
            "held-out word, CLAP text reads it right": sum(v for k, v in pts.items() if k in mentions and k not in misread),
            "training word": sum(v for k, v in pts.items() if k[0] == "in training words"),
            "an unprompted sound heard": sum(v for k, v in pts.items() if k[0] == "unprompted"),
            "an unprompted sound heard, prompt with held-out words": sum(v for k, v in pts.items() if k[0] == "unprompted" and k[2]),
            "all heard, out of order": pts.get(("all heard", "out of order"), 0.0),
            "unprompted sounds": dict(sum((Counter({k[1]: v}) for k, v in pts.items() if k[0] == "unprompted"), Counter()).most_common()),
        }

    summary = {t: {"prompts": prompts[t], "wrong at N=1": by_kind(wrong_at_1[t], t), "gap": by_kind(gap[t], t)} for t in TASKS}
    print(f"picker {args.picker}, N={args.at}, samples {args.seeds}, points of each task's accuracy by what the wrong clip got wrong:")
    print(f"wrong at N=1 (1 - the mean of all candidates), and the gap at N={args.at} (the ceiling - the picker, charged to the clip it took)")
    print()
    print("| task | prompts | points | total | missed a sound named in a held-out word the CLAP text misreads | ... that it reads right | missed a sound named in training words | an unprompted sound heard (of which, prompts with held-out words) | all heard, out of order |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, x in summary.items():
        for what in ("wrong at N=1", "gap"):
            y = x[what]
            label = what if what != "gap" else f"gap at N={args.at}"
            print(f"| {t} | {x['prompts']} | {label} | {y['total']:.1f} | {y['held-out word, CLAP text misreads it']:.1f} | {y['held-out word, CLAP text reads it right']:.1f} | {y['training word']:.1f} | {y['an unprompted sound heard']:.1f} ({y['an unprompted sound heard, prompt with held-out words']:.1f}) | {y['all heard, out of order']:.1f} |")
    for t, x in summary.items():
        print(f"{t}, unprompted sounds in the taken clips (gap points): " + ", ".join(f"{k} {v:.1f}" for k, v in x["gap"]["unprompted sounds"].items()))
    print()
    print("Prompts in training words, by what makes them held out (points of the task's accuracy):")
    print()
    print(f"| task | held out in | prompts | wrong at N=1 | gap at N={args.at} |")
    print("|---|---|---|---|---|")
    for t in TASKS:
        for novelty in sorted({k[0] for k in seen_prompts[t]}):
            c = seen_prompts[t]
            print(f"| {t} | {novelty} | {int(c[(novelty, 'prompts')])} | {100 * c[(novelty, 'wrong at N=1')] / prompts[t]:.1f} | {100 * c[(novelty, 'gap')] / prompts[t]:.1f} |")
        summary[t]["training-word prompts by novelty"] = {f"{k[0]}: {k[1]}": (v if k[1] == "prompts" else 100 * v / prompts[t]) for k, v in sorted(seen_prompts[t].items())}
    print()
    print("| sound | held-out phrasing | CLAP text reads (margin) | known wording reads | candidates | sound missed | same sound in training words | heard instead | integrity gap | temporal gap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        seen = "" if r["missed_in_training_words"] is None else f"{100 * r['missed_in_training_words']:.0f}%"
        print(f"| {r['event']} | {r['phrasing']} | {r['clap_reads_as']} ({r['clap_margin']:+.2f}) | {r['known_wording_reads_as']} | {r['candidates']} | {100 * r['missed']:.0f}% | {seen} | {r['heard_instead']} | {r['integrity_gap_points']:.1f} | {r['temporal_gap_points']:.1f} |")
    if args.plot:
        from training.plots import stacked_bars

        kinds = ("held-out word, CLAP text misreads it", "held-out word, CLAP text reads it right", "training word", "an unprompted sound heard", "all heard, out of order")
        bars = {f"{t}\n{'wrong at N=1' if w != 'gap' else f'gap at N={args.at}'}": {k: summary[t][w][k] for k in kinds} for t in TASKS for w in ("wrong at N=1", "gap")}
        stacked_bars(bars, args.plot, f"what the wrong clip got wrong ({args.picker} at N={args.at}; samples {', '.join(map(str, args.seeds))})", "points of accuracy")
    if args.json:
        args.json.write_text(json.dumps({"picker": args.picker, "n": args.at, "seeds": args.seeds, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
