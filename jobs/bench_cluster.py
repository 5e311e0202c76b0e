"""`python -m jobs.bench cluster`: the Ray path against the in-process engine, on this machine.

1. Throughput: one checkpoint over a dataset sized so the in-process engine takes at least
   `--engine-seconds`. The engine runs with all `--actors` cores as torch threads; the run
   uses `--actors` actors of one thread each (what a run on this box does). Reported: the
   run's steady-state examples/s (between its first and last unit commits), its whole-run
   examples/s (Ray start, actor start and model load included), and the fixed start-up cost
   (Ray start + time to the first committed unit, less that unit's own work) separately.
2. Sweep: `--sweep-checkpoints` checkpoints × `--sweep-shards` shards with `--actors` actors:
   model loads per checkpoint, and the run's evaluation time against the ideal (the total
   one-thread engine time of all checkpoints / actors).

Every figure is measured in the run that prints it; the load average is recorded before and
after, because a busy machine shows up directly in these figures.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.checkpoint.loading import ARCH_FAMILIES, ArchSpec, build_checked_model, load_checkpoint, save_checkpoint
from hrm.data.reader import open_dataset
from hrm.data.schema import DatasetMetadata, DatasetSizes, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.eval.engine import Engine
from hrm.model.models import build_model

from cluster.config import RunConfig
from cluster.driver import execute
from cluster.plan import prepare
from cluster.progress import RunProgress

from jobs.bench_models import arch_section

VOCAB, SEQ_LEN = 11, 81  # Sudoku-shaped
SIZES = DatasetSizes(vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=1)
ARCH = arch_section("small")
BATCH = 64
CALIBRATION_EXAMPLES = 256
# Every Ray a bench or a test starts: no token auth (docs/ray.md, "Authentication"), no usage reporting.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def configure_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--engine-seconds", type=float, default=150.0,
                        help="in-process engine time the throughput workload is sized to (at least)")
    parser.add_argument("--sweep-checkpoints", type=int, default=20)
    parser.add_argument("--sweep-shards", type=int, default=8)
    parser.add_argument("--sweep-seconds", type=float, default=200.0,
                        help="total one-thread engine time the sweep is sized to (at least)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary directory")


class CommitTimes(RunProgress):
    """Records when each unit is committed (and says nothing)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.commits: list[tuple[float, int, float]] = []  # (perf_counter, examples, actor work s)

    def unit_done(self, record) -> None:
        super().unit_done(record)
        self.commits.append((time.perf_counter(), record.examples, sum(record.timings.values())))


def run_cluster(args: argparse.Namespace) -> dict[str, Any]:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hrm-bench-cluster-"))
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()}
    checkpoints = make_checkpoints(work / "ckpt", args.sweep_checkpoints)
    per_example = engine_seconds_per_example(checkpoints[0], threads=args.actors)
    throughput_n = multiple_above(int(args.engine_seconds / per_example) + 1, BATCH * args.actors * 4)
    data = make_data(work / "throughput-data", throughput_n)
    report["throughput"] = throughput(args, checkpoints[0], data, work)
    sweep_n = multiple_above(int(args.sweep_seconds / engine_seconds_per_example(checkpoints[0], threads=1)
                           / args.sweep_checkpoints) + 1, BATCH * args.sweep_shards)
    report["sweep"] = sweep(args, checkpoints, make_data(work / "sweep-data", sweep_n), work)
    report["load_after"] = os.getloadavg()
    print(format_cluster_report(report))
    return report


