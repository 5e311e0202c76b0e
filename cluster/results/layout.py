"""The results layout of one run, and reading/writing the pieces units commit.

    <output>/<run id>/
      units/<unit id>.json                           one committed work unit (UnitRecord)
      predictions/checkpoint=<checkpoint>/part-<set>-<start>.parquet   its per-example predictions
      tta/checkpoint=<checkpoint>/copy=<NNN>/part-<set>-<start>.parquet  those of a test-time-
                                                     augmentation copy, mapped back to the original frame
      votes/<checkpoint>/submission.json             ARC-Prize submission (cluster.results.votes)
      votes/ensembles/<name>-<level>.parquet         an ensemble's voted predictions
      metrics.json, leaderboard.parquet              exact metrics per checkpoint × set × tier, and
                                                     one row per checkpoint (cluster.results.metrics)
      health.json                                    checkpoint health (cluster.results.health)
      manifest.json                                  written last: the run's commit point (cluster.manifest)
      report.html, report.md, plots/                 the report (cluster.report)

The prediction folders are hive-partitioned, so one read of `predictions/` (pyarrow, pandas,
duckdb, Ray Data) gives every checkpoint's predictions with a `checkpoint` column.

Every object is published atomically (temporary key, then moved into place). A unit is
committed when its record exists; its predictions are written before the record, so a
committed unit always has them. Votes and ensembles read the stored predictions
(`read_predictions`), never the models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from hrm import storage
from hrm.data.schema import Shard
from hrm.errors import InputError

MANIFEST = "manifest.json"
METRICS = "metrics.json"
LEADERBOARD = "leaderboard.parquet"
HEALTH = "health.json"
VOTES = "votes"
PREDICTIONS = "predictions"
TTA_PREDICTIONS = "tta"
UNITS = "units"
# Reading thousands of small unit records one by one from S3 is latency-bound; a few
# concurrent requests make a resume scan fast.
READ_THREADS = 16
READ_CHUNK = 256  # records in flight at a time: reading a run of any size holds a bounded number
UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def run_uri(output_uri: str, run_id: str) -> str:
    return storage.join(output_uri, run_id)


def file_uri(run: str, name: str) -> str:
    """A top-level file of the run: MANIFEST, METRICS, LEADERBOARD, HEALTH."""
    return storage.join(run, name)


def votes_uri(run: str, *parts: str) -> str:
    return storage.join(run, VOTES, *parts)


def predictions_prefix(checkpoint: str, copy: int = 0) -> str:
    """Relative to the run: where one checkpoint's predictions on the plain data (copy 0) or on
    a test-time-augmentation copy are. Copies live outside predictions/, so reading the plain
    predictions never picks them up."""
    if copy == 0:
        return f"{PREDICTIONS}/checkpoint={checkpoint}"
    return f"{TTA_PREDICTIONS}/checkpoint={checkpoint}/copy={copy:03d}"


def prediction_key(checkpoint: str, shard: Shard, copy: int = 0) -> str:
    """Relative to the run. The set name and first example make it unique within a checkpoint
    and stable across reruns, whatever other sets a rerun selects."""
    set_part = UNSAFE_KEY_CHARS.sub("-", shard.set)
    return f"{predictions_prefix(checkpoint, copy)}/part-{set_part}-{shard.start:09d}.parquet"


class ActorInfo(BaseModel):
    """Who evaluated a unit. A restart by Ray keeps `actor_id` and changes `instance` (and
    empties the model cache)."""

    actor_id: str  # Ray's actor id; "local" when run in-process
    instance: str
    pid: int
    hostname: str
    node_id: str
    device: str
    gpu: str | None
    torch_threads: int
    peak_rss_bytes: int
    peak_gpu_bytes: int | None
    cached: list[str]  # checkpoints whose models it holds after this unit, least recently used first


class UnitRecord(BaseModel):
    """What an actor returns for a unit, and (with `attempts`) what the driver commits."""

    model_config = ConfigDict(extra="forbid")

    unit_id: str
    checkpoint: str
    shard: Shard
    examples: int
    forward_steps: int
    stats: dict[str, Any]  # hrm.eval.metrics.StatsTable.to_dict(): exact, mergeable
    predictions: str  # key relative to the run
    model_loaded: bool  # this unit paid for building its model (a cache miss)
    timings: dict[str, float]  # load_s, read_s, eval_s, write_s
    actor: ActorInfo
    attempts: int = 1


def write_predictions(run: str, key: str, table: pa.Table) -> None:
    storage.write_parquet_atomic(storage.join(run, key), [table])


def read_predictions(run: str, checkpoint: str, copy: int = 0) -> pa.Table:
    """All stored predictions of one checkpoint (on the plain data, or on test-time-augmentation
    copy `copy`), ordered by (set, example_id)."""
    prefix = storage.join(run, predictions_prefix(checkpoint, copy))
    parts = [p for p in storage.list_files(prefix) if p.endswith(".parquet") and ".tmp-" not in p]
    if not parts:
        what = "" if copy == 0 else f" copy {copy}"
        raise InputError(f"{prefix}: no predictions stored for checkpoint {checkpoint!r}{what}")
    tables = [pq.read_table(storage.open_input_file(storage.join(prefix, p))) for p in parts]
    return pa.concat_tables(tables).sort_by([("set", "ascending"), ("example_id", "ascending")])


def unit_record_uri(run: str, unit_id: str) -> str:
    return storage.join(run, UNITS, f"{unit_id}.json")


def commit_unit(run: str, record: UnitRecord) -> None:
    storage.write_json_atomic(unit_record_uri(run, record.unit_id), record.model_dump(mode="json"))


def committed_unit_ids(run: str, unit_ids: set[str]) -> set[str]:
    """Which of `unit_ids` are committed under the run (others under units/ belong to other
    configs): one listing, no record read."""
    present = {p.removesuffix(".json") for p in storage.list_files(storage.join(run, UNITS)) if p.endswith(".json")}
    return present & unit_ids


def read_unit_records(run: str, unit_ids: set[str]) -> Iterator[UnitRecord]:
    """The committed records among `unit_ids`, in unit id order, read READ_CHUNK at a time."""
    wanted = sorted(committed_unit_ids(run, unit_ids))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for start in range(0, len(wanted), READ_CHUNK):
            chunk = wanted[start:start + READ_CHUNK]
            for doc in pool.map(lambda uid: storage.read_json(unit_record_uri(run, uid)), chunk):
                yield UnitRecord.model_validate(doc)
