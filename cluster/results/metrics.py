"""metrics.json and leaderboard.parquet: the run's exact metrics, merged from the committed
units' statistics, and one row per checkpoint ranked by exact accuracy.

    {"format": "hrm-eval/metrics", "version", "run_id", "dataset", "split", "sets", "eval",
     "checkpoints": {name: {"step", "family", "version",
                            "metrics": StatsTable.finalize(), "stats": StatsTable.to_dict()}},
     "votes": {...}}                       (cluster.results.votes, when the config asks for votes)

The merge is exact (integer sufficient statistics), so the figures do not depend on how the
units were split between actors or in which order they finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from hrm import storage
from hrm.eval.metrics import StatsTable
from hrm.secrets import redact_document

from cluster.plan import PreparedRun
from cluster.results.layout import LEADERBOARD, METRICS, file_uri

METRICS_FORMAT = "hrm-eval/metrics"
# Raised whenever a key of metrics.json changes meaning or shape. 2: a checkpoint's "version" (its
# storage version, hrm.storage.version) replaces "content_hash" (a sha256 the driver computed).
METRICS_VERSION = 2


def run_metrics(prepared: PreparedRun, stats: Mapping[str, StatsTable]) -> dict[str, Any]:
    """The metrics of a run whose every unit is committed, from each checkpoint's merged
    statistics (`RunLedger.stats`)."""
    per_checkpoint = {ref.name: stats.get(ref.name, StatsTable()) for ref in prepared.checkpoints}
    config = prepared.config
    return {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "run_id": prepared.run_id,
        "dataset": config.dataset.uri,
        "split": config.dataset.split,
        "sets": prepared.sets,
        "eval": config.eval_identity(),
        "checkpoints": {
            ref.name: {
                "step": ref.step,
                "family": ref.family,
                "version": ref.version,
                "metrics": per_checkpoint[ref.name].finalize(),
                "stats": per_checkpoint[ref.name].to_dict(),
            }
            for ref in prepared.checkpoints
        },
    }


def leaderboard_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per checkpoint, best exact accuracy first (then token accuracy, then plan order)."""
    rows = []
    for name, entry in metrics["checkpoints"].items():
        m = entry["metrics"]["all"]
        rows.append({
            "checkpoint": name,
            "step": entry["step"],
            "family": entry["family"],
            **{key: m[key] for key in ("count", "exact_accuracy", "exact_ci_low", "exact_ci_high", "token_accuracy",
                                       "q_halt_accuracy", "mean_steps", "lm_loss", "q_halt_auroc",
                                       "q_halt_auroc_bound")},
            "version": entry["version"],
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
