"""The results layout of one run, and reading/writing the pieces units commit.

    <output>/<run id>/
      units/<unit id>.json                           one committed work unit (UnitRecord)
      units/segment-<id>.parquet                     many committed units at once, compacted by the driver
                                                     (Segment): what a resume reads instead of their records
      predictions/checkpoint=<checkpoint>/part-<set>-<start>.parquet   its per-example predictions
      tta/checkpoint=<checkpoint>/copy=<NNN>/part-<set>-<start>.parquet  those of a test-time-
                                                     augmentation copy, mapped back to the original frame
      ablations/<kind>/checkpoint=<checkpoint>/part-<set>-<start>.parquet  those with the puzzle
                                                     identifiers ablated (hrm.eval.ablation)
      votes/<checkpoint>/submission.json             ARC-Prize submission (cluster.results.votes)
      votes/ensembles/<name>-<level>.parquet         an ensemble's voted predictions
      revotes/<id>/votes.json, <checkpoint>/…, ensembles/…   votes computed again later from the stored
                                                     predictions (`hrm-eval vote`), beside the run's own
      metrics.json, leaderboard.parquet              exact metrics per checkpoint × set × tier, and
                                                     one row per checkpoint (cluster.results.metrics)
      health.json                                    checkpoint health (cluster.results.health)
      unit_states.parquet                            what became of every planned unit (cluster.manifest)
      manifest.json                                  written last: the run's commit point (cluster.manifest)
      report.html, report.md, plots/                 the report (cluster.report)

The prediction folders are hive-partitioned, so one read of `predictions/` (pyarrow, pandas,
duckdb, Ray Data) gives every checkpoint's predictions with a `checkpoint` column.

Every object is published atomically (temporary key, then moved into place). A unit is
committed when its record exists; its predictions are written before the record, so a
committed unit always has them. Every SEGMENT_UNITS commits the driver also writes those units
once more as a segment: their records without statistics, and the statistics already merged
per checkpoint. Reading one segment replaces a thousand small reads, which is what makes
resuming a run of tens of thousands of units on object storage fast.

Votes and ensembles read the stored predictions, never the models, and part by part
(`iter_predictions`; `prediction_parts` orders a checkpoint's parts as the dataset is
ordered, and the same part names line up its TTA copies and the members of an ensemble), so
the memory they need does not grow with the split: an ARC aug-1000 split of one checkpoint
is ~400k × 900 tokens, gigabytes, in a few hundred parts of a shard each.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from hrm import storage
from hrm.data.schema import Shard
from hrm.errors import InputError

MANIFEST = "manifest.json"
UNIT_STATES = "unit_states.parquet"
METRICS = "metrics.json"
LEADERBOARD = "leaderboard.parquet"
HEALTH = "health.json"
VOTES = "votes"
REVOTES = "revotes"
PREDICTIONS = "predictions"
TTA_PREDICTIONS = "tta"
ABLATION_PREDICTIONS = "ablations"
UNITS = "units"
# Reading thousands of small unit records one by one from S3 is latency-bound; a few
# concurrent requests make a resume scan fast.
READ_THREADS = 16
READ_CHUNK = 256  # records in flight at a time: reading a run of any size holds a bounded number
SEGMENT_UNITS = 1000  # committed units per segment
SEGMENT_PREFIX = "segment-"
SEGMENT_STATS_KEY = b"hrm-eval.stats"  # Parquet metadata: {checkpoint: StatsTable.to_dict()} of its counted units
UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def run_uri(output_uri: str, run_id: str) -> str:
    return storage.join(output_uri, run_id)


def file_uri(run: str, name: str) -> str:
    """A top-level file of the run: MANIFEST, METRICS, LEADERBOARD, HEALTH."""
    return storage.join(run, name)


def votes_uri(run: str, *parts: str) -> str:
    return storage.join(run, VOTES, *parts)


def revote_uri(run: str, revote_id: str, *parts: str) -> str:
    return storage.join(run, REVOTES, revote_id, *parts)


def predictions_prefix(checkpoint: str, copy: int = 0, ablation: str | None = None) -> str:
    """Relative to the run: where one checkpoint's predictions on the plain data (copy 0), on
    a test-time-augmentation copy or with an ablation of its puzzle identifiers are. Copies and
    ablations live outside predictions/, so reading the plain predictions never picks them up."""
    if ablation is not None:
        return f"{ABLATION_PREDICTIONS}/{ablation}/checkpoint={checkpoint}"
    if copy == 0:
        return f"{PREDICTIONS}/checkpoint={checkpoint}"
    return f"{TTA_PREDICTIONS}/checkpoint={checkpoint}/copy={copy:03d}"


def prediction_key(checkpoint: str, shard: Shard, copy: int = 0, ablation: str | None = None) -> str:
    """Relative to the run. The set name and first example make it unique within a checkpoint
    and stable across reruns, whatever other sets a rerun selects."""
    set_part = UNSAFE_KEY_CHARS.sub("-", shard.set)
    return f"{predictions_prefix(checkpoint, copy, ablation)}/part-{set_part}-{shard.start:09d}.parquet"


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


def prediction_parts(run: str, checkpoint: str, copy: int = 0, ablation: str | None = None) -> list[str]:
    """The part files of one checkpoint's stored predictions (on the plain data, on
    test-time-augmentation copy `copy`, or with puzzle-identifier `ablation`) in (set, first
    example_id) order: the dataset's.

    Each part holds one shard (one set, its consecutive examples in order), and every
    checkpoint and copy of a run has a part of the same name per shard of the run's plan, so
    these names also line up TTA copies and ensemble members part by part.
    """
    prefix = storage.join(run, predictions_prefix(checkpoint, copy, ablation))
    names = [p for p in storage.list_files(prefix) if p.endswith(".parquet") and ".tmp-" not in p]
    if not names:
        what = (f" ablation {ablation}" if ablation else "") + ("" if copy == 0 else f" copy {copy}")
        raise InputError(f"{prefix}: no predictions stored for checkpoint {checkpoint!r}{what}")
    with ThreadPoolExecutor(READ_THREADS) as pool:  # one small footer read each: latency-bound on S3
        spans = list(pool.map(lambda name: _part_span(storage.join(prefix, name)), names))
    ordered = sorted(zip(spans, names))
    for (before, name_before), (after, name_after) in zip(ordered, ordered[1:]):
        if before.set == after.set and after.first <= before.last:
            raise InputError(f"{prefix}: parts {name_before} and {name_after} hold the same examples of set "
                             f"{after.set!r}; each part must hold one shard of the run's plan")
    return [name for _, name in ordered]


class _PartSpan(NamedTuple):
    """The examples one part holds; ordered by set, then first example_id."""

    set: str
    first: int
    last: int


def _part_span(uri: str) -> _PartSpan:
    """From the Parquet footer's statistics alone (no rows are read). The file name cannot give
    the order: its set name is sanitised (UNSAFE_KEY_CHARS), which can change how sets sort
    ("a~" becomes "a-", which sorts before "a_"), and the order decides ARC vote tie-breaks."""
    metadata = storage.parquet_metadata(uri)
    sets, ids = _column_range(metadata, "set", uri), _column_range(metadata, "example_id", uri)
    if sets[0] != sets[1]:
        raise InputError(f"{uri}: holds examples of sets {sets[0]!r} to {sets[1]!r}; a part holds one set")
    return _PartSpan(sets[0], ids[0], ids[1])


def _column_range(metadata: pq.FileMetaData, column: str, uri: str) -> tuple[Any, Any]:
    """(min, max) of a top-level column over every row group, from the footer's statistics
    (pyarrow writes them for every column)."""
    ranges = []
    for group in range(metadata.num_row_groups):
        chunks = [metadata.row_group(group).column(i) for i in range(metadata.num_columns)]
        stats = next((c.statistics for c in chunks if c.path_in_schema == column), None)
        if stats is None or not stats.has_min_max:
            raise InputError(f"{uri}: no statistics of column {column!r} in the Parquet footer; "
                             "predictions are written by hrm-eval, which stores them")
        ranges.append((stats.min, stats.max))
    if not ranges:
        raise InputError(f"{uri}: a prediction part without rows")
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def read_prediction_part(run: str, checkpoint: str, part: str, copy: int = 0,
                         columns: list[str] | None = None, ablation: str | None = None) -> pa.Table:
    """One part (a name from `prediction_parts`) of a checkpoint's, copy's or ablation's predictions."""
    uri = storage.join(run, predictions_prefix(checkpoint, copy, ablation), part)
    return storage.read_parquet(uri, columns)


