"""Checkpoint health of a run: parameters, bytes, dtypes and NaN/Inf per component of every
checkpoint, and the relative weight change between consecutive checkpoints of each
training run. Stored as `<run>/health.json` beside metrics.json, so the report shows it
without loading a checkpoint again.

    {"checkpoints": {name: {"components": [hrm.checkpoint.health.ComponentStats rows], "step": n}},
     "drift": [{"from": name, "to": name, "relative_change": {component: x}}]}

Drift is only measured within one training run (checkpoints sharing an all_config.yaml),
ordered by step: weights of unrelated runs have no "change" between them.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict
from typing import Any

from hrm import storage
from hrm.checkpoint.health import component_stats, relative_change
from hrm.checkpoint.loading import Checkpoint, load_planned_checkpoint

from cluster.manifest import CheckpointEntry, Manifest
from cluster.results.layout import HEALTH, file_uri


def collect_health(manifest: Manifest) -> dict[str, Any]:
    """Read every checkpoint the run evaluated (each checked against the content hash it was
    planned with; failed checkpoints are left out) and measure its health; one training run's checkpoints in memory two at a time."""
    cache_dir = manifest.config.cluster.checkpoint_cache_dir
    checkpoints: dict[str, dict[str, Any]] = {}
    drift: list[dict[str, Any]] = []
    for group in training_runs([entry for entry in manifest.checkpoints if entry.error is None]):
        previous: tuple[CheckpointEntry, Checkpoint] | None = None
        for entry in group:
            ckpt = load_planned_checkpoint(entry.uri, entry.config_uri, entry.content_hash, cache_dir)
            checkpoints[entry.name] = {
                "components": [asdict(row) for row in component_stats(ckpt)],
                "step": entry.step,
            }
            if previous is not None:
                drift.append({"from": previous[0].name, "to": entry.name,
                              "relative_change": relative_change(previous[1], ckpt)})
            previous = (entry, ckpt)
    ordered = {entry.name: checkpoints[entry.name] for entry in manifest.checkpoints if entry.name in checkpoints}
    return {"checkpoints": ordered, "drift": drift}


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
    storage.write_json_atomic(uri, collect_health(manifest), indent=1)
    return uri


def read_health(run: str) -> dict[str, Any] | None:
    """The run's health.json, or None when it was never written."""
    uri = file_uri(run, HEALTH)
    return storage.read_json(uri) if storage.exists(uri) else None
