"""A measured model card of the run's best checkpoint: every figure comes from this run.

- parameters: counted from the checkpoint's tensors;
- exact accuracy (and pass@1 on a text dataset with tasks): from the run's metrics;
- throughput: the checkpoint's examples over its actors' evaluation seconds (its unit records);
- latency: one Ray task, on the kind of device the actors had (a GPU when they had one), loads
  the checkpoint and times `engine.run` on one example (batch 1) and on one batch of the run's
  batch size, repeated, warmed up once; p50 and p95 of the timed calls;
- peak memory: the evaluating actors' peak resident memory (and GPU memory on a GPU).

Figures about other systems never appear here: the report shows them apart, from a file the
user gives (`output.quoted_figures`, cluster.results.quoted), each with its source, labelled
as quoted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import ray
import torch

from hrm.checkpoint.loading import load_planned_checkpoint
from hrm.data.reader import open_dataset
from hrm.eval.shard import build_engine

from cluster.config import RunConfig
from cluster.plan import CheckpointRef, PreparedRun
from cluster.results.layout import UnitRecord

BATCH_1_CALLS, FULL_BATCH_CALLS = 20, 5
LATENCY_BUDGET_S = 30.0  # timing stops early past this (after at least 3 calls of each size)


def measure_latency(ref: CheckpointRef, config: RunConfig, repeats: tuple[int, int]) -> dict[str, Any]:
    """Seconds per `engine.run` call at batch 1 and at the run's batch size (p50, p95)."""
    dataset = open_dataset(config.dataset.uri)
    split, meta = config.dataset.split, dataset.metadata(config.dataset.split)
    ckpt = load_planned_checkpoint(ref.uri, ref.config_uri, ref.version, config.cluster.checkpoint_cache_dir)
    engine = build_engine(ckpt, meta, config.dataset.uri, dtype=config.eval.dtype, device=config.device,
                          batch_size=config.eval.batch_size, compile=config.eval.compile)
    first = dataset.selected_sets(split, config.dataset.sets, "dataset.sets")[0]
    batch = dataset.examples(split, first, 0, min(config.eval.batch_size, dataset.num_examples(split, first)))
    timed = {}
    for label, rows, calls in (("batch_1", 1, repeats[0]), (f"batch_{len(batch)}", len(batch), repeats[1])):
        args = (batch.inputs[:rows], batch.labels[:rows], batch.puzzle_identifiers[:rows])
        engine.run(*args, protocol=config.eval.protocol, steps=config.eval.steps, min_steps=config.eval.min_steps)
        seconds: list[float] = []
        started = time.perf_counter()
        while len(seconds) < calls and (len(seconds) < 3 or time.perf_counter() - started < LATENCY_BUDGET_S):
            begin = time.perf_counter()
            engine.run(*args, protocol=config.eval.protocol, steps=config.eval.steps, min_steps=config.eval.min_steps)
            if config.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - begin)
        timed[label] = {"examples": rows, "calls": len(seconds), "p50_s": float(np.percentile(seconds, 50)),
                        "p95_s": float(np.percentile(seconds, 95))}
    return {"device": config.device, "protocol": config.eval.protocol,
            "parameters": sum(int(t.numel()) for t in ckpt.state.values()), "latency": timed}


def model_card(prepared: PreparedRun, metrics: dict[str, Any], records: Iterable[UnitRecord], best: str,
               repeats: tuple[int, int] = (BATCH_1_CALLS, FULL_BATCH_CALLS)) -> dict[str, Any]:
    ref = next(r for r in prepared.checkpoints if r.name == best)
    mine = [r for r in records if r.checkpoint == best]
    if ray.is_initialized():
        cluster = prepared.config.cluster
        task = ray.remote(measure_latency).options(num_cpus=cluster.cpus_per_actor, num_gpus=cluster.gpus_per_actor)
        measured = ray.get(task.remote(ref, prepared.config, repeats))
    else:
        measured = measure_latency(ref, prepared.config, repeats)
    figures = metrics["checkpoints"][best]["metrics"]["all"]
    text = ((metrics.get("text") or {}).get("checkpoints") or {}).get(best)
    eval_s = sum(r.timings["eval_s"] for r in mine)
    return {
        "checkpoint": best, "step": ref.step, "family": ref.family, **measured,
        "exact_accuracy": figures["exact_accuracy"], "examples": figures["count"],
        "pass_at_1": _pass_at_1(text),
        "examples_per_s": sum(r.examples for r in mine) / eval_s if eval_s > 0 else None,
        "peak_rss_bytes": max((r.actor.peak_rss_bytes for r in mine), default=None),
        "peak_gpu_bytes": max((r.actor.peak_gpu_bytes for r in mine if r.actor.peak_gpu_bytes is not None),
                              default=None),
    }


def _pass_at_1(text: dict[str, Any] | None) -> float | None:
    if not text or not text["overall"]:
        return None
    estimate = text["overall"][0]["pass_at_k"].get("1")
    return None if estimate is None else estimate["estimate"]
