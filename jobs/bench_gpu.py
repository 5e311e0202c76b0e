"""`python -m jobs.bench gpu`: the CUDA path, measured in one invocation of at most
`--budget-s` seconds (docs/gpu.md).

Sections, in this order, each with a share of the budget (`SHARES`; time a section leaves
unused passes to the next):
1. matmul: dense square products in bfloat16 and float32 (`jobs.bench.square_matmul_rate`),
   the GPU's rates that MFU is taken against, measured in this run.
2. conformance: the reference vectors (`--conformance`) evaluated on CUDA in float32 and
   bfloat16, against the predictions and q logits the reference evaluator computed on CPU.
   float32: tokens predicted differently, and how many of them sit where the reference's own
   top-2 logit margin is below 1e-4 (near-ties, where rounding may pick either); bfloat16:
   token agreement. Both: the largest q-logit difference.
3. actors: one `hrm-eval run` with one actor holding the GPU (gpus_per_actor 1) and one with
   two actors sharing it (0.5 each), same data and checkpoint: identical metrics?
   examples/s of each.
4. models: the paper-size HRM and TRM (`jobs.bench_models`) on random weights, per dtype,
   compile, batch size and protocol: examples/s, achieved TFLOP/s (hrm.model.flops per
   example-step × the example-steps computed), MFU against section 1's rates, peak GPU memory,
   and the warm-up (which holds any compilation) apart.

A cell that the time left in its section cannot hold is not run: it is listed under
`skipped` with the reason, and no figure stands in for it. Whether it fits is judged from
time measured in this run (the last comparable cell), never from a guess about the GPU.
Without CUDA the command fails at once (exit 2) and writes nothing; `--dry-run` lists the
cells it would run, with each section's share, on any machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
import yaml

from hrm.checkpoint.loading import Checkpoint, build_checked_model, load_checkpoint
from hrm.data.reader import open_dataset
from hrm.data.schema import DatasetMetadata
from hrm.eval.engine import CompileMode, Engine, cuda_build
from hrm.eval.shard import build_engine
from hrm.model.flops import flops_per_example_step
from hrm.model.models import ModelConfig

from jobs.cli import positive_int

# Each section's share of the budget, in running order; what one leaves unused passes on.
SHARES = {"matmul": 0.05, "conformance": 0.10, "actors": 0.25, "models": 0.60}
# Square sizes added on a GPU to the engine bench's: products long enough not to be mostly
# launch and sync overhead.
GPU_SQUARE_SIZES = (8192, 16384)
REFERENCE_IGNORE = -100
NEAR_TIE = 1e-4  # a reference top-2 margin below this: rounding may pick either token
BF16_AGREEMENT = 0.995  # issue 19's acceptance for bfloat16 token agreement
DEVICE = "cuda"  # one name for the device every section runs on
SECTIONS = ("conformance", "actors", "models")  # the ones that may be left out


def configure_gpu(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="the whole invocation's time; cells that would overrun their section's share are "
                             "skipped and listed (default: 480)")
    parser.add_argument("--conformance", type=Path, default=None, metavar="DIR",
                        help="the reference vectors' directory (<vector>/checkpoints, data, expected: made by the "
                             "reference code on CPU); without it the conformance section is listed as skipped")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="the sections to run (default: all; the matmul rates are always measured)")
    parser.add_argument("--models", nargs="+", choices=("paper", "trm"), default=["paper", "trm"])
    parser.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[256, 768, 2048])
    parser.add_argument("--dtypes", nargs="+", choices=("bfloat16", "float32"), default=["bfloat16", "float32"])
    parser.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--compile-mode", choices=get_args(CompileMode), default=None,
                        help="torch.compile's mode for the compiled cells (default: torch's)")
    parser.add_argument("--protocols", nargs="+", choices=("fixed", "adaptive"), default=["fixed", "adaptive"])
    parser.add_argument("--adaptive-batches", type=positive_int, default=2,
                        help="an adaptive cell evaluates this many batches' worth of examples, so slots get refilled")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed runs per cell at most (median reported); fewer once --cell-s is spent")
    parser.add_argument("--cell-s", type=float, default=4.0,
                        help="no further repeat once a cell's timed runs took this")
    parser.add_argument("--actor-examples", type=positive_int, default=32768,
                        help="examples of the actors section's dataset")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and each section's share; run nothing")
    parser.add_argument("--seed", type=int, default=0)


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_cells(args)
    if args.dry_run:
        vectors = "conformance" not in args.sections or any(c["section"] == "conformance" for c in plan)
        report = {"benchmark": "gpu", "command": args.command, "dry_run": True, "budget_s": args.budget_s,
                  "shares_s": shares_s(args.budget_s), "plan": plan, "missing": [] if vectors else [no_vectors(args)]}
        print_plan(report)
        return report
    if not torch.cuda.is_available():
        print(f"python -m jobs.bench gpu: CUDA is not available ({cuda_build()}); run it on a machine with an "
              f"NVIDIA GPU, or give --dry-run to list the cells", file=sys.stderr)
        raise SystemExit(2)
    from jobs import bench  # the engine bench's helpers; it imports this module, so not at the top

    clock = Budget(args.budget_s)
    report: dict[str, Any] = {
        "benchmark": "gpu", "command": args.command, "budget_s": args.budget_s, "shares_s": shares_s(args.budget_s),
        "machine": bench.machine_info(torch.get_num_threads()), "gpu": gpu_info(),
        "settings": {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "tf32_cudnn": torch.backends.cudnn.allow_tf32, "compile_mode": args.compile_mode},
        "skipped": [],
    }
    clock.start("matmul")
    sizes = [*bench.SQUARE_SIZES, *GPU_SQUARE_SIZES]
    report["matmul"] = {dtype: bench.square_matmul_rate(sizes, getattr(torch, dtype), torch.device(DEVICE), "before")
                        for dtype in ("bfloat16", "float32")}
    print_matmul(report["matmul"])
    if "conformance" in args.sections:
        clock.start("conformance")
        if not any(c["section"] == "conformance" for c in plan):
            report["skipped"].append({"section": "conformance", "cell": "every vector", "reason": no_vectors(args)})
        report["conformance"] = conformance_section([c for c in plan if c["section"] == "conformance"], clock, report)
    if "actors" in args.sections:
        clock.start("actors")
        report["actors"] = actors_section(args, [c for c in plan if c["section"] == "actors"], clock, report)
    if "models" in args.sections:
        clock.start("models")
        report["models"] = models_section(args, [c for c in plan if c["section"] == "models"], clock, report)
    clock.start("")  # the end
    report["sections_s"] = clock.used
    print(f"{len(report['skipped'])} cells skipped"
          + "".join(f"\n  {s['cell']}: {s['reason']}" for s in report["skipped"]))
    return report


# -- plan and budget ------------------------------------------------------------------------
def plan_cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell in running order. Within models, the issue's headline comes first (the HRM in
    bfloat16), so a budget that runs short cuts the least wanted cells."""
    cells: list[dict[str, Any]] = []
    for vector, checkpoint in conformance_vectors(args.conformance) if "conformance" in args.sections else []:
        for dtype in ("float32", "bfloat16"):
            cells.append({"section": "conformance", "cell": f"{vector}/{checkpoint} {dtype}", "vector": vector,
                          "checkpoint": checkpoint, "dtype": dtype, "root": str(args.conformance)})
    for actors in (1, 2) if "actors" in args.sections else ():
        cells.append({"section": "actors", "cell": f"hrm-eval run, {actors} actor(s) on one GPU", "actors": actors,
                      "gpus_per_actor": 1 / actors})
    models = itertools.product(args.dtypes, args.models, args.compile, args.batch_sizes, args.protocols)
    for dtype, model, compiled, batch_size, protocol in models if "models" in args.sections else ():
        cells.append({"section": "models", "cell": f"{model} {dtype} compile {compiled} batch {batch_size} {protocol}",
                      "config": model, "dtype": dtype, "compile": compiled == "on", "batch_size": batch_size,
                      "protocol": protocol})
    return cells


