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
from hrm.checkpoint import build_checked_model, load_checkpoint
from hrm.dataset import Dataset, open_dataset
from hrm.engine import Engine, EngineSettingError
from hrm.errors import InputError
from hrm.metrics import StatsTable
from hrm.predictions import prediction_table

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
        "--protocol",
        choices=("fixed", "adaptive"),
        default="fixed",
        help="fixed: every example runs all ACT steps (the reference evaluator); adaptive: "
        "examples halt on the q-head, slots are refilled at once (default: fixed)",
    )
    parser.add_argument("--steps", type=int, help="ACT steps (fixed) or maximum steps (adaptive); default halt_max_steps")
    parser.add_argument("--min-steps", type=int, default=1, help="adaptive: earliest step an example may halt")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per forward batch (default: 256)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="activation dtype (default: the checkpoint's forward_dtype)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--streams", type=int, default=1,
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

        return run_config_file(args.config, [])
    if args.data is None:
        raise InputError("--data is required with --checkpoint")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)
    return 0


def evaluate(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint, args.config)
    dataset = open_dataset(args.data)
    if args.split not in dataset.splits:
        raise InputError(f"{args.data}: no split {args.split!r} (splits: {', '.join(dataset.splits)})")
    meta = dataset.metadata(args.split)
    model = build_checked_model(
        ckpt, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers, dataset=args.data, forward_dtype=args.dtype
    )
    try:
        engine = Engine(model, ckpt.spec.loss_type, ignore_label_id=meta.ignore_label_id, device=args.device,
                        batch_size=args.batch_size, streams=args.streams, compile=args.compile)
    except EngineSettingError as err:  # streams below one or on a GPU; compile without a C++ compiler
        raise InputError(f"--{err.setting}: {err}") from None
    output = args.output or str(Path("results") / f"{ckpt.path.parent.name}-{ckpt.path.name}")
    sets = args.sets or dataset.sets(args.split)
    unknown = sorted(set(sets) - set(dataset.sets(args.split)))
    if unknown:
        raise InputError(f"{args.data}: split {args.split!r} has no set(s) {', '.join(unknown)}")

    stats, counts = StatsTable(), {"forward_steps": 0, "examples": 0}

    def evaluated_tables():
        """Evaluate chunk by chunk; the Parquet writer pulls one chunk's table at a time, so
        memory stays bounded on huge sets and a failure publishes nothing."""
        with progress_bar(sum(dataset.num_examples(args.split, s) for s in sets), quiet=args.json) as advance:
            for set_name, batch in iterate_examples(dataset, args.split, sets):
                result = engine.run(batch.inputs, batch.labels, batch.puzzle_identifiers, protocol=args.protocol,
                                    steps=args.steps, min_steps=args.min_steps)
                stats.update(set=set_name, tier=batch.columns.get("tier"), **result.per_example())
                counts["forward_steps"] += result.forward_steps
                counts["examples"] += len(result)
                advance(len(result))
                yield prediction_table(result, set_name=set_name, example_id=batch.example_id,
                                       puzzle_index=batch.puzzle_index, puzzle_identifier=batch.puzzle_identifiers,
                                       columns=batch.columns)

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
        "checkpoint": str(ckpt.path),
        "checkpoint_sha256": ckpt.content_hash(),
        "family": ckpt.spec.family,
        "step": ckpt.step,
        "data": args.data,
        "dataset_hash": dataset.content_hash(),
        "split": args.split,
        "protocol": args.protocol,
        "dtype": str(model.config.forward_dtype),
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
            yield set_name, dataset.examples(split, set_name, start, min(total, start + CHUNK_EXAMPLES))


class progress_bar:
    """A rich progress bar on stderr (nothing when quiet or when stderr is not a terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.enabled = total, not quiet and sys.stderr.isatty()

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self.progress = Progress(transient=True)
        self.progress.start()
        task = self.progress.add_task("evaluating", total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['checkpoint']} on {report['data']} [{report['split']}], {report['protocol']} protocol")
    for column in ("set", "count", "exact (95% CI)", "token acc", "q-halt acc", "mean steps", "lm loss"):
        table.add_column(column, justify="right")
    for name, m in report["metrics"].items():
        table.add_row(
            name,
            str(m["count"]),
            f"{m['exact_accuracy']:.4f} ({m['exact_ci_low']:.4f}–{m['exact_ci_high']:.4f})",
            f"{m['token_accuracy']:.4f}",
            f"{m['q_halt_accuracy']:.4f}",
            f"{m['mean_steps']:.2f}",
            f"{m['lm_loss']:.4f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"{report['examples']} examples in {report['eval_seconds']:.2f} s "
        f"({report['examples_per_second']:.1f} examples/s, {report['forward_steps']} example-steps); "
        f"predictions: {report['predictions']}"
    )


if __name__ == "__main__":  # `python -m jobs.evaluate …`, what `ray job submit` runs
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
