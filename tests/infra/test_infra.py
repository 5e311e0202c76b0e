"""infra/: the manifests parse, run an entrypoint module and a config that exist, ask for GPUs,
and agree with each other and pyproject.toml on the image and the Ray version."""

from __future__ import annotations

import json
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
    """The Ray release pyproject.toml's range allows (one minor release: >=2.60,<2.61) as 2.60.0."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("ray")]
    (low, high) = re.fullmatch(r"ray\[default\]>=(\d+\.\d+),<(\d+\.\d+)", pin).groups()
    major, minor = low.split(".")
    assert high == f"{major}.{int(minor) + 1}", f"{pin}: the range spans more than the tested minor release"
    return f"{low}.0"


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
        if config.startswith("/etc/hrm-eval/"):
            continue  # the RayJob's ConfigMap, checked by its own test
        relative = config.removeprefix("/app/")  # the image's WORKDIR holds the checkout's configs/
        assert relative.startswith("configs/") and (ROOT / relative).is_file(), f"{path.name}: no {config}"


def test_the_rayjob_runs_jobs_evaluate_on_a_config_and_deletes_its_cluster_afterwards():
    job = docs(RAYJOB)[0]
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert re.fullmatch(r"python -m jobs\.evaluate --config \S+\.yaml", job["spec"]["entrypoint"])
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
    assert re.search(r"^RUN pip install --no-cache-dir --no-deps \.$", text, re.MULTILINE)
    assert f'"ray[default]=={ray_pin()}"' in text
    assert "[cpu]" not in text and "whl/cpu" not in text  # the CPU wheel would leave the GPUs idle
    for package in ("hrm", "cluster", "jobs", "configs"):
        assert re.search(rf"^COPY {package} {package}$", text, re.MULTILINE), f"the image lacks {package}/"


# --- issue 16, item 3 -------------------------------------------------------------------------

SCHEMA = Path(__file__).with_name("kuberay_schema.json")


def rayjob_and_configmap() -> tuple[dict, dict]:
    by_kind = {d["kind"]: d for d in docs(RAYJOB)}
    return by_kind["RayJob"], by_kind["ConfigMap"]


def test_the_rayjob_validates_against_the_kuberay_crd_fields_we_rely_on():
    import jsonschema  # a dependency of ray
    job, _ = rayjob_and_configmap()
    jsonschema.validate(job, json.loads(SCHEMA.read_text()))
    spec = job["spec"]
    assert "backoffLimit" in spec and "workerGroupSpecs" in spec["rayClusterSpec"]
    assert "runtimeEnvYAML" in spec or any(
        "configMap" in v for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_clusters_autoscale_their_gpu_group(name, spec):
    assert spec["enableInTreeAutoscaling"] is True and "autoscalerOptions" in spec
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"]


def test_the_rayjob_mounts_its_run_config_from_a_configmap_on_the_head():
    job, configmap = rayjob_and_configmap()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in head["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    (config,) = re.findall(r"--config (\S+)", job["spec"]["entrypoint"])
    directory, key = config.rsplit("/", 1)
    assert directory == mount["mountPath"] and key in configmap["data"]


def test_the_rayjobs_run_config_pins_its_run_id_waits_for_nodes_and_matches_the_gpu_group(tmp_path):
    from cluster.config import load_run_config

    job, configmap = rayjob_and_configmap()
    (key,) = configmap["data"]
    (tmp_path / key).write_text(configmap["data"][key])
    config = load_run_config(tmp_path / key)
    assert config.output.run_id, "retries (backoffLimit) resume only a pinned run_id"
    assert job["spec"]["backoffLimit"] >= 1
    assert config.cluster.wait_for_nodes is True
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert config.cluster.gpus_per_actor == 1 and int(
        group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert (group["minReplicas"], group["maxReplicas"]) == (config.cluster.actors.min, config.cluster.actors.max)


def test_the_dockerfile_cuda_base_and_the_torch_index_are_the_same_cuda_release():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-", text, re.MULTILINE)
    (index,) = re.findall(r"download\.pytorch\.org/whl/cu(\d+)", text)
    assert index == "".join(base), f"CUDA {'.'.join(base)} base image, torch from cu{index}"
    (torch_pin,) = set(re.findall(r'"torch==([\d.]+)"', text))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"torch=={torch_pin}" in extras["cpu"], "the image's torch is not the [cpu] extra's version"


def test_the_dockerfile_installs_dependencies_before_copying_the_source():
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    first_source = min(i for i, line in enumerate(lines) if re.match(r"COPY (hrm|cluster|jobs|configs) ", line))
    pyproject = next(i for i, line in enumerate(lines) if line.startswith("COPY pyproject.toml"))
    dependencies = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    assert pyproject < dependencies < first_source


def test_the_docker_build_context_leaves_out_the_venv_outputs_and_git():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "demo-work", "results", ".git"} <= ignored


def test_the_cluster_launcher_does_not_sync_the_venv_and_raises_the_open_files_limit():
    (launcher,) = docs(LAUNCHER)
    excluded = launcher.get("rsync_exclude", [])
    assert any(".venv" in pattern for pattern in excluded)
    assert any("demo-work" in p for p in excluded) and any("results" in p for p in excluded)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in launcher[key] if "ray start" in c]
        assert re.match(r"ulimit -n \d+;", start), f"{key}: no ulimit -n before ray start"


def test_boto3_is_a_test_dependency_and_not_imported_by_product_modules_at_load_time():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("boto3") for d in project["dependencies"])
    assert any(d.startswith("boto3") for d in project["optional-dependencies"]["test"])
    for package in ("hrm", "cluster", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            assert not re.search(r"^(import boto3|from boto3)", path.read_text(), re.MULTILINE), path
