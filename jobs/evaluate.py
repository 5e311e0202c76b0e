"""`hrm-eval evaluate`: one checkpoint on one dataset split, in this process, no Ray.

Prints the metrics per set (or, with --json, exactly one JSON object on stdout) and writes
per-example predictions (Parquet) and metrics.json under --output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hrm import storage
from hrm.checkpoint.loading import load_checkpoint
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.eval.engine import EngineSettingError
from hrm.eval.metrics import StatsTable
from hrm.eval.shard import build_engine, evaluate_examples

from cluster.progress import METRIC_COLUMNS, Meter, metric_cells, print_metrics_table

from jobs.cli import positive_int

CHUNK_EXAMPLES = 8192  # examples read and evaluated at a time: bounded memory on huge sets


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Evaluate one checkpoint on one dataset split in this process (no Ray). CKPT is a "
        "step_N file or a training run directory (its newest step_N is used); DATA is a "
        "dataset in the reference numpy layout or ours (Parquet), a local path or s3:// URI. "
        "With --config CONFIG.yaml and no --checkpoint, runs the config-driven distributed "
        "job instead (what `ray job submit … python -m jobs.evaluate --config …` calls)."
    )
    parser.add_argument("--checkpoint", metavar="CKPT", help="step_N file or run directory")
    parser.add_argument("--data", metavar="DATA", help="dataset directory or URI")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--sets", nargs="*", help="only these sets of the split (default: all)")
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="with --checkpoint: the training config (all_config.yaml) for a checkpoint that has none "
        "beside it; without --checkpoint: a run config for the distributed job",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="with --config RUN.yaml: override a run config value, as `hrm-eval run --set` (repeatable)",
    )
    parser.add_argument(
        "--protocol",
        choices=("fixed", "adaptive"),
        default="fixed",
        help="fixed: every example runs all ACT steps (the reference evaluator); adaptive: "
        "examples halt on the q-head, slots are refilled at once (default: fixed)",
    )
    parser.add_argument("--steps", type=positive_int, help="ACT steps (fixed) or maximum steps (adaptive); default halt_max_steps")
    parser.add_argument("--min-steps", type=positive_int, default=1, help="adaptive: earliest step an example may halt")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="examples per forward batch (default: 256)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when this machine has a GPU)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="activation dtype (default: the checkpoint's forward_dtype)"
    )
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--streams", type=positive_int, default=1,
        help="CPU only: split the batch between this many worker threads, each running single-threaded "
        "kernels on batch-size/streams examples; one per core is usually fastest on a multi-core CPU "
        "(see `python -m jobs.bench engine --streams`). Fixed-protocol results equal those of "
        "--batch-size batch-size/streams with one stream (default: 1)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the reasoning modules: the elementwise work between matmuls is fused, "
        "after a compilation of a few seconds (on CPU it needs a C++ compiler); results equal eager up "
        "to float rounding; combines with --streams",
    )
    parser.add_argument(
        "--output", metavar="URI", help="where predictions.parquet and metrics.json go (default: results/<run>-<step>)"
    )
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        if args.config is None:
            raise InputError("give --checkpoint and --data, or --config RUN.yaml for the distributed job")
        from jobs.run import run_config_file

        return run_config_file(args.config, args.overrides)
    if args.overrides:
        raise InputError("--set overrides a run config: it goes with --config RUN.yaml and no --checkpoint")
    if args.data is None:
        raise InputError("--data is required with --checkpoint")
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)
    return 0


def check_device(device: str) -> None:
    # torch would fail deep inside the first .to(device), with an assertion about its build
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device: cuda, but torch sees no CUDA device on this machine (use --device cpu)")


def check_steps(steps: int, min_steps: int) -> None:
    """`steps` is --steps or the checkpoint's halt_max_steps."""
    if min_steps > steps:
        raise InputError(f"--min-steps: {min_steps} is more than the {steps} steps an example runs at most "
                         f"(--steps, default halt_max_steps); give --min-steps <= {steps}")


def evaluate(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint, args.config)
    dataset = open_dataset(args.data)
    meta = dataset.metadata(args.split)
    check_steps(args.steps or ckpt.spec.model_config(meta.sizes).halt_max_steps, args.min_steps)
    try:
        engine = build_engine(ckpt, meta, args.data, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
                              streams=args.streams, compile=args.compile)
    except EngineSettingError as err:  # streams below one or on a GPU; compile without a C++ compiler
        raise InputError(f"--{err.setting}: {err}") from None
    output = args.output or str(Path("results") / ckpt.name.replace("/", "-"))
    sets = dataset.selected_sets(args.split, args.sets, "--sets")

    stats, counts = StatsTable(), {"forward_steps": 0, "examples": 0}

    def evaluated_tables():
        """Evaluate chunk by chunk; the Parquet writer pulls one chunk's table at a time, so
        memory stays bounded on huge sets and a failure publishes nothing."""
        meter = Meter("examples", sum(dataset.num_examples(args.split, s) for s in sets), quiet=args.json)
        meter.start()
        try:
            for batch in iterate_examples(dataset, args.split, sets):
                done = evaluate_examples(engine, batch, protocol=args.protocol, steps=args.steps,
                                         min_steps=args.min_steps)
                stats.merge(done.stats)
                counts["forward_steps"] += done.result.forward_steps
                counts["examples"] += len(done.result)
                meter.update(counts["examples"], f"set {batch.set}")
                yield done.predictions
        finally:
            meter.stop()

    eval_started = time.perf_counter()
    predictions_uri = storage.join(output, "predictions.parquet")
    storage.write_parquet_atomic(predictions_uri, evaluated_tables())
    eval_seconds = time.perf_counter() - eval_started
    examples, forward_steps = counts["examples"], counts["forward_steps"]
    figures = stats.finalize()
    report = {
        "metrics": figures["sets"],
        "total": figures["all"],
        "tiers": figures["tiers"],
        "predictions": predictions_uri,
        "checkpoint": ckpt.uri,
        "checkpoint_sha256": ckpt.content_hash(),
        "family": ckpt.spec.family,
        "step": ckpt.step,
        "data": args.data,
        "dataset_hash": dataset.content_hash(),
        "split": args.split,
        "protocol": args.protocol,
        "dtype": str(engine.config.forward_dtype),
        "device": args.device,
        "batch_size": args.batch_size,
        "examples": examples,
        "forward_steps": forward_steps,
        "eval_seconds": eval_seconds,
        "examples_per_second": examples / eval_seconds if eval_seconds > 0 else None,
        "wall_seconds": time.perf_counter() - started,
    }
    storage.write_json_atomic(storage.join(output, "metrics.json"), report)
    return report


def iterate_examples(dataset: Dataset, split: str, sets: list[str]):
    for set_name in sets:
        total = dataset.num_examples(split, set_name)
        for start in range(0, total, CHUNK_EXAMPLES):
            yield dataset.examples(split, set_name, start, min(total, start + CHUNK_EXAMPLES))


def print_summary(report: dict) -> None:
    rows = [[name, *metric_cells(m)] for name, m in report["metrics"].items()]
    print_metrics_table(f"{report['checkpoint']} on {report['data']} [{report['split']}], {report['protocol']} protocol",
                        ["set", *METRIC_COLUMNS], rows)
    print(f"{report['examples']} examples in {report['eval_seconds']:.2f} s "
          f"({report['examples_per_second']:.1f} examples/s, {report['forward_steps']} example-steps); "
          f"predictions: {report['predictions']}")


if __name__ == "__main__":  # `python -m jobs.evaluate …`, what `ray job submit` runs
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
