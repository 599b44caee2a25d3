"""Serving benchmark, one run on one machine: what HTTP + Ray Serve add to the in-process pipeline, and
what dynamic batching buys under concurrent load. Prints Markdown tables; --out also writes them and a PNG.

    python benchmarks/serving.py [--requests 6] [--candidates 4] [--steps N] [--concurrency 1,4,8] [--out DIR]

1. Per request, N candidates, sequential: the in-process chain (services.pipeline.TextToAudio: generate
   + reward rerank, torch threads set to the Generator replica's) vs. POST /v1/audio/generations through
   the service deployed from deployments/configs/serve-cpu.yaml (proxy -> Ingress -> Generator ->
   Reranker, WAV encoding, base64, JSON). Runs alternate between the two so drift hits both alike.
2. Throughput at each concurrency, one candidate per request, with the Generator's dynamic batching
   on (the served default) and off (one generator call per request).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

PROMPTS = ["a dog barks, then a bell rings", "rain falls", "a siren wails while a baby cries", "a door slams", "birds chirp, then a car horn honks", "footsteps on gravel", "a bell rings", "thunder rumbles"]


def deploy_service(port: int, dynamic_batching: bool) -> str:
    from ray import serve

    from deployments.config import APP_NAME, deploy, read_config, shipped_config, with_overrides

    if APP_NAME in serve.status().applications:
        serve.delete(APP_NAME)  # a fresh deployment, so no replica of the other mode answers
    config = with_overrides(read_config(shipped_config("cpu")), port=port, args={"dynamic_batching": dynamic_batching})
    url = deploy(config)
    info = httpx.get(f"{url}/v1/models", timeout=60).json()["generator"]
    assert info["dynamic_batching"] == dynamic_batching, info
    return url


def post(url: str, body: dict) -> float:
    return post_timed(url, body)[0]


def post_timed(url: str, body: dict) -> tuple[float, dict[str, float]]:
    """Client-side seconds and the stage timings the service reports."""
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/audio/generations", json=body, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["timings"]


def load(url: str, concurrency: int, n_requests: int, steps: int | None) -> tuple[float, list[float]]:
    bodies = [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": i, "num_candidates": 1, **({"steps": steps} if steps else {})} for i in range(n_requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda b: post(url, b), bodies))
    return n_requests / (time.perf_counter() - t0), latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=6, help="sequential requests per side in part 1")
    ap.add_argument("--candidates", type=int, default=4, help="candidates per request in part 1")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the generator's)")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--load-requests", type=int, default=16, help="requests per concurrency level in part 2")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write serving.md and serving.png here")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    import torch
    from ray import serve

    from deployments.config import free_port, read_config, shipped_config, start_ray
    from services.checkpoints import shipped
    from services.generator import TangoPipeline
    from services.pipeline import GenerationSettings, TextToAudio
    from services.reward import load_reranker

    start_ray(args.num_cpus)
    port = free_port()
    url = deploy_service(port, dynamic_batching=True)
    replica = httpx.get(f"{url}/v1/models", timeout=60).json()["generator"]
    torch.set_num_threads(replica["torch_threads"])
    served_args = read_config(shipped_config("cpu"))["applications"][0]["args"]  # the in-process chain reranks as the service does
    reranker, _ = load_reranker(served_args["reranker"], device="cpu", backend=served_args.get("reranker_backend", "onnx"))
    local = TextToAudio(TangoPipeline.from_pretrained(shipped("generator"), device="cpu"), reranker=reranker)
    settings = GenerationSettings(steps=args.steps)
    steps = args.steps or replica["defaults"]["steps"]

    # part 1: alternate in-process and HTTP, after one warm-up of each
    in_process, over_http, local_stages, served_stages = [], [], [], []
    for i in range(args.requests + 1):
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.perf_counter()
        (result,) = local([prompt], num_candidates=args.candidates, seed=i, settings=settings)
        t_local = time.perf_counter() - t0
        t_http, timings = post_timed(url, {"prompt": prompt, "seed": i, "num_candidates": args.candidates, **({"steps": args.steps} if args.steps else {})})
        if i:
            in_process.append(t_local)
            over_http.append(t_http)
            local_stages.append(result.timings)
            served_stages.append(timings)
    med_local, med_http = statistics.median(in_process), statistics.median(over_http)

    def stage(rows: list[dict[str, float]], key: str) -> str:
        return f"{statistics.median(r[key] for r in rows):.3f}" if key in rows[0] else "-"
    del local

    # part 2: throughput, batching on (already deployed) then off
    rows = []
    for batching in (True, False):
        if not batching:
            url = deploy_service(port, dynamic_batching=False)
        post(url, {"prompt": "warm up", "seed": 0, **({"steps": args.steps} if args.steps else {})})
        for c in levels:
            rps, lat = load(url, c, max(args.load_requests, c), args.steps)
            rows.append((batching, c, rps, statistics.median(lat), sorted(lat)[int(0.95 * (len(lat) - 1))]))
    serve.shutdown()

    lines = [
        f"CPU, {os.cpu_count()} cores; torch {torch.__version__}; Generator replica on {replica['device']} with {replica['torch_threads']} torch thread(s)",
        f"(in-process runs with the same); {steps} steps {replica['defaults']['scheduler']}, {replica['defaults']['duration_s']} s clips.",
        "",
        f"### 1. One request, {args.candidates} candidates, sequential (median of {args.requests})",
        "",
        "| path | seconds per request | vs in-process | generate s | rerank s | encode s |",
        "|---|---|---|---|---|---|",
        f"| in-process `TextToAudio` (generate + rerank) | {med_local:.3f} | 1.00x | {stage(local_stages, 'generate_s')} | {stage(local_stages, 'rerank_s')} | - |",
        f"| HTTP `POST /v1/audio/generations` (Serve, JSON + base64 WAV) | {med_http:.3f} | {med_http / med_local:.3f}x "
        f"| {stage(served_stages, 'generate_s')} | {stage(served_stages, 'rerank_s')} | {stage(served_stages, 'encode_s')} |",
        "",
        "Stage columns: medians of what each side measured itself (the service's come from its `timings`).",
        "",
        f"### 2. Throughput, 1 candidate per request, {max(args.load_requests, max(levels))}+ requests per level",
        "",
        "| dynamic batching | concurrency | requests/s | p50 latency s | p95 latency s | speed-up from batching |",
        "|---|---|---|---|---|---|",
    ]
    off = {c: rps for b, c, rps, *_ in rows if not b}
    for batching, c, rps, p50, p95 in rows:
        lines.append(f"| {'on' if batching else 'off'} | {c} | {rps:.2f} | {p50:.2f} | {p95:.2f} | {f'{rps / off[c]:.2f}x' if batching else ''} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serving.md").write_text(f"# Serving benchmark\n\n`python benchmarks/serving.py {' '.join(sys.argv[1:])}`\n\n{table}\n")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for batching in (True, False):
            pts = [(c, rps) for b, c, rps, *_ in rows if b == batching]
            ax.plot(*zip(*pts), marker="o", label=f"dynamic batching {'on' if batching else 'off'}")
        ax.set(xlabel="concurrent requests", ylabel="requests / s", title="Generator throughput (CPU)", xticks=levels)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / "serving.png", dpi=120)
        print(f"\nwrote {args.out / 'serving.md'} and {args.out / 'serving.png'}")


if __name__ == "__main__":
    main()
