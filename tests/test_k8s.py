"""k8s/: the RayService manifest against KubeRay's CRD schema (k8s/schemas/), with no field the API
server would silently drop; serveConfigV2 equal to the GPU serve config; the PodMonitor, the Dockerfile
and the resources agreeing with the serve config and with each other."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from deployments.config import read_config, shipped_config, tta_application, validate

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRD = K8S / "schemas" / "ray.io_rayservices.yaml"


@pytest.fixture(scope="module")
def rayservice_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    assert version["name"] == "v1"
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load((K8S / "rayservice.yaml").read_text())


def unknown_fields(doc, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not declare (kubectl --validate=strict refuses them; a plain apply
    prunes them without a word, so a typo like `minReplica` would silently do nothing)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(doc, dict) and "properties" in schema:
        for key, value in doc.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(doc, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in doc.items():
            found += unknown_fields(value, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(doc, list) and "items" in schema:
        for i, value in enumerate(doc):
            found += unknown_fields(value, schema["items"], f"{path}[{i}]")
    return found


def pod_templates(rayservice: dict) -> dict[str, dict]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    return {name: g["template"] for name, g in groups.items()}


def test_rayservice_matches_the_kuberay_crd_schema(rayservice, rayservice_schema):
    jsonschema.Draft7Validator(rayservice_schema).validate(rayservice)
    assert unknown_fields(rayservice, rayservice_schema) == []
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True


def test_the_strict_check_catches_a_misspelt_field(rayservice, rayservice_schema):
    import copy

    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resource"] = {}
    assert sorted(unknown_fields(broken, rayservice_schema)) == [
        ".spec.rayClusterConfig.workerGroupSpecs[0].minReplica",
        ".spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].resource",
    ]
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError, match="'eight' is not of type 'integer'"):
        jsonschema.Draft7Validator(rayservice_schema).validate(broken)


def test_serve_config_v2_is_the_gpu_serve_config(rayservice):
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded == read_config(shipped_config("gpu")), "copy deployments/configs/serve-gpu.yaml into serveConfigV2 (or the reverse)"
    validate(embedded)


def test_a_gpu_worker_holds_one_replica_of_each_gpu_deployment(rayservice):
    options = {d["name"]: d.get("ray_actor_options", {}) for d in tta_application(read_config(shipped_config("gpu")))["deployments"]}
    (gpu_group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (container,) = gpu_group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert float(limits["nvidia.com/gpu"]) >= sum(o.get("num_gpus", 0) for o in options.values())
    assert float(limits["cpu"]) >= sum(o.get("num_cpus", 1) for o in options.values())
    assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"], "GPUs cannot be overcommitted"
    assert gpu_group["minReplicas"] >= 1 and gpu_group["maxReplicas"] > gpu_group["minReplicas"]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no replica on the head"


def test_checkpoint_paths_are_on_the_models_volume_of_every_pod(rayservice):
    args = tta_application(read_config(shipped_config("gpu")))["args"]
    for name, template in pod_templates(rayservice).items():
        mounts = {m["mountPath"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])}
        for key in ("checkpoint", "reward_checkpoint", "rewriter_checkpoint"):
            assert any(args[key].startswith(m + "/") for m in mounts), f"{name}: {args[key]} is on no mounted volume"
        env = {e["name"]: e.get("value") for c in template["spec"]["containers"] for e in c.get("env", [])}
        assert env.get("HF_HUB_OFFLINE") == "1", f"{name}: nothing may download weights"


def test_podmonitor_scrapes_every_pod_on_rays_metrics_port(rayservice):
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    start_params = [cluster["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in cluster["workerGroupSpecs"])]
    for (name, template), params in zip(pod_templates(rayservice).items(), start_params):
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"the PodMonitor does not select the {name} pods"
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert ports[endpoint["port"]] == int(params["metrics-export-port"]), f"{name}: the scraped port is not Ray's metrics port"


def test_dockerfile_ray_matches_the_pinned_ray_and_the_manifest(rayservice):
    dockerfile = (K8S / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+?)-py(\d)(\d+)-gpu$", dockerfile, re.M)
    assert base, "base image must be rayproject/ray:<version>-py<python>-gpu"
    pinned = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert base.group(1) == pinned == rayservice["spec"]["rayClusterConfig"]["rayVersion"]
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert f"torch=={torch_pin} " in dockerfile and "+" not in torch_pin, "the image installs the CUDA build of the pinned torch"
    images = {c["image"] for t in pod_templates(rayservice).values() for c in t["spec"]["containers"]}
    assert len(images) == 1, f"head and workers must run one image: {images}"
    for package in ("tta", "services", "deployments", "training", "clients"):
        assert f"COPY --chown=ray:users {package} {package}" in dockerfile, f"the image lacks {package}/"


def test_vendored_crd_is_the_shared_copy_when_present():
    shared = ROOT.parent / "shared" / "k8s-schemas" / CRD.name
    if not shared.exists():
        pytest.skip("no ../shared/k8s-schemas next to this checkout (a fresh clone elsewhere)")
    assert shared.read_bytes() == CRD.read_bytes()
