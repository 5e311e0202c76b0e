"""The evaluation job through real Ray and a real loopback S3 server.

One `ray start --head` cluster (its own temp dir and ports, on 127.0.0.1) serves the whole
module: tests connect to it in-process, submit jobs to its dashboard, or run drivers in
subprocesses against it. Only that cluster is stopped at the end, by pid (never `ray stop`,
which stops every Ray on the machine).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from hrm import storage
from hrm.eval.engine import cpu_compiler

from cluster.config import load_run_config
from cluster.driver import RunFailed, execute
from cluster.manifest import read_manifest, read_unit_states
from cluster.plan import prepare
from cluster.progress import RunProgress
from cluster.results.layout import METRICS, read_predictions, run_uri
from cluster.results.metrics import read_leaderboard, read_metrics

from jobs.bench_cluster import RAY_ENV

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, evaluate_in_process, make_dataset
from tests.factories import CONFORMANCE, REPO, make_checkpoint

pytestmark = pytest.mark.ray

SUDOKU = CONFORMANCE / "hrm-sudoku-tiny"
VENV_BIN = Path(sys.executable).parent
needs_conformance = pytest.mark.skipif(
    not SUDOKU.is_dir(), reason=f"conformance vectors not found at {SUDOKU} (the shared checkout is absent)"
)


@dataclass
class LocalCluster:
    address: str  # GCS, for ray.init / RAY_ADDRESS
    dashboard: str  # job submission API
    temp_dir: str
    env: dict[str, str]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_cluster() -> LocalCluster:
    temp_dir = tempfile.mkdtemp(prefix="hrmray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dashboard, node, objects, client, agent, agent_grpc, runtime_env, metrics, dashboard_metrics = free_ports(10)
    # The venv first on PATH: job entrypoints use the PATH `ray start` ran with (docs/ray.md, "Jobs").
    # The AWS_* settings of the loopback S3 server are in os.environ already and reach every worker.
    # DASHBOARD_METRIC_PORT: otherwise every head takes the fixed 44227, and concurrent test
    # clusters (or one of ours whose free dashboard port is 44227) collide.
    env = {**os.environ, **RAY_ENV, "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "DASHBOARD_METRIC_PORT": str(dashboard_metrics)}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--node-manager-port={node}",
         f"--object-manager-port={objects}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
         f"--temp-dir={temp_dir}", "--num-cpus=4", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=180,
    )
    return LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", temp_dir, env)


def stop_cluster(cluster: LocalCluster) -> None:
    """SIGTERM the processes of this cluster only (those naming its temp dir, and their
    children), then SIGKILL what is left."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    processes = [(int(pid), int(ppid), args) for pid, ppid, args in
                 (line.split(None, 2) for line in listing.splitlines() if len(line.split(None, 2)) == 3)]
    ours = {pid for pid, _, args in processes if cluster.temp_dir in args and pid != os.getpid()}
    ours |= {pid for pid, ppid, _ in processes if ppid in ours}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(pid) for pid in ours):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    import ray

    with pytest.MonkeyPatch.context() as env:
        for key, value in RAY_ENV.items():
            env.setenv(key, value)
        env.delenv("RAY_ADDRESS", raising=False)
        local = start_cluster()
        try:
            ray.init(address=local.address, log_to_driver=False)
            yield local
        finally:
            ray.shutdown()
            stop_cluster(local)
            shutil.rmtree(local.temp_dir, ignore_errors=True)


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def sudoku_config(output: str, run_id: str, **cluster) -> dict:
    """Both conformance HRM checkpoints (same weights, plain and torch.compile'd keys) on the
    conformance Sudoku test split: 64 examples, 4 shards of 16 each."""
    return {
        "checkpoints": [{"run": str(SUDOKU / "checkpoints" / "small-fp32")},
                        {"path": str(SUDOKU / "checkpoints" / "small-fp32-compiled" / "step_1000")}],
        "dataset": {"uri": str(SUDOKU / "data")},
        "eval": {"batch_size": 16},
        "cluster": {"shard_size": 16, "torch_threads": 1, **cluster},
        "output": {"uri": output, "run_id": run_id},
    }


def load(tmp_path: Path, doc: dict, name: str = "run.yaml"):
    return load_run_config(write_config(tmp_path / name, doc))


