"""metrics.json and leaderboard.parquet: exact metrics per checkpoint, merged from the
committed units' statistics, and one row per checkpoint ranked by exact accuracy.

`hrm-eval run` and `hrm-eval evaluate` write metrics.json in one shape, `MetricsDocument`
(`evaluate --json` prints the same object), so one reader serves both:

    {"format": "hrm-eval/metrics", "version": 2,
     "run_id": "...",                      the run id; evaluate: the name of its --output folder
     "dataset": "<uri>", "split": "test", "sets": ["easy", "hard"],
     "limit": N,                           only when the first N examples of each set were evaluated
     "eval": {"split", "protocol", "steps", "min_steps", "batch_size", "dtype", "device", "compile"},
                                           what decides a result besides checkpoint and data
                                           (RunConfig.eval_identity; evaluate builds it from its flags)
     "checkpoints": {name: {"step", "family", "version",          hrm.storage.version of the step file
                            "metrics": StatsTable.finalize(), "stats": StatsTable.to_dict()}},
     "votes": {...},                       run only, when the config asks for votes (cluster.results.votes)
     "ablations": {name: {kind: {"examples", "exact_plain", "exact_ablated", "vs_plain"}}},
                                           run only, with `ablations:` (cluster.results.paired)
     "text": {"checked_parts", "checkpoints": {name: {summary of the text checks, "statuses"}}},
                                           run only, on a text dataset with tasks (cluster.results.text_checks)
     "audits": {"overlap": OverlapReport},  run only, with `audits: [overlap]` (hrm.audits.overlap)
     "model_card": {...},                  run only: the best checkpoint's measured card (cluster.results.model_card)
     "paired": {name: {"vs_best", "vs_previous", "indistinguishable_from_best"}},
                                           run only, two or more checkpoints: McNemar on the same examples
                                           against the best and the previous step (cluster.results.paired)
     "job": {...}}                         evaluate only (EvaluateJob): its step file, the dataset's hash,
                                           where its predictions are, threads, counts and timings; a run
                                           keeps these in manifest.json

The merge is exact (integer sufficient statistics), so the figures do not depend on how the
units were split between actors or in which order they finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from hrm import storage
from hrm.eval.metrics import StatsTable
from hrm.secrets import redact_document

from cluster.plan import CheckpointRef, PreparedRun
from cluster.results.layout import LEADERBOARD, METRICS, file_uri

METRICS_FORMAT = "hrm-eval/metrics"
# Raised whenever a key of metrics.json changes meaning or shape. 2: a checkpoint's "version" (its
# storage version, hrm.storage.version) replaces "content_hash" (a sha256 the driver computed).
# `hrm-eval evaluate`'s metrics.json, unversioned and flat before, has had the run's shape since 2.
# 3: "paired" (each checkpoint against the best and its previous step), "limit", "ablations", "text", "model_card",
# "audits".
METRICS_VERSION = 3


class CheckpointMetrics(BaseModel):
    """One checkpoint's entry: what it is, and its figures with the statistics they come from."""

    model_config = ConfigDict(extra="forbid")

    step: int | None
    family: str | None
    version: str | None  # hrm.storage.version of the step file evaluated
    metrics: dict[str, Any]  # StatsTable.finalize(): "all", "sets", "tiers"
    stats: dict[str, Any]  # StatsTable.to_dict(): exact, mergeable

    @classmethod
    def of(cls, ref: CheckpointRef, stats: StatsTable) -> CheckpointMetrics:
        return cls(step=ref.step, family=ref.family, version=ref.version, metrics=stats.finalize(),
                   stats=stats.to_dict())


