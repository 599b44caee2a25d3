"""Turning validation failures into messages that say exactly what is wrong, and where."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError) -> str:
    """'field: reason; other.field: reason' from a pydantic error."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