def conformance_vectors(root: Path | None) -> list[tuple[str, str]]:
    """(vector, checkpoint) for every expected/<checkpoint>.npz under root/<vector>/."""
    if root is None or not root.is_dir():
        return []
    return [(npz.parent.parent.name, npz.stem) for npz in sorted(root.glob("*/expected/*.npz"))]


def no_vectors(args: argparse.Namespace) -> str:
    if args.conformance is None:
        return "no --conformance DIR given: the reference vectors' directory"
    return f"no reference vectors (<vector>/expected/<checkpoint>.npz) under {args.conformance}: give --conformance DIR"


def shares_s(budget_s: float) -> dict[str, float]:
    return {name: share * budget_s for name, share in SHARES.items()}


@dataclass
class Budget:
    """Each section may run until its cumulative share of the budget has passed since the start."""

    budget_s: float
    now: Callable[[], float] = time.perf_counter
    started: float = field(init=False)
    section: str = field(init=False, default="")
    section_started: float = field(init=False, default=0.0)
    used: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.now()

    def start(self, section: str) -> None:
        """Begin `section` ("": the end of the last), recording how long the one before took."""
        if self.section:
            self.used[self.section] = self.now() - self.section_started
        self.section, self.section_started = section, self.now()

    def deadline(self) -> float:
        names = list(SHARES)
        return self.started + self.budget_s * sum(SHARES[n] for n in names[: names.index(self.section) + 1])

    def left_s(self) -> float:
        return self.deadline() - self.now()

    def refusal(self, needs_s: float | None, what: str) -> str | None:
        """Why a cell that took `needs_s` last time (None: nothing comparable measured yet) must
        not start now, or None when it may."""
        left = self.left_s()
        if left <= 0:
            return f"the {self.section} section's share of --budget-s is spent"
        if needs_s is not None and needs_s > left:
            return (f"{left:.1f} s left of the {self.section} section's share of --budget-s; {what} took "
                    f"{needs_s:.1f} s in this run")
        return None


