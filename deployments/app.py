"""The Ray Serve application: FastAPI ingress -> Generator (batched) -> Reranker [Rewriter as it lands].

Deployments are thin: the Generator wraps `services.generator.TangoPipeline` and the grouping logic
of `services.pipeline`, the Reranker wraps `services.reward.RewardModel` (its head in ONNX Runtime);
everything that decides results lives in services/ and runs without Ray.

    serve run deployments.app:build_app                   # or: tta serve
    curl -s -X POST localhost:8000/v1/audio/generations -H 'Accept: audio/wav' \\
         -d '{"prompt": "a dog barks, then a bell rings", "num_candidates": 4}' -o clip.wav
"""

# no `from __future__ import annotations` here: FastAPI must see the ingress methods' real types
import asyncio
import base64
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    CandidateOut,
    GenerationParameters,
    GenerationRequest,
    GenerationResponse,
    check_prompt,
)
from services.audio import encode_audio
from services.pipeline import GeneratedAudio, GenerationCall, GenerationSettings, check_call, generate_grouped, order_by_reward
from tta import __version__

MAX_BATCH_WAVEFORMS = 16  # one UNet batch holds at most this many waveforms (x2 with guidance)


def count_waveforms(calls: list[GenerationCall]) -> int:
    """@serve.batch's batch size: waveforms, not requests (one request may ask for 16 candidates)."""
    return sum(c.num_candidates for c in calls)


