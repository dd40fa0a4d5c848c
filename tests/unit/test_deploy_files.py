"""The deploy files (deploy/): the fields framefleet's Ray engine relies on are there and agree.

Cheap checks on the files only: nothing is built, started or contacted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = [DEPLOY / "ray" / "azure.yaml", DEPLOY / "ray" / "aws.yaml"]
RAYCLUSTER = DEPLOY / "kubernetes" / "raycluster.yaml"
RAYJOB = DEPLOY / "kubernetes" / "rayjob.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SHARED_PATH = "/data"


def _documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _one(path: Path, kind: str) -> dict:
    found = [doc for doc in _documents(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def _launcher(path: Path) -> dict:
    (config,) = _documents(path)
    return config


def _dockerfile_ray_version() -> str:
    match = re.search(r"^ARG RAY_VERSION=(\S+)\s*$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "deploy/Dockerfile has no `ARG RAY_VERSION=...`"
    return match.group(1)


def _ray_requirement() -> str | None:
    """The `ray` requirement of pyproject.toml's `ray` extra, or None while the extra does not exist."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project.get("optional-dependencies", {}).get("ray")
    if extra is None:
        return None
    rays = [req for req in extra if re.match(r"ray\s*(\[|[<>=!~;]|$)", req)]
    assert len(rays) == 1, f"pyproject.toml's `ray` extra should name ray once: {extra}"
    return rays[0]


def _cpu_quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _pods(cluster: dict) -> list[tuple[str, dict, dict]]:
    """(group name, rayStartParams, pod spec) for the head and every worker group."""
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    pods = [("head", head.get("rayStartParams") or {}, head["template"]["spec"])]
    for group in spec["workerGroupSpecs"]:
        pods.append((group["groupName"], group.get("rayStartParams") or {}, group["template"]["spec"]))
    return pods


def _ray_container(pod: dict) -> dict:
    return pod["containers"][0]


# -- every file ----------------------------------------------------------------------------------------


def test_every_deploy_yaml_loads():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert set(LAUNCHER_CONFIGS) | {RAYCLUSTER, RAYJOB} <= set(files)
    for path in files:
        docs = _documents(path)
        assert docs, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in docs), f"{path}: every document should be a mapping"


# -- Ray cluster launcher ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.stem)
def test_launcher_node_types(path):
    config = _launcher(path)
    assert isinstance(config["max_workers"], int) and config["max_workers"] > 0
    assert config.get("idle_timeout_minutes", 0) > 0
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert head in types
    workers = {name: t for name, t in types.items() if name != head}
    cpu = [t for t in workers.values() if t["resources"].get("CPU", 0) > 0 and not t["resources"].get("GPU")]
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) > 0]
    assert cpu, f"{path.name}: no CPU worker type"
    assert gpu, f"{path.name}: no GPU worker type"
    for node_type in workers.values():
        assert node_type["min_workers"] == 0, "workers scale from zero"
        assert 0 < node_type["max_workers"] <= config["max_workers"]
        assert node_type["resources"]["CPU"] > 0, "framefleet's workers reserve CPUs"
    for node_type in gpu:
        assert node_type["resources"]["CPU"] >= 1, "a GPU worker reserves a CPU too"


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.stem)
def test_launcher_docker_image_and_shared_volume(path):
    config = _launcher(path)
    docker = config["docker"]
    assert "framefleet" in docker["image"]
    run_options = " ".join(docker.get("run_options", []))
    assert re.search(rf"(-v|--volume)[ =]\S+:{SHARED_PATH}(\s|:|$)", run_options), \
        f"{path.name}: every container should mount the shared storage at {SHARED_PATH}"
    types = config["available_node_types"]
    for name, node_type in types.items():
        if node_type["resources"].get("GPU"):
            default = docker.get("worker_image", docker["image"])
            image = node_type.get("docker", {}).get("worker_image", default)
            assert "framefleet" in image and "gpu" in image, f"{name}: GPU workers need the -gpu image"


def test_azure_workers_are_spot():
    config = _launcher(DEPLOY / "ray" / "azure.yaml")
    assert config["provider"]["type"] == "azure"
    types = config["available_node_types"]
    assert "priority" not in types[config["head_node_type"]]["node_config"]["azure_arm_parameters"], \
        "the head (driver, ledger) should be on-demand"
    for name, node_type in types.items():
        if name == config["head_node_type"]:
            continue
        arm = node_type["node_config"]["azure_arm_parameters"]
        assert arm["priority"] == "Spot", name
        assert arm["evictionPolicy"] in ("Delete", "Deallocate"), name
        assert arm["billingProfile"]["maxPrice"] == -1, name
        assert arm["vmSize"]


def test_aws_workers_are_spot():
    config = _launcher(DEPLOY / "ray" / "aws.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert "InstanceMarketOptions" not in types[config["head_node_type"]]["node_config"], \
        "the head (driver, ledger) should be on-demand"
    for name, node_type in types.items():
        if name == config["head_node_type"]:
            continue
        node_config = node_type["node_config"]
        assert node_config["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert node_config["InstanceType"]


@pytest.mark.ray  # runs with the ray extra installed (make test-ray)
@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.stem)
def test_launcher_config_passes_rays_own_validation(path):
    """Ray's schema and config preparation (offline: no cloud is contacted)."""
    pytest.importorskip("ray.autoscaler")
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_launcher(path)))