def assert_same_as_in_process(run: str, reference: dict) -> None:
    """metrics.json and the stored predictions equal the in-process engine's, bit for bit."""
    metrics = read_metrics(run)
    assert set(metrics["checkpoints"]) == set(reference)
    for name, (stats, table) in reference.items():
        entry = metrics["checkpoints"][name]
        assert entry["stats"] == json.loads(json.dumps(stats.to_dict()))
        assert entry["metrics"] == json.loads(json.dumps(stats.finalize()))
        assert read_predictions(run, name).equals(table)


@pytest.fixture(scope="module")
def sudoku_reference(tmp_path_factory):
    if not SUDOKU.is_dir():
        pytest.skip(f"conformance vectors not found at {SUDOKU}")
    tmp = tmp_path_factory.mktemp("reference")
    prepared = prepare(load(tmp, sudoku_config(str(tmp), "reference")))
    return evaluate_in_process(prepared)


@needs_conformance
@pytest.mark.parametrize("actors", [1, 2])
def test_one_and_two_actors_give_the_in_process_engines_metrics_and_predictions(cluster, tmp_path, actors,
                                                                                 sudoku_reference):
    prepared = prepare(load(tmp_path, sudoku_config(str(tmp_path), f"actors-{actors}", actors=actors)))
    manifest = execute(prepared)
    assert manifest.status == "completed"
    assert manifest.counts == {"planned": 8, "resumed": 0, "evaluated": 8, "failed": 0, "pending": 0}
    assert manifest.scheduling["actor_instances"] == actors
    assert_same_as_in_process(prepared.run, sudoku_reference)
    # ... which is the reference implementation's own figure (conformance: within 1e-5)
    expected = json.loads((SUDOKU / "expected" / "small-fp32.metrics.json").read_text())["metrics"]["all"]
    got = read_metrics(prepared.run)["checkpoints"]["small-fp32-step_1000"]["metrics"]["all"]
    assert got["token_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-5)
    assert got["q_halt_accuracy"] == pytest.approx(expected["q_halt_accuracy"], abs=1e-5)
    assert got["lm_loss"] == pytest.approx(expected["lm_loss"], abs=1e-4)
    board = read_leaderboard(prepared.run)
    assert board.num_rows == 2 and board.column("rank").to_pylist() == [1, 2]
    # units were scheduled for locality: each checkpoint's model built once per actor at most
    assert all(1 <= c.loads <= actors for c in manifest.checkpoints)


@needs_conformance
@pytest.mark.s3
def test_a_job_submitted_to_a_ray_start_cluster_reads_and_writes_s3(cluster, tmp_path, s3_bucket, sudoku_reference):
    data, runs = f"{s3_bucket}/data/sudoku", f"{s3_bucket}/runs/small-fp32"
    for file in (SUDOKU / "data").rglob("*"):
        if file.is_file():
            storage.write_bytes_atomic(storage.join(data, str(file.relative_to(SUDOKU / "data"))), file.read_bytes())
    for file in (SUDOKU / "checkpoints" / "small-fp32").iterdir():
        storage.write_bytes_atomic(storage.join(runs, file.name), file.read_bytes())
    doc = sudoku_config(f"{s3_bucket}/results", "submitted")
    doc["checkpoints"] = [{"run": runs}]
    doc["dataset"]["uri"] = data
    doc["cluster"]["checkpoint_cache_dir"] = str(tmp_path / "cache")
    config = write_config(tmp_path / "job.yaml", doc)
    job = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
         "--", "python", "-m", "jobs.evaluate", "--config", str(config)],
        env=cluster.env, capture_output=True, text=True, timeout=300,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "completed: 4 units evaluated" in job.stdout  # the driver's progress reaches the job logs
    run = run_uri(f"{s3_bucket}/results", "submitted")
    manifest = read_manifest(run)
    assert manifest.status == "completed" and manifest.counts["evaluated"] == 4
    assert manifest.dataset["uri"] == data
    assert_same_as_in_process(run, {"small-fp32-step_1000": sudoku_reference["small-fp32-step_1000"]})


class KillingProgress(RunProgress):
    """Kills the actor that produced the first committed unit while it works on its next one,
    then kills the same actor again once Ray has restarted it: its one restart is spent, so
    the driver must replace it."""

    def __init__(self):
        super().__init__()
        self.kills: list[tuple[str, str]] = []  # (ray actor id, instance)

    def unit_done(self, record):
        super().unit_done(record)
        actor = record.actor
        first = not self.kills
        restarted = len(self.kills) == 1 and actor.actor_id == self.kills[0][0] and actor.instance != self.kills[0][1]
        if first or restarted:
            self.kills.append((actor.actor_id, actor.instance))
            os.kill(actor.pid, signal.SIGKILL)