def multiple_above(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is at least n."""
    return math.ceil(n / multiple) * multiple


def spawn_run(config: Path, **popen: Any) -> subprocess.Popen:
    """`hrm-eval run CONFIG` in a process of its own, on a fresh local Ray as a run on one
    machine starts it (RAY_ENV, and no RAY_ADDRESS to attach to another); `popen`: where its
    output goes, whether it gets a session of its own."""
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(config)], env=env, **popen)


def make_checkpoints(run_dir: Path, count: int, arch: dict[str, Any] = ARCH) -> list[Path]:
    spec = ArchSpec(family=ARCH_FAMILIES[arch["name"]], loss_type=arch["loss"]["loss_type"], arch=arch,
                    source=str(run_dir))
    config = spec.model_config(SIZES)
    paths = []
    for step in range(1, count + 1):
        torch.manual_seed(step)
        paths.append(save_checkpoint(build_model(config), run_dir, step, spec))
    return paths


def make_data(uri: Path, n: int) -> str:
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, VOCAB, (n, SEQ_LEN)).astype(np.int32)
    labels = rng.integers(1, VOCAB, (n, SEQ_LEN)).astype(np.int32)
    offsets = np.arange(n + 1, dtype=np.int32)
    arrays = PuzzleArrays(inputs, labels, np.zeros(n, np.int32), offsets, offsets.copy())
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB, seq_len=SEQ_LEN,
                           num_puzzle_identifiers=1, total_groups=n, mean_puzzle_examples=1.0, sets=["all"])
    write_dataset(uri, {"test": {"all": arrays}}, {"test": meta}, ["<blank>"])
    return str(uri)


def engine(path: Path, streams: int) -> Engine:
    ckpt = load_checkpoint(path)
    return Engine(build_checked_model(ckpt, SIZES), ckpt.spec.loss_type, ignore_label_id=0,
                  batch_size=BATCH * streams, streams=streams)


def engine_seconds(path: Path, data: tuple[np.ndarray, np.ndarray, np.ndarray], threads: int) -> float:
    """Wall time of the in-process engine over `data` with `threads` cores, model load excluded.
    With several cores it runs one stream per core, each with the actors' batch size: its
    fastest layout on CPU (see hrm.engine), so the Ray path is held to the best in-process figure."""
    torch.set_num_threads(threads)
    runner = engine(path, streams=threads)
    started = time.perf_counter()
    runner.run(*data)
    return time.perf_counter() - started


def engine_seconds_per_example(path: Path, threads: int) -> float:
    rng = np.random.default_rng(1)
    sample = (rng.integers(1, VOCAB, (CALIBRATION_EXAMPLES, SEQ_LEN)), rng.integers(1, VOCAB, (CALIBRATION_EXAMPLES, SEQ_LEN)),
              np.zeros(CALIBRATION_EXAMPLES, np.int32))
    return engine_seconds(path, sample, threads) / CALIBRATION_EXAMPLES


def whole_set(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = open_dataset(data).examples("test", "all")
    return np.asarray(batch.inputs), np.asarray(batch.labels), np.asarray(batch.puzzle_identifiers)


def run_config(checkpoints: list[dict[str, Any]], data: str, output: Path, actors: int, shard_size: int) -> RunConfig:
    return RunConfig.model_validate({
        "checkpoints": checkpoints, "dataset": {"uri": data}, "eval": {"batch_size": BATCH},
        "cluster": {"actors": actors, "torch_threads": 1, "shard_size": shard_size},
        "output": {"uri": str(output)},
    })


def ray_run(config: RunConfig) -> tuple[Any, CommitTimes, float, float]:
    """(manifest, commit times, Ray start s, execute start perf_counter) of one run on a fresh local Ray."""
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=config.cluster.actor_range[1] * 2, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - started
    try:
        progress = CommitTimes()
        execute_started = time.perf_counter()
        manifest = execute(prepare(config), progress)
    finally:
        ray.shutdown()
    return manifest, progress, ray_start_s, execute_started


def throughput(args: argparse.Namespace, checkpoint: Path, data: str, work: Path) -> dict[str, Any]:
    arrays = whole_set(data)
    n = len(arrays[0])
    engine_s = engine_seconds(checkpoint, arrays, threads=args.actors)
    units = args.actors * 8  # enough units that the last one's wait is short against the whole
    config = run_config([{"path": str(checkpoint)}], data, work / "results-throughput", args.actors,
                        multiple_above(n // units, BATCH))
    started = time.perf_counter()
    manifest, progress, ray_start_s, execute_started = ray_run(config)
    whole_s = time.perf_counter() - started
    (first_t, _, first_work), last_t = progress.commits[0], progress.commits[-1][0]
    steady_examples = sum(examples for _, examples, _ in progress.commits[1:])
    steady_rate = steady_examples / (last_t - first_t)
    engine_rate = n / engine_s
    return {
        "examples": n, "units": len(progress.commits),
        "engine_s": engine_s, "engine_threads": args.actors, "engine_examples_per_s": engine_rate,
        "ray_start_s": ray_start_s,
        "startup_s": ray_start_s + (first_t - execute_started) - first_work,
        "run_whole_s": whole_s, "run_examples_per_s_whole": n / whole_s,
        "run_examples_per_s_steady": steady_rate,
        "steady_fraction_of_engine": steady_rate / engine_rate,
        "whole_fraction_of_engine": n / whole_s / engine_rate,
        "model_loads": manifest.scheduling["model_loads"],
    }


def sweep(args: argparse.Namespace, checkpoints: list[Path], data: str, work: Path) -> dict[str, Any]:
    arrays = whole_set(data)
    n = len(arrays[0])
    engine_s = [engine_seconds(path, arrays, threads=1) for path in checkpoints]
    ideal_s = sum(engine_s) / args.actors
    config = run_config([{"run": str(checkpoints[0].parent)}], data, work / "results-sweep", args.actors,
                        n // args.sweep_shards)
    manifest, _, ray_start_s, _ = ray_run(config)
    evaluate_s = manifest.timings["evaluate_s"]
    return {
        "checkpoints": len(checkpoints), "shards": args.sweep_shards, "examples_per_checkpoint": n,
        "engine_s_total": sum(engine_s), "ideal_s": ideal_s, "ray_start_s": ray_start_s,
        "run_evaluate_s": evaluate_s, "evaluate_over_ideal": evaluate_s / ideal_s,
        "model_loads": manifest.scheduling["model_loads"],
        "loads_per_checkpoint": manifest.scheduling["loads_per_checkpoint"],
        "units": manifest.counts["planned"],
    }


def format_cluster_report(report: dict[str, Any]) -> str:
    t, s = report["throughput"], report["sweep"]
    return "\n".join([
        f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f} "
        f"({report['cpus']} CPUs)",
        f"throughput: {t['examples']} examples, {t['units']} units; engine ({t['engine_threads']} threads) "
        f"{t['engine_s']:.1f} s = {t['engine_examples_per_s']:.1f} ex/s",
        f"  Ray path steady {t['run_examples_per_s_steady']:.1f} ex/s = {100 * t['steady_fraction_of_engine']:.1f}% "
        f"of the engine; whole run {t['run_whole_s']:.1f} s = {t['run_examples_per_s_whole']:.1f} ex/s = "
        f"{100 * t['whole_fraction_of_engine']:.1f}%; fixed start-up {t['startup_s']:.1f} s "
        f"(Ray start {t['ray_start_s']:.1f} s)",
        f"sweep: {s['checkpoints']} checkpoints × {s['shards']} shards ({s['examples_per_checkpoint']} examples each): "
        f"{s['loads_per_checkpoint']:.2f} loads per checkpoint; evaluation {s['run_evaluate_s']:.1f} s vs ideal "
        f"{s['ideal_s']:.1f} s (engine total {s['engine_s_total']:.1f} s / actors) = {s['evaluate_over_ideal']:.3f}×",
    ])
