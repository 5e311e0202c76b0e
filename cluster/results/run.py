"""A run's results as tables, for analysis in Python (or pandas, via `.to_pandas()`):

    from cluster.results.run import load_run

    run = load_run("demo-work/results/demo")   # a run directory, local or s3://
    run.metrics                 # one row per checkpoint × scope: the whole split, each set, each tier
    run.leaderboard             # one row per checkpoint, best first
    run.units                   # what became of every planned unit
    run.predictions().to_table(filter=pc.field("checkpoint") == "hrm-step_1800")
    run.manifest.config         # the validated run config; also versions, timings, hardware

Everything is read from what the run stored; nothing runs a model. A run that stopped before
aggregating (failed or killed) has no metrics or leaderboard: those are None, and `units`
says what was committed.

The output folder of `hrm-eval evaluate` loads too (its metrics.json has a run's shape and its
predictions a run's layout): `metrics`, `leaderboard` (computed from metrics.json, as a run's
is) and `predictions()` as for a run, `job` its evaluate-only facts; it has no manifest or
units, which are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from hrm import storage

from cluster.manifest import Manifest, read_manifest, read_unit_states
from cluster.results.layout import MANIFEST, METRICS, PREDICTIONS, file_uri
from cluster.results.metrics import EvaluateJob, leaderboard_rows, read_leaderboard, read_metrics

# The figures of a metrics row that are single numbers (histograms and bins stay in metrics.json).
SCALAR_FIGURES = ("count", "exact_accuracy", "exact_ci_low", "exact_ci_high", "token_accuracy", "q_halt_accuracy",
                  "mean_steps", "lm_loss", "q_halt_auroc", "q_halt_auroc_bound", "q_halt_ece")


@dataclass
class Run:
    uri: str
    manifest: Manifest | None  # None: an `hrm-eval evaluate` output
    metrics: pa.Table | None
    leaderboard: pa.Table | None
    units: pa.Table | None  # None: an `hrm-eval evaluate` output
    job: EvaluateJob | None = None  # an `hrm-eval evaluate` output's own facts (metrics.json's "job")

    def predictions(self) -> pads.Dataset:
        """Every checkpoint's stored predictions (plain data) as one dataset, hive-partitioned:
        a `checkpoint` column, read lazily."""
        fs, path = storage.resolve(storage.join(self.uri, PREDICTIONS))
        return pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive")


def load_run(uri: str) -> Run:
    has_metrics = storage.exists(file_uri(uri, METRICS))
    if not storage.exists(file_uri(uri, MANIFEST)) and has_metrics:
        metrics = read_metrics(uri)
        if metrics.get("job") is not None:  # written by `hrm-eval evaluate`, which keeps no manifest
            return Run(uri=uri, manifest=None, metrics=metrics_table(metrics),
                       leaderboard=pa.Table.from_pylist(leaderboard_rows(metrics)), units=None,
                       job=EvaluateJob.model_validate(metrics["job"]))
    return Run(
        uri=uri,
        manifest=read_manifest(uri),
        metrics=metrics_table(read_metrics(uri)) if has_metrics else None,
        leaderboard=read_leaderboard(uri) if has_metrics else None,
        units=pa.Table.from_pylist([state.model_dump() for state in read_unit_states(uri)]),
    )


def metrics_table(metrics: dict[str, Any]) -> pa.Table:
    """metrics.json flattened: per checkpoint a row for the whole split (scope "all"), one per
    set (scope "set") and one per set and tier (scope "tier")."""
    rows = []
    for name, entry in metrics["checkpoints"].items():
        figures = entry["metrics"]
        scopes = [("all", None, None, figures["all"])]
        scopes += [("set", s, None, f) for s, f in figures["sets"].items()]
        scopes += [("tier", s, t, f) for s, tiers in figures["tiers"].items() for t, f in tiers.items()]
        for scope, set_name, tier, f in scopes:
            rows.append({"checkpoint": name, "step": entry["step"], "scope": scope, "set": set_name,
                         "tier": None if tier is None else str(tier), **{key: f[key] for key in SCALAR_FIGURES}})
    return pa.Table.from_pylist(rows)