def within_budget(cells: list[dict[str, Any]], clock: Budget, report: dict[str, Any],
                  what: str) -> Iterator[dict[str, Any]]:
    """The cells the section's share still allows, in order, each refused one listed as skipped:
    the next may start while the time the last took (the caller's work on it, between two
    yields) still fits in what is left."""
    last_s: float | None = None
    for cell in cells:
        reason = clock.refusal(last_s, what)
        if reason:
            skip(report, cell, reason)
            continue
        started = clock.now()
        yield cell
        last_s = clock.now() - started


def skip(report: dict[str, Any], cell: dict[str, Any], reason: str) -> None:
    report["skipped"].append({"section": cell["section"], "cell": cell["cell"], "reason": reason})
    print(f"skipped {cell['cell']}: {reason}", flush=True)


def failure(err: BaseException) -> str:
    """One line for a cell that raised: a run that has to finish in minutes on a lent GPU
    records it and goes on to the next cell."""
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"


# -- conformance ----------------------------------------------------------------------------
def conformance_section(cells: list[dict[str, Any]], clock: Budget, report: dict[str, Any]) -> dict[str, Any]:
    done: list[dict[str, Any]] = []
    for cell in within_budget(cells, clock, report, "the last conformance cell"):
        try:
            done.append({**cell, **conformance_cell(Path(cell["root"]), cell["vector"], cell["checkpoint"],
                                                    cell["dtype"])})
        except Exception as err:  # noqa: BLE001 - recorded, and the run goes on
            done.append({**cell, "error": failure(err)})
    print_conformance(done)
    return {"near_tie_margin": NEAR_TIE, "bf16_agreement_needed": BF16_AGREEMENT, "cells": done}


def conformance_cell(root: Path, vector: str, checkpoint: str, dtype: str) -> dict[str, Any]:
    expected = np.load(root / vector / "expected" / f"{checkpoint}.npz")
    data = str(root / vector / "data")
    ckpt = load_checkpoint(str(root / vector / "checkpoints" / checkpoint))
    meta = open_dataset(data).metadata("test")
    inputs, ids = expected["inputs"], expected["puzzle_identifiers"]
    # The reference stores ignored labels as -100 (its loader's marker), not as the dataset's
    # ignore_label_id; only predictions and q logits are compared, so they just need to be ignored.
    labels = np.where(expected["labels"] == REFERENCE_IGNORE, meta.ignore_label_id or 0, expected["labels"])
    engine = build_engine(ckpt, meta, data, dtype=dtype, device=DEVICE, batch_size=len(inputs))
    result = engine.run(inputs, labels, ids, protocol="fixed")
    if "top2_margin" in expected:
        margin, margin_source = expected["top2_margin"], "the reference vectors' stored top2_margin"
    else:
        margin, margin_source = cpu_top2_margin(ckpt, meta, data, inputs, ids), "a float32 run on this CPU"
    differs = result.pred != expected["pred"]
    near_ties = int((differs & (margin < NEAR_TIE)).sum())
    cell = {
        "examples": len(inputs), "tokens": int(differs.size), "steps": int(result.steps.max()),
        "disagreements": int(differs.sum()), "near_tie_disagreements": near_ties,
        "other_disagreements": int(differs.sum()) - near_ties, "margin_source": margin_source,
        "token_agreement": float(1 - differs.mean()),
        "max_q_halt_diff": float(np.abs(result.q_halt_logit - expected["q_halt_logits"]).max()),
        "max_q_continue_diff": float(np.abs(result.q_continue_logit - expected["q_continue_logits"]).max()),
    }
    if dtype == "float32":  # the reference's own near-ties aside, the very predictions
        cell["meets_acceptance"] = cell["other_disagreements"] == 0
    else:
        cell["meets_acceptance"] = cell["token_agreement"] >= BF16_AGREEMENT
    return cell