def iter_predictions(run: str, checkpoint: str, copy: int = 0,
                     columns: list[str] | None = None, ablation: str | None = None) -> Iterator[pa.Table]:
    """One checkpoint's (or copy's, or ablation's) stored predictions part by part, in (set,
    example_id) order; only the part being read is in memory. `columns` None reads every column."""
    for part in prediction_parts(run, checkpoint, copy, ablation):
        yield read_prediction_part(run, checkpoint, part, copy, columns, ablation)


def read_predictions(run: str, checkpoint: str, copy: int = 0, columns: list[str] | None = None) -> pa.Table:
    """All of `iter_predictions` in one table: for tests and small runs (an ARC aug-1000
    split is gigabytes; votes stream it instead)."""
    return pa.concat_tables(iter_predictions(run, checkpoint, copy, columns))


def stored_predictions(run: str) -> set[str]:
    """The keys (relative to the run) of every predictions part stored under the run: one
    listing each of predictions/, tta/ and ablations/."""
    return {f"{top}/{path}" for top in (PREDICTIONS, TTA_PREDICTIONS, ABLATION_PREDICTIONS)
            for path in storage.list_files(storage.join(run, top))}


def unit_record_uri(run: str, unit_id: str) -> str:
    return storage.join(run, UNITS, f"{unit_id}.json")