@needs_conformance
def test_killing_actors_mid_run_still_gives_complete_identical_results(cluster, tmp_path, sudoku_reference):
    prepared = prepare(load(tmp_path, sudoku_config(str(tmp_path), "killed-actors", actors=2)))
    progress = KillingProgress()
    manifest = execute(prepared, progress)
    assert len(progress.kills) == 2
    assert manifest.status == "completed"
    assert manifest.counts["evaluated"] == 8 and manifest.counts["failed"] == 0
    assert manifest.scheduling["actor_restarts"] >= 1  # Ray restarted it once and retried its task
    assert manifest.scheduling["actor_replacements"] == 1  # then the driver replaced it
    assert any(u.attempts > 1 for u in read_unit_states(prepared.run))
    stored = storage.list_files(storage.join(prepared.run, "units"))
    assert sum(name.endswith(".json") for name in stored) == 8  # one record per unit, none twice
    assert_same_as_in_process(prepared.run, sudoku_reference)


@needs_conformance
def test_a_killed_driver_resumes_from_its_committed_units(cluster, tmp_path, sudoku_reference):
    doc = sudoku_config(str(tmp_path), "resumed", actors=1, units_in_flight=1)
    config = write_config(tmp_path / "run.yaml", doc)
    units = tmp_path / "resumed" / "units"
    driver = subprocess.Popen([sys.executable, "-m", "jobs.evaluate", "--config", str(config)],
                              env={**cluster.env, "RAY_ADDRESS": cluster.address}, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and not list(units.glob("*.json")):
            time.sleep(0.02)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    committed = len(list(units.glob("*.json")))
    assert 1 <= committed < 8, f"the driver was killed after {committed} of 8 units"
    assert not (tmp_path / "resumed" / "manifest.json").exists()

    prepared = prepare(load_run_config(config, ["cluster.actors=2"]))  # how the work is spread is no part of a unit's id
    manifest = execute(prepared)
    assert manifest.counts == {"planned": 8, "resumed": committed, "evaluated": 8 - committed, "failed": 0,
                               "pending": 0}
    assert sum(u.state == "resumed" for u in read_unit_states(prepared.run)) == committed
    assert_same_as_in_process(prepared.run, sudoku_reference)

    log = io.StringIO()
    again = execute(prepared, RunProgress(log))
    assert again.counts["resumed"] == 8 and again.counts["evaluated"] == 0
    (finished,) = [line for line in log.getvalue().splitlines() if "units evaluated" in line]
    assert "nothing left to evaluate" in finished and "examples/s" not in finished


def tiny_run(tmp_path: Path, **cluster) -> tuple[dict, Path]:
    """A synthetic dataset (40 + 24 examples) and one tiny HRM checkpoint: 5 units of 16."""
    data = make_dataset(tmp_path / "data")
    (weights,) = make_checkpoint(tmp_path / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    doc = {"checkpoints": [{"path": str(weights)}], "dataset": {"uri": data}, "eval": {"batch_size": 8},
           "cluster": {"actors": 1, "shard_size": 16, "torch_threads": 1, **cluster},
           "output": {"uri": str(tmp_path / "out"), "run_id": "tiny"}}
    return doc, weights


@pytest.mark.skipif(cpu_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_actors_compile_their_models_when_the_config_says_so_and_match_the_compiled_engine(cluster, tmp_path):
    doc, _ = tiny_run(tmp_path)
    doc["eval"]["compile"] = True
    prepared = prepare(load(tmp_path, doc))
    assert execute(prepared).status == "completed"
    assert_same_as_in_process(prepared.run, evaluate_in_process(prepared))


def test_adaptive_runs_on_one_and_two_actors_give_identical_metrics_and_predictions(cluster, tmp_path):
    # Continuous batching refills slots within a unit, so a unit's results depend only on the
    # unit, never on which actor ran it or what ran beside it.
    data = make_dataset(tmp_path / "data")
    (weights,) = make_checkpoint(tmp_path / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS,
                                 q_scale=0.3, halt_max_steps=6)
    runs = {}
    for actors in (1, 2):
        doc = {"checkpoints": [{"path": str(weights)}], "dataset": {"uri": data},
               "eval": {"protocol": "adaptive", "batch_size": 8},
               "cluster": {"actors": actors, "shard_size": 16, "torch_threads": 1},
               "output": {"uri": str(tmp_path / "out"), "run_id": f"actors-{actors}"}}
        prepared = prepare(load(tmp_path, doc, f"run-{actors}.yaml"))
        assert execute(prepared).scheduling["actor_instances"] == actors
        runs[actors] = prepared.run
    (name,) = read_metrics(runs[1])["checkpoints"]
    one, two = (read_metrics(runs[n])["checkpoints"][name] for n in (1, 2))
    assert one["stats"] == two["stats"] and one["metrics"] == two["metrics"]
    predictions = read_predictions(runs[1], name)
    assert predictions.equals(read_predictions(runs[2], name))
    steps = set(predictions.column("steps").to_pylist())
    assert len(steps) > 1 and max(steps) <= 6  # halting really varied


def test_a_unit_that_keeps_failing_fails_the_run_and_the_manifest_names_it(cluster, tmp_path):
    doc, _ = tiny_run(tmp_path, max_attempts=2)
    prepared = prepare(load(tmp_path, doc))
    # The data changes under the planned run: units past example 16 of `easy` now fail on every try.
    shutil.rmtree(tmp_path / "data")
    make_dataset(tmp_path / "data", {"easy": 16, "hard": 24})
    with pytest.raises(RunFailed) as err:
        execute(prepared)
    manifest = read_manifest(prepared.run)
    assert manifest == err.value.manifest
    assert manifest.status == "failed"
    failed = next(u for u in read_unit_states(prepared.run) if u.id == manifest.failed_unit)
    assert (failed.set, failed.state, failed.attempts) == ("easy", "failed", 2) and failed.start >= 16
    assert "failed 2 times" in manifest.error and "IndexError" in manifest.error and failed.id in manifest.error
    assert "IndexError" in failed.error
    assert not storage.exists(storage.join(prepared.run, METRICS))  # no half-finished figures
    report = storage.read_bytes(storage.join(prepared.run, "report.md")).decode()
    assert "**PARTIAL** — the run failed" in report  # what it committed, marked so


def test_bad_weights_fail_their_checkpoint_at_once_without_retrying(cluster, tmp_path):
    doc, weights = tiny_run(tmp_path, max_attempts=3)
    state = torch.load(weights, weights_only=True)
    key = next(k for k in state if k.endswith("lm_head.weight"))
    state[key][0, 0] = float("nan")  # shapes fine (preflight reads headers only); the actor's load checks values
    torch.save(state, weights)
    prepared = prepare(load(tmp_path, doc))
    with pytest.raises(RunFailed, match="NaN"):
        execute(prepared)
    manifest = read_manifest(prepared.run)
    assert manifest.status == "failed" and "NaN" in manifest.checkpoints[0].error
    states = read_unit_states(prepared.run)
    assert {u.state for u in states} == {"failed"} and all("NaN" in u.error for u in states)
    assert max(u.attempts for u in states) == 1  # bad bytes do not get better: no retry
    assert "**PARTIAL** — the run failed" in storage.read_bytes(storage.join(prepared.run, "report.md")).decode()


# --------------------------------------------------------------------------- before Ray starts


def hrm_eval(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_an_invalid_config_fails_naming_the_key_before_ray_starts(tmp_path):
    doc = {"checkpoints": [{"path": "x"}], "dataset": {"uri": "d"}, "eval": {"batch_sise": 8},
           "cluster": {"actors": 0}}
    done = hrm_eval("run", str(write_config(tmp_path / "bad.yaml", doc)), "--set", "eval.protocol=greedy")
    assert done.returncode == 2
    assert "eval.batch_sise: unknown key" in done.stderr
    assert "cluster.actors" in done.stderr and "eval.protocol" in done.stderr
    assert "Started a local Ray" not in done.stdout + done.stderr


def test_preflight_reports_every_problem_at_once_before_ray_starts(tmp_path):
    data = make_dataset(tmp_path / "data")
    wrong = make_checkpoint(tmp_path / "wrong", vocab_size=5, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)[0]
    doc = {"checkpoints": [{"path": str(wrong)}, {"run": str(tmp_path / "missing")}],
           "dataset": {"uri": data, "sets": ["easy", "nightmare"]}, "output": {"uri": str(tmp_path / "out")}}
    done = hrm_eval("run", str(write_config(tmp_path / "run.yaml", doc)))
    assert done.returncode == 2
    assert "preflight found 3 problem(s)" in done.stderr
    assert "nightmare" in done.stderr and "embed_tokens.embedding_weight" in done.stderr and "missing" in done.stderr
    assert "Started a local Ray" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()
