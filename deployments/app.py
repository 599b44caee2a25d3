"""The Ray Serve application: FastAPI ingress -> Rewriter -> Generator (batched) -> Reranker.

Deployments are thin: the Rewriter wraps `services.rewriter.PromptRewriter`, the Generator wraps
`services.generator.TangoPipeline` and the grouping logic of `services.pipeline`, the Reranker wraps
`services.reward.RewardModel` (its head in ONNX Runtime); everything that decides results lives in
services/ and runs without Ray.

    tta serve [--config deployments/configs/serve-cpu.yaml]   # or: serve run deployments/configs/serve-cpu.yaml
    curl -s -X POST localhost:8000/v1/audio/generations -H 'Accept: audio/wav' \\
         -d '{"prompt": "a dog barks, then a bell rings", "num_candidates": 4}' -o clip.wav
"""

# no `from __future__ import annotations` here: FastAPI must see the ingress methods' real types
import asyncio
import base64
import math
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.metrics import generator_batch_histogram, ingress_metrics
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
from services.reward import RERANKERS
from tta import __version__

MAX_BATCH_WAVEFORMS = 16  # one UNet batch holds at most this many waveforms (x2 with guidance)


def use_cores(torch_threads: int | None) -> None:
    """Ray sets OMP_NUM_THREADS to a replica's reserved CPUs (1 on the CPU config), which would leave
    the other cores idle during a generation or a scoring call; the stages of one request run one
    after the other, so each may use every core of the machine while it runs."""
    import os

    import torch

    torch.set_num_threads(torch_threads or len(os.sched_getaffinity(0)))


def count_waveforms(calls: list[GenerationCall]) -> int:
    """@serve.batch's batch size: waveforms, not requests (one request may ask for 16 candidates)."""
    return sum(c.num_candidates for c in calls)


# queue limits as in deployments/configs/serve-cpu.yaml (the configs set them for real deployments)
@serve.deployment(max_ongoing_requests=MAX_BATCH_WAVEFORMS, max_queued_requests=2 * MAX_BATCH_WAVEFORMS, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Generator:
    """TANGO generator replica: batches concurrent requests into one UNet batch per group of equal settings."""

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_wait_timeout_s: float = 0.05,
        dynamic_batching: bool = True,
        torch_threads: int | None = None,
    ) -> None:
        import torch

        from services.checkpoints import shipped
        from services.generator import TangoPipeline
        from services.manifest import checkpoint_version

        use_cores(torch_threads)
        directory = Path(checkpoint) if checkpoint else shipped("generator")
        self.pipe = TangoPipeline.from_pretrained(directory, device=device, dtype=getattr(torch, dtype) if dtype else None)
        self.version = checkpoint_version(directory)
        self.dynamic_batching = dynamic_batching
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        import torch

        c = self.pipe.config
        return {
            "version": self.version,
            "device": str(self.pipe.device),
            "dtype": str(self.pipe.dtype).removeprefix("torch."),
            "sample_rate": self.pipe.sample_rate,
            "max_duration_s": c.max_duration_s,
            "dynamic_batching": self.dynamic_batching,
            "torch_threads": torch.get_num_threads(),  # see use_cores
            "defaults": {"steps": c.default_steps, "guidance_scale": c.default_guidance_scale, "scheduler": c.default_scheduler, "duration_s": c.default_duration_s, "timeline": c.default_timeline},
        }

    @serve.batch(max_batch_size=MAX_BATCH_WAVEFORMS, batch_wait_timeout_s=0.05, batch_size_fn=count_waveforms)
    async def generate_batch(self, calls: list[GenerationCall]) -> list[GeneratedAudio | Exception]:
        return await self._run(calls)

    async def _run(self, calls: list[GenerationCall]) -> list[GeneratedAudio | Exception]:
        generator_batch_histogram().observe(count_waveforms(calls))
        # the torch call blocks; run it off the replica's event loop so requests keep queueing meanwhile
        return await asyncio.to_thread(generate_grouped, self.pipe, calls, return_exceptions=True)

    async def generate(self, call: GenerationCall) -> GeneratedAudio:
        check_call(self.pipe, call)  # before batching: a bad call must not fail its batch mates
        if self.dynamic_batching:
            result = await self.generate_batch(call)
        else:  # the benchmark's baseline: one generator call per request
            (result,) = await self._run([call])
        if isinstance(result, Exception):  # its group failed (e.g. GenerationTimeout); other groups did not
            raise result
        return result