def commit_unit(run: str, record: UnitRecord) -> None:
    storage.write_json_atomic(unit_record_uri(run, record.unit_id), record.model_dump(mode="json"))


@dataclass
class Segment:
    """Committed units stored together: their records without statistics (`stats` is {}), and
    the statistics of the units that count in the metrics, merged per checkpoint."""

    records: list[UnitRecord]
    stats: dict[str, dict[str, Any]]  # checkpoint -> hrm.eval.metrics.StatsTable.to_dict()


def write_segment(run: str, segment: Segment) -> None:
    table = pa.table({"unit_id": [r.unit_id for r in segment.records],
                      "record": [r.model_dump_json() for r in segment.records]})
    table = table.replace_schema_metadata({SEGMENT_STATS_KEY: json.dumps(segment.stats).encode()})
    storage.write_parquet_atomic(storage.join(run, UNITS, f"{SEGMENT_PREFIX}{uuid.uuid4().hex}.parquet"), [table])


def _read_segment(uri: str) -> tuple[list[str], Callable[[], Segment]]:
    """A segment's unit ids, and how to parse the whole of it (only done when it is used)."""
    table = storage.read_parquet(uri)
    ids = table.column("unit_id").to_pylist()

    def parse() -> Segment:
        records = [UnitRecord.model_validate_json(doc) for doc in table.column("record").to_pylist()]
        return Segment(records, json.loads(table.schema.metadata[SEGMENT_STATS_KEY]))

    return ids, parse


class UnitFiles(NamedTuple):
    """One listing of units/: the ids that have a record, and the segments' URIs."""

    records: set[str]
    segments: list[str]


def unit_files(run: str) -> UnitFiles:
    names = storage.list_files(storage.join(run, UNITS))
    return UnitFiles({p.removesuffix(".json") for p in names if p.endswith(".json")},
                     [storage.join(run, UNITS, p) for p in names if p.startswith(SEGMENT_PREFIX) and p.endswith(".parquet")])


def committed_unit_ids(run: str, unit_ids: set[str]) -> set[str]:
    """Which of `unit_ids` are committed under the run (others under units/ belong to other
    configs): one listing, no record read."""
    return unit_files(run).records & unit_ids


def read_committed(run: str, unit_ids: set[str], files: UnitFiles | None = None) -> Iterator[Segment | UnitRecord]:
    """Every committed unit among `unit_ids` once: whole segments where a segment lies within
    `unit_ids` (a rerun of the same plan), then the records of the rest, READ_CHUNK at a time.
    `files`: the listing of units/ when the caller has it already."""
    records, segments = files or unit_files(run)
    present = records & unit_ids
    covered: set[str] = set()
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for ids, parse in pool.map(_read_segment, segments):
            if set(ids) <= unit_ids and covered.isdisjoint(ids):
                covered.update(ids)
                yield parse()
        rest = sorted(present - covered)
        for start in range(0, len(rest), READ_CHUNK):
            chunk = rest[start:start + READ_CHUNK]
            for doc in pool.map(lambda uid: storage.read_json(unit_record_uri(run, uid)), chunk):
                yield UnitRecord.model_validate(doc)


def read_unit_records(run: str, unit_ids: set[str]) -> Iterator[UnitRecord]:
    """The committed records among `unit_ids`; those that came from a segment without statistics."""
    for item in read_committed(run, unit_ids):
        yield from item.records if isinstance(item, Segment) else [item]
