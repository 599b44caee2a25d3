"""The Ray Serve application end to end: a real Ray cluster (one per test session), HTTP on 127.0.0.1,
the shipped mini generator. Few denoising steps keep it fast; the behaviour is the same."""

from __future__ import annotations

import base64
import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf

FAST = {"steps": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def url():
    import ray
    from ray import serve

    from deployments.app import build_app, start_local_serve

    port = _free_port()
    start_local_serve("127.0.0.1", port, num_cpus=4)
    serve.run(build_app({"device": "cpu", "batch_wait_timeout_s": 0.2}), name="tta", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def post(url: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/generations", json=body, timeout=120, **kwargs)


def decode(b64: str) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float32")


def test_health_readiness_models_and_openapi(url):
    from services.checkpoints import shipped
    from services.manifest import checkpoint_version

    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["generator"] == checkpoint_version(shipped("generator"))
    models = httpx.get(f"{url}/v1/models", timeout=30).json()
    assert models["generator"]["sample_rate"] == 16000
    assert models["reranker"]["version"] == checkpoint_version(shipped("reward")) and models["reranker"]["backend"] == "onnx"
    assert "CPUExecutionProvider" in models["reranker"]["providers"]
    assert ready.json()["reranker"] == models["reranker"]["version"]
    assert "/v1/audio/generations" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_generation_json_with_every_candidate(url):
    r = post(url, {"prompt": "a dog barks, then a bell rings", "num_candidates": 3, "seed": 7, "return_candidates": "all", **FAST})
    assert r.status_code == 200, r.text
    body = r.json()
    audio, sr = decode(body["audio"])
    assert sr == body["sample_rate"] == 16000 and audio.shape == (65536,) and np.abs(audio).max() > 0
    # best first by reward: the response's clip is the top-ranked candidate, its seed one of 7, 8, 9
    rewards = [c["reward"] for c in body["candidates"]]
    assert rewards == sorted(rewards, reverse=True) and all(0 < r < 1 for r in rewards)
    assert sorted(c["seed"] for c in body["candidates"]) == [7, 8, 9] and body["seed"] == body["candidates"][0]["seed"]
    assert body["reward"] == rewards[0] and body["models"]["reranker"].startswith("reward@")
    assert all(c["audio"] for c in body["candidates"]) and body["candidates"][0]["audio"] == body["audio"]
    assert body["settings"]["steps"] == 2 and body["models"]["generator"].startswith("generator@")
    assert {"generate_s", "rerank_s", "total_s"} <= set(body["timings"])


def test_same_seed_same_audio_other_seed_other_audio(url):
    a = post(url, {"prompt": "rain falls", "seed": 3, **FAST}).json()["audio"]
    b = post(url, {"prompt": "rain falls", "seed": 3, **FAST}).json()["audio"]
    c = post(url, {"prompt": "rain falls", "seed": 4, **FAST}).json()["audio"]
    assert a == b and a != c


def test_accept_audio_wav_returns_the_wav_itself(url):
    r = post(url, {"prompt": "a bell rings", "seed": 1, **FAST}, headers={"Accept": "audio/wav"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content[:4] == b"RIFF" and r.headers["x-seed"] == "1" and r.headers["x-model-generator"].startswith("generator@")
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == 16000 and len(audio) == 65536
    flac = post(url, {"prompt": "a bell rings", "seed": 1, "response_format": "flac", **FAST}).json()
    assert flac["format"] == "flac" and base64.b64decode(flac["audio"])[:4] == b"fLaC"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 501}, "prompt"),
        ({"prompt": "a dog barks", "num_candidates": 0}, "num_candidates"),
        ({"prompt": "a dog barks", "num_candidates": 17}, "num_candidates"),
        ({"prompt": "a dog barks", "duration_s": 0}, "duration_s"),
        ({"prompt": "a dog barks", "duration_s": 31}, "duration_s"),
        ({"prompt": "a dog barks", "steps": 0}, "steps"),
        ({"prompt": "a dog barks", "response_format": "mp3"}, "response_format"),
        ({"prompt": "a dog barks", "scheduler": "euler"}, "scheduler"),
        ({"prompt": "a dog barks", "seed": -1}, "seed"),
        ({"prompt": "a dog barks", "temperature": 1}, "temperature"),
        ({"num_candidates": 2}, "prompt"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(url, body, field):
    r = post(url, body)
    assert r.status_code == 422, r.text
    assert any(field in [str(x) for x in d["loc"]] for d in r.json()["detail"]), r.text


@pytest.mark.parametrize(
    "body, message",
    [
        ({"prompt": "a dog barks", "duration_s": 20, **FAST}, "duration_s must be in"),  # over this checkpoint's 10 s
        ({"prompt": "a dog barks", "rewrite": True, **FAST}, "no rewriter is deployed"),
    ],
)
def test_requests_the_deployed_models_cannot_serve_are_a_422_saying_why(url, body, message):
    r = post(url, body)
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_batch_reports_each_prompt_and_one_failure_sinks_nothing(url):
    r = httpx.post(f"{url}/v1/audio/batch", json={"prompts": ["a dog barks", "  ", "a bell rings"], "seed": 5, **FAST}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["succeeded"], body["failed"]) == (2, 1)
    ok, bad, ok2 = body["results"]
    assert ok["result"]["seed"] == 5 and ok2["result"]["prompt"] == "a bell rings" and "blank" in bad["error"]
    assert httpx.post(f"{url}/v1/audio/batch", json={"prompts": []}).status_code == 422


def test_concurrent_requests_share_a_generator_batch(url):
    bodies = [{"prompt": p, "seed": i, "num_candidates": 2, **FAST} for i, p in enumerate(["a dog barks", "rain falls", "a bell rings", "a siren wails"])]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: post(url, b).json(), bodies))
    sizes = [r["timings"]["batch_waveforms"] for r in results]
    assert max(sizes) > 2, f"no two requests were batched together: {sizes}"
    for body, r in zip(bodies, results):  # batching never changes what a request gets (up to float rounding)
        alone = post(url, body).json()
        assert np.abs(decode(alone["audio"])[0] - decode(r["audio"])[0]).max() < 1e-3, json.dumps(sizes)
