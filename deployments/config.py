"""Serve config files: load, override, validate and deploy them on a local Ray (what `tta serve` does).

The YAMLs in deployments/configs/ are ordinary Ray Serve config files (`serve run FILE` and KubeRay's
serveConfigV2 read the same format); Ray's own `ServeDeploySchema` validates them, so a typo in a
deployment option is an error naming the field before anything starts.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

APP_NAME = "tta"
DEPLOYMENT_NAMES = ("Ingress", "Generator", "Reranker", "Rewriter")


class ServeConfigError(ValueError):
    pass


def shipped_config(kind: str = "cpu") -> Path:
    """deployments/configs/serve-{cpu,gpu}.yaml (package data, so it works from a wheel too)."""
    path = Path(str(resources.files("deployments") / "configs" / f"serve-{kind}.yaml"))
    if not path.is_file():
        raise ServeConfigError(f"no shipped serve config {path.name}; kinds are cpu and gpu")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ServeConfigError(f"cannot read serve config {path}: {exc}") from exc
    if not isinstance(config, dict) or not config.get("applications"):
        raise ServeConfigError(f"{path} is not a Ray Serve config: it needs an `applications` list")
    return config


def with_overrides(
    config: dict[str, Any],
    *,
    host: str | None = None,
    port: int | None = None,
    args: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A copy of `config` with the HTTP address, the `tta` application's builder args (None values
    are left out) and per-deployment options replaced (e.g. {"Generator": {"max_queued_requests": 2}})."""
    config = copy.deepcopy(config)
    http = config.setdefault("http_options", {})
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    app = tta_application(config)
    app.setdefault("args", {}).update({k: v for k, v in (args or {}).items() if v is not None})
    by_name = {d["name"]: d for d in app.setdefault("deployments", [])}
    for name, options in (deployments or {}).items():
        if name not in DEPLOYMENT_NAMES:
            raise ServeConfigError(f"no deployment named {name!r}; the application has {', '.join(DEPLOYMENT_NAMES)}")
        if name not in by_name:
            by_name[name] = {"name": name}
            app["deployments"].append(by_name[name])
        by_name[name].update(options)
    # a stage switched off has no deployment, and Ray refuses options for a deployment the app lacks
    off = {"Reranker": str(app["args"].get("reranker", "reward")).lower() == "none", "Rewriter": str(app["args"].get("rewriter", "model")).lower() == "none"}
    app["deployments"] = [d for d in app["deployments"] if not off.get(d["name"], False)]
    return config


def tta_application(config: dict[str, Any]) -> dict[str, Any]:
    for app in config.get("applications", []):
        if app.get("name") == APP_NAME:
            return app
    raise ServeConfigError(f"the serve config has no application named {APP_NAME!r}")


def validate(config: dict[str, Any]):
    """Ray's ServeDeploySchema of `config`; ServeConfigError listing every bad field otherwise."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ServeConfigError(f"invalid serve config: {problems}") from exc
    unknown = {d["name"] for d in tta_application(config).get("deployments", [])} - set(DEPLOYMENT_NAMES)
    if unknown:
        raise ServeConfigError(f"the serve config names deployments the application does not have: {sorted(unknown)}")
    from deployments.app import BUILD_ARGS

    unknown = set(tta_application(config).get("args") or {}) - set(BUILD_ARGS)
    if unknown:
        raise ServeConfigError(f"unknown args {sorted(unknown)} for deployments.app:build_app; known: {', '.join(BUILD_ARGS)}")
    return schema


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on right now (tests and benchmarks serve on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int | None = None, metrics_port: int | None = None) -> None:
    """Start Ray on this machine; its Prometheus endpoint (the service's metrics) on metrics_port."""
    import ray

    # Serve gives its HTTP proxy 5 s to report ready; a loaded 2-core host can take longer, and a proxy
    # that misses three checks is killed and restarted over and over. Operators can still override.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    # Ray runs workers at nice 15; then any busy process on the host (a dataset build, a test run)
    # starves the replicas until requests hit their deadlines. Serving is this host's job.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})


def deploy(config: dict[str, Any], timeout_s: float = 600) -> str:
    """Start Serve with the config's HTTP options and deploy its applications on the running Ray;
    wait until they run. Returns the base URL. A failed deployment raises with Serve's message."""
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run FILE` uses to apply a config

    schema = validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    deadline = time.monotonic() + timeout_s
    names = [app.name for app in schema.applications]
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        failed = [n for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise RuntimeError(f"application {failed[0]} failed to deploy: {apps[failed[0]].message}")
        if all(s == "RUNNING" for s in states.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not running after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)
    host = schema.http_options.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{schema.http_options.port}"
