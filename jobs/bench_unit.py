"""`python -m jobs.bench unit`: what a work unit costs besides the model, at the default shard
size, set against the paper-size HRM's own time for such a unit.

Everything runs through the run's own evaluation actor class (`cluster.actor.Evaluator`, in
this process) and the driver's commit, on Sudoku-shaped data:
- Overhead: a unit of the default shard size (4096 examples) with a tiny model, evaluated
  twice so the second finds its model cached: reading its examples, writing its predictions
  and committing its record do not depend on the model (the predictions have the same
  columns and shape), so these are the overhead of any unit of that size.
- The paper-size HRM: one unit of `--paper-examples` examples (one default batch): its
  checkpoint load and its evaluation seconds per example. A unit is whole batches of the same
  fixed-step work, so a full unit's model time is that per-example time × the shard size.
Reported: the overhead split (read, write, commit), the model's seconds per unit, the
overhead's share of a unit, the load's share once spread over the units one checkpoint has
on Sudoku-Extreme (422,786 examples), and the engine speed above which the overhead would
pass 10% of a unit (what a faster device, not measurable here, must beat with a larger shard).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cluster.actor import Evaluator
from cluster.config import ClusterConfig, EvalConfig, RunConfig
from cluster.plan import prepare
from cluster.results.layout import UnitRecord, commit_unit

from jobs.bench_cluster import make_checkpoints, make_data
from jobs.bench_models import arch_section
from jobs.bench_scale import TINY_ARCH

SUDOKU_EXTREME_TEST = 422_786
OVERHEAD_LIMIT = 0.10  # the bound: overhead at most 10% of a unit's time


def configure_unit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paper-examples", type=int, default=EvalConfig().batch_size,
                        help="examples the paper-size HRM evaluates to measure its time per example (default: one "
                             "default batch; on a 2-core CPU that takes about 10 minutes)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the data is made")


def run_unit(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-unit-", dir=args.tmp))
    shard = ClusterConfig().shard_size
    report: dict[str, Any] = {"command": args.command, "workdir": str(work), "cpus": os.cpu_count(),
                              "threads": args.threads, "shard_size": shard, "load_before": os.getloadavg()}
    tiny = evaluate_units(work / "tiny", "tiny", shard, repeats=2, threads=args.threads)
    steady = tiny[-1]
    overhead = {"read_s": steady["read_s"], "write_s": steady["write_s"], "commit_s": steady["commit_s"]}
    paper = evaluate_units(work / "paper", "paper", args.paper_examples, repeats=1, threads=args.threads)[0]
    eval_per_example = paper["eval_s"] / paper["examples"]
    model_s = eval_per_example * shard
    overhead_s = sum(overhead.values())
    units_per_checkpoint = math.ceil(SUDOKU_EXTREME_TEST / shard)
    report.update({
        "overhead_per_unit": overhead,
        "overhead_s": overhead_s,
        "paper": {"load_s": paper["load_s"], "eval_s": paper["eval_s"], "examples": paper["examples"],
                  "eval_s_per_example": eval_per_example, "examples_per_s": 1 / eval_per_example},
        "paper_model_s_per_unit": model_s,
        "overhead_share": overhead_s / (overhead_s + model_s),
        "units_per_checkpoint": units_per_checkpoint,
        "load_share_spread": paper["load_s"] / (units_per_checkpoint * (overhead_s + model_s)),
        "break_even_examples_per_s": shard * (1 - OVERHEAD_LIMIT) / (OVERHEAD_LIMIT * overhead_s),
        "tiny_units": tiny,
        "load_after": os.getloadavg(),
    })
    print(format_unit_report(report))
    return report


def evaluate_units(root: Path, model: str, examples: int, repeats: int, threads: int) -> list[dict[str, Any]]:
    """One unit of `examples` examples of model `model` ("tiny" or a bench_models config),
    evaluated `repeats` times by one in-process Evaluator and committed as the driver commits:
    the actor's timings of each, with the commit's seconds."""
    data = make_data(root / "data", examples)
    weights = make_checkpoints(root / "model", 1, TINY_ARCH if model == "tiny" else arch_section(model))[0]
    config = RunConfig.model_validate({
        "checkpoints": [{"path": str(weights)}], "dataset": {"uri": data},
        "cluster": {"torch_threads": threads}, "output": {"uri": str(root / "results"), "run_id": "unit"}})
    torch.set_num_threads(threads)
    prepared = prepare(config)
    (unit,), (ref,) = prepared.units, prepared.checkpoints
    actor = Evaluator(config, prepared.run)
    timings = []
    for _ in range(repeats):
        record: UnitRecord = actor(unit, ref)
        started = time.perf_counter()
        commit_unit(prepared.run, record)
        timings.append({**record.timings, "commit_s": time.perf_counter() - started, "examples": record.examples,
                        "model_loaded": record.model_loaded})
    return timings


def format_unit_report(r: dict[str, Any]) -> str:
    o, p = r["overhead_per_unit"], r["paper"]
    return "\n".join([
        f"overhead of a {r['shard_size']}-example unit (model cached): read {o['read_s']:.3f} s, write "
        f"{o['write_s']:.3f} s, commit {o['commit_s']:.3f} s = {r['overhead_s']:.3f} s",
        f"paper-size HRM ({r['threads']} threads): load {p['load_s']:.2f} s; {p['examples']} examples in "
        f"{p['eval_s']:.1f} s = {p['examples_per_s']:.2f} examples/s, so {r['paper_model_s_per_unit']:,.0f} s of "
        f"model per {r['shard_size']}-example unit",
        f"overhead share of a unit: {100 * r['overhead_share']:.4f}%; the load spread over the "
        f"{r['units_per_checkpoint']} units of a checkpoint on Sudoku-Extreme: {100 * r['load_share_spread']:.4f}%",
        f"the overhead passes {100 * OVERHEAD_LIMIT:.0f}% of a unit only for an engine faster than "
        f"{r['break_even_examples_per_s']:,.0f} examples/s at this shard size",
        f"load average before {r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f} ({r['cpus']} CPUs)",
    ])
