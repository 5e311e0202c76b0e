"""manifest.json: the commit point of a run, written last. It says what ran (the validated
config, versions, git sha, content hashes of the data and of every checkpoint), what became
of every unit, how the work was scheduled, how long each phase took and on what hardware.

The driver keeps a `RunLedger` while it runs; `build_manifest` turns the plan and the ledger
into the manifest. A run directory without a manifest is a run that never finished.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from hrm import storage
from hrm.eval.metrics import StatsTable
from hrm.memory import peak_rss_bytes
from hrm.secrets import redact_document

from cluster.config import RunConfig
from cluster.plan import PreparedRun, Unit
from cluster.results.layout import MANIFEST, UNIT_STATES, ActorInfo, Segment, UnitRecord, file_uri

RUN_FORMAT = "hrm-eval/run"
VERSIONED_PACKAGES = ("hrm-eval", "ray", "torch", "numpy", "pyarrow", "pydantic")
SCHEDULING_COUNTERS = ("actor_restarts", "actor_replacements", "failed_starts", "duplicates_ignored",
                       "checkpoints_replanned", "superseded_ignored", "predictions_lost")
ACTOR_TIMINGS = ("load_s", "read_s", "eval_s", "write_s")


class CheckpointEntry(BaseModel):
    name: str
    uri: str
    config_uri: str
    step: int | None
    family: str | None
    version: str | None = None  # hrm.storage.version of the file its results were computed on
    units: int
    examples: int
    loads: int  # models built for it across all actors (resumed units cost none)
    error: str | None = None  # why it failed: its units were given up, the other checkpoints' went on


class UnitState(BaseModel):
    id: str
    checkpoint: str
    set: str
    start: int
    stop: int
    state: Literal["committed", "resumed", "failed", "pending"]
    attempts: int
    error: str | None = None
    actor: str | None = None  # instance that evaluated it
    seconds: float | None = None  # load + read + eval + write on the actor


# unit_states.parquet: one row per planned unit, beside the manifest (which stays small).
UNIT_STATES_SCHEMA = pa.schema([
    ("id", pa.string()), ("checkpoint", pa.string()), ("set", pa.string()), ("start", pa.int64()),
    ("stop", pa.int64()), ("state", pa.string()), ("attempts", pa.int64()), ("error", pa.string()),
    ("actor", pa.string()), ("seconds", pa.float64()),
])


class Manifest(BaseModel):
    format: str = RUN_FORMAT
    # 2: unit states in unit_states.parquet instead of a list here; 3: checkpoints identified by
    # their storage version instead of a sha256 the driver computed
    version: int = 3
    run_id: str
    status: Literal["completed", "failed"]
    error: str | None = None
    failed_unit: str | None = None
    started_at: str
    finished_at: str
    config: RunConfig
    config_hash: str
    versions: dict[str, str]
    git_sha: str | None
    dataset: dict[str, Any]
    checkpoints: list[CheckpointEntry]
    counts: dict[str, int]  # planned, resumed, evaluated, failed, pending
    scheduling: dict[str, Any]
    timings: dict[str, float]
    hardware: dict[str, Any]


@dataclass
class RunLedger:
    """What happened during a run, as the driver records it. A committed unit's statistics are
    merged into its checkpoint's table as it commits, so what the ledger holds per unit is
    bookkeeping (counts, timings, where it ran), never per-example data."""

    stats: dict[str, StatsTable] = field(default_factory=dict)  # by checkpoint: its plain units, merged
    records: dict[str, UnitRecord] = field(default_factory=dict)  # committed, by unit id, statistics taken out
    resumed: set[str] = field(default_factory=set)  # committed by an earlier run
    attempts: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)  # last error per unit id
    loads: Counter[str] = field(default_factory=Counter)  # models built per checkpoint
    actors: dict[str, ActorInfo] = field(default_factory=dict)  # by instance, latest report
    counters: Counter[str] = field(default_factory=Counter)  # SCHEDULING_COUNTERS
    timings: dict[str, float] = field(default_factory=dict)
    failure: tuple[str | None, str] | None = None  # (failed unit id, message)
    failed_checkpoints: dict[str, str] = field(default_factory=dict)  # name -> why
    # Units committed since the last segment was written (cluster.results.layout.Segment).
    segment_records: list[UnitRecord] = field(default_factory=list)
    segment_stats: dict[str, StatsTable] = field(default_factory=dict)

    def commit(self, record: UnitRecord, unit: Unit, resumed: bool = False) -> None:
        """Count a committed unit (test-time-augmentation copies count only in their votes,
        ablations only in theirs), and keep it for the next segment."""
        self.count(record, plain=unit.plain, resumed=resumed)

    def count(self, record: UnitRecord, plain: bool, resumed: bool = False) -> None:
        """`commit` for a record whose planned unit is not at hand (the report of a run that
        stopped): `plain` says whether it ran on the plain data, not a TTA copy."""
        slim = record.model_copy(update={"stats": {}})
        self.records[record.unit_id] = slim
        self.segment_records.append(slim)
        if resumed:
            self.resumed.add(record.unit_id)
        if plain:
            stats = StatsTable.from_dict(record.stats)
            self.stats.setdefault(record.checkpoint, StatsTable()).merge(stats)
            self.segment_stats.setdefault(record.checkpoint, StatsTable()).merge(stats)

    def adopt(self, segment: Segment) -> None:
        """Count a segment an earlier run wrote: all its units are resumed."""
        for name, doc in segment.stats.items():
            self.stats.setdefault(name, StatsTable()).merge(StatsTable.from_dict(doc))
        for record in segment.records:
            self.records[record.unit_id] = record
            self.resumed.add(record.unit_id)

    def forget(self, checkpoint: str) -> list[UnitRecord]:
        """Drop a re-planned checkpoint's committed units from the count (they were evaluated on
        bytes its file no longer holds); returns them."""
        dropped = [r for r in self.records.values() if r.checkpoint == checkpoint]
        for record in dropped:
            del self.records[record.unit_id]
            self.resumed.discard(record.unit_id)
        self.stats.pop(checkpoint, None)
        self.segment_stats.pop(checkpoint, None)
        self.segment_records = [r for r in self.segment_records if r.checkpoint != checkpoint]
        self.loads.pop(checkpoint, None)
        return dropped

    def take_segment(self) -> Segment | None:
        """The units committed since the last segment, as one segment to write; None if none."""
        if not self.segment_records:
            return None
        segment = Segment(self.segment_records, {name: t.to_dict() for name, t in self.segment_stats.items()})
        self.segment_records, self.segment_stats = [], {}
        return segment


def unit_states(prepared: PreparedRun, ledger: RunLedger) -> list[UnitState]:
    failed_unit = ledger.failure[0] if ledger.failure else None
    return [_unit_state(ledger, unit, failed_unit) for unit in prepared.units]


def write_unit_states(run: str, states: list[UnitState]) -> None:
    rows = [state.model_dump() for state in states]
    storage.write_parquet_atomic(file_uri(run, UNIT_STATES), [pa.Table.from_pylist(rows, schema=UNIT_STATES_SCHEMA)])


def read_unit_states(run: str) -> list[UnitState]:
    table = storage.read_parquet(file_uri(run, UNIT_STATES))
    return [UnitState.model_validate(row) for row in table.to_pylist()]


def build_manifest(prepared: PreparedRun, ledger: RunLedger, status: str, cluster_resources: dict[str, float],
                   states: list[UnitState]) -> Manifest:
    config, cluster, units = prepared.config, prepared.config.cluster, prepared.units
    evaluated = [r for uid, r in ledger.records.items() if uid not in ledger.resumed]
    evaluate_s = ledger.timings["evaluate_s"]
    examples = sum(r.examples for r in evaluated)
    failed_unit, error = ledger.failure if ledger.failure else (None, None)
    if status == "failed" and error is None and ledger.failed_checkpoints:
        error = f"{len(ledger.failed_checkpoints)} checkpoint(s) failed: " + "; ".join(
            f"{name}: {why}" for name, why in ledger.failed_checkpoints.items())
    if status == "failed" and error is None:
        error = f"{len(units) - len(ledger.records)} unit(s) not committed"
    loads = sum(ledger.loads.values())
    actors = list(ledger.actors.values())
    tally = prepared.units_per_checkpoint()
    return Manifest(
        run_id=prepared.run_id,
        status=status,
        error=error,
        failed_unit=failed_unit,
        started_at=_iso(prepared.started_at),
        finished_at=_iso(time.time()),
        config=config,
        config_hash=config.config_hash(),
        versions=_versions(),
        git_sha=_git_sha(),
        dataset={
            "uri": config.dataset.uri,
            "split": config.dataset.split,
            "sets": prepared.sets,
            "content_hash": prepared.dataset_hash,
            "examples": sum(shard.examples for shard in prepared.shards),
        },
        checkpoints=[
            CheckpointEntry(
                **ref.model_dump(),
                units=tally[ref.name][0],
                examples=tally[ref.name][1],
                loads=ledger.loads[ref.name],
                error=ledger.failed_checkpoints.get(ref.name),
            )
            for ref in prepared.checkpoints
        ],
        counts={
            "planned": len(units),
            "resumed": len(ledger.resumed),
            "evaluated": len(evaluated),
            "failed": sum(1 for s in states if s.state == "failed"),
            "pending": sum(1 for s in states if s.state == "pending"),
        },
        scheduling={
            "actors": list(cluster.actor_range),
            "actor_instances": len(actors),
            "units_in_flight": cluster.units_in_flight,
            "cache_size": cluster.cache_size,
            "model_loads": loads,
            "loads_per_checkpoint": loads / len(ledger.loads) if ledger.loads else 0.0,
            **{name: ledger.counters[name] for name in SCHEDULING_COUNTERS},
        },
        timings={
            **ledger.timings,
            "total_s": time.time() - prepared.started_at,
            "examples_per_s": examples / evaluate_s if evaluate_s > 0 else 0.0,
            **{f"actor_{key}_total": sum(r.timings[key] for r in evaluated) for key in ACTOR_TIMINGS},
        },
        hardware={
            "driver": _driver_hardware(),
            "cluster_resources": cluster_resources,
            "actors": [a.model_dump() for a in actors],
            "peak_actor_rss_bytes": max((a.peak_rss_bytes for a in actors), default=None),
            "peak_actor_gpu_bytes": max((a.peak_gpu_bytes for a in actors if a.peak_gpu_bytes is not None),
                                        default=None),
        },
    )


def _unit_state(ledger: RunLedger, unit: Unit, failed_unit: str | None) -> UnitState:
    record = ledger.records.get(unit.id)
    if unit.id in ledger.resumed:
        state = "resumed"
    elif record is not None:
        state = "committed"
    elif unit.id == failed_unit or unit.checkpoint in ledger.failed_checkpoints:
        state = "failed"
    else:
        state = "pending"
    return UnitState(
        id=unit.id, checkpoint=unit.checkpoint, set=unit.shard.set, start=unit.shard.start,
        stop=unit.shard.stop, state=state,
        attempts=record.attempts if record else ledger.attempts[unit.id],
        error=ledger.errors.get(unit.id) or ledger.failed_checkpoints.get(unit.checkpoint),
        actor=record.actor.instance if record else None,
        seconds=sum(record.timings.values()) if record else None,
    )


def write_manifest(run: str, manifest: Manifest) -> None:
    storage.write_json_atomic(file_uri(run, MANIFEST), redact_document(manifest.model_dump(mode="json")), indent=1)


def read_manifest(run: str) -> Manifest:
    return Manifest.model_validate(storage.read_json(file_uri(run, MANIFEST)))


# --------------------------------------------------------------------------- provenance


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _git_sha() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout (a `ray job submit`
    working directory is a copy without .git: then None)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _driver_hardware() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "peak_rss_bytes": peak_rss_bytes(),
    }