@serve.deployment(max_ongoing_requests=32, max_queued_requests=64, ray_actor_options={"num_cpus": 1, "num_gpus": 0})
class Reranker:
    """Reranker replica (BATON reward model, or CLAP cosine): scores the candidates of one prompt at a time (never across prompts)."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, backend: str = "onnx", torch_threads: int | None = None, kind: str = "reward", by_stretch: bool = False, wording: str | None = None) -> None:
        from services.manifest import checkpoint_version
        from services.reward import load_reranker

        use_cores(torch_threads)
        self.model, directory = load_reranker(kind, checkpoint, device or "cpu", backend=backend, by_stretch=by_stretch, wording=wording)
        # a response names everything that chose its clip: the judge, and the wording it read the prompt in
        self.version = checkpoint_version(directory) + (f"+{checkpoint_version(Path(wording))}" if wording else "")

    def info(self) -> dict[str, Any]:
        onnx = getattr(self.model, "onnx_head", None)
        return {"version": self.version, "backend": self.model.backend, "providers": onnx.providers if onnx else None, "clap_sample_rate": self.model.clap.sample_rate}

    async def score(self, prompt: str, waveforms, sample_rate: int, timeline: list[str] | None = None) -> list[float]:
        return (await asyncio.to_thread(self.model.score, prompt, waveforms, sample_rate, timeline)).tolist()


@serve.deployment(max_ongoing_requests=32, max_queued_requests=64, ray_actor_options={"num_cpus": 0, "num_gpus": 0})
class Rewriter:
    """Prompt rewriter replica (FLAN-T5 class): greedy rewrites, concurrent prompts decoded in one batch."""

    def __init__(self, checkpoint: str | None = None, device: str | None = None, torch_threads: int | None = None) -> None:
        from services.rewriter import load_rewriter

        use_cores(torch_threads)
        self.model = load_rewriter(checkpoint, device or "cpu")

    def info(self) -> dict[str, Any]:
        return {"version": self.model.version, "device": str(self.model.device)}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def rewrite(self, prompts: list[str]) -> list[str]:
        return await asyncio.to_thread(self.model.rewrite, prompts)


api = FastAPI(title="Aligned text-to-audio", version=__version__, description="Prompt -> N candidate clips -> the one people are most likely to accept.")


@api.exception_handler(RequestValidationError)
async def _count_invalid_input(request: Request, exc: RequestValidationError):
    ingress_metrics().error("invalid_input")
    return await request_validation_exception_handler(request, exc)


def _audio_format(request: Request, params: GenerationParameters) -> tuple[str, bool]:
    """(format, raw): an Accept header naming audio/wav or audio/flac asks for the bytes themselves."""
    accept = request.headers.get("accept", "").lower()
    for media, fmt in (("audio/wav", "wav"), ("audio/x-wav", "wav"), ("audio/flac", "flac")):
        if media in accept:
            return fmt, True
    return params.response_format, False


class ServiceUnavailable(Exception):
    """A stage refused the request (its queue is full, or it has no replica): 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@serve.deployment(max_ongoing_requests=256, max_queued_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    def __init__(self, generator: DeploymentHandle, reranker: DeploymentHandle | None = None, rewriter: DeploymentHandle | None = None, request_timeout_s: float = 120.0) -> None:
        self.generator = generator
        self.rewriter = rewriter
        self.reranker = reranker
        self.request_timeout_s = request_timeout_s
        self._info: dict[str, Any] | None = None
        self._reranker_info: dict[str, Any] | None = None
        self._rewriter_info: dict[str, Any] | None = None

    async def _generator_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.generator.info.remote()
        return self._info

    async def _rerank_info(self) -> dict[str, Any] | None:
        if self.reranker is not None and self._reranker_info is None:
            self._reranker_info = await self.reranker.info.remote()
        return self._reranker_info

    async def _rewrite_info(self) -> dict[str, Any] | None:
        if self.rewriter is not None and self._rewriter_info is None:
            self._rewriter_info = await self.rewriter.info.remote()
        return self._rewriter_info

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            info = await asyncio.wait_for(self._generator_info(), timeout=5)
            reranker = await asyncio.wait_for(self._rerank_info(), timeout=5)
            rewriter = await asyncio.wait_for(self._rewrite_info(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "not ready", "reason": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse({"status": "ready", "generator": info["version"], "reranker": reranker["version"] if reranker else None, "rewriter": rewriter["version"] if rewriter else None})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"generator": await self._generator_info(), "rewriter": await self._rewrite_info(), "reranker": await self._rerank_info(), "request_timeout_s": self.request_timeout_s}

    def _deadline(self, params: GenerationParameters) -> float:
        return min(params.timeout_s, self.request_timeout_s) if params.timeout_s else self.request_timeout_s

    async def _generate_within_deadline(self, prompt: str, params: GenerationParameters, fmt: str) -> GenerationResponse:
        """_generate, or TimeoutError at the request's deadline (cancelling its stage calls);
        ServiceUnavailable when a stage's queue is full. Counts errors by kind."""
        metrics = ingress_metrics()
        try:
            return await asyncio.wait_for(self._generate(prompt, params, fmt), self._deadline(params))
        except TimeoutError:
            metrics.error("timeout")
            raise
        except BackPressureError as exc:
            metrics.error("backpressure")
            raise ServiceUnavailable(exc.message, exc.retry_after_s or 1.0) from exc
        except DeploymentUnavailableError as exc:
            metrics.error("backpressure")
            raise ServiceUnavailable(exc.message, 5.0) from exc
        except ValueError:
            metrics.error("unservable")
            raise
        except Exception:
            metrics.error("internal")
            raise

    async def _generate(self, prompt: str, params: GenerationParameters, fmt: str) -> GenerationResponse:
        if params.rewrite and self.rewriter is None:
            raise ValueError("rewrite=true, but no rewriter is deployed; leave rewrite unset or false")
        t_start = time.perf_counter()
        # rewrite by default when a rewriter is deployed; the generator gets the rewrite, the reward judges the user's prompt
        rewritten = await self.rewriter.rewrite.remote(prompt) if self.rewriter is not None and params.rewrite is not False else None
        t0 = time.perf_counter()
        settings = GenerationSettings(params.steps, params.guidance_scale, params.duration_s, params.scheduler, params.negative_prompt, params.timeline)
        call = GenerationCall(rewritten or prompt, params.num_candidates, params.seed, settings, deadline=time.time() + self._deadline(params))
        audio: GeneratedAudio = await self.generator.generate.remote(call)
        t1 = time.perf_counter()
        # the reward judges the user's prompt, on this prompt's candidates only
        rewards = await self.reranker.score.remote(prompt, audio.waveforms, audio.sample_rate, audio.timeline) if self.reranker is not None else None
        candidates = order_by_reward(audio, rewards)
        t2 = time.perf_counter()

        def b64(c) -> str:
            return base64.b64encode(encode_audio(c.waveform, fmt, audio.sample_rate)).decode()

        best = candidates[0]
        best_audio = b64(best)
        outs = [CandidateOut(index=c.index, seed=c.seed, reward=c.reward, audio=(best_audio if k == 0 else b64(c)) if params.return_candidates == "all" else None) for k, c in enumerate(candidates)]
        t3 = time.perf_counter()
        timings = {"rewrite_s": t0 - t_start, "generate_s": t1 - t0, "rerank_s": t2 - t1, "encode_s": t3 - t2, "total_s": t3 - t_start, "batch_waveforms": float(audio.batch_waveforms)}
        ingress_metrics().observe_request(timings, len(candidates), [c.reward for c in candidates])
        info = await self._generator_info()
        return GenerationResponse(
            id=uuid.uuid4().hex,
            prompt=prompt,
            rewritten_prompt=rewritten,
            timeline=audio.timeline,
            sample_rate=audio.sample_rate,
            format=fmt,  # type: ignore[arg-type]
            audio=best_audio,
            reward=best.reward,
            seed=best.seed,
            candidates=outs,
            settings=audio.settings,
            timings=timings,
            models={"generator": info["version"], "rewriter": (await self._rewrite_info() or {}).get("version"), "reranker": (await self._rerank_info() or {}).get("version")},
        )

    @api.post(
        "/v1/audio/generations",
        response_model=GenerationResponse,
        responses={
            200: {"content": {"audio/wav": {}, "audio/flac": {}}},
            503: {"description": "a stage's queue is full; retry after the Retry-After header's seconds"},
            504: {"description": "not finished within the request's deadline (timeout_s)"},
        },
    )
    async def generations(self, body: GenerationRequest, request: Request):
        fmt, raw = _audio_format(request, body)
        try:
            result = await self._generate_within_deadline(body.prompt, body, fmt)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except ServiceUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": str(math.ceil(exc.retry_after_s))}) from exc
        except TimeoutError as exc:
            raise HTTPException(status_code=504, detail=f"generation did not finish within {self._deadline(body):g} s") from exc
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
            "X-Model-Rewriter": result.models["rewriter"] or "",
            "X-Generate-Seconds": f"{result.timings['generate_s']:.3f}",
        }
        return Response(content=base64.b64decode(result.audio), media_type=f"audio/{fmt}", headers=headers)

    @api.post("/v1/audio/batch", response_model=BatchResponse)
    async def batch(self, body: BatchRequest) -> BatchResponse:
        async def one(i: int, prompt: str) -> BatchItem:
            try:
                return BatchItem(index=i, prompt=prompt, result=await self._generate_within_deadline(check_prompt(prompt), body, body.response_format))
            except TimeoutError:
                return BatchItem(index=i, prompt=prompt, error=f"TimeoutError: not finished within {self._deadline(body):g} s")
            except Exception as exc:  # noqa: BLE001 - one prompt's failure is reported with it and never sinks the others
                return BatchItem(index=i, prompt=prompt, error=f"{type(exc).__name__}: {exc}")

        items = await asyncio.gather(*(one(i, p) for i, p in enumerate(body.prompts)))
        failed = sum(it.error is not None for it in items)
        return BatchResponse(results=list(items), succeeded=len(items) - failed, failed=failed)


BUILD_ARGS = {
    "checkpoint": "generator directory (default: the shipped mini default)",
    "device": "cpu | cuda[:i] for the generator and the reward model (default: cuda when the replica has a GPU)",
    "dtype": "float16 | bfloat16 | float32 for the generator (default: float16 on CUDA; bfloat16 on a CPU with bf16 hardware, else float32)",
    "batch_wait_timeout_s": "how long the generator waits to fill a batch (default 0.05)",
    "dynamic_batching": "false: one generator call per request (the benchmark's baseline)",
    "torch_threads": "CPU threads of the generator's and reranker's torch (default: every core of the machine)",
    "reward_checkpoint": "the reranker's directory: a reward model, or a CLAP with reranker clap (default: the shipped one)",
    "reranker_backend": "onnx | torch for the reward head (default onnx)",
    "reranker": "reward | clap | none (clap: CLAP cosine picks; none: candidates in generation order, without rewards)",
    "rerank_by_stretch": "true: the reranker also judges each clause of a timeline on its own stretch of the clip (default false)",
    "rerank_known_words": "true (the shipped wording) or a known-wording directory: the reranker reads each clause of the prompt in the nearest phrasing its judge was trained on, when one is close (services.wording; default false)",
    "rewriter": "model | none (none: prompts go to the generator as sent)",
    "rewriter_checkpoint": "rewriter directory, any local FLAN-T5-class model (default: the shipped mini rewriter)",
    "request_timeout_s": "the longest a generation may take before 504 (default 120); requests may ask for less with timeout_s",
}


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def _wording_dir(value: Any) -> str | None:
    """rerank_known_words: false -> None, true -> the shipped known wording, anything else names a directory."""
    if isinstance(value, bool) or str(value).lower() in ("1", "0", "true", "false", "yes", "no", ""):
        if not _flag(value):
            return None
        from services.checkpoints import shipped

        return str(shipped("wording"))
    if not Path(str(value)).is_dir():
        raise ValueError(f"rerank_known_words: {value!r} is neither true/false nor a directory")
    return str(value)


def build_app(args: dict[str, Any] | None = None):
    """Application builder (`serve run deployments.app:build_app device=cpu`, or a serve config's
    `args`; see BUILD_ARGS). Unknown args are an error, so a typo in a config does not pass silently."""
    args = dict(args or {})
    unknown = set(args) - set(BUILD_ARGS)
    if unknown:
        raise ValueError(f"unknown build_app args {sorted(unknown)}; known: {', '.join(BUILD_ARGS)}")
    dtype = args.get("dtype")
    if dtype not in (None, "float16", "bfloat16", "float32"):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    reranker_kind = str(args.get("reranker", "reward")).lower()
    if reranker_kind not in (*RERANKERS, "none"):
        raise ValueError(f"reranker must be one of {', '.join(RERANKERS)}, none; got {reranker_kind!r}")
    generator = Generator.bind(
        checkpoint=args.get("checkpoint"),
        device=args.get("device"),
        dtype=dtype,
        batch_wait_timeout_s=float(args.get("batch_wait_timeout_s", 0.05)),
        dynamic_batching=_flag(args.get("dynamic_batching", True)),
        torch_threads=int(args["torch_threads"]) if args.get("torch_threads") else None,
    )
    reranker = None
    if reranker_kind != "none":
        reranker = Reranker.bind(
            kind=reranker_kind,
            checkpoint=args.get("reward_checkpoint"),
            device=args.get("device"),
            backend=args.get("reranker_backend", "onnx"),
            by_stretch=_flag(args.get("rerank_by_stretch", False)),
            wording=_wording_dir(args.get("rerank_known_words", False)),
            torch_threads=int(args["torch_threads"]) if args.get("torch_threads") else None,
        )
    rewriter_kind = str(args.get("rewriter", "model")).lower()
    if rewriter_kind not in ("model", "none"):
        raise ValueError(f"rewriter must be model or none, got {rewriter_kind!r}")
    rewriter = None
    if rewriter_kind == "model":
        rewriter = Rewriter.bind(checkpoint=args.get("rewriter_checkpoint"), device=args.get("device"), torch_threads=int(args["torch_threads"]) if args.get("torch_threads") else None)
    return Ingress.bind(generator, reranker, rewriter, request_timeout_s=float(args.get("request_timeout_s", 120)))
