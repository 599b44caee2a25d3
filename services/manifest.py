"""MANIFEST.json of a checkpoint directory: file hashes, the command that made it, seed, metrics."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"


class ManifestError(ValueError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def current_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_manifest(directory: Path, *, command: str | None = None, seed: int | None, metrics: dict[str, Any], git_commit: str | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Hash every file in `directory` (except the manifest) and write MANIFEST.json."""
    directory = Path(directory)
    # every file below the directory (component subdirectories included), by relative POSIX path
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts)
    files = {p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in paths}
    manifest = {
        "files": files,
        "command": command if command is not None else " ".join(["tta", *sys.argv[1:]]),
        "seed": seed,
        "git_commit": git_commit or current_commit(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "metrics": metrics,
        **(extra or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_manifest(directory: Path) -> dict:
    """Check every listed file exists with the recorded hash; raise ManifestError naming the file."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{directory}: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: not a valid manifest ({exc})") from exc
    for name, info in files.items():
        f = directory / name
        if not f.is_file():
            raise ManifestError(f"{directory}: {name} is listed in {MANIFEST} but missing")
        digest = sha256_file(f)
        if digest != info.get("sha256"):
            raise ManifestError(f"{directory}: {name} has sha256 {digest[:12]}..., {MANIFEST} says {str(info.get('sha256'))[:12]}... (corrupt or replaced file)")
    return manifest


def checkpoint_version(directory: Path) -> str:
    """A short, stable name for what a checkpoint directory holds: NAME@<first 12 hex of its MANIFEST's sha256>
    (the manifest hashes every file, so any changed weight changes the version)."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    return f"{directory.name}@{sha256_file(manifest)[:12]}" if manifest.is_file() else f"{directory.name}@unversioned"
