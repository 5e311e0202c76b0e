"""infra/: the manifests parse, run an entrypoint module and a config that exist, ask for GPUs,
and agree with each other and pyproject.toml on the image and the Ray version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.factories import REPO

ROOT = REPO
INFRA = ROOT / "infra"
YAMLS = sorted(INFRA.rglob("*.yaml"))
TEXTS = [*YAMLS, INFRA / "README.md", INFRA / "docker" / "Dockerfile"]
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
LAUNCHER = INFRA / "cluster-launcher" / "aws-gpu.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"


def ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("ray")]
    return pin.split("==")[1]


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def cluster_specs() -> list[tuple[str, dict]]:
    return [("rayjob", docs(RAYJOB)[0]["spec"]["rayClusterSpec"]), ("raycluster", docs(RAYCLUSTER)[0]["spec"])]


def test_the_infra_files_the_issue_asks_for_exist():
    assert all(p.is_file() for p in (RAYJOB, LAUNCHER, DOCKERFILE, INFRA / "README.md"))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_infra_yaml_parses(path):
    assert docs(path)


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_every_python_module_and_config_named_in_infra_exists(path):
    text = path.read_text()
    for module in re.findall(r"python -m ([\w.]+)", text):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{path.name}: no module {module}"
    for config in re.findall(r"--config\s+(\S+\.yaml)", text):
        relative = config.removeprefix("/app/")  # the image's WORKDIR holds the checkout's configs/
        assert relative.startswith("configs/") and (ROOT / relative).is_file(), f"{path.name}: no {config}"


def test_the_rayjob_runs_jobs_evaluate_on_a_config_and_deletes_its_cluster_afterwards():
    (job,) = docs(RAYJOB)
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert re.fullmatch(r"python -m jobs\.evaluate --config \S*configs/[\w.-]+\.yaml", job["spec"]["entrypoint"])
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_workers_get_gpus_the_image_ray_version_and_s3_credentials_from_a_secret(name, spec):
    assert spec["rayVersion"] == ray_pin()
    (group,) = spec["workerGroupSpecs"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = group["template"]["spec"]["containers"][0]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in (head, worker):
        assert container["image"] == image_tag()
        env = {e["name"]: e for e in container["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_the_cluster_launcher_has_a_head_gpu_workers_the_image_and_installs_the_project():
    (launcher,) = docs(LAUNCHER)
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    gpu_types = [t for name, t in types.items() if name != launcher["head_node_type"]]
    assert gpu_types and all(re.match(r"(g\d|p\d)", t["node_config"]["InstanceType"]) for t in gpu_types)
    assert sum(t["max_workers"] for t in gpu_types) >= launcher["max_workers"]
    assert launcher["docker"]["image"] == image_tag()
    setup = " ".join(launcher["setup_commands"])
    assert f'"ray[default]=={ray_pin()}"' in setup and "pip install" in setup and "~/hrm-eval" in setup
    assert "--cpu" not in setup and "[cpu]" not in setup


def image_tag() -> str:
    """The tag the Dockerfile's build command gives the image."""
    (tag,) = re.findall(r"docker build -f infra/docker/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    return tag


def test_the_dockerfile_builds_on_cuda_with_python_3_11_and_installs_the_project_with_cuda_torch():
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#"))
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    assert "python3.11 -m venv" in text and "ENV PATH=/opt/venv/bin:$PATH" in text
    (install,) = [line for line in text.splitlines() if "pip install --no-cache-dir" in line and "ray" in line]
    assert install.rstrip().endswith(" .") and f'"ray[default]=={ray_pin()}"' in install
    assert "[cpu]" not in text and "whl/cpu" not in text  # the CPU wheel would leave the GPUs idle
    for package in ("hrm", "cluster", "jobs", "configs"):
        assert re.search(rf"^COPY {package} {package}$", text, re.MULTILINE), f"the image lacks {package}/"