# -- KubeRay -------------------------------------------------------------------------------------------


def test_raycluster_autoscales_from_zero():
    cluster = _one(RAYCLUSTER, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 2
    for group in groups:
        assert group["minReplicas"] == 0, group["groupName"]
        assert group.get("replicas", 0) == 0, group["groupName"]
        assert group["maxReplicas"] > 0, group["groupName"]
        assert "framefleet" in _ray_container(group["template"]["spec"])["image"]


def test_raycluster_gpu_group_requests_gpus():
    cluster = _one(RAYCLUSTER, "RayCluster")
    def limits(group: dict) -> dict:
        return _ray_container(group["template"]["spec"]).get("resources", {}).get("limits", {})

    gpu = [g for g in cluster["spec"]["workerGroupSpecs"] if "nvidia.com/gpu" in limits(g)]
    cpu = [g for g in cluster["spec"]["workerGroupSpecs"] if g not in gpu]
    assert gpu, "no worker group with nvidia.com/gpu limits"
    assert cpu, "no CPU-only worker group"
    for group in gpu:
        container = _ray_container(group["template"]["spec"])
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert "gpu" in container["image"], "GPU workers need the -gpu image"


def test_raycluster_ray_resources_match_container_limits():
    cluster = _one(RAYCLUSTER, "RayCluster")
    for name, params, pod in _pods(cluster):
        assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams values are strings"
        limits = _ray_container(pod)["resources"]["limits"]
        requests = _ray_container(pod)["resources"].get("requests", {})
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert int(params.get("num-gpus", "0")) == gpus, f"{name}: num-gpus should equal the GPU limit"
        if gpus:
            assert int(requests.get("nvidia.com/gpu", gpus)) == gpus
        cpus = float(params["num-cpus"])
        if name == "head":
            # The head may declare fewer CPUs than it has (0 keeps framefleet's workers off it).
            assert cpus <= _cpu_quantity(limits["cpu"])
        else:
            assert cpus == _cpu_quantity(limits["cpu"]), f"{name}: num-cpus should equal the CPU limit"


def test_every_pod_mounts_the_shared_volume_at_the_same_path():
    docs = _documents(RAYCLUSTER)
    claims = {doc["metadata"]["name"] for doc in docs if doc.get("kind") == "PersistentVolumeClaim"}
    for doc in docs:
        if doc.get("kind") == "PersistentVolumeClaim":
            assert "ReadWriteMany" in doc["spec"]["accessModes"]
    cluster = _one(RAYCLUSTER, "RayCluster")
    paths = set()
    for name, _, pod in _pods(cluster):
        shared = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        assert shared, f"{name}: no PersistentVolumeClaim volume"
        mounts = [m for m in _ray_container(pod).get("volumeMounts", []) if m["name"] in shared]
        assert len(mounts) == 1, f"{name}: mount the shared volume once"
        assert shared[mounts[0]["name"]] in claims | {"framefleet-data"}
        paths.add((shared[mounts[0]["name"]], mounts[0]["mountPath"]))
    assert paths == {("framefleet-data", SHARED_PATH)}, paths


def test_rayjob_runs_framefleet_on_the_raycluster():
    job = _one(RAYJOB, "RayJob")
    cluster = _one(RAYCLUSTER, "RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint.startswith("framefleet run ")
    assert "--engine ray" in entrypoint and "--ray-address auto" in entrypoint
    assert re.search(r"--workers \d+", entrypoint), "a cluster scaled to zero needs --workers"
    assert f" {SHARED_PATH}/" in entrypoint
    selector = job["spec"].get("clusterSelector")
    if selector is not None:
        assert selector["ray.io/cluster"] == cluster["metadata"]["name"]
        assert not job["spec"].get("shutdownAfterJobFinishes"), "never delete a shared cluster"


# -- image and versions --------------------------------------------------------------------------------


def test_dockerfile_installs_framefleet_with_the_ray_object_store_and_faces_extras():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11|^ARG PYTHON_IMAGE=python:3\.11", text, re.MULTILINE)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S*cudnn-runtime", text, re.MULTILINE)
    assert re.search(r"^ARG VARIANT=cpu$", text, re.MULTILINE)
    assert re.search(r"extras=ray,azure,s3,gcs,faces;", text)  # OpenVINO comes with the base install
    assert re.search(r"extras=ray,azure,s3,gcs,faces,gpu;", text)
    assert re.search(r'pip install "/tmp/framefleet\[\$\{extras\}\]"', text)
    assert re.search(r'"ray\[default\]==\$\{RAY_VERSION\}"', text)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image should run as a non-root user"


def test_ray_version_is_the_same_everywhere():
    pinned = _dockerfile_ray_version()
    requirement = _ray_requirement()
    assert requirement is not None, "pyproject.toml should have a `ray` extra"
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    assert "default" in req.extras, "the `ray` extra should install ray[default] (dashboard, job CLI)"
    assert req.specifier.contains(pinned), f"deploy/Dockerfile pins ray {pinned}; pyproject says {req}"
    exact = [s.version for s in req.specifier if s.operator == "=="]
    if exact:
        assert pinned == exact[0]
    assert _one(RAYCLUSTER, "RayCluster")["spec"]["rayVersion"] == pinned