def cpu_top2_margin(ckpt: Checkpoint, meta: DatasetMetadata, data: str, inputs: np.ndarray,
                    ids: np.ndarray) -> np.ndarray:
    """The gap between the two largest final-step logits per token, from a float32 run on CPU
    of the reference's fixed protocol (for vectors that do not store it)."""
    model = build_checked_model(ckpt, meta.sizes, data, forward_dtype="float32").eval()
    with torch.inference_mode():
        x = model.embed(torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(ids.astype(np.int64)))
        z_H, z_L = model.initial_state(len(inputs), torch.device("cpu"))
        for _ in range(model.config.halt_max_steps):
            z_H, z_L, logits, _ = model(z_H, z_L, x)
        top2 = logits.float().topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).numpy()


# -- actors ---------------------------------------------------------------------------------
def actors_section(args: argparse.Namespace, cells: list[dict[str, Any]], clock: Budget,
                   report: dict[str, Any]) -> dict[str, Any]:
    """The same small run with one actor holding the GPU, then two actors sharing it."""
    section: dict[str, Any] = {"examples": args.actor_examples, "runs": [], "identical_metrics": None}
    if importlib.util.find_spec("ray") is None:  # a GPU image without Ray can still run the other sections
        for cell in cells:
            skip(report, cell, "ray is not installed here, and hrm-eval run needs it")
        return section
    from jobs.bench_cluster import make_checkpoints, make_data  # they import Ray

    work = Path(tempfile.mkdtemp(prefix="hrm-bench-gpu-"))
    checkpoint = make_checkpoints(work / "ckpt", 1)[0]
    data = make_data(work / "data", args.actor_examples)
    runs: list[dict[str, Any]] = []
    for cell in within_budget(cells, clock, report, "the run before it"):
        runs.append({**cell, **actor_run(work, checkpoint, data, cell["actors"], cell["gpus_per_actor"],
                                         max(1.0, clock.left_s()))})
    finished = [r for r in runs if "metrics" in r]
    section.update(workdir=str(work), runs=runs,
                   identical_metrics=(finished[0]["metrics"] == finished[1]["metrics"]) if len(finished) == 2 else None)
    print_actors(section)
    return section


def actor_run(work: Path, checkpoint: Path, data: str, actors: int, gpus_per_actor: float,
              timeout_s: float) -> dict[str, Any]:
    """One `hrm-eval run` in a process of its own, stopped at `timeout_s`."""
    from jobs.bench_cluster import spawn_run  # it imports Ray

    run_id = f"actors-{actors}"
    config = work / f"{run_id}.yaml"
    config.write_text(yaml.safe_dump({
        "checkpoints": [{"path": str(checkpoint)}], "dataset": {"uri": data},
        "eval": {"device": DEVICE, "dtype": "bfloat16", "batch_size": 256},
        "cluster": {"actors": actors, "gpus_per_actor": gpus_per_actor, "cpus_per_actor": 1, "shard_size": 4096},
        "output": {"uri": str(work / "results"), "run_id": run_id},
    }))
    started = time.perf_counter()
    # a session of its own, so that a run stopped at the deadline takes its Ray processes (and
    # their hold on the GPU) with it
    child = spawn_run(config, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # all of them may have ended meanwhile
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"error": f"stopped after {timeout_s:.0f} s, the time left in the section"}
    wall_s = time.perf_counter() - started
    if child.returncode != 0:
        return {"wall_s": wall_s, "error": f"exit {child.returncode}: {stderr.strip()[-2000:]}"}
    run = work / "results" / run_id
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "wall_s": wall_s, "examples_per_s": manifest["timings"]["examples_per_s"],
        "evaluate_s": manifest["timings"]["evaluate_s"], "units": manifest["counts"]["evaluated"],
        "peak_actor_gpu_bytes": manifest["hardware"]["peak_actor_gpu_bytes"],
        "gpus": sorted({a["gpu"] for a in manifest["hardware"]["actors"] if a.get("gpu")}),
        # what must not depend on how many actors shared the GPU: every figure and the exact statistics
        "metrics": {name: {"metrics": entry["metrics"], "stats": entry["stats"]}
                    for name, entry in metrics["checkpoints"].items()},
    }


