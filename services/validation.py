"""Turning validation failures into messages that say exactly what is wrong, and where."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError) -> str:
    """'field: reason; other.field: reason' from a pydantic error."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())


MAX_PROMPT_CHARS = 500


def check_prompt(v: str) -> str:
    """A prompt the service accepts, stripped; ValueError saying why not (HTTP schemas, batch items, the rewriter)."""
    if not v.strip():
        raise ValueError("prompt is blank")
    if len(v) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt has {len(v)} characters; at most {MAX_PROMPT_CHARS}")
    return v.strip()