@serve.deployment(max_ongoing_requests=32, max_queued_requests=64, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Generator:
    """TANGO generator replica: batches concurrent requests into one UNet batch per group of equal settings."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, batch_wait_timeout_s: float = 0.05) -> None:
        from services.checkpoints import shipped
        from services.generator import TangoPipeline
        from services.manifest import checkpoint_version

        directory = Path(checkpoint) if checkpoint else shipped("generator")
        self.pipe = TangoPipeline.from_pretrained(directory, device=device)
        self.version = checkpoint_version(directory)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        c = self.pipe.config
        return {
            "version": self.version,
            "device": str(self.pipe.device),
            "dtype": str(self.pipe.dtype).removeprefix("torch."),
            "sample_rate": self.pipe.sample_rate,
            "max_duration_s": c.max_duration_s,
            "defaults": {"steps": c.default_steps, "guidance_scale": c.default_guidance_scale, "scheduler": c.default_scheduler, "duration_s": c.default_duration_s},
        }

    @serve.batch(max_batch_size=MAX_BATCH_WAVEFORMS, batch_wait_timeout_s=0.05, batch_size_fn=count_waveforms)
    async def generate_batch(self, calls: list[GenerationCall]) -> list[GeneratedAudio]:
        # the torch call blocks; run it off the replica's event loop so requests keep queueing meanwhile
        return await asyncio.to_thread(generate_grouped, self.pipe, calls)

    async def generate(self, call: GenerationCall) -> GeneratedAudio:
        check_call(self.pipe, call)  # before batching: a bad call must not fail its batch mates
        return await self.generate_batch(call)


@serve.deployment(max_ongoing_requests=32, max_queued_requests=64, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Reranker:
    """BATON reward model replica: scores the candidates of one prompt at a time (never across prompts)."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, backend: str = "onnx") -> None:
        from services.checkpoints import shipped
        from services.manifest import checkpoint_version
        from services.reward import RewardModel

        directory = Path(checkpoint) if checkpoint else shipped("reward")
        self.model = RewardModel.from_pretrained(directory, device or "cpu", backend=backend)
        self.version = checkpoint_version(directory)

    def info(self) -> dict[str, Any]:
        onnx = self.model.onnx_head
        return {"version": self.version, "backend": self.model.backend, "providers": onnx.providers if onnx else None, "clap_sample_rate": self.model.clap.sample_rate}

    async def score(self, prompt: str, waveforms, sample_rate: int) -> list[float]:
        return (await asyncio.to_thread(self.model.score, prompt, waveforms, sample_rate)).tolist()


api = FastAPI(title="Aligned text-to-audio", version=__version__, description="Prompt -> N candidate clips -> the one people are most likely to accept.")


def _audio_format(request: Request, params: GenerationParameters) -> tuple[str, bool]:
    """(format, raw): an Accept header naming audio/wav or audio/flac asks for the bytes themselves."""
    accept = request.headers.get("accept", "").lower()
    for media, fmt in (("audio/wav", "wav"), ("audio/x-wav", "wav"), ("audio/flac", "flac")):
        if media in accept:
            return fmt, True
    return params.response_format, False


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    def __init__(self, generator: DeploymentHandle, reranker: DeploymentHandle | None = None) -> None:
        self.generator = generator
        self.rewriter = None  # lands with the rewriter issue
        self.reranker = reranker
        self._info: dict[str, Any] | None = None
        self._reranker_info: dict[str, Any] | None = None

    async def _generator_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.generator.info.remote()
        return self._info

    async def _rerank_info(self) -> dict[str, Any] | None:
        if self.reranker is not None and self._reranker_info is None:
            self._reranker_info = await self.reranker.info.remote()
        return self._reranker_info

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            info = await asyncio.wait_for(self._generator_info(), timeout=5)
            reranker = await asyncio.wait_for(self._rerank_info(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "not ready", "reason": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse({"status": "ready", "generator": info["version"], "reranker": reranker["version"] if reranker else None})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"generator": await self._generator_info(), "rewriter": None, "reranker": await self._rerank_info()}

    async def _generate(self, prompt: str, params: GenerationParameters, fmt: str) -> GenerationResponse:
        if params.rewrite and self.rewriter is None:
            raise ValueError("rewrite=true, but no rewriter is deployed; leave rewrite unset or false")
        t0 = time.perf_counter()
        settings = GenerationSettings(params.steps, params.guidance_scale, params.duration_s, params.scheduler, params.negative_prompt)
        audio: GeneratedAudio = await self.generator.generate.remote(GenerationCall(prompt, params.num_candidates, params.seed, settings))
        t1 = time.perf_counter()
        # the reward judges the user's prompt, on this prompt's candidates only
        rewards = await self.reranker.score.remote(prompt, audio.waveforms, audio.sample_rate) if self.reranker is not None else None
        candidates = order_by_reward(audio, rewards)
        t2 = time.perf_counter()

        def b64(c) -> str:
            return base64.b64encode(encode_audio(c.waveform, fmt, audio.sample_rate)).decode()

        best = candidates[0]
        info = await self._generator_info()
        return GenerationResponse(
            id=uuid.uuid4().hex,
            prompt=prompt,
            rewritten_prompt=None,
            sample_rate=audio.sample_rate,
            format=fmt,  # type: ignore[arg-type]
            audio=b64(best),
            reward=best.reward,
            seed=best.seed,
            candidates=[CandidateOut(index=c.index, seed=c.seed, reward=c.reward, audio=b64(c) if params.return_candidates == "all" else None) for c in candidates],
            settings=audio.settings,
            timings={"rewrite_s": 0.0, "generate_s": t1 - t0, "rerank_s": t2 - t1, "total_s": time.perf_counter() - t0, "batch_waveforms": float(audio.batch_waveforms)},
            models={"generator": info["version"], "rewriter": None, "reranker": (await self._rerank_info() or {}).get("version")},
        )

    @api.post("/v1/audio/generations", response_model=GenerationResponse, responses={200: {"content": {"audio/wav": {}, "audio/flac": {}}}})
    async def generations(self, body: GenerationRequest, request: Request):
        fmt, raw = _audio_format(request, body)
        try:
            result = await self._generate(body.prompt, body, fmt)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        if not raw:
            return result
        headers = {
            "X-Generation-Id": result.id,  # Serve's proxy sets its own X-Request-Id
            "X-Seed": str(result.seed),
            "X-Reward": "" if result.reward is None else f"{result.reward:.6f}",
            "X-Rewritten-Prompt": quote(result.rewritten_prompt or ""),
            "X-Sample-Rate": str(result.sample_rate),
            "X-Model-Generator": result.models["generator"] or "",
            "X-Model-Reranker": result.models["reranker"] or "",
            "X-Generate-Seconds": f"{result.timings['generate_s']:.3f}",
        }
        return Response(content=base64.b64decode(result.audio), media_type=f"audio/{fmt}", headers=headers)

    @api.post("/v1/audio/batch", response_model=BatchResponse)
    async def batch(self, body: BatchRequest) -> BatchResponse:
        async def one(i: int, prompt: str) -> BatchItem:
            try:
                return BatchItem(index=i, prompt=prompt, result=await self._generate(check_prompt(prompt), body, body.response_format))
            except Exception as exc:  # noqa: BLE001 - one prompt's failure is reported with it and never sinks the others
                return BatchItem(index=i, prompt=prompt, error=f"{type(exc).__name__}: {exc}")

        items = await asyncio.gather(*(one(i, p) for i, p in enumerate(body.prompts)))
        failed = sum(it.error is not None for it in items)
        return BatchResponse(results=list(items), succeeded=len(items) - failed, failed=failed)


def start_local_serve(host: str = "127.0.0.1", port: int = 8000, num_cpus: int | None = None) -> None:
    """Start Ray on this machine and Serve's HTTP proxy on host:port (what `tta serve` and the tests use)."""
    import os

    import ray

    # Serve gives its HTTP proxy 5 s to report ready; a loaded 2-core host can take longer, and a proxy
    # that misses three checks is killed and restarted over and over. Operators can still override.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    serve.start(http_options={"host": host, "port": port})


def build_app(args: dict[str, Any] | None = None):
    """Application builder (`serve run deployments.app:build_app checkpoint=DIR device=cpu`).

    args: checkpoint (generator dir), device, batch_wait_timeout_s, reward_checkpoint (reward model
    dir; default the shipped one), reranker_backend (onnx | torch), reranker ("none" deploys no
    reranker: candidates then come back in generation order without rewards)."""
    args = dict(args or {})
    generator = Generator.bind(checkpoint=args.get("checkpoint"), device=args.get("device"), batch_wait_timeout_s=float(args.get("batch_wait_timeout_s", 0.05)))
    reranker = None
    if str(args.get("reranker", "reward")).lower() != "none":
        reranker = Reranker.bind(checkpoint=args.get("reward_checkpoint"), device=args.get("device"), backend=args.get("reranker_backend", "onnx"))
    return Ingress.bind(generator, reranker)