class EvaluateJob(BaseModel):
    """What `hrm-eval evaluate` measured besides the metrics (a run's manifest.json holds the
    like of it for a run)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str  # the step file evaluated (a run directory given to --checkpoint: its newest step)
    dataset_hash: str  # Dataset.content_hash(), as a run's manifest records it
    predictions: str  # the predictions/ folder, hive-partitioned as a run's
    log_samples: bool  # the predictions hold each example's inputs and labels
    puzzle_ids: str = "as-is"  # what the model was given as puzzle identifiers (hrm.eval.ablation)
    dtype: str  # the activation dtype used: eval's, or (eval's None) the checkpoint's forward_dtype
    threads: int  # torch CPU threads
    streams: int  # CPU worker threads the batch is split between
    gpu: str | None  # the CUDA device's name, on cuda
    examples: int
    forward_steps: int  # example-steps: one example through one ACT step
    timings: dict[str, float | None]  # load_s, evaluate_s, total_s; examples_per_s (None: no time measured)


class MetricsDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["hrm-eval/metrics"] = METRICS_FORMAT
    version: int = METRICS_VERSION
    run_id: str
    dataset: str
    split: str
    sets: list[str]
    limit: int | None = None  # only the first `limit` examples of each set: a partial look
    sample_seed: int | None = None  # with limit: a seeded sample of `limit` examples of each set instead
    eval: dict[str, Any]  # RunConfig.eval_identity()
    checkpoints: dict[str, CheckpointMetrics]
    votes: dict[str, Any] | None = None  # run only (cluster.results.votes)
    paired: dict[str, Any] | None = None  # run only (cluster.results.paired)
    ablations: dict[str, Any] | None = None  # run only, with `ablations:` (cluster.results.paired)
    text: dict[str, Any] | None = None  # run only, on a text dataset with tasks (cluster.results.text_checks)
    model_card: dict[str, Any] | None = None  # run only (cluster.results.model_card)
    audits: dict[str, Any] | None = None  # run only, with `audits:` (hrm.audits)
    job: EvaluateJob | None = None  # evaluate only

    def to_json(self) -> dict[str, Any]:
        """The document as stored: the sections that do not apply are left out, not null."""
        return self.model_dump(exclude={key for key in ("limit", "sample_seed", "votes", "paired", "ablations", "text",
                                                     "model_card", "audits", "job")
                                        if getattr(self, key) is None})


def run_metrics(prepared: PreparedRun, stats: Mapping[str, StatsTable]) -> dict[str, Any]:
    """The metrics of a run whose every unit is committed, from each checkpoint's merged
    statistics (`RunLedger.stats`)."""
    config = prepared.config
    return MetricsDocument(
        run_id=prepared.run_id,
        dataset=config.dataset.uri,
        split=config.dataset.split,
        sets=prepared.sets,
        limit=config.dataset.limit,
        sample_seed=config.dataset.sample_seed,
        eval=config.eval_identity(),
        checkpoints={ref.name: CheckpointMetrics.of(ref, stats.get(ref.name, StatsTable()))
                     for ref in prepared.checkpoints},
    ).to_json()


def leaderboard_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per checkpoint, best exact accuracy first (then token accuracy, then plan order),
    with McNemar's p against the best and the previous step where the run has them (None where not)."""
    rows = []
    paired = metrics.get("paired") or {}
    for name, entry in metrics["checkpoints"].items():
        m = entry["metrics"]["all"]
        tests = paired.get(name) or {}
        rows.append({
            "checkpoint": name,
            "step": entry["step"],
            "family": entry["family"],
            **{key: m[key] for key in ("count", "exact_accuracy", "exact_ci_low", "exact_ci_high", "token_accuracy",
                                       "q_halt_accuracy", "mean_steps", "lm_loss", "q_halt_auroc",
                                       "q_halt_auroc_bound")},
            "version": entry["version"],
            "p_vs_best": (tests.get("vs_best") or {}).get("p_value"),
            "p_vs_previous": (tests.get("vs_previous") or {}).get("p_value"),
            "indistinguishable_from_best": tests.get("indistinguishable_from_best"),
        })
    rows.sort(key=lambda r: (-(r["exact_accuracy"] or 0.0), -(r["token_accuracy"] or 0.0)))
    return [{"rank": i + 1, **row} for i, row in enumerate(rows)]


def write_metrics(run: str, metrics: dict[str, Any]) -> None:
    storage.write_json_atomic(file_uri(run, METRICS), redact_document(metrics), indent=1)


def read_metrics(run: str) -> dict[str, Any]:
    return storage.read_json(file_uri(run, METRICS))


def write_leaderboard(run: str, rows: list[dict[str, Any]]) -> None:
    storage.write_parquet_atomic(file_uri(run, LEADERBOARD), [pa.Table.from_pylist(rows)])


def read_leaderboard(run: str) -> pa.Table:
    return storage.read_parquet(file_uri(run, LEADERBOARD))
