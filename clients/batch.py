"""`tta batch prompts.txt --out DIR`: many prompts through the REST API, resumable.

OUT/
  batch.json       the shared generation parameters; a rerun with different ones is refused
  audio/<key>.wav  the best candidate of each prompt (written whole, then renamed into place)
  results.jsonl    one line per finished prompt: key, line, prompt, rewritten prompt, reward, seed,
                   file, every candidate's seed and reward, model versions, timings
  failures.jsonl   the prompts of the last run that failed, with the error (rewritten every run)

A prompt's key hashes its text and how many times the same text came before it in the file, so
editing the file (inserting, reordering lines) never re-generates or mixes up finished prompts. A
prompt counts as done when its line is in results.jsonl and its audio file exists. Each result line
is appended only after its audio is in place and is flushed to disk at once, so a crash loses at most
the prompts in flight; a torn last line from a crash is dropped on the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clients.sdk import AsyncTTAClient, RetryPolicy, write_atomic
from deployments.schemas import GenerationParameters, check_prompt


class BatchSettingsError(ValueError):
    pass


@dataclass
class PromptLine:
    key: str
    line: int  # 1-based line in the prompts file
    prompt: str


@dataclass
class BatchSummary:
    total: int
    already_done: int
    succeeded: int
    failed: int
    out: Path


def read_prompts(path: Path) -> list[PromptLine]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    seen: Counter[str] = Counter()
    prompts = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        key = hashlib.sha256(f"{text}\n{seen[text]}".encode()).hexdigest()[:16]
        seen[text] += 1
        prompts.append(PromptLine(key, number, text))
    return prompts


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Finished records by key. A torn last line (a crash mid-write) is dropped and the file rewritten
    without it; a torn line anywhere else means the file was edited by hand and is an error."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    records: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            records[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if i != len(lines) - 1:
                raise BatchSettingsError(f"{path} line {i + 1} is not a result record ({exc}); fix or remove that line") from exc
            write_atomic(path, "".join(f"{kept}\n" for kept in lines[:-1]).encode())
    return records


def check_settings(out: Path, params: dict[str, Any]) -> None:
    """Write OUT/batch.json, or refuse when OUT was made with other parameters (naming them)."""
    path = out / "batch.json"
    if path.exists():
        before = json.loads(path.read_text())
        differ = sorted(k for k in set(before) | set(params) if before.get(k) != params.get(k))
        if differ:
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {params.get(k)!r}" for k in differ)
            raise BatchSettingsError(f"{out} holds a batch made with other parameters ({changes}); use another --out or the same parameters")
        return
    write_atomic(path, json.dumps(params, indent=2, sort_keys=True).encode())


async def run_batch(
    prompts_file: Path,
    out: Path,
    url: str,
    params: dict[str, Any],
    concurrency: int = 4,
    retry: RetryPolicy = RetryPolicy(),
    progress: bool = True,
) -> BatchSummary:
    """Generate every prompt of prompts_file not already in out, `concurrency` requests at a time."""
    try:
        params = GenerationParameters(**params).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise BatchSettingsError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, params)
    results_path = out / "results.jsonl"
    done = load_results(results_path)
    prompts = read_prompts(prompts_file)
    todo = [p for p in prompts if p.key not in done or not (out / done[p.key]["file"]).exists()]
    fmt = params.get("response_format", "wav")
    failures: list[dict[str, Any]] = []
    write_lock, gate = asyncio.Lock(), asyncio.Semaphore(concurrency)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="prompts", unit="prompt", disable=not progress)
    async with AsyncTTAClient(url, retry=retry) as client:

        async def one(p: PromptLine) -> None:
            async with gate:
                try:
                    result = await client.generate(check_prompt(p.prompt), **params)
                except Exception as exc:  # noqa: BLE001 - a bad prompt, an HTTP error after retries, a lost connection: this prompt fails, the others go on
                    failures.append({"key": p.key, "line": p.line, "prompt": p.prompt, "error": f"{type(exc).__name__}: {exc}"})
                    bar.update()
                    return
            file = f"audio/{p.key}.{fmt}"
            result.save(out / file)
            record = {
                "key": p.key,
                "line": p.line,
                "prompt": p.prompt,
                "rewritten_prompt": result.rewritten_prompt,
                "reward": result.reward,
                "seed": result.seed,
                "file": file,
                "candidates": [{"seed": c.seed, "reward": c.reward} for c in result.candidates],
                "settings": result.settings,
                "models": result.models,
                "timings": result.timings,
                "id": result.id,
            }
            async with write_lock:
                with results_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            bar.update()

        await asyncio.gather(*(one(p) for p in todo))
    bar.close()
    failures.sort(key=lambda f: f["line"])
    write_atomic(out / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures).encode())
    return BatchSummary(total=len(prompts), already_done=len(prompts) - len(todo), succeeded=len(todo) - len(failures), failed=len(failures), out=out)
