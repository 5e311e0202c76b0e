"""`python -m jobs.bench faults`: the fault matrix. A small sweep is run again and again as
`hrm-eval run` on an embedded Ray, each time with something killed part-way, and every trial's
results are checked against a clean run: no unit lost, none counted twice, metrics identical.

Trials (`--repeats` of each fraction of committed units):
- `actor`: one evaluation actor SIGKILLed; Ray restarts it, or the driver replaces it.
- `actors`: every actor SIGKILLed at once.
- `driver`: the driver's process group SIGKILLed (the driver, and the embedded Ray it started;
  its workers die with it), then the same command run again: it must resume.
- `finishing`: as `driver`, once every unit is committed, while the driver writes votes,
  metrics and the manifest.

A trial is read back from what the run stored: units lost (planned, not committed), units
doubled (predictions rows per example above one), and whether every checkpoint's exact
statistics equal the clean run's. Kills are found from outside: committed unit records are
counted under the run's units/, actor processes are the `ray::Evaluator` ones of the run's
session.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from jobs.bench_cluster import make_checkpoints, make_data, spawn_run
from jobs.bench_scale import TINY_ARCH

KINDS = ("actor", "actors", "driver", "finishing")
FRACTIONS = {"actor": (0.1, 0.3, 0.5, 0.7, 0.9), "actors": (0.25, 0.5, 0.75), "driver": (0.1, 0.3, 0.5, 0.7, 0.9),
             "finishing": (1.0,)}
POLL_S = 0.05
TRIAL_TIMEOUT_S = 600


@dataclass
class Trial:
    kind: str
    fraction: float
    killed: int  # processes killed
    committed_at_kill: int
    reruns: int
    status: str
    lost: int
    doubled: int
    identical: bool
    seconds: float


def configure_faults(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeats", type=int, default=2, help="trials per kind and fraction (finishing: this many)")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="fractions of committed units to kill at, instead of each kind's own (not finishing)")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the data is made")


def run_faults(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-faults-", dir=args.tmp))
    data = make_data(work / "data", args.examples)
    checkpoints = make_checkpoints(work / "ckpt", args.checkpoints, TINY_ARCH)
    clean_config = write_config(work, "clean", data, checkpoints[0].parent, args.shard_size)
    kill_session(run_to_end(clean_config))
    clean = read_run(work / "results" / "clean")
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "units": clean["units"], "trials": []}
    print(f"clean run: {clean['units']} units of {args.checkpoints} checkpoints × {args.examples} examples", flush=True)
    for kind in args.kinds:
        for fraction in FRACTIONS[kind] if args.fractions is None or kind == "finishing" else args.fractions:
            for repeat in range(args.repeats):
                run_id = f"{kind}-{int(100 * fraction)}-{repeat}"
                config = write_config(work, run_id, data, checkpoints[0].parent, args.shard_size)
                trial = run_trial(kind, fraction, config, work / "results" / run_id, clean)
                report["trials"].append(asdict(trial))
                print(format_trial(trial), flush=True)
    trials = report["trials"]
    report["summary"] = {"trials": len(trials), "lost": sum(t["lost"] for t in trials),
                         "doubled": sum(t["doubled"] for t in trials),
                         "identical": sum(t["identical"] for t in trials),
                         "completed": sum(t["status"] == "completed" for t in trials)}
    s = report["summary"]
    print(f"{s['trials']} trials: {s['lost']} units lost, {s['doubled']} doubled, metrics identical in "
          f"{s['identical']}, completed {s['completed']}")
    return report


def write_config(work: Path, run_id: str, data: str, run_dir: Path, shard_size: int) -> Path:
    path = work / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump({
        "checkpoints": [{"run": str(run_dir)}], "dataset": {"uri": data},
        "cluster": {"actors": 2, "torch_threads": 1, "shard_size": shard_size},
        "output": {"uri": str(work / "results"), "run_id": run_id}}))
    return path


def start_run(config: Path) -> subprocess.Popen:
    """`hrm-eval run CONFIG` in a session of its own, so the driver and the Ray it starts can be
    found and killed together."""
    return spawn_run(config, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_to_end(config: Path) -> subprocess.Popen:
    process = start_run(config)
    process.wait(TRIAL_TIMEOUT_S)
    return process


def kill_session(process: subprocess.Popen) -> None:
    """Whatever of the run's session is left (Ray's own processes, its workers) is killed."""
    for pid, _ in session_processes(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_trial(kind: str, fraction: float, config: Path, run: Path, clean: dict[str, Any]) -> Trial:
    started = time.perf_counter()
    process = start_run(config)
    target = max(1, round(fraction * clean["units"])) if kind != "finishing" else clean["units"]
    committed = wait_for_commits(run, target, process)
    killed, reruns = 0, 0
    if process.poll() is None:
        if kind in ("actor", "actors"):
            actors = evaluator_pids(process.pid)
            for pid in actors[:1] if kind == "actor" else actors:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            process.wait(TRIAL_TIMEOUT_S)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(TRIAL_TIMEOUT_S)
            killed, reruns = 1, 1
            kill_session(run_to_end(config))
    kill_session(process)
    stored = read_run(run)
    return Trial(kind=kind, fraction=fraction, killed=killed, committed_at_kill=committed, reruns=reruns,
                 status=stored["status"], lost=clean["units"] - stored["units"], doubled=stored["doubled"],
                 identical=stored["stats"] == clean["stats"], seconds=time.perf_counter() - started)


def wait_for_commits(run: Path, target: int, process: subprocess.Popen) -> int:
    """Block until `target` unit records are committed under the run (or the run ended)."""
    while process.poll() is None:
        committed = committed_records(run)
        if committed >= target:
            return committed
        time.sleep(POLL_S)
    return committed_records(run)


def committed_records(run: Path) -> int:
    units = run / "units"
    return sum(1 for p in units.glob("*.json")) if units.is_dir() else 0


def evaluator_pids(session: int) -> list[int]:
    """The run's evaluation actors: `ray::Evaluator` processes of the run's session."""
    return [pid for pid, title in session_processes(session) if title.startswith(b"ray::Evaluator")]


def session_processes(session: int) -> list[tuple[int, bytes]]:
    """(pid, process title) of every process in a session: the driver started it, and Ray's
    processes and workers stay in it (workers get process groups of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")[0]))
        except OSError:
            continue  # gone meanwhile
    return sorted(found)


def read_run(run: Path) -> dict[str, Any]:
    """What a run stored: its status, committed units, rows of predictions per example beyond
    the first (doubled), and every checkpoint's exact statistics."""
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    table = pq.read_table(run / "predictions", columns=["checkpoint", "set", "example_id"])
    rows = Counter(zip(*(table.column(c).to_pylist() for c in ("checkpoint", "set", "example_id"))))
    committed = manifest.get("counts", {})
    return {"status": manifest.get("status", "no manifest"),
            "units": committed.get("resumed", 0) + committed.get("evaluated", 0),
            "doubled": sum(n - 1 for n in rows.values()),
            "stats": {name: c["stats"] for name, c in metrics.get("checkpoints", {}).items()}}


def format_trial(t: Trial) -> str:
    return (f"{t.kind:<9} at {100 * t.fraction:3.0f}%: killed {t.killed} after {t.committed_at_kill} commits, "
            f"{t.reruns} rerun(s) → {t.status}; lost {t.lost}, doubled {t.doubled}, metrics "
            f"{'identical' if t.identical else 'DIFFERENT'} ({t.seconds:.0f} s)")
