import os
from dataclasses import dataclass

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Service:
    url: str
    metrics_url: str


@pytest.fixture(scope="session")
def service():
    """The service as `tta serve` deploys it (the shipped CPU serve config) on one real Ray cluster per
    test session, HTTP on 127.0.0.1. Test-only changes: free ports, a longer batch wait (so concurrent
    requests surely meet), a Generator queue of 8 (so a burst reaches 503 quickly; it must exceed the batching
    test's burst of 4, since a handle counts calls still being assigned a replica as queued), metrics every 1 s."""
    import ray
    from ray import serve

    from deployments.config import deploy, free_port, read_config, shipped_config, start_ray, with_overrides

    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    port, metrics_port = free_port(), free_port()
    config = with_overrides(read_config(shipped_config("cpu")), port=port, args={"batch_wait_timeout_s": 0.2}, deployments={"Generator": {"max_queued_requests": 8}})
    start_ray(num_cpus=4, metrics_port=metrics_port)
    try:
        url = deploy(config)
        # one request first: until a handle has learnt its replicas, concurrent calls wait in its queue
        httpx.post(f"{url}/v1/audio/generations", json={"prompt": "a dog barks", "steps": 2}, timeout=120).raise_for_status()
        yield Service(url, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def url(service) -> str:
    return service.url
