"""Python SDK for the REST API: `TTAClient` (sync) and `AsyncTTAClient` over httpx.

    from clients import TTAClient
    with TTAClient("http://127.0.0.1:8000") as tta:
        clip = tta.generate("a dog barks, then a bell rings", num_candidates=4, seed=0)
        clip.save("clip.wav")            # the best candidate
        print(clip.reward, clip.seed, [c.reward for c in clip.candidates])

Requests are checked against the service's own schemas (deployments/schemas.py) before they are
sent, so bad input fails here with the same field messages as a 422. 503 (queue full), 429 and 408
are retried with exponential backoff, honouring Retry-After; so are connection errors. 504 (the
request's own deadline passed) and 4xx are not: the same request would fail the same way.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from deployments.schemas import BatchRequest, BatchResponse, GenerationParameters, GenerationRequest, GenerationResponse

RETRY_STATUSES = frozenset({408, 429, 503})
Model = TypeVar("Model", bound=BaseModel)


class TTAError(Exception):
    """The service answered with an error (after any retries)."""

    def __init__(self, status_code: int, detail: Any, attempts: int = 1) -> None:
        super().__init__(f"HTTP {status_code} after {attempts} attempt(s): {detail}")
        self.status_code, self.detail, self.attempts = status_code, detail, attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    backoff_s: float = 0.5  # first wait; doubles per retry
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number attempt+1, or None when the outcome is final.
        response is None for a transport error (connection refused, reset, timed out)."""
        if attempt >= self.max_retries or (response is not None and response.status_code not in RETRY_STATUSES):
            return None
        backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.8, 1.2)  # jitter spreads a herd
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None and retry_after.strip().isdigit():
            return min(self.max_backoff_s, float(retry_after))
        return backoff


class Generation(GenerationResponse):
    """A generation result with its audio decoded on demand."""

    @property
    def audio_bytes(self) -> bytes:
        """The best candidate's file bytes (WAV or FLAC, as `format` says)."""
        return base64.b64decode(self.audio)

    def save(self, path: str | Path) -> Path:
        """Write the best candidate's audio to path (written whole or not at all)."""
        return write_atomic(Path(path), self.audio_bytes)

    def save_candidates(self, directory: str | Path) -> list[Path]:
        """Write every candidate that came with audio (return_candidates='all'), best first as
        rank00-seed<S>.<fmt>, rank01-..."""
        directory = Path(directory)
        missing = [c.index for c in self.candidates if c.audio is None]
        if missing:
            raise ValueError("candidate audio was not requested; generate with return_candidates='all'")
        return [write_atomic(directory / f"rank{rank:02d}-seed{c.seed}.{self.format}", base64.b64decode(c.audio)) for rank, c in enumerate(self.candidates)]


class GenerationBatch(BatchResponse):
    def generations(self) -> list[Generation | None]:
        """Each prompt's result (None where it failed; its `error` says why), in prompt order."""
        return [Generation.model_validate(item.result.model_dump()) if item.result else None for item in self.results]


def write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def generation_body(prompt: str, **params: Any) -> dict[str, Any]:
    """The request body, validated by the service's schema (pydantic ValidationError if bad)."""
    return GenerationRequest(prompt=prompt, **params).model_dump(exclude_none=True)


def batch_body(prompts: list[str], **params: Any) -> dict[str, Any]:
    return BatchRequest(prompts=prompts, **params).model_dump(exclude_none=True)


@dataclass(frozen=True)
class Wait:
    seconds: float


def _settle(retry: RetryPolicy, attempt: int, result: httpx.Response | httpx.TransportError, model: type[Model]) -> Model | Wait:
    """What one attempt's result means (the same for the sync and async clients): the parsed answer,
    Wait(seconds) before the next attempt, or the error raised (TTAError, or the transport error)."""
    response = result if isinstance(result, httpx.Response) else None
    delay = retry.delay(attempt, response)
    if delay is not None:
        return Wait(delay)
    if response is None:
        raise result
    return _parse(response, model, attempt + 1)


