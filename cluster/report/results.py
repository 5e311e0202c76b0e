"""What a report is built from: the run's stored results only (manifest.json, metrics.json,
leaderboard.parquet, health.json, the committed unit records and one checkpoint's prediction
keys), read once into a `RunResults`.

A run without both manifest.json and metrics.json did not complete: it stopped (its driver
was killed: no manifest) or failed before every unit was committed. Its report is `Partial`:
each checkpoint's figures are merged from the statistics of its committed units, exactly as
the driver merges them (`RunLedger`), so a checkpoint whose every unit was committed shows the
figures a complete run gives it. Nothing is written back: a partial run's figures live in its
report only, never in a metrics.json that could pass for a complete run's.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hrm import storage
from hrm.errors import InputError

from cluster.manifest import CheckpointEntry, Manifest, RunLedger, read_manifest, read_unit_states
from cluster.results.health import read_health
from cluster.results.layout import (
    MANIFEST,
    METRICS,
    Segment,
    UnitRecord,
    file_uri,
    prediction_key,
    read_committed,
    read_predictions,
    read_unit_records,
    unit_files,
)
from cluster.results.metrics import leaderboard_rows, read_leaderboard, read_metrics
from cluster.results.revotes import read_revotes


@dataclass
class CheckpointCost:
    """What the committed unit records measured for one checkpoint."""

    examples: int
    forward_steps: int
    eval_s: float
    peak_rss_bytes: int | None  # the evaluating actors' process peak, up to its last unit
    peak_gpu_bytes: int | None


@dataclass
class Partial:
    """What a run that did not complete had committed, against its plan where the plan is
    known (the manifest of a failed run holds it; a stopped run has none)."""

    why: str  # one line: why the run has no complete results
    units: dict[str, int]  # committed units per checkpoint, test-time-augmentation copies included
    planned_units: dict[str, int] | None  # the same planned; None: the plan is not known
    planned_examples: int | None  # examples each checkpoint was to be evaluated on (plain data)
    left_out: dict[str, str]  # checkpoint -> why its committed units give it no figures


@dataclass
class RunResults:
    run: str
    manifest: Manifest | None  # None: the run stopped before writing it (then `partial` says so)
    metrics: dict[str, Any] | None  # None when no unit counting in the figures was committed
    leaderboard: list[dict[str, Any]]  # rank order
    health: dict[str, Any] | None
    costs: dict[str, CheckpointCost]
    devices: list[str]  # what the units ran on (with GPU names), from their records
    puzzles: int | None  # distinct (set, puzzle) pairs every checkpoint was evaluated on
    partial: Partial | None = None  # None: metrics.json of a run that committed its manifest
    revotes: list[dict[str, Any]] = field(default_factory=list)  # `hrm-eval vote` documents, oldest first

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest else posixpath.basename(self.run.rstrip("/"))

    @property
    def evaluated(self) -> list[CheckpointEntry]:
        """The checkpoints with figures, in plan order: all but those that failed (and, in a
        partial run, those with nothing committed)."""
        if self.manifest is None:
            return []
        return [c for c in self.manifest.checkpoints if c.name in (self.metrics or {}).get("checkpoints", {})]

    @property
    def names(self) -> list[str]:
        """The checkpoints with figures, in plan order (by name when the plan is not known)."""
        return list((self.metrics or {}).get("checkpoints", {}))

    @property
    def protocol(self) -> str | None:
        """None when not known (a stopped run has no manifest, hence no config)."""
        return self.manifest.config.eval.protocol if self.manifest else None

    @property
    def best(self) -> str | None:
        return self.leaderboard[0]["checkpoint"] if self.leaderboard else None

    def figures(self, name: str) -> dict[str, Any]:
        return self.metrics["checkpoints"][name]["metrics"]["all"]

    def votes(self) -> dict[str, Any]:
        return (self.metrics or {}).get("votes") or {}


def load_results(run: str) -> RunResults:
    manifest = read_manifest(run) if storage.exists(file_uri(run, MANIFEST)) else None
    if manifest is None or not storage.exists(file_uri(run, METRICS)):
        return load_partial(run, manifest)
    costs, devices = unit_costs(read_unit_records(run, {state.id for state in read_unit_states(run)}))
    return RunResults(
        run=run,
        manifest=manifest,
        metrics=read_metrics(run),
        leaderboard=sorted(read_leaderboard(run).to_pylist(), key=lambda row: row["rank"]),
        health=read_health(run),
        costs=costs,
        devices=devices,
        puzzles=count_puzzles(run, manifest),
        revotes=read_revotes(run),
    )


def load_partial(run: str, manifest: Manifest | None) -> RunResults:
    """The results of a run that did not complete: what its committed units hold."""
    if manifest is not None:
        states = read_unit_states(run)
        planned_ids = {state.id for state in states}  # those committed since the manifest count too
        order = [c.name for c in manifest.checkpoints if c.error is None]  # a failed one has no figures
        planned_units: dict[str, int] | None = dict(Counter(state.checkpoint for state in states))
        why = failure(manifest) if manifest.status == "failed" else f"the run has no {METRICS}"
    else:
        planned_ids = unit_files(run).records
        if not planned_ids:
            raise InputError(f"{file_uri(run, MANIFEST)}: not found, and no unit is committed under "
                             f"{storage.join(run, 'units')}: not a run directory, or a run that committed nothing")
        order, planned_units = None, None
        why = f"the run stopped before it finished: it has no {MANIFEST} (the driver writes it last)"
    ledger = RunLedger()
    for item in read_committed(run, planned_ids):
        if isinstance(item, Segment):
            ledger.adopt(item)
        else:  # only the plain data counts in the figures, not a test-time-augmentation copy
            ledger.count(item, plain=item.predictions == prediction_key(item.checkpoint, item.shard))
    records = list(ledger.records.values())
    left_out = {} if manifest is not None else _mixed_plans(records)
    names = [n for n in (order or sorted(ledger.stats)) if n in ledger.stats and n not in left_out]
    entries = {c.name: c for c in manifest.checkpoints} if manifest else {}
    checkpoints = {
        name: {
            "step": entries[name].step if name in entries else None,
            "family": entries[name].family if name in entries else None,
            "version": entries[name].version if name in entries else None,
            # In metrics.json's shape: JSON makes its integer keys (steps, tiers) strings.
            "metrics": json.loads(json.dumps(ledger.stats[name].finalize())),
        }
        for name in names
    }
    metrics = {"checkpoints": checkpoints} if checkpoints else None
    costs, devices = unit_costs(records)
    return RunResults(
        run=run,
        manifest=manifest,
        metrics=metrics,
        leaderboard=leaderboard_rows(metrics) if metrics else [],
        health=read_health(run),
        costs=costs,
        devices=devices,
        puzzles=None,
        partial=Partial(
            why=why,
            units=dict(Counter(record.checkpoint for record in records)),
            planned_units=planned_units,
            planned_examples=manifest.dataset["examples"] if manifest else None,
            left_out=left_out,
        ),
    )


def failure(manifest: Manifest) -> str:
    """Why a failed run failed, in one line."""
    return f"the run failed: {manifest.error}" + (f" (unit {manifest.failed_unit})" if manifest.failed_unit else "")


def _mixed_plans(records: list[UnitRecord]) -> dict[str, str]:
    """Checkpoints with two committed units of the same shard and copy: units of two plans
    (the run was resumed under another config, or a checkpoint file changed), which only the
    manifest could tell apart."""
    seen: dict[str, set[str]] = {}
    mixed: dict[str, str] = {}
    for record in records:
        keys = seen.setdefault(record.checkpoint, set())
        if record.predictions in keys:
            mixed[record.checkpoint] = (f"more than one committed unit evaluated {record.predictions} (units of "
                                        "two plans; which one counts is in the manifest, which this run lacks)")
        keys.add(record.predictions)
    return mixed


def unit_costs(records: Iterable[UnitRecord]) -> tuple[dict[str, CheckpointCost], list[str]]:
    """What the units cost per checkpoint, and the devices they ran on (with GPU names)."""
    costs: dict[str, CheckpointCost] = {}
    devices: set[str] = set()
    for record in records:
        devices.add(record.actor.device + (f" ({record.actor.gpu})" if record.actor.gpu else ""))
        cost = costs.setdefault(record.checkpoint, CheckpointCost(0, 0, 0.0, None, None))
        cost.examples += record.examples
        cost.forward_steps += record.forward_steps
        cost.eval_s += record.timings["eval_s"]
        cost.peak_rss_bytes = larger(cost.peak_rss_bytes, record.actor.peak_rss_bytes)
        cost.peak_gpu_bytes = larger(cost.peak_gpu_bytes, record.actor.peak_gpu_bytes)
    return costs, sorted(devices)


def larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def count_puzzles(run: str, manifest: Manifest) -> int:
    """Every checkpoint sees the same examples, so one checkpoint's predictions count them."""
    first = next(c.name for c in manifest.checkpoints if c.error is None)
    table = read_predictions(run, first, columns=["set", "puzzle_index"])
    return len(set(zip(table.column("set").to_pylist(), table.column("puzzle_index").to_pylist())))
