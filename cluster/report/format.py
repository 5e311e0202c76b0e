"""How the report writes numbers: percentages, counts, sizes, intervals, p-values, and which
checkpoints a plot draws. `UNDEFINED` stands wherever a figure does not exist."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

from cluster.manifest import CheckpointEntry
from cluster.report.document import UNDEFINED
from cluster.report.results import CheckpointCost, RunResults

PLOTTED_CHECKPOINTS = 8  # more lines than this make a plot unreadable; the tables hold all
COLLAPSE_ROWS = 40  # longer detail tables fold away in the HTML
BEST = "★"


def pct(x: float | None, digits: int = 2) -> str:
    return UNDEFINED if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 4) -> str:
    return UNDEFINED if x is None else f"{x:,.{digits}f}"


def sci(x: float | None) -> str:
    return UNDEFINED if x is None else f"{x:.3e}"


def count(n: int | None) -> str:
    return UNDEFINED if n is None else f"{n:,}"


def mib(n: int | None) -> str:
    return UNDEFINED if n is None else f"{n / 2**20:,.2f}"


def seconds(s: float | None) -> str:
    return UNDEFINED if s is None else f"{s:,.1f} s"


def exact_with_ci(fig: dict[str, Any]) -> str:
    if fig["exact_accuracy"] is None:
        return UNDEFINED
    return f"{pct(fig['exact_accuracy'])} ({pct(fig['exact_ci_low'])}–{pct(fig['exact_ci_high'])})"


def token_with_ci(fig: dict[str, Any]) -> str:
    """Token accuracy and its 95% interval over examples (none from a single example)."""
    if fig["token_accuracy"] is None:
        return UNDEFINED
    if fig.get("token_ci_low") is None:
        return pct(fig["token_accuracy"])
    return f"{pct(fig['token_accuracy'])} ({pct(fig['token_ci_low'])}–{pct(fig['token_ci_high'])})"


def plotted(names: list[str], keep: Iterable[str | None] = ()) -> list[str]:
    """At most PLOTTED_CHECKPOINTS names in their order: evenly spaced, always with the first,
    the last and any of `keep` (the best)."""
    if len(names) <= PLOTTED_CHECKPOINTS:
        return names
    wanted = {names[0], names[-1], *(k for k in keep if k)}
    spare = PLOTTED_CHECKPOINTS - len(wanted)
    wanted |= {names[round(i * (len(names) - 1) / (spare + 1))] for i in range(1, spare + 1)}
    return [n for n in names if n in wanted]


def shown_note(shown: list[str], names: list[str]) -> str:
    if len(shown) == len(names):
        return ""
    return f" {len(shown)} of {len(names)} checkpoints drawn (first, last, best, evenly spaced); the table has all."


def throughput(cost: CheckpointCost | None) -> float | None:
    return cost.examples / cost.eval_s if cost and cost.eval_s > 0 else None


def total_component(r: RunResults, name: str) -> dict[str, Any] | None:
    if r.health is None or name not in r.health["checkpoints"]:
        return None
    return next(c for c in r.health["checkpoints"][name]["components"] if c["component"] == "total")


def points(after: float | None, before: float | None) -> str:
    return UNDEFINED if after is None or before is None else f"{100 * (after - before):+.2f}"


def p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"


def run_label(entry: CheckpointEntry) -> str:
    """A training run's name: the directory of its all_config.yaml."""
    return posixpath.basename(posixpath.dirname(entry.config_uri.split("?", 1)[0])) or entry.name