def _parse(response: httpx.Response, model: type[Model], attempts: int) -> Model:
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise TTAError(response.status_code, detail, attempts)
    return model.model_validate(response.json())


def _timeout(params: dict[str, Any], default_s: float) -> httpx.Timeout:
    # wait for the answer a little longer than the server may take to give it
    read = params["timeout_s"] + 10 if params.get("timeout_s") else default_s
    return httpx.Timeout(read, connect=10)


class TTAClient:
    """Synchronous client. `timeout_s` bounds the wait for one answer (the server's own deadline is
    the request's `timeout_s` field)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 330, retry: RetryPolicy = RetryPolicy()) -> None:
        self.url, self.timeout_s, self.retry = url.rstrip("/"), timeout_s, retry
        self._http = httpx.Client(base_url=self.url)

    def __enter__(self) -> TTAClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, model: type[Model], json: dict | None = None, timeout: httpx.Timeout | None = None) -> Model:
        for attempt in itertools.count():
            try:
                outcome = _settle(self.retry, attempt, self._http.request(method, path, json=json, timeout=timeout or self.timeout_s), model)
            except httpx.TransportError as exc:
                outcome = _settle(self.retry, attempt, exc, model)
            if not isinstance(outcome, Wait):
                return outcome
            time.sleep(outcome.seconds)
        raise AssertionError("unreachable")

    def generate(self, prompt: str, **params: Any) -> Generation:
        """One prompt -> the best of `num_candidates` clips. params: see GenerationParameters."""
        body = generation_body(prompt, **params)
        return self._request("POST", "/v1/audio/generations", Generation, body, _timeout(body, self.timeout_s))

    def batch(self, prompts: list[str], **params: Any) -> GenerationBatch:
        """Up to 32 prompts with shared parameters; each result or error per prompt."""
        body = batch_body(prompts, **params)
        return self._request("POST", "/v1/audio/batch", GenerationBatch, body, _timeout(body, self.timeout_s))

    def models(self) -> dict[str, Any]:
        return self._http.get("/v1/models", timeout=30).raise_for_status().json()

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=10).status_code == 200
        except httpx.TransportError:
            return False


class AsyncTTAClient:
    """The same over asyncio (for many prompts in flight: `tta batch` uses it)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 330, retry: RetryPolicy = RetryPolicy()) -> None:
        self.url, self.timeout_s, self.retry = url.rstrip("/"), timeout_s, retry
        self._http = httpx.AsyncClient(base_url=self.url, limits=httpx.Limits(max_connections=64))

    async def __aenter__(self) -> AsyncTTAClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, model: type[Model], json: dict | None = None, timeout: httpx.Timeout | None = None) -> Model:
        for attempt in itertools.count():
            try:
                outcome = _settle(self.retry, attempt, await self._http.request(method, path, json=json, timeout=timeout or self.timeout_s), model)
            except httpx.TransportError as exc:
                outcome = _settle(self.retry, attempt, exc, model)
            if not isinstance(outcome, Wait):
                return outcome
            await asyncio.sleep(outcome.seconds)
        raise AssertionError("unreachable")

    async def generate(self, prompt: str, **params: Any) -> Generation:
        body = generation_body(prompt, **params)
        return await self._request("POST", "/v1/audio/generations", Generation, body, _timeout(body, self.timeout_s))

    async def batch(self, prompts: list[str], **params: Any) -> GenerationBatch:
        body = batch_body(prompts, **params)
        return await self._request("POST", "/v1/audio/batch", GenerationBatch, body, _timeout(body, self.timeout_s))

    async def models(self) -> dict[str, Any]:
        return (await self._http.get("/v1/models", timeout=30)).raise_for_status().json()

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz", timeout=10)).status_code == 200
        except httpx.TransportError:
            return False


__all__ = ["AsyncTTAClient", "Generation", "GenerationBatch", "GenerationParameters", "RetryPolicy", "TTAClient", "TTAError"]