# -- models ---------------------------------------------------------------------------------
def models_section(args: argparse.Namespace, cells: list[dict[str, Any]], clock: Budget,
                   report: dict[str, Any]) -> dict[str, Any]:
    """One engine per (model, dtype, compile, batch size), running its protocols one after the other."""
    from jobs import bench

    rates = {dtype: report["matmul"][dtype]["best_flops_per_s"] for dtype in report["matmul"]}
    configs = {name: bench.bench_config(name, "float32", []) for name in args.models}
    done: list[dict[str, Any]] = []
    last_s: dict[bool, float] = {}  # seconds the last engine took, eager and compiled
    key = lambda c: (c["config"], c["dtype"], c["compile"], c["batch_size"])
    for _, group in itertools.groupby(cells, key=key):
        group = list(group)
        first = group[0]
        reason = clock.refusal(last_s.get(first["compile"]),
                               f"the last {'compiled' if first['compile'] else 'eager'} engine's cells")
        if reason:
            for cell in group:
                skip(report, cell, reason)
            continue
        started = time.perf_counter()
        try:
            done += model_cells(args, group, rates)
        except Exception as err:  # noqa: BLE001 - the engine could not be built: recorded, the run goes on
            done += [{**cell, "error": failure(err)} for cell in group]
        last_s[first["compile"]] = time.perf_counter() - started
        release_gpu()
    section = {"matmul_flops_per_s": rates, "configs": {
        name: {"model": config.model_dump(), "flops_per_example_step": sum(flops_per_example_step(config).values())}
        for name, config in configs.items()}, "cells": done}
    print_models(section)
    return section


def model_cells(args: argparse.Namespace, group: list[dict[str, Any]], rates: dict[str, float]) -> list[dict[str, Any]]:
    from jobs import bench

    first = group[0]
    config = bench.bench_config(first["config"], first["dtype"], [])
    if first["compile"]:
        torch._dynamo.reset()  # each engine compiles afresh: no recompile limit reached by earlier ones
    engine = Engine(bench.bench_model(config, args.seed), "stablemax_cross_entropy", ignore_label_id=0,
                    device=DEVICE, batch_size=first["batch_size"], compile=first["compile"],
                    compile_mode=args.compile_mode if first["compile"] else None)
    cells = []
    for cell in group:
        try:
            cells.append(model_cell(args, engine, config, cell, rates))
        except Exception as err:  # noqa: BLE001 - recorded (an out-of-memory batch size, say); the run goes on
            cells.append({**cell, "error": failure(err)})
    print_models({"cells": cells}, header=False)
    return cells


def model_cell(args: argparse.Namespace, engine: Engine, config: ModelConfig, cell: dict[str, Any],
               rates: dict[str, float]) -> dict[str, Any]:
    """Warm up (compilation included, on this cell's own shapes), then time up to --repeats runs."""
    batch_size, protocol = cell["batch_size"], cell["protocol"]
    count = batch_size * (args.adaptive_batches if protocol == "adaptive" else 1)
    from jobs import bench

    data = bench.random_batch(config, count, args.seed)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    warm_up = time.perf_counter()
    engine.run(*data, protocol=protocol)
    torch.cuda.synchronize()
    warm_up_s = time.perf_counter() - warm_up
    seconds, result = [], None
    while len(seconds) < args.repeats and sum(seconds) < args.cell_s:
        start = time.perf_counter()
        result = engine.run(*data, protocol=protocol)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    flops_per_example = sum(flops_per_example_step(config).values()) * result.forward_steps / count
    examples_per_s = count / statistics.median(seconds)
    achieved = flops_per_example * examples_per_s
    return {
        **cell, "examples": count, "max_steps": config.halt_max_steps, "mean_steps": result.forward_steps / count,
        "warm_up_s": warm_up_s, "seconds": seconds, "examples_per_s": examples_per_s,
        "flops_per_example": flops_per_example, "flops_per_s": achieved,
        "mfu": achieved / rates[cell["dtype"]], "mfu_vs_bf16": achieved / rates["bfloat16"],
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
    }


