"""The in-process chain: rewrite -> generate N candidates -> rerank, one prompt's candidates at a time.

Used by the Ray Serve deployments (each stage in its own deployment), the CLI and the tests. The
rewriter and reranker are optional until they land: without a reranker the candidates keep their
generation order and carry no reward; without a rewriter the prompt goes to the generator as sent.

Requests with different settings (steps, guidance, duration, sampler, negative prompt, timeline) cannot share a
UNet batch; `generate_grouped` runs one batched generator call per group of equal settings and
hands every request back its own waveforms and seeds.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from services.generator import TangoPipeline


class Rewriter(Protocol):
    version: str

    def rewrite(self, prompts: list[str]) -> list[str]: ...


class Reranker(Protocol):
    version: str

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        """Rewards of the candidates of one prompt ([N, samples] -> [N]); never across prompts. `timeline`: the
        clauses the generator placed in successive stretches, when it used a timeline."""
        ...


@dataclass(frozen=True)
class GenerationSettings:
    """What must be equal for two prompts to share one generator batch."""

    steps: int | None = None
    guidance_scale: float | None = None
    duration_s: float | None = None
    scheduler: str | None = None
    negative_prompt: str | None = None
    timeline: bool | None = None


@dataclass
class GenerationCall:
    """One prompt's request to the generator: N candidates from `seed` (candidate j uses seed + j)."""

    prompt: str
    num_candidates: int = 1
    seed: int | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    deadline: float | None = None  # time.time() after which nobody waits for this result


@dataclass
class GeneratedAudio:
    waveforms: np.ndarray  # float32 [N, samples]
    seeds: list[int]
    sample_rate: int
    settings: dict
    seconds: float  # wall time of the batched generator call this prompt was part of
    batch_waveforms: int  # how many waveforms that call made (this prompt's and its batch mates')
    timeline: list[str] | None = None  # the prompt's clauses in the order they were placed, when a timeline was used


def check_call(pipe: TangoPipeline, call: GenerationCall) -> None:
    """Refuse what this generator cannot do before the call joins a batch (a bad call inside a batch
    would fail its batch mates too)."""
    duration = call.settings.duration_s
    if duration is not None and not 0 < duration <= pipe.config.max_duration_s:
        raise ValueError(f"duration_s must be in (0, {pipe.config.max_duration_s}] for this generator, got {duration}")
    if not call.prompt.strip():
        raise ValueError("prompt is blank")
    if call.num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {call.num_candidates}")


def generate_grouped(pipe: TangoPipeline, calls: list[GenerationCall], return_exceptions: bool = False) -> list[GeneratedAudio | Exception]:
    """Generate every call, batching those with equal settings into one `pipe.generate`.

    Candidate audio depends only on (prompt, seed, settings), never on the batch mates, up to rounding
    (fp32: none audible; bf16: the log-mel moves ~2% of the way to another seed's, as kernels round
    differently per batch size), so grouping changes speed, not results. A group runs until the latest
    deadline of its members. With return_exceptions a failing group puts its exception in its members' places and the other
    groups still run (the served batch: one bad group must not fail its neighbours); without, it raises."""
    groups: dict[tuple[GenerationSettings, int], list[int]] = {}
    for i, call in enumerate(calls):
        # equal N too: the pipeline's output is a [prompts, N, samples] array
        groups.setdefault((call.settings, call.num_candidates), []).append(i)
    results: list[GeneratedAudio | Exception | None] = [None] * len(calls)
    for (settings, n), members in groups.items():
        seeds = [calls[i].seed if calls[i].seed is not None else secrets.randbelow(2**31 - 16) for i in members]
        deadlines = [calls[i].deadline for i in members]
        t0 = time.perf_counter()
        try:
            out = pipe.generate(
                [calls[i].prompt for i in members],
                num_candidates=n,
                steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                negative_prompt=settings.negative_prompt,
                seed=seeds,
                duration_s=settings.duration_s,
                scheduler=settings.scheduler,
                timeline=settings.timeline,
                deadline=None if None in deadlines else max(deadlines),  # type: ignore[type-var]
            )
        except Exception as exc:
            if not return_exceptions:
                raise
            for i in members:
                results[i] = exc
            continue
        seconds = time.perf_counter() - t0
        for k, i in enumerate(members):
            results[i] = GeneratedAudio(out.waveforms[k], out.seeds[k], out.sample_rate, out.settings, seconds, len(members) * n, out.timelines[k])
    return results  # type: ignore[return-value]


@dataclass
class Candidate:
    index: int  # position in generation order
    seed: int
    waveform: np.ndarray
    reward: float | None


def rank_candidates(prompt: str, audio: GeneratedAudio, reranker: Reranker | None) -> list[Candidate]:
    """The candidates of one prompt, best first by reward; generation order when there is no reranker."""
    return order_by_reward(audio, reranker.score(prompt, audio.waveforms, audio.sample_rate, timeline=audio.timeline) if reranker is not None else None)


def order_by_reward(audio: GeneratedAudio, rewards: np.ndarray | list[float] | None) -> list[Candidate]:
    """One prompt's candidates with their rewards (scored for that prompt alone), best first."""
    if rewards is not None and len(rewards) != len(audio.seeds):
        raise ValueError(f"got {len(rewards)} rewards for {len(audio.seeds)} candidates")
    candidates = [Candidate(j, audio.seeds[j], audio.waveforms[j], None if rewards is None else float(rewards[j])) for j in range(len(audio.seeds))]
    if rewards is not None:
        candidates.sort(key=lambda c: -c.reward)  # stable: ties keep generation order
    return candidates


@dataclass
class TextToAudioResult:
    prompt: str
    rewritten_prompt: str | None
    candidates: list[Candidate]  # best first
    sample_rate: int
    settings: dict
    timings: dict[str, float]

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


class TextToAudio:
    """rewrite -> generate -> rerank in one process (the deployments run the same stages apart)."""

    def __init__(self, generator: TangoPipeline, rewriter: Rewriter | None = None, reranker: Reranker | None = None) -> None:
        self.generator, self.rewriter, self.reranker = generator, rewriter, reranker

    def __call__(self, prompts: list[str], num_candidates: int = 1, seed: int | None = None, rewrite: bool = True, settings: GenerationSettings | None = None) -> list[TextToAudioResult]:
        settings = settings or GenerationSettings()
        t0 = time.perf_counter()
        rewritten = self.rewriter.rewrite(prompts) if rewrite and self.rewriter is not None else None
        t1 = time.perf_counter()
        calls = [GenerationCall(p, num_candidates, seed, settings) for p in (rewritten or prompts)]
        audios = generate_grouped(self.generator, calls)
        t2 = time.perf_counter()
        results = []
        for i, (prompt, audio) in enumerate(zip(prompts, audios)):
            r0 = time.perf_counter()
            candidates = rank_candidates(prompt, audio, self.reranker)  # the reward judges the user's prompt, not the rewrite
            timings = {"rewrite_s": t1 - t0, "generate_s": t2 - t1, "rerank_s": time.perf_counter() - r0}
            results.append(TextToAudioResult(prompt, rewritten[i] if rewritten else None, candidates, audio.sample_rate, audio.settings, timings))
        return results
