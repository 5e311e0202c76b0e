"""The report's plots, drawn with matplotlib's object API on the Agg canvas (no pyplot state,
no display) and returned as PNG bytes. Same data, same matplotlib → same bytes.

Every function takes figures already measured; values are fractions and are drawn as %.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110
WIDE = (8.6, 4.4)
LOG_SCALE_ABOVE = 20.0  # weight changes spanning more than this factor are drawn on a log axis
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")


@dataclass
class SweepSeries:
    """One training run's checkpoints by step."""

    label: str
    steps: list[int]
    exact: list[float]
    exact_low: list[float]
    exact_high: list[float]
    token: list[float | None]
    best: int | None  # index of the run's best checkpoint when it is the run's overall best
    last: int  # index of the newest step


def _figure(size: tuple[float, float] = WIDE) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" key: the bytes should not change with the matplotlib patch version.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _percent_axis(ax, label: str) -> None:
    """Accuracy axes start at 0 %, so that heights compare honestly."""
    ax.set_ylim(bottom=0)
    ax.set_ylabel(label)
    ax.grid(True, color="#e3e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def _colour(i: int, n: int, cmap_name: str = "viridis") -> str:
    """Distinct colours for a few series; an ordered colour ramp for many (a sweep)."""
    if n <= len(COLOURS):
        return COLOURS[i]
    from matplotlib import colormaps

    return colormaps[cmap_name](0.05 + 0.85 * i / max(1, n - 1))


def accuracy_vs_step(series: Sequence[SweepSeries]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        prefix = f"{s.label}: " if len(series) > 1 else ""
        ax.fill_between(s.steps, [100 * v for v in s.exact_low], [100 * v for v in s.exact_high], color=colour,
                        alpha=0.15, linewidth=0, label=f"{prefix}exact 95% CI")
        ax.plot(s.steps, [100 * v for v in s.exact], "o-", color=colour, markersize=4, label=f"{prefix}exact accuracy")
        token_points = [(x, 100 * v) for x, v in zip(s.steps, s.token) if v is not None]
        if token_points:
            ax.plot(*zip(*token_points), "s--", color=colour, alpha=0.6, markersize=3,
                    label=f"{prefix}token accuracy")
        if s.best is not None:
            ax.plot(s.steps[s.best], 100 * s.exact[s.best], marker="*", markersize=17, color="#f2b705",
                    markeredgecolor="black", linestyle="none", label="best (exact)", zorder=5)
        ax.plot(s.steps[s.last], 100 * s.exact[s.last], marker="o", markersize=13, markerfacecolor="none",
                markeredgecolor="black", markeredgewidth=1.5, linestyle="none", label="last step", zorder=5)
    ax.set_xlabel("training step")
    _percent_axis(ax, "accuracy (%)")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def exact_by_act_step(curves: dict[str, list[float]]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    n = len(curves)
    for i, (name, values) in enumerate(curves.items()):
        ax.plot(range(1, len(values) + 1), [100 * v for v in values], "o-", markersize=3, color=_colour(i, n),
                label=name)
    ax.set_xlabel("ACT step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _percent_axis(ax, "exact accuracy (%)")
    ax.legend(fontsize=8, loc="best", ncol=2 if n > 5 else 1)
    return _png(fig)


def halting_histogram(histograms: dict[str, dict[int, int]]) -> bytes:
    """Fraction of examples halting at each step, one group of bars per step."""
    fig = _figure()
    ax = fig.add_subplot()
    steps = sorted({s for h in histograms.values() for s in h})
    n = len(histograms)
    width = 0.8 / n
    for i, (name, histogram) in enumerate(histograms.items()):
        total = sum(histogram.values())
        xs = [s - 0.4 + width * (i + 0.5) for s in steps]
        ax.bar(xs, [100 * histogram.get(s, 0) / total for s in steps], width=width, color=_colour(i, n), label=name)
    ax.set_xticks(steps)
    ax.set_xlabel("halting step (adaptive protocol)")
    _percent_axis(ax, "examples (%)")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def reliability_diagram(bins_by_checkpoint: dict[str, list[dict]]) -> bytes:
    """Accuracy against mean confidence per non-empty bin; marker area ∝ examples in the bin."""
    fig = _figure((8.6, 5.6))
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.plot([0, 100], [0, 100], color="#7f7f7f", linestyle=":", linewidth=1, label="perfect calibration")
    n = len(bins_by_checkpoint)
    for i, (name, bins) in enumerate(bins_by_checkpoint.items()):
        used = [b for b in bins if b["count"]]
        total = sum(b["count"] for b in used) or 1
        xs = [100 * b["mean_confidence"] for b in used]
        ys = [100 * b["accuracy"] for b in used]
        ax.plot(xs, ys, "-", color=_colour(i, n), linewidth=1.2, label=name)
        ax.scatter(xs, ys, s=[12 + 300 * b["count"] / total for b in used], color=_colour(i, n), alpha=0.7,
                   edgecolors="white", linewidths=0.5)
    ax.set_xlabel("mean sigmoid(q_halt) in bin (%)")
    _percent_axis(ax, "exact accuracy in bin (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _png(fig)


def group_bars(labels: list[str], exact: list[float], low: list[float], high: list[float], title: str) -> bytes:
    """Exact accuracy per set / tier with 95% CI whiskers."""
    fig = _figure((max(5.0, min(12.0, 1.0 + 0.7 * len(labels))), 4.2))
    ax = fig.add_subplot()
    xs = range(len(labels))
    values = [100 * v for v in exact]
    # The Wilson bounds are computed apart from the rate: at 0 or 1 they can miss it by an ulp.
    errors = [[max(0.0, 100 * (v - lo)) for v, lo in zip(exact, low)],
              [max(0.0, 100 * (hi - v)) for v, hi in zip(exact, high)]]
    ax.bar(xs, values, color=COLOURS[0], alpha=0.85, yerr=errors, capsize=4, ecolor="#333333")
    ax.set_xticks(list(xs), labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_title(title, fontsize=10)
    _percent_axis(ax, "exact accuracy (%)")
    return _png(fig)


def needs_log_scale(values: Iterable[float | None]) -> bool:
    drawn = [v for v in values if v]
    return bool(drawn) and max(drawn) / min(drawn) > LOG_SCALE_ABOVE


def weight_drift(steps: list[int], changes: dict[str, list[float | None]], label: str, log: bool) -> bytes:
    """Relative weight change per component against the later checkpoint's step."""
    fig = _figure()
    ax = fig.add_subplot()
    n = len(changes)
    for i, (component, values) in enumerate(changes.items()):
        points = [(s, v) for s, v in zip(steps, values) if v is not None and v > 0]
        if points:
            total = component == "total"
            ax.plot(*zip(*points), "-" if total else "o-", markersize=3, linewidth=2.2 if total else 1.2,
                    color="black" if total else _colour(i, n, "tab10"), label=component)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(f"training step ({label}; change from the previous checkpoint)")
    ax.set_ylabel("‖Δw‖ / ‖w‖")
    ax.grid(True, which="both", color="#e3e7eb", linewidth=0.8)
    ax.legend(fontsize=8, loc="best", ncol=2)
    return _png(fig)
