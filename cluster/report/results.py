"""What a report is built from: the run's stored results only (manifest.json, metrics.json,
leaderboard.parquet, health.json, the committed unit records and one checkpoint's prediction
keys), read once into a `RunResults`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hrm import storage

from cluster.manifest import CheckpointEntry, Manifest, read_manifest, read_unit_states
from cluster.results.health import read_health
from cluster.results.layout import METRICS, UnitRecord, file_uri, read_predictions, read_unit_records
from cluster.results.metrics import read_leaderboard, read_metrics


@dataclass
class CheckpointCost:
    """What the committed unit records measured for one checkpoint."""

    examples: int
    forward_steps: int
    eval_s: float
    peak_rss_bytes: int | None  # the evaluating actors' process peak, up to its last unit
    peak_gpu_bytes: int | None


@dataclass
class RunResults:
    run: str
    manifest: Manifest
    metrics: dict[str, Any] | None  # None when the run failed before aggregating
    leaderboard: list[dict[str, Any]]  # rank order
    health: dict[str, Any] | None
    costs: dict[str, CheckpointCost]
    devices: list[str]  # what the units ran on (with GPU names), from their records
    puzzles: int | None  # distinct (set, puzzle) pairs every checkpoint was evaluated on

    @property
    def evaluated(self) -> list[CheckpointEntry]:
        """The checkpoints with figures: all but those that failed."""
        return [c for c in self.manifest.checkpoints if c.error is None]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.evaluated]

    @property
    def protocol(self) -> str:
        return self.manifest.config.eval.protocol

    @property
    def best(self) -> str | None:
        return self.leaderboard[0]["checkpoint"] if self.leaderboard else None

    def figures(self, name: str) -> dict[str, Any]:
        return self.metrics["checkpoints"][name]["metrics"]["all"]

    def votes(self) -> dict[str, Any]:
        return (self.metrics or {}).get("votes") or {}


def load_results(run: str) -> RunResults:
    manifest = read_manifest(run)
    has_metrics = storage.exists(file_uri(run, METRICS))
    metrics = read_metrics(run) if has_metrics else None
    leaderboard = read_leaderboard(run).to_pylist() if has_metrics else []
    costs, devices = unit_costs(read_unit_records(run, {state.id for state in read_unit_states(run)}))
    return RunResults(
        run=run,
        manifest=manifest,
        metrics=metrics,
        leaderboard=sorted(leaderboard, key=lambda row: row["rank"]),
        health=read_health(run),
        costs=costs,
        devices=devices,
        puzzles=count_puzzles(run, manifest) if has_metrics else None,
    )


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
