"""HTTP schemas of the service (pydantic): what a caller may send and what comes back.

Bad input is refused at this edge with a 422 naming the field. Limits are the service's, not the
model's: the generator also checks its own (e.g. a checkpoint's maximum duration).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.validation import MAX_PROMPT_CHARS, check_prompt

MAX_CANDIDATES = 16
MAX_BATCH_PROMPTS = 32


class GenerationParameters(BaseModel):
    """Settings shared by a single generation and every prompt of a batch."""

    model_config = ConfigDict(extra="forbid")
    duration_s: float | None = Field(None, gt=0, le=30, description="clip length in seconds (default: the generator's)")
    num_candidates: int = Field(1, ge=1, le=MAX_CANDIDATES, description="candidates generated; the best by reward is returned")
    seed: int | None = Field(None, ge=0, le=2**31 - 1 - MAX_CANDIDATES, description="candidate j uses seed + j (default: random, reported)")
    steps: int | None = Field(None, ge=1, le=1000, description="denoising steps (default: the generator's)")
    guidance_scale: float | None = Field(None, ge=0, le=50, description="classifier-free guidance (default: the generator's)")
    scheduler: Literal["ddpm", "ddim", "dpm++"] | None = Field(None, description="sampler (default: the generator's)")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    timeline: bool | None = Field(None, description="a prompt that states a sequence ('a dog barks, then a bell rings') gets each clause in its own stretch of the clip (default: the generator's)")
    rewrite: bool | None = Field(None, description="rewrite the prompt first (default: when a rewriter is deployed); true without one is an error")
    response_format: Literal["wav", "flac"] = "wav"
    return_candidates: Literal["best", "all"] = Field("best", description="'all' adds every candidate's audio, best first")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="give up with 504 after this many seconds (default and ceiling: the server's request_timeout_s)")


class GenerationRequest(GenerationParameters):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        return check_prompt(v)


class BatchRequest(GenerationParameters):
    # each prompt is checked on its own: one bad prompt gets its own error, the others still run
    prompts: list[str] = Field(min_length=1, max_length=MAX_BATCH_PROMPTS)


class CandidateOut(BaseModel):
    index: int = Field(description="position in generation order")
    seed: int
    reward: float | None = Field(description="the reranker's score: the reward model's acceptance probability in [0, 1], or the CLAP cosine in [-1, 1] (reranker clap; models.reranker says which); null while no reranker is deployed")
    audio: str | None = Field(None, description="base64 audio, with return_candidates='all'")


class GenerationResponse(BaseModel):
    id: str
    prompt: str
    rewritten_prompt: str | None
    timeline: list[str] | None = Field(None, description="the clauses of the (rewritten) prompt in the order they were placed in the clip; null when no timeline was used")
    sample_rate: int
    format: Literal["wav", "flac"]
    audio: str = Field(description="base64 audio of the best candidate")
    reward: float | None
    seed: int
    candidates: list[CandidateOut] = Field(description="every candidate, best first")
    settings: dict
    timings: dict[str, float]
    models: dict[str, str | None]


class BatchItem(BaseModel):
    index: int
    prompt: str
    result: GenerationResponse | None = None
    error: str | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]
    succeeded: int
    failed: int
