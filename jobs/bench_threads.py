"""`python -m jobs.bench threads`: which CPU thread layout of `hrm-eval evaluate` stays fast
when the machine is shared.

Each candidate layout runs the real command (`hrm-eval evaluate … --json`, a fresh process,
so thread settings and OpenMP's environment take effect from the start) on a demo-size HRM
(the quickstart's architecture, random weights; the fixed protocol does the same work for any
weights) and 4×4-Sudoku-shaped data, twice over:
- idle: nothing else running (the bench's own process waits);
- busy: `--neighbours` processes spinning on the CPUs (default two per core), standing in for
  the other jobs of a shared node.
Cells are interleaved (every candidate once per repeat, in turn) so drift hits all alike, and
each is reported by its median examples/s (the command's own figure: evaluation time only,
not start-up or loading). The most robust candidate is the one whose slowest condition is
fastest; its busy/idle ratio says how much of its speed it keeps under contention.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.checkpoint.loading import ArchSpec, save_checkpoint
from hrm.data.schema import DatasetMetadata, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.model.models import build_model
from hrm.train import DEMO_MODELS

from jobs.bench_models import arch_section

CORES = len(os.sched_getaffinity(0))
# name -> (evaluate flags, extra environment)
CANDIDATES: dict[str, tuple[list[str], dict[str, str]]] = {
    "torch default threads": ([], {}),
    "torch default threads, OMP_WAIT_POLICY=PASSIVE": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "--threads 1": (["--threads", "1"], {}),
    f"--streams {CORES} (one single-threaded stream per core)": (["--streams", str(CORES)], {}),
}


def configure_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=int, default=2048, help="test examples evaluated per cell")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=2 * CORES,
                        help="spinning processes in the busy condition (default: two per core)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the data is made")


def run_threads(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-threads-", dir=args.tmp))
    checkpoint, data = make_demo_checkpoint(work / "hrm"), make_demo_data(work / "data", args.examples)
    report: dict[str, Any] = {"command": args.command, "cores": CORES, "torch_default_threads": torch.get_num_threads(),
                              "examples": args.examples, "batch_size": args.batch_size, "neighbours": args.neighbours,
                              "conditions": {}}
    for condition in ("idle", "busy"):
        neighbours = start_neighbours(args.neighbours if condition == "busy" else 0)
        try:
            time.sleep(1.0 if neighbours else 0.0)  # let the spinners take their share first
            rates: dict[str, list[float]] = {name: [] for name in CANDIDATES}
            load_before = os.getloadavg()[0]
            for _ in range(args.repeats):
                for name, (flags, env) in CANDIDATES.items():
                    rates[name].append(examples_per_second(checkpoint, data, work / "out", args.batch_size,
                                                           flags, env))
                    print(f"{condition:<5} {name:<55} {rates[name][-1]:8.1f} examples/s", flush=True)
            report["conditions"][condition] = {
                "load_before": load_before, "load_after": os.getloadavg()[0],
                "cells": {name: {"examples_per_second": statistics.median(r), "repeats": r} for name, r in rates.items()}}
        finally:
            for process in neighbours:
                process.terminate()
    report["candidates"] = summarise(report["conditions"])
    report["most_robust"] = max(report["candidates"], key=lambda c: report["candidates"][c]["slowest"])
    print(format_threads_report(report))
    return report


def make_demo_checkpoint(run_dir: Path) -> Path:
    """A step file of the quickstart's HRM architecture with random weights."""
    demo = DEMO_MODELS["hrm"]
    fields = {k: getattr(demo, k) for k in ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers",
                                           "H_cycles", "L_cycles", "halt_max_steps", "puzzle_emb_ndim")}
    arch = {**arch_section("small"), **fields}
    spec = ArchSpec(family="hrm", loss_type="softmax_cross_entropy", arch=arch, source=str(run_dir))
    torch.manual_seed(0)
    return save_checkpoint(build_model(demo), run_dir, 1, spec)


def make_demo_data(uri: Path, n: int) -> str:
    demo = DEMO_MODELS["hrm"]
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, demo.vocab_size, (n, demo.seq_len)).astype(np.int32)
    labels = rng.integers(1, demo.vocab_size, (n, demo.seq_len)).astype(np.int32)
    offsets = np.arange(n + 1, dtype=np.int32)
    arrays = PuzzleArrays(inputs, labels, np.zeros(n, np.int32), offsets, offsets.copy())
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=demo.vocab_size,
                           seq_len=demo.seq_len, num_puzzle_identifiers=1, total_groups=n, mean_puzzle_examples=1.0,
                           sets=["all"])
    write_dataset(uri, {"test": {"all": arrays}}, {"test": meta}, ["<blank>"])
    return str(uri)


def spin() -> None:
    while True:
        pass


def start_neighbours(count: int) -> list[multiprocessing.Process]:
    processes = [multiprocessing.Process(target=spin, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    return processes


def examples_per_second(checkpoint: Path, data: str, output: Path, batch_size: int, flags: list[str],
                        env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "jobs.cli", "evaluate", "--checkpoint", str(checkpoint), "--data", data,
               "--output", str(output), "--batch-size", str(batch_size), "--device", "cpu", "--json", "-q", *flags]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["job"]["timings"]["examples_per_s"])


def summarise(conditions: dict[str, Any]) -> dict[str, Any]:
    """Per candidate: its idle and busy rates, the slowest of them, and how much it keeps when busy."""
    out = {}
    for name in CANDIDATES:
        idle = conditions["idle"]["cells"][name]["examples_per_second"]
        busy = conditions["busy"]["cells"][name]["examples_per_second"]
        out[name] = {"idle": idle, "busy": busy, "slowest": min(idle, busy), "busy_over_idle": busy / idle}
    return out


def format_threads_report(report: dict[str, Any]) -> str:
    lines = [f"{report['cores']} cores; busy = {report['neighbours']} spinning neighbours "
             f"(load {report['conditions']['busy']['load_before']:.1f} → {report['conditions']['busy']['load_after']:.1f})",
             f"{'candidate':<55} {'idle ex/s':>10} {'busy ex/s':>10} {'busy/idle':>10}"]
    for name, row in report["candidates"].items():
        lines.append(f"{name:<55} {row['idle']:10.1f} {row['busy']:10.1f} {row['busy_over_idle']:10.2f}")
    lines.append(f"most robust (fastest in its slower condition): {report['most_robust']}")
    return "\n".join(lines)
