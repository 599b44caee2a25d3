"""Prompt sets for evaluations: the world's held-out split, or a JSONL file from outside.

File lines: {"prompt": "...", "events": ["dog_bark", "bell"], "relation": "sequence" | "overlap" | null}
with sequence events in the order they are to be heard. Any bad line is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.validation import describe
from training.world.events import EVENT_IDS

T = TypeVar("T")


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=500)
    events: list[str] = Field(min_length=1, max_length=3)
    relation: Literal["sequence", "overlap"] | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank")
        return v

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in EVENT_IDS]
        if unknown:
            raise ValueError(f"unknown event id(s) {unknown}; known: {', '.join(EVENT_IDS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"events repeat: {v}")
        return v

    @model_validator(mode="after")
    def _relation_fits(self) -> PromptSpec:
        if self.relation is not None and len(self.events) < 2:
            raise ValueError(f"relation {self.relation!r} needs at least 2 events, got {len(self.events)}")
        if self.relation == "overlap" and len(self.events) != 2:
            raise ValueError("relation 'overlap' takes exactly 2 events")
        return self


class PromptFileError(ValueError):
    pass


def _parse_jsonl(path: Path, parse: Callable[[dict], T], what: str) -> list[T]:
    """Parse every non-blank line; raise PromptFileError listing each bad line as path:line."""
    if not path.is_file():
        raise PromptFileError(f"{path}: no such {what}")
    items, errors = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            items.append(parse(data))
        except json.JSONDecodeError as exc:
            errors.append(f"{path}:{lineno}: not JSON ({exc.msg})")
        except ValidationError as exc:
            errors.append(f"{path}:{lineno}: {describe(exc)}")
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(f"{path}:{lineno}: {exc}")
    if errors:
        raise PromptFileError(f"invalid {what}:\n  " + "\n  ".join(errors))
    if not items:
        raise PromptFileError(f"{path}: empty {what}")
    return items


def load_prompt_file(path: str | Path) -> list[PromptSpec]:
    """Parse and validate every line; raise PromptFileError listing each bad line by number."""
    return _parse_jsonl(Path(path), PromptSpec.model_validate, "prompt file")


def _audio_prompt_row(data: dict) -> tuple[PromptSpec, str]:
    audio = data.pop("audio", None)
    if not isinstance(audio, str) or not audio:
        raise ValueError("missing 'audio' path")
    if "caption" in data:  # a `tta world sample` row
        relation = data.get("relation")
        data = {"prompt": data["caption"], "events": [e["event"] for e in data["events"]], "relation": None if relation == "single" else relation}
    return PromptSpec.model_validate(data), audio


def load_audio_prompt_rows(path: str | Path) -> list[tuple[PromptSpec, str]]:
    """Rows pairing a prompt with an audio path: a prompt-file row plus "audio", or a world row."""
    return _parse_jsonl(Path(path), _audio_prompt_row, "clip list")
