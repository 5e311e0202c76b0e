"""Benchmarks: `python -m jobs.bench SUBCOMMAND [--json OUT] …`; every run saves its figures
(by default under results/bench/).

`engine`: examples/s of the ACT engine (fixed and adaptive protocols) on randomly initialised
models, for several batch sizes and dtypes, set against this machine's dense matmul FLOP/s
measured in the same run. FLOPs per example are counted from the model config by
`hrm.flops` (matmuls only; see there for what is counted). The achieved fraction of the
roofline is FLOPs/example × examples/s ÷ the matmul FLOP/s of a large square product (the
fastest layout and size of a sweep before the cells), re-measured around every repeat because
a shared machine drifts. Next to it, "matmuls": the rate of the model's own matmul shapes
alone, run on the same streams, over that roofline — roughly what the engine would reach if
only its matmuls took time.

Every figure is measured in the run that prints it; each cell is timed `--repeats` times and
reported by its median, with the 1-minute load average before and after, because a busy
machine shows up directly in these figures.

Sub-commands live in SUBCOMMANDS, one `configure_<name>` and one `run_<name>` each.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.eval.engine import Engine
from hrm.model.flops import Matmul, flops_per_example_step, step_matmuls
from hrm.model.models import ModelConfig, RecursiveReasoningModel, build_model

from jobs.bench_models import CONFIGS, model_fields

SQUARE_SIZES = (1024, 2048, 4096)
# Operand layouts of a square product, each writing into a preallocated `out` so that only the
# matmul is timed. "nt" (a @ bᵀ) is the layout of the model's linear layers.
LAYOUTS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nn": lambda a, b, out: torch.mm(a, b, out=out),
    "nt": lambda a, b, out: torch.mm(a, b.t(), out=out),
    "tn": lambda a, b, out: torch.mm(a.t(), b, out=out),
}
# A matmul size (or model shape) whose single product takes longer than this is timed once,
# and larger square sizes are skipped: bfloat16 without hardware support can be 100× slower.
SLOW_PRODUCT_S = 2.0
# By default a model shape's product is repeated until one timing takes about this long: the
# timings of short products are mostly clock and loop overhead.
MIN_TIMED_S = 0.02


# -- engine ---------------------------------------------------------------------------------
def configure_engine(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["paper", "small"])
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"],
                        help="bfloat16 on a CPU without bf16 matmul units (e.g. AVX2) runs 10-100x slower than "
                             "float32: give it fewer --steps and smaller --batch-sizes")
    parser.add_argument("--protocols", nargs="+", choices=["fixed", "adaptive"], default=["fixed", "adaptive"])
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override model config fields of every config, e.g. --set halt_max_steps=4")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--streams", nargs="+", type=int, default=[1],
                        help="engine worker threads, each with batch/streams examples and threads/streams "
                             "kernel threads (see hrm.engine)")
    parser.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off"],
                        help="run eager, torch.compile'd (see hrm.engine), or both")
    parser.add_argument("--steps", type=int, default=None,
                        help="ACT steps (fixed) / step limit (adaptive); default: the config's halt_max_steps")
    parser.add_argument("--adaptive-batches", type=int, default=4,
                        help="the adaptive run evaluates this many batches' worth of examples, so slots get refilled")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--timing-window-s", type=float, default=MIN_TIMED_S,
                        help="a model matmul shape is repeated until one timing takes about this long: shorter "
                             "windows finish sooner and are noisier")
    parser.add_argument("--square-sizes", nargs="+", type=int, default=list(SQUARE_SIZES),
                        help="n of the n×n matmuls that measure the roofline")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)


def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict[str, Any] = {"benchmark": "engine", "command": args.command, "machine": machine_info(args.threads),
                              "matmul": {}, "configs": {}, "cells": []}
    measure_roofline = lambda when: {dtype: square_matmul_rate(args.square_sizes, getattr(torch, dtype), device, when)
                                     for dtype in args.dtypes}
    before = measure_roofline("before")
    report["roofline_probe"] = {dtype: {"layout": rate["best_layout"], "n": rate["best_n"]} for dtype, rate in before.items()}
    probes = {dtype: roofline_probe(rate, getattr(torch, dtype), device) for dtype, rate in before.items()}
    for name in args.configs:
        config = bench_config(name, "float32", args.set)
        flops = flops_per_example_step(config)
        report["configs"][name] = {"model": config.model_dump(), "flops_per_example_step": flops,
                                   "flops_per_example_step_total": sum(flops.values())}
        for dtype in args.dtypes:
            for batch_size, streams, compiled in itertools.product(args.batch_sizes, args.streams, args.compile):
                for protocol in args.protocols:
                    cell = bench_cell(name, dtype, protocol, batch_size, streams, compiled == "on", probes[dtype], args,
                                      device)
                    report["cells"].append(cell)
                    print(format_cell(cell), flush=True)
    after = measure_roofline("after")
    for dtype in args.dtypes:
        report["matmul"][dtype] = best_square_rate(before[dtype]["square"] + after[dtype]["square"])
    print()
    print(format_report(report))
    return report


def bench_config(name: str, dtype: str, overrides: list[str]) -> ModelConfig:
    fields = model_fields(name, dtype)
    for item in overrides:
        key, _, value = item.partition("=")
        fields[key] = value  # pydantic converts the string to the field's type
    return ModelConfig(**fields)


def bench_model(config: ModelConfig, seed: int) -> RecursiveReasoningModel:
    """A random model whose q-head halts examples at varied steps, so the adaptive protocol
    has something to do (a fresh model's q-head never halts)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        model.q_head.weight.normal_(std=config.hidden_size**-0.5)
        model.q_head.bias.copy_(torch.tensor([-1.0, 0.0]))  # q_halt must beat q_continue by a margin
    return model


def random_batch(config: ModelConfig, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, config.vocab_size, (count, config.seq_len))
    labels = rng.integers(1, config.vocab_size, (count, config.seq_len))
    identifiers = rng.integers(0, config.num_puzzle_identifiers, count)
    return inputs, labels, identifiers


def bench_cell(name: str, dtype: str, protocol: str, batch_size: int, streams: int, compiled: bool,
               roofline: Callable[[], float], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time one (config, dtype, protocol, batch size, streams, compile): `repeats` runs over the
    same examples, after a warm-up that also pays any compilation.

    A shared machine's matmul rate drifts by tens of percent within minutes, so every repeat is
    paired with rates measured around it: the square-matmul roofline just before and just after
    it (the better of the two), and the model's bare matmul shapes just after it. Each fraction
    is taken within its repeat, then the median over repeats is reported."""
    config = bench_config(name, dtype, args.set)
    engine = Engine(bench_model(config, args.seed), "stablemax_cross_entropy", ignore_label_id=0, device=device,
                    batch_size=batch_size, streams=streams, compile=compiled)
    count = batch_size * (args.adaptive_batches if protocol == "adaptive" else 1)
    data = random_batch(config, count, args.seed)
    steps = args.steps or config.halt_max_steps
    warm_up = time.perf_counter()
    engine.run(*(a[:batch_size] for a in data), steps=1)  # allocator, BLAS and kernel set-up, compilation
    warm_up_s = time.perf_counter() - warm_up
    load_before = os.getloadavg()[0]
    matmul_rate = model_matmul_probe(config, engine, device, args.timing_window_s)
    seconds, matmuls, result = [], [], None
    probed = [roofline()]  # before the first repeat, then after each: one repeat's "after" is the next's "before"
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = engine.run(*data, protocol=protocol, steps=steps)
        seconds.append(time.perf_counter() - start)
        matmuls.append(matmul_rate())
        probed.append(roofline())
    rooflines = [max(before, after) for before, after in zip(probed, probed[1:])]
    flops_per_example = sum(flops_per_example_step(config).values()) * result.forward_steps / count
    achieved = [flops_per_example * count / s for s in seconds]
    matmul_rates = [m["flops_per_s"] for m in matmuls]
    examples_per_s = count / statistics.median(seconds)
    return {
        "config": name, "dtype": dtype, "protocol": protocol, "batch_size": batch_size, "streams": streams,
        "compile": compiled, "warm_up_s": warm_up_s, "examples": count,
        "max_steps": steps, "mean_steps": result.forward_steps / count, "seconds": seconds,
        "examples_per_s": examples_per_s, "flops_per_example": flops_per_example,
        "flops_per_s": flops_per_example * examples_per_s,
        "roofline_flops_per_s": rooflines,
        "model_shape_matmul": matmuls,
        "roofline_fraction": statistics.median(a / r for a, r in zip(achieved, rooflines)),
        "matmul_fraction": statistics.median(m / r for m, r in zip(matmul_rates, rooflines)),
        "model_shape_fraction": statistics.median(a / m for a, m in zip(achieved, matmul_rates)),
        "load_average": [load_before, os.getloadavg()[0]],
    }


# -- matmul roofline ------------------------------------------------------------------------
def time_product(product: Callable[[], torch.Tensor], repeats: int = 3) -> float:
    """Best wall time of `product` after one warm-up call; a slow product is timed once."""
    start = time.perf_counter()
    product()
    best = time.perf_counter() - start
    if best > SLOW_PRODUCT_S:
        return best
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return best


def square_matmul_rate(sizes: list[int], dtype: torch.dtype, device: torch.device, when: str) -> dict[str, Any]:
    """Dense n×n by n×n FLOP/s for growing n, in each operand layout; the best is the roofline.
    `when` labels the rows (the bench measures before and after its cells).

    Layouts matter where a dtype has no hardware support: PyTorch's fallback bfloat16 kernel
    on AVX2 CPUs is several times faster for some than for others."""
    rows = []
    for layout in LAYOUTS:
        for n in sorted(sizes):
            seconds = time_product(square_product(layout, n, dtype, device))
            rows.append({"when": when, "n": n, "layout": layout, "seconds": seconds, "flops_per_s": 2 * n**3 / seconds})
            if seconds > SLOW_PRODUCT_S:
                break
    return best_square_rate(rows)


def roofline_probe(square: dict[str, Any], dtype: torch.dtype, device: torch.device) -> Callable[[], float]:
    """A quick re-measurement of the roofline: FLOP/s now of the square product (layout, n) that
    was fastest in `square` (a `square_matmul_rate` result)."""
    n = square["best_n"]
    product = square_product(square["best_layout"], n, dtype, device)
    return lambda: 2 * n**3 / time_product(product)


def square_product(layout: str, n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], torch.Tensor]:
    a, b, out = (torch.randn(n, n, device=device).to(dtype) for _ in range(3))
    return lambda: sync(LAYOUTS[layout](a, b, out))


def best_square_rate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(rows, key=lambda r: r["flops_per_s"])
    return {"square": rows, "best_n": best["n"], "best_layout": best["layout"], "best_when": best["when"],
            "best_flops_per_s": best["flops_per_s"]}


@dataclass(frozen=True)
class ShapeTiming:
    """One model matmul shape, set up for timing: a product per stream and how often to run it."""

    matmuls: list[Matmul]  # every matmul of the step with this shape
    products: list[Callable[[], torch.Tensor]]
    repeat: int  # products per timing
    timings: int  # the best of this many timings counts


def model_matmul_probe(config: ModelConfig, engine: Engine, device: torch.device,
                       window_s: float) -> Callable[[], dict[str, Any]]:
    """Measures, on each call, the FLOP/s of the model's own matmul shapes at a stream's batch,
    laid out as `engine` runs its streams: one copy of each product per stream, concurrently, on
    the engine's kernel threads per stream (linear layers as a @ wᵀ, attention as bmm). Operands
    and repeat counts are set up once, here. The aggregate is total FLOPs over total time, as
    run back to back: divided by the roofline, about the fraction the engine would reach if all
    its other work (norms, softmax, SiLU, RoPE, heads) took no time. Only about: streams running
    the same shape in lockstep contend for the shared cache more than the engine's streams,
    which drift apart, so with several streams the engine can beat it."""
    by_shape: dict[tuple[int, int, int, int], list[Matmul]] = {}
    for matmul in step_matmuls(config, engine.stream_batch_size):
        by_shape.setdefault((matmul.batch, matmul.m, matmul.k, matmul.n), []).append(matmul)
    shapes = []
    for (batch, m, k, n), matmuls in by_shape.items():
        products = [shape_product(batch, m, k, n, config.dtype, device) for _ in range(engine.streams)]
        once = time_product(products[0])
        shapes.append(ShapeTiming(matmuls, products, repeat=math.ceil(window_s / once),
                                  timings=1 if once > SLOW_PRODUCT_S else 3))

    def measure() -> dict[str, Any]:
        rows, total_flops, total_seconds = [], 0, 0.0
        for shape in shapes:
            first = shape.matmuls[0]
            seconds = min(concurrent_seconds(engine, shape.products, shape.repeat) for _ in range(shape.timings))
            flops_once = 2 * first.batch * first.m * first.k * first.n * engine.streams
            calls = sum(mm.calls for mm in shape.matmuls)
            rows.append({"components": sorted({mm.component for mm in shape.matmuls}), "batch": first.batch,
                         "m": first.m, "k": first.k, "n": first.n, "streams": engine.streams,
                         "flops_per_s": flops_once / seconds})
            total_flops += flops_once * calls
            total_seconds += seconds * calls
        return {"shapes": rows, "flops_per_s": total_flops / total_seconds}

    return measure


def concurrent_seconds(engine: Engine, products: list[Callable[[], torch.Tensor]], repeat: int) -> float:
    """Seconds per product with one product running on every stream at once. Each stream warms up
    (its thread is new), waits for the others, then times `repeat` products; the slowest counts."""
    start_together = threading.Barrier(len(products))

    def timed(product: Callable[[], torch.Tensor]) -> float:
        try:
            product()
        except BaseException:
            start_together.abort()  # the other streams raise instead of waiting for this one forever
            raise
        start_together.wait()
        start = time.perf_counter()
        for _ in range(repeat):
            product()
        return time.perf_counter() - start

    return max(engine.in_streams(timed, products)) / repeat


def shape_product(batch: int, m: int, k: int, n: int, dtype: torch.dtype,
                  device: torch.device) -> Callable[[], torch.Tensor]:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device).to(dtype)

    if batch == 1:  # a linear layer: activations [m, k] times a weight stored [n, k]
        x, weight, out = randn(m, k), randn(n, k), randn(m, n)
        return lambda: sync(LAYOUTS["nt"](x, weight, out))
    a, b, out = randn(batch, m, k), randn(batch, k, n), randn(batch, m, n)
    return lambda: sync(torch.bmm(a, b, out=out))


def sync(result: torch.Tensor) -> torch.Tensor:
    if result.device.type == "cuda":
        torch.cuda.synchronize(result.device)
    return result


# -- reporting ------------------------------------------------------------------------------
def machine_info(threads: int) -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


CELL_HEADER = (f"{'config':<7}{'dtype':<10}{'protocol':<10}{'batch':>6}{'streams':>8}{'compile':>8}{'examples':>9}{'steps':>7}"
               f"{'ex/s':>10}{'GFLOP/ex':>10}{'GFLOP/s':>9}{'roofline':>10}{'matmuls':>9}{'shapes':>8}{'load':>11}")


def format_cell(c: dict[str, Any]) -> str:
    load = "{:.1f}→{:.1f}".format(*c["load_average"])
    return (f"{c['config']:<7}{c['dtype']:<10}{c['protocol']:<10}{c['batch_size']:>6}{c['streams']:>8}{'on' if c['compile'] else 'off':>8}{c['examples']:>9}"
            f"{c['mean_steps']:>7.2f}{c['examples_per_s']:>10.3f}{c['flops_per_example'] / 1e9:>10.2f}"
            f"{c['flops_per_s'] / 1e9:>9.1f}{c['roofline_fraction']:>10.1%}{c['matmul_fraction']:>9.1%}"
            f"{c['model_shape_fraction']:>8.0%}{load:>11}")


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['machine']['processor']}, {report['machine']['torch_threads']} torch threads, "
             f"torch {report['machine']['torch']}"]
    for dtype, rate in report["matmul"].items():
        for when in ("before", "after"):
            sizes = ", ".join(f"{r['layout']} {r['n']}: {r['flops_per_s'] / 1e9:.1f}"
                              for r in rate["square"] if r["when"] == when)
            lines.append(f"{dtype} square matmul GFLOP/s by layout and n, {when} the cells ({sizes})")
        probe = report["roofline_probe"][dtype]
        lines.append(f"{dtype} best square matmul = {rate['best_flops_per_s'] / 1e9:.1f} GFLOP/s "
                     f"({rate['best_layout']} {rate['best_n']}, {rate['best_when']} the cells); around each repeat "
                     f"the cells re-measure {probe['layout']} {probe['n']}, the fastest before them")
    for name, info in report["configs"].items():
        parts = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in info["flops_per_example_step"].items())
        lines.append(f"{name}: MFLOP per example per ACT step {info['flops_per_example_step_total'] / 1e6:.1f} ({parts})")
    lines += ["", CELL_HEADER, *(format_cell(c) for c in report["cells"]),
              "", "steps = mean ACT steps per example; roofline = achieved ÷ square matmul FLOP/s measured just "
              "before and just after the same repeat (the better of the two); matmuls = FLOP/s of the model's own "
              "matmul shapes alone, timed just after the repeat with each shape on every stream at once, ÷ the same "
              "roofline (in lockstep, the streams contend for the shared cache more than the engine's do, so with "
              "several streams the engine can beat it); shapes = achieved ÷ that matmul FLOP/s "
              "(all three: median over repeats); load = 1-min load average before→after"]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------
RESULTS_DIR = Path("results") / "bench"  # under the working directory, like evaluate's results/
# One entry per sub-command: (help, the module holding its configure_<name> and run_<name>).
# A module is imported only for its own sub-command: several import Ray, which a machine
# measuring the engine alone (a bare GPU image) may not have.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "engine": ("ACT engine examples/s against the measured matmul roofline", __name__),
    "cluster": ("the Ray path against the in-process engine: throughput and a checkpoint sweep",
                "jobs.bench_cluster"),
    "scale": ("the real job at chosen sizes with a tiny model: driver memory, preflight, per-unit overhead, "
              "resume scan, summary-file sizes", "jobs.bench_scale"),
    "preflight": ("--dry-run of a sweep of real-size checkpoints (local and loopback S3) over a full-size dataset: "
                  "seconds and peak RSS", "jobs.bench_preflight"),
    "unit": ("what a work unit costs besides the model at the default shard size, against the paper-size HRM's "
             "time for it", "jobs.bench_unit"),
    "faults": ("the fault matrix: actors and drivers killed part-way through a small sweep; units lost or "
               "doubled, metrics against a clean run", "jobs.bench_faults"),
    "votes": ("ARC voting and a checkpoint ensemble at ARC aug-1000 size (synthetic): seconds and peak RSS",
              "jobs.bench_votes"),
    "overlap": ("hrm-eval overlap at Sudoku-Extreme and ARC aug-1000 sizes (synthetic, planted exact and augmented "
                "copies): seconds, peak RSS, planted found and nothing else", "jobs.bench_overlap"),
    "threads": ("hrm-eval evaluate's CPU thread layouts, idle and beside busy neighbours: which stays fast on a "
                "shared machine", "jobs.bench_threads"),
    "gpu": ("the CUDA path in one invocation of at most --budget-s: conformance in float32 and bfloat16, the "
            "paper-size HRM and TRM (examples/s, TFLOP/s, MFU, peak memory), two actors sharing one GPU",
            "jobs.bench_gpu"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every sub-command by name and help; only `chosen`'s options (its module imported)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    for name, (help_text, module_name) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        module = importlib.import_module(module_name)
        getattr(module, f"configure_{name}")(sub_parser)
        sub_parser.add_argument("--json", type=Path, default=None,
                                help=f"where the full results go (default: {RESULTS_DIR}/{name}-<time>.json)")
        sub_parser.set_defaults(run=getattr(module, f"run_{name}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(next((arg for arg in argv if not arg.startswith("-")), None)).parse_args(argv)
    args.command = shlex.join(["python", "-m", "jobs.bench", *argv])
    out = args.json or RESULTS_DIR / f"{args.subcommand}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = args.run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
