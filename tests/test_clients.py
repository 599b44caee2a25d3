"""The Python SDK and `tta batch` against the real service (the session's Ray cluster, HTTP on
127.0.0.1). Retries are exercised through a real HTTP front on 127.0.0.1 that answers 503 to the
first requests it is told to refuse and forwards everything else to the service."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import soundfile as sf
from click.testing import CliRunner
from pydantic import ValidationError

from clients import AsyncTTAClient, RetryPolicy, TTAClient, TTAError
from deployments.config import free_port

FAST = {"steps": 2}
QUICK_RETRY = RetryPolicy(max_retries=3, backoff_s=0.05)


class Front:
    """HTTP on 127.0.0.1 in front of the service: refuses the next `refuse` POSTs with 503
    (Retry-After: 0) and counts every request it sees."""

    def __init__(self, target: str) -> None:
        self.target, self.refuse, self.posts = target, 0, 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))) if method == "POST" else None
                if method == "POST":
                    front.posts += 1
                    if front.refuse > 0:
                        front.refuse -= 1
                        self.send_response(503)
                        self.send_header("Retry-After", "0")
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"detail": "queue full (test front)"}')
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                r = httpx.request(method, front.target + self.path, content=body, headers=headers, timeout=300)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def front(url):
    f = Front(url)
    yield f
    f.server.shutdown()


def test_sync_client_generates_saves_and_reports_typed_results(url, tmp_path):
    with TTAClient(url) as tta:
        assert tta.ready() and tta.models()["generator"]["sample_rate"] == 16000
        clip = tta.generate("a dog barks, then a bell rings", num_candidates=3, seed=11, return_candidates="all", **FAST)
        path = clip.save(tmp_path / "best.wav")
        audio, sr = sf.read(path)
        assert sr == clip.sample_rate == 16000 and len(audio) == 65536
        rewards = [c.reward for c in clip.candidates]
        assert rewards == sorted(rewards, reverse=True) and clip.reward == rewards[0]
        files = clip.save_candidates(tmp_path / "all")
        assert [f.name for f in files][0] == f"rank00-seed{clip.seed}.wav" and len(files) == 3
        assert files[0].read_bytes() == path.read_bytes()
        with pytest.raises(ValueError, match="return_candidates='all'"):
            tta.generate("rain falls", seed=1, **FAST).save_candidates(tmp_path / "none")


def test_bad_input_fails_in_the_client_with_the_services_field_messages(url):
    with TTAClient(url) as tta:
        with pytest.raises(ValidationError, match="num_candidates"):
            tta.generate("a dog barks", num_candidates=17)
        with pytest.raises(ValidationError, match="prompt is blank"):
            tta.generate("   ")
        with pytest.raises(TTAError, match="duration_s must be in") as err:  # only the server knows its checkpoint's limit
            tta.generate("a dog barks", duration_s=20, **FAST)
        assert err.value.status_code == 422 and err.value.attempts == 1, "a 422 is final, never retried"


def test_503_is_retried_after_retry_after_and_gives_up_when_told(front):
    with TTAClient(front.url, retry=QUICK_RETRY) as tta:
        front.refuse, before = 2, front.posts
        clip = tta.generate("a bell rings", seed=2, **FAST)
        assert clip.seed == 2 and front.posts - before == 3, "two 503s, then the answer"
        front.refuse, before = 10, front.posts
        with pytest.raises(TTAError, match="HTTP 503 after 4 attempt") as err:
            tta.generate("a bell rings", seed=2, **FAST)
        assert err.value.status_code == 503 and front.posts - before == 4
    front.refuse = 0


def test_async_client_batches_and_retries(front):
    async def go():
        async with AsyncTTAClient(front.url, retry=QUICK_RETRY) as tta:
            front.refuse = 1
            batch = await tta.batch(["a dog barks", "rain falls"], seed=4, **FAST)
            single = await asyncio.gather(*(tta.generate(p, seed=4, **FAST) for p in ["a dog barks", "rain falls"]))
            return batch, single

    batch, single = asyncio.run(go())
    assert batch.succeeded == 2 and [g.prompt for g in batch.generations()] == ["a dog barks", "rain falls"]
    assert [g.audio for g in batch.generations()] == [g.audio for g in single], "same seed, same audio, by either route"


def test_tta_batch_writes_results_skips_finished_prompts_and_survives_a_torn_line(front, tmp_path):
    from tta.cli import main

    prompts, out = tmp_path / "prompts.txt", tmp_path / "out"
    prompts.write_text("# a comment\na dog barks\n\n" + "x" * 501 + "\nrain falls\na dog barks\n")
    args = ["batch", str(prompts), "--out", str(out), "--url", front.url, "--seed", "5", "--steps", "2", "--concurrency", "2"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output  # the 501-character prompt fails; the others do not
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [2, 5, 6] and all((out / r["file"]).exists() for r in records)
    assert len({r["key"] for r in records}) == 3, "a repeated prompt is its own job"
    assert all(r["seed"] == 5 and -1 <= r["reward"] <= 1 and len(r["candidates"]) == 1 and r["models"]["generator"] for r in records)
    (failure,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["line"] == 4 and "at most 500" in failure["error"]

    # the user fixes the long prompt, adds one on top; a crash had torn the last result line
    prompts.write_text("a siren wails\n# a comment\na dog barks\n\nshort again\nrain falls\na dog barks\n")
    with (out / "results.jsonl").open("a") as f:
        f.write('{"key": "torn')
    mtimes = {r["file"]: (out / r["file"]).stat().st_mtime_ns for r in records}
    before = front.posts
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "5 prompts: 3 already done, 2 generated, 0 failed" in second.output
    assert front.posts - before == 2, "only the two new prompts were requested"
    assert all((out / f).stat().st_mtime_ns == m for f, m in mtimes.items()), "finished audio untouched"
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["key"] for line in lines)

    changed = CliRunner().invoke(main, [*args[:-2], "--steps", "3"])
    assert changed.exit_code != 0 and "steps: 2 -> 3" in changed.output
