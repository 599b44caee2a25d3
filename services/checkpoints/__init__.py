"""Checkpoints of the embedded mini default, shipped as package data (one directory each)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped(name: str) -> Path:
    """Directory of a shipped checkpoint, e.g. shipped("oracle")."""
    path = Path(str(resources.files(__package__) / name))
    if not (path / "MANIFEST.json").is_file():
        raise FileNotFoundError(f"no shipped checkpoint {name!r} at {path} (train it with `tta train {name}`)")
    return path
