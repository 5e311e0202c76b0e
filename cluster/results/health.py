"""Checkpoint health of a run: parameters, bytes, dtypes and NaN/Inf per component of every
checkpoint, and the relative weight change between consecutive checkpoints of each
training run. Stored as `<run>/health.json` beside metrics.json, so the report shows it
without loading a checkpoint again.

    {"checkpoints": {name: {"components": [hrm.checkpoint.health.ComponentStats rows], "step": n}},
     "drift": [{"from": name, "to": name, "relative_change": {component: x}}]}

Drift is only measured within one training run (checkpoints sharing an all_config.yaml),
ordered by step: weights of unrelated runs have no "change" between them.

The driver reads no checkpoint: Ray tasks on the cluster's nodes measure it, each walking a
stretch of HEALTH_STRETCH consecutive checkpoints of one training run (two in memory at a
time; neighbouring stretches share their end checkpoint, so every consecutive pair is
measured). Without Ray (`hrm-eval report --health` on a machine of its own) the stretches are
measured in this process.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict
from typing import Any

import ray

from hrm import storage
from hrm.checkpoint.health import component_stats, relative_change
from hrm.checkpoint.loading import Checkpoint, load_planned_checkpoint
from hrm.secrets import redact_document

from cluster.manifest import CheckpointEntry, Manifest
from cluster.results.layout import HEALTH, file_uri

HEALTH_STRETCH = 16  # checkpoints per health task: enough to amortise a task, small enough to spread a sweep


def collect_health(manifest: Manifest) -> dict[str, Any]:
    """Measure the health of every checkpoint the run evaluated (failed ones are left out), each
    read as the version it was planned with, in stretches of training runs measured in parallel."""
    cache_dir = manifest.config.cluster.checkpoint_cache_dir
    entries = [entry for entry in manifest.checkpoints if entry.error is None]
    stretches = [group[start:start + HEALTH_STRETCH + 1]
                 for group in training_runs(entries) for start in range(0, max(len(group) - 1, 1), HEALTH_STRETCH)]
    if ray.is_initialized():
        measure = ray.remote(measure_stretch)
        measured = ray.get([measure.remote(stretch, cache_dir) for stretch in stretches])
    else:
        measured = [measure_stretch(stretch, cache_dir) for stretch in stretches]
    checkpoints = {name: doc for stretch in measured for name, doc in stretch["checkpoints"].items()}
    return {"checkpoints": {e.name: checkpoints[e.name] for e in entries},
            "drift": [pair for stretch in measured for pair in stretch["drift"]]}


def measure_stretch(entries: list[CheckpointEntry], cache_dir: str | None) -> dict[str, Any]:
    """Component statistics of consecutive checkpoints of one training run, and the drift between
    each and the next; two checkpoints in memory at a time."""
    checkpoints: dict[str, dict[str, Any]] = {}
    drift: list[dict[str, Any]] = []
    previous: tuple[CheckpointEntry, Checkpoint] | None = None
    for entry in entries:
        ckpt = load_planned_checkpoint(entry.uri, entry.config_uri, entry.version, cache_dir)
        checkpoints[entry.name] = {"components": [asdict(row) for row in component_stats(ckpt)], "step": entry.step}
        if previous is not None:
            drift.append({"from": previous[0].name, "to": entry.name,
                          "relative_change": relative_change(previous[1], ckpt)})
        previous = (entry, ckpt)
    return {"checkpoints": checkpoints, "drift": drift}


def training_runs(entries: list[CheckpointEntry]) -> list[list[CheckpointEntry]]:
    """Checkpoints grouped by training run (their all_config.yaml), each group by step;
    checkpoints without a step cannot be ordered and form groups of their own."""
    groups: dict[str, list[CheckpointEntry]] = {}
    for entry in entries:
        key = posixpath.dirname(entry.config_uri) if entry.step is not None else f"\0{entry.name}"
        groups.setdefault(key, []).append(entry)
    return [sorted(group, key=lambda e: e.step or 0) for group in groups.values()]


def write_health(run: str, manifest: Manifest) -> str:
    """Measure and publish the run's health.json atomically; returns its URI."""
    uri = file_uri(run, HEALTH)
    storage.write_json_atomic(uri, redact_document(collect_health(manifest)), indent=1)
    return uri


def read_health(run: str) -> dict[str, Any] | None:
    """The run's health.json, or None when it was never written."""
    uri = file_uri(run, HEALTH)
    return storage.read_json(uri) if storage.exists(uri) else None
