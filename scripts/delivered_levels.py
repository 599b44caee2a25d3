"""hd+rd minus base at N=1, judged on three versions of the same clips: the generator's float waveform (what the
annotator judged until 2026-12-06), that waveform hard-clipped to 16 bits (what the files held) and peak-limited
(`services.audio.limit_peaks`, what generation returns since). The float waveform is decoded again from the
latents `tta eval baton` stores with every candidate set; it is checked against the stored labels.

  python scripts/delivered_levels.py --sets runs/bf/eval-b0 --seeds 1 2 --hd-rd runs/bf/hdrd-b0/model --v1 runs/oracle-v1

~2 min per seed on 2 CPU cores.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from services.audio import limit_peaks
from services.generator import TangoPipeline
from training.annotation import judged_right, read_annotations
from training.stats import pooled_difference
from training.world.oracle import load_oracle

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--sets", type=Path, required=True, help="a `tta eval baton` work dir holding seed{S}/base and seed{S}/hd_rd")
parser.add_argument("--seeds", type=int, nargs="+", required=True)
parser.add_argument("--base", type=Path, default=Path("services/checkpoints/generator-base"))
parser.add_argument("--hd-rd", type=Path, required=True, help="the hd+rd generator that made seed{S}/hd_rd")
parser.add_argument("--v1", type=Path, required=True, help="the first oracle (see docs/results/oracle/held-out-pairs)")
args = parser.parse_args()
oracles = {"v1": load_oracle(str(args.v1)), "v2": load_oracle()}
pipes = {"base": TangoPipeline.from_pretrained(args.base), "hd_rd": TangoPipeline.from_pretrained(args.hd_rd)}
def quantize(w): return np.round(np.clip(w, -1, 1) * 32767) / 32767
ways = {"float": lambda w: w, "clipped": quantize, "limited": lambda w: quantize(limit_peaks(w))}
labels = {}
for seed in args.seeds:
    for row, pipe in pipes.items():
        for task in ("integrity", "temporal"):
            d = next((args.sets / f"seed{seed}" / row).glob(f"{task}-n*-k4*"))
            recs = read_annotations(d / "records.jsonl")
            lat = {}
            for f in sorted((d / "parts").glob("*.latents.safetensors")):
                lat.update(load_file(str(f)))
            z = torch.stack([lat[r.audio] for r in recs]).to(next(pipe.vae.parameters()).dtype)
            with torch.no_grad():
                wav = torch.cat([pipe.decode(z[i:i + 32]) for i in range(0, len(z), 32)]).numpy()
            for way, f in ways.items():
                audio = np.stack([f(w) for w in wav]).astype(np.float32)
                for o, oracle in oracles.items():
                    lab = np.array([judged_right(det, r.provenance.events, task == "temporal") for det, r in zip(oracle.detect(audio), recs)], float)
                    labels[(seed, row, task, way, o)] = lab.reshape(len(recs) // 4, 4).mean(1)
            stored = np.array([r.provenance.oracle_label for r in recs], float).reshape(len(recs) // 4, 4).mean(1)
            print(seed, row, task, "float v1 == stored:", np.allclose(labels[(seed, row, task, "float", "v1")], stored), "mean float/clipped/limited (v2):", *(labels[(seed, row, task, w, "v2")].mean().round(3) for w in ways), flush=True)
print("| audio judged | oracle | integrity hd+rd - base | temporal |")
print("|---|---|---|---|")
for way in ways:
    for o in oracles:
        cells = []
        for task in ("integrity", "temporal"):
            r = pooled_difference([labels[(s, "hd_rd", task, way, o)] - labels[(s, "base", task, way, o)] for s in args.seeds])
            cells.append(f"{100 * r['delta']:+.1f} ±{100 * r['se']:.1f}")
        print(f"| {way} | {o} | " + " | ".join(cells) + " |")
