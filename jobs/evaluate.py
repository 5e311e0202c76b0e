"""`hrm-eval evaluate`: one checkpoint on one dataset split, in this process, no Ray.

Prints the metrics per set (or, with --json, exactly one JSON object on stdout: metrics.json's
document) and writes under --output what a run of this one checkpoint would: per-example
predictions in predictions/checkpoint=<name>/ (Parquet, one part per set) and metrics.json in
the run's shape (cluster.results.metrics), metrics.json last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import torch

from hrm import storage
from hrm.checkpoint.loading import load_checkpoint
from hrm.data.reader import open_dataset
from hrm.data.schema import Shard
from hrm.errors import InputError
from hrm.eval.ablation import ablate_identifiers
from hrm.eval.engine import CompileMode, EngineSettingError, check_compile_mode
from hrm.eval.metrics import StatsTable
from hrm.eval.shard import build_engine, evaluate_examples
from hrm.puzzles.tokenizers import text_tokenizer
from hrm.secrets import redact_document

from cluster.config import (
    CheckpointSource,
    ClusterConfig,
    DatasetConfig,
    EvalConfig,
    OutputConfig,
    RunConfig,
    limited_to,
)
from cluster.plan import Sample, read_examples, source_checkpoints
from cluster.progress import METRIC_COLUMNS, Meter, metric_cells, print_metrics_table
from cluster.results.layout import PREDICTIONS, prediction_key
from cluster.results.metrics import CheckpointMetrics, EvaluateJob, MetricsDocument, write_metrics

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
        "--puzzle-ids", choices=("as-is", "blank", "shuffled"), default="as-is",
        help="the puzzle identifiers the model is given: as-is (as trained), blank (the blank identifier for every "
             "example) or shuffled (each puzzle another's): how much accuracy rests on recalling a puzzle's learned "
             "embedding (default: as-is)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="only the first N examples of each set: a quick, partial look (metrics.json records "
                             "it as \"limit\", and the summary says so)")
    parser.add_argument("--sample-seed", type=int, metavar="S",
                        help="with --limit N: N examples of each set drawn without replacement by numpy's "
                             "default_rng(S), kept in dataset order, instead of the first N (metrics.json records "
                             "it as \"sample_seed\")")
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
    parser.add_argument("--threads", type=positive_int,
                        help="torch CPU threads in one stream (with it, --streams defaults to 1)")
    parser.add_argument(
        "--streams", type=positive_int,
        help="CPU only: split the batch between this many worker threads, each running single-threaded "
        "kernels on batch-size/streams examples. Fixed-protocol results equal those of --batch-size "
        "batch-size/streams with one stream. Default on a CPU: one per core this process may use, the layout "
        "that stays fast when other jobs share the machine (`python -m jobs.bench threads`: torch's own "
        "multi-threaded kernels slow down many times beside busy neighbours); --streams 1 --threads N for "
        "torch's threads instead; on a GPU: 1",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the reasoning modules: the elementwise work between matmuls is fused, "
        "after a compilation of a few seconds (on CPU it needs a C++ compiler); results equal eager up "
        "to float rounding; combines with --streams",
    )
    parser.add_argument(
        "--compile-mode", choices=get_args(CompileMode),
        help="with --compile: torch.compile's mode (default: torch's): reduce-overhead runs CUDA graphs (CUDA only), "
        "max-autotune tries several kernels per matmul (a longer compilation); which pays on a GPU is for "
        "`python -m jobs.bench gpu` to measure",
    )
    parser.add_argument(
        "--output", metavar="URI",
        help="where predictions/ and metrics.json go, laid out as in a run's results (default: results/<run>-<step>)",
    )
    parser.add_argument(
        "--log-samples", action="store_true",
        help="also store each example's inputs and labels (token ids) in its prediction row",
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
    if args.sample_seed is not None and (args.limit is None or args.sample_seed < 0):
        raise InputError(f"--sample-seed: {args.sample_seed} " + (
            "is negative (a seed is an integer >= 0)" if args.sample_seed < 0 else
            "without --limit N: a seeded sample draws N examples of each set; give --limit too"))
    check_device(args.device)
    try:  # before anything loads: a mode of a compile that is off, or CUDA graphs on a CPU
        check_compile_mode(args.compile, args.compile_mode, torch.device(args.device))
    except EngineSettingError as err:
        raise InputError(f"--compile-mode: {err}") from None
    args.streams = args.streams or default_streams(args.device, args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)
    return 0


def default_streams(device: str, threads: int | None) -> int:
    """One single-threaded stream per usable core on a CPU: measured the most robust layout when
    the machine is shared (`python -m jobs.bench threads`); one where the user set the threads."""
    if device == "cuda" or threads:
        return 1
    return len(os.sched_getaffinity(0))


def check_device(device: str) -> None:
    # torch would fail deep inside the first .to(device), with an assertion about its build
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device: cuda, but torch sees no CUDA device on this machine (use --device cpu)")


def check_steps(steps: int, min_steps: int) -> None:
    """`steps` is --steps or the checkpoint's halt_max_steps."""
    if min_steps > steps:
        raise InputError(f"--min-steps: {min_steps} is more than the {steps} steps an example runs at most "
                         f"(--steps, default halt_max_steps); give --min-steps <= {steps}")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate, write the predictions and metrics.json, and return metrics.json's document:
    a run's shape (cluster.results.metrics) with this one checkpoint, named as a run names it,
    and what only this command measures under "job"."""
    started = time.perf_counter()
    # named as a run names it; a run directory: its newest step, as a run takes it
    (ref,) = source_checkpoints(CheckpointSource(path=args.checkpoint, config=args.config))
    version = storage.version(ref.uri)  # before reading: the bytes evaluated are these or newer, never older
    ckpt = load_checkpoint(ref.uri, args.config)
    ref = ref.model_copy(update={"version": version, "family": ckpt.spec.family})
    dataset = open_dataset(args.data)
    meta = dataset.metadata(args.split)
    check_steps(args.steps or ckpt.spec.model_config(meta.sizes).halt_max_steps, args.min_steps)
    config = as_run_config(args)
    try:
        engine = build_engine(ckpt, meta, args.data, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
                              streams=args.streams, compile=args.compile, compile_mode=args.compile_mode)
    except EngineSettingError as err:  # streams below one or on a GPU; compile without a C++ compiler
        raise InputError(f"--{err.setting}: {err}") from None
    output = args.output or str(Path("results") / ref.name)
    sets = dataset.selected_sets(args.split, args.sets, "--sets")
    # One part per set, where a run whose shards span whole sets would put it: reading
    # predictions/ gives a checkpoint column here as in a run, and the part readers work on both.
    sizes = {name: dataset.num_examples(args.split, name) for name in sets}
    if args.limit is not None:  # the first N of each set (or N sampled), as a run with dataset.limit plans them
        sizes = {name: min(size, args.limit) for name, size in sizes.items()}
    sample = Sample.of(args.limit, args.sample_seed)
    parts = {name: prediction_key(ref.name, Shard(args.split, name, 0, sizes[name])) for name in sets}
    check_output_holds_no_other_predictions(output, set(parts.values()))
    load_seconds = time.perf_counter() - started

    stats, counts = StatsTable(), {"forward_steps": 0, "examples": 0}
    tokenizer = text_tokenizer(dataset)  # a text dataset's: predictions stored decoded too
    meter = Meter("examples", sum(sizes.values()), quiet=args.json)

    def evaluated_tables(set_name: str) -> Iterator[pa.Table]:
        """Evaluate a set chunk by chunk; the Parquet writer pulls one chunk's table at a time,
        so memory stays bounded on huge sets and a failure publishes no part of the set."""
        total = sizes[set_name]
        for start in range(0, total, CHUNK_EXAMPLES):
            batch = read_examples(dataset, Shard(args.split, set_name, start, min(total, start + CHUNK_EXAMPLES)), sample)
            given = ablate_identifiers(batch.puzzle_identifiers, args.puzzle_ids, meta.num_puzzle_identifiers,
                                       meta.blank_identifier_id)
            done = evaluate_examples(engine, batch, protocol=args.protocol, steps=args.steps,
                                     min_steps=args.min_steps, log_samples=args.log_samples, identifiers=given,
                                     tokenizer=tokenizer)
            stats.merge(done.stats)
            counts["forward_steps"] += done.result.forward_steps
            counts["examples"] += len(done.result)
            meter.update(counts["examples"], f"set {set_name}")
            yield done.predictions

    eval_started = time.perf_counter()
    meter.start()
    try:
        for set_name, key in parts.items():
            storage.write_parquet_atomic(storage.join(output, key), evaluated_tables(set_name))
    finally:
        meter.stop()
    eval_seconds = time.perf_counter() - eval_started
    examples = counts["examples"]
    document = MetricsDocument(
        run_id=storage.basename(output),
        dataset=args.data,
        split=args.split,
        sets=sets,
        limit=args.limit,
        sample_seed=args.sample_seed,
        eval=config.eval_identity(),
        checkpoints={ref.name: CheckpointMetrics.of(ref, stats)},
        job=EvaluateJob(
            checkpoint=ref.uri,
            dataset_hash=dataset.content_hash(),
            predictions=storage.join(output, PREDICTIONS),
            log_samples=args.log_samples,
            puzzle_ids=args.puzzle_ids,
            dtype=engine.config.forward_dtype,
            threads=torch.get_num_threads(),
            streams=args.streams,
            gpu=torch.cuda.get_device_name() if args.device == "cuda" else None,
            examples=examples,
            forward_steps=counts["forward_steps"],
            timings={"load_s": load_seconds, "evaluate_s": eval_seconds, "total_s": time.perf_counter() - started,
                     "examples_per_s": examples / eval_seconds if eval_seconds > 0 else None},
        ),
    ).to_json()
    write_metrics(output, document)  # last: an output without metrics.json is an evaluation that did not finish
    return redact_document(document)


def as_run_config(args: argparse.Namespace) -> RunConfig:
    """The run config of a run that evaluates what these flags ask: its eval identity and its
    checkpoint's name are then exactly those a run gives. Call after the flags are checked."""
    return RunConfig(
        checkpoints=[CheckpointSource(path=args.checkpoint, config=args.config)],
        dataset=DatasetConfig(uri=args.data, split=args.split, sets=args.sets or None, limit=args.limit,
                              sample_seed=args.sample_seed),
        eval=EvalConfig(protocol=args.protocol, steps=args.steps, min_steps=args.min_steps,
                        batch_size=args.batch_size, dtype=args.dtype, device=args.device, compile=args.compile,
                        compile_mode=args.compile_mode),
        # a run's actors get a GPU only when the cluster section gives them one
        cluster=ClusterConfig(gpus_per_actor=1.0 if args.device == "cuda" else 0.0),
        output=OutputConfig(log_samples=args.log_samples),
    )