def release_gpu() -> None:
    gc.collect()
    torch.cuda.empty_cache()


# -- reporting ------------------------------------------------------------------------------
def gpu_info() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}", "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def table(title: str, columns: list[str]):
    from rich.table import Table

    t = Table(title=title)
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right")
    return t


def show(renderable) -> None:
    from rich.console import Console

    Console(width=200).print(renderable)


def print_plan(report: dict[str, Any]) -> None:
    t = table(f"python -m jobs.bench gpu --dry-run: the cells, in running order, within {report['budget_s']:.0f} s",
              ["section", "share (s)", "cells", "first cell"])
    for section, share in report["shares_s"].items():
        cells = [c for c in report["plan"] if c["section"] == section]
        t.add_row(section, f"{share:.0f}", str(len(cells)) if section != "matmul" else "bf16, fp32",
                  cells[0]["cell"] if cells else ("square products" if section == "matmul" else "none"))
    show(t)
    for cell in report["plan"]:
        print(f"{cell['section']:<12} {cell['cell']}")
    for missing in report["missing"]:
        print(f"conformance  none: {missing}")


def print_matmul(matmul: dict[str, Any]) -> None:
    t = table("dense square matmul, measured here", ["dtype", "TFLOP/s", "layout", "n"])
    for dtype, rate in matmul.items():
        t.add_row(dtype, f"{rate['best_flops_per_s'] / 1e12:.1f}", rate["best_layout"], str(rate["best_n"]))
    show(t)


def print_conformance(cells: list[dict[str, Any]]) -> None:
    t = table(f"conformance on CUDA (near-tie: the reference's top-2 margin < {NEAR_TIE})",
              ["vector", "dtype", "tokens", "differ", "near-tie", "agreement", "max |Δq_halt|", "max |Δq_cont|",
               "ok"])
    for c in cells:
        if "error" in c:
            t.add_row(f"{c['vector']}/{c['checkpoint']}", c["dtype"], c["error"], *[""] * 6)
            continue
        t.add_row(f"{c['vector']}/{c['checkpoint']}", c["dtype"], str(c["tokens"]), str(c["disagreements"]),
                  str(c["near_tie_disagreements"]), f"{c['token_agreement']:.4%}", f"{c['max_q_halt_diff']:.2e}",
                  f"{c['max_q_continue_diff']:.2e}", "yes" if c["meets_acceptance"] else "NO")
    show(t)


def print_actors(section: dict[str, Any]) -> None:
    t = table(f"hrm-eval run on one GPU, {section['examples']} examples; identical metrics: "
              f"{section['identical_metrics']}", ["actors", "gpus/actor", "examples/s", "evaluate s", "wall s",
                                                   "peak GPU MiB"])
    for r in section["runs"]:
        if "error" in r:
            t.add_row(str(r["actors"]), f"{r['gpus_per_actor']:g}", r["error"][:120], "", "", "")
            continue
        peak = r["peak_actor_gpu_bytes"]
        t.add_row(str(r["actors"]), f"{r['gpus_per_actor']:g}", f"{r['examples_per_s']:.0f}", f"{r['evaluate_s']:.1f}",
                  f"{r['wall_s']:.1f}", f"{peak / 2**20:.0f}" if peak is not None else "")
    show(t)


def print_models(section: dict[str, Any], header: bool = True) -> None:
    t = table("paper-size models on CUDA" if header else "", ["model", "dtype", "compile", "batch", "protocol",
              "steps", "examples/s", "TFLOP/s", "MFU", "MFU vs bf16", "peak GiB", "warm-up s"])
    for c in section["cells"]:
        if "error" in c:
            t.add_row(c["config"], c["dtype"], "on" if c["compile"] else "off", str(c["batch_size"]), c["protocol"],
                      c["error"][:100], *[""] * 6)
            continue
        t.add_row(c["config"], c["dtype"], "on" if c["compile"] else "off", str(c["batch_size"]), c["protocol"],
                  f"{c['mean_steps']:.2f}", f"{c['examples_per_s']:.0f}", f"{c['flops_per_s'] / 1e12:.1f}",
                  f"{c['mfu']:.1%}", f"{c['mfu_vs_bf16']:.1%}", f"{c['peak_gpu_bytes'] / 2**30:.2f}",
                  f"{c['warm_up_s']:.1f}")
    show(t)
