"""The service's Prometheus metrics, through `ray.serve.metrics` (exported on Ray's metrics port with
a `ray_` prefix and the application/deployment/replica tags Serve adds).

    ray_tta_stage_seconds{stage=rewrite|generate|rerank|encode|total}   histogram, per request
    ray_tta_candidates_generated_total                                   counter of waveforms made
    ray_tta_reward_score{pick=best|other}                                histogram of reward scores
    ray_tta_errors_total{kind=invalid_input|unservable|backpressure|timeout|internal}
    ray_tta_generator_batch_waveforms                                    histogram, per UNet batch
"""

from __future__ import annotations

from functools import cache

from ray.serve.metrics import Counter, Histogram

LATENCY_BOUNDARIES_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300]
REWARD_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32]
ERROR_KINDS = ("invalid_input", "unservable", "backpressure", "timeout", "internal")


class IngressMetrics:
    def __init__(self) -> None:
        self.stage_seconds = Histogram("tta_stage_seconds", description="seconds per request in each stage", boundaries=LATENCY_BOUNDARIES_S, tag_keys=("stage",))
        self.candidates = Counter("tta_candidates_generated_total", description="candidate waveforms generated")
        self.reward = Histogram("tta_reward_score", description="reward model score of returned candidates", boundaries=REWARD_BOUNDARIES, tag_keys=("pick",))
        self.errors = Counter("tta_errors_total", description="failed requests (or batch items) by kind", tag_keys=("kind",))

    def observe_request(self, timings: dict[str, float], num_candidates: int, rewards: list[float | None]) -> None:
        for stage in ("rewrite", "generate", "rerank", "encode", "total"):
            if f"{stage}_s" in timings:
                self.stage_seconds.observe(timings[f"{stage}_s"], tags={"stage": stage})
        self.candidates.inc(num_candidates)
        for rank, reward in enumerate(rewards):  # best first
            if reward is not None:
                self.reward.observe(reward, tags={"pick": "best" if rank == 0 else "other"})

    def error(self, kind: str) -> None:
        assert kind in ERROR_KINDS, kind
        self.errors.inc(tags={"kind": kind})


@cache
def ingress_metrics() -> IngressMetrics:
    """One set per replica process (created on first use, inside the replica)."""
    return IngressMetrics()


@cache
def generator_batch_histogram() -> Histogram:
    return Histogram("tta_generator_batch_waveforms", description="waveforms per generator call (dynamic batching at work)", boundaries=BATCH_BOUNDARIES)