def check_output_holds_no_other_predictions(output: str, keys: set[str]) -> None:
    """Parts left by an evaluation of another checkpoint or of other sets would be read with
    this one's as if they were its (every reader takes the whole predictions/ folder)."""
    others = sorted(f"{PREDICTIONS}/{path}" for path in storage.list_files(storage.join(output, PREDICTIONS))
                    if f"{PREDICTIONS}/{path}" not in keys)
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise InputError(f"{output}: holds predictions this evaluation would not replace ({others[0]}{more}); "
                         "give an --output of its own, or remove them")


def print_summary(document: dict[str, Any]) -> None:
    ((name, entry),) = document["checkpoints"].items()
    job = document["job"]
    rows = [[set_name, *metric_cells(m)] for set_name, m in entry["metrics"]["sets"].items()]
    look = limited_to(document.get("limit"), document.get("sample_seed"))
    limited = f", LIMITED to {look}" if look else ""
    if job["puzzle_ids"] != "as-is":
        limited += f", puzzle identifiers {job['puzzle_ids'].upper()}"
    print_metrics_table(f"{name} on {document['dataset']} [{document['split']}], "
                        f"{document['eval']['protocol']} protocol{limited}", ["set", *METRIC_COLUMNS], rows)
    timings = job["timings"]
    rate = timings["examples_per_s"]
    print(f"{job['examples']} examples in {timings['evaluate_s']:.2f} s "
          f"({'no time measured' if rate is None else f'{rate:.1f} examples/s'}, {job['forward_steps']} example-steps); "
          f"predictions: {job['predictions']}")


if __name__ == "__main__":  # `python -m jobs.evaluate …`, what `ray job submit` runs
    from jobs.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
