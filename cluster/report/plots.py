"""The report's plots, drawn with matplotlib's object API on the Agg canvas (no pyplot state,
no display) and returned as PNG bytes. Same data, same matplotlib → same bytes.

Every function takes figures already measured; values are fractions and are drawn as %.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

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


# --------------------------------------------------------------------------- failure gallery
# One figure per checkpoint: a row (or, for ARC, rows) of small multiples of failed examples,
# each drawn from the tokens as stored; what is wrong was counted by the caller.

# ARC colours 0..9: black, blue, red, green, yellow, grey, magenta, orange, light blue, maroon.
ARC_PALETTE = ("#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b", "#7fdbff",
               "#870c25")
WRONG_FILL = "#f8c9c4"
PREDICTED_INK = "#1f5fa8"
WALL_FILL = "#2b3138"
PREDICTED_PATH = "#d62728"
ANSWER_PATH = "#2ca02c"
PANEL_SIDE = 2.5  # inches per small multiple


@dataclass
class SudokuPanel:
    """One board: `digits` the prediction (0: not a digit), `given` the input's clues,
    `wrong` the labelled cells the prediction misses, `answer` the label's digits."""

    title: str
    digits: list[list[int]]
    given: list[list[bool]]
    wrong: list[list[bool]]
    answer: list[list[int]]
    box: int  # box side: 3 for 9x9, 2 for 4x4


@dataclass
class MazePanel:
    title: str
    walls: list[list[bool]]
    predicted: list[list[bool]]  # cells the prediction marks as path
    answer: list[list[bool]]  # cells the label marks as path
    start: tuple[int, int] | None
    goal: tuple[int, int] | None


@dataclass
class ArcPanel:
    """One example's input, prediction and answer grids (colours 0..9; a grid may be empty)."""

    title: str
    grids: list[tuple[str, list[list[int]]]]  # (label, grid), drawn left to right
    wrong: dict[int, list[list[bool]]] = field(default_factory=dict)  # grid index -> its cells to outline


def _row_of_axes(count: int, height: float = PANEL_SIDE + 0.35) -> tuple[Figure, list]:
    fig = _figure((PANEL_SIDE * max(count, 1), height))
    axes = fig.subplots(1, count, squeeze=False)[0]
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, list(axes)


def sudoku_gallery(panels: Sequence[SudokuPanel]) -> bytes:
    """Givens black, predicted digits blue; a wrong cell red-filled, the answer's digit small
    in its top-left corner; box lines thicker."""
    fig, axes = _row_of_axes(len(panels))
    for ax, p in zip(axes, panels):
        side = len(p.digits)
        size = 15 if side <= 4 else 10
        for r in range(side):
            for c in range(side):
                y = side - 1 - r  # row 0 at the top
                if p.wrong[r][c]:
                    ax.add_patch(Rectangle((c, y), 1, 1, facecolor=WRONG_FILL, edgecolor="none"))
                    ax.text(c + 0.06, y + 0.95, str(p.answer[r][c]), ha="left", va="top", fontsize=size * 0.62,
                            color="#8b0000", fontweight="bold")
                digit = p.digits[r][c]
                ax.text(c + 0.5, y + 0.45, str(digit) if digit else "·", ha="center", va="center", fontsize=size,
                        color="black" if p.given[r][c] else PREDICTED_INK,
                        fontweight="bold" if p.given[r][c] else "normal")
        for i in range(side + 1):
            width = 2.0 if i % p.box == 0 else 0.5
            ax.plot([0, side], [i, i], color="black", linewidth=width)
            ax.plot([i, i], [0, side], color="black", linewidth=width)
        ax.set_xlim(-0.05, side + 0.05)
        ax.set_ylim(-0.05, side + 0.05)
        ax.axis("off")
        ax.set_title(p.title, fontsize=8)
    return _png(fig)


def maze_gallery(panels: Sequence[MazePanel]) -> bytes:
    """Walls dark; the answer's path as green outlines, the predicted path as red dots, S and G
    lettered."""
    from matplotlib.lines import Line2D

    fig, axes = _row_of_axes(len(panels), PANEL_SIDE + 0.8)
    for ax, p in zip(axes, panels):
        rows, cols = len(p.walls), len(p.walls[0])
        ax.imshow([[1.0 if wall else 0.0 for wall in row] for row in p.walls], cmap="Greys", vmin=0, vmax=1.25,
                  interpolation="nearest")
        for r in range(rows):
            for c in range(cols):
                if p.answer[r][c]:
                    ax.add_patch(Rectangle((c - 0.42, r - 0.42), 0.84, 0.84, facecolor="none",
                                           edgecolor=ANSWER_PATH, linewidth=1.3))
                if p.predicted[r][c]:
                    ax.add_patch(Circle((c, r), 0.27, facecolor=PREDICTED_PATH, edgecolor="none"))
        for point, letter in ((p.start, "S"), (p.goal, "G")):
            if point is not None:
                ax.text(point[1], point[0], letter, ha="center", va="center", fontsize=7, fontweight="bold",
                        color="black", bbox={"boxstyle": "round,pad=0.1", "facecolor": "#ffdc00", "edgecolor": "none"})
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -0.5)
        ax.set_title(p.title, fontsize=8)
    fig.legend(handles=[Line2D([], [], marker="o", linestyle="none", color=PREDICTED_PATH, label="predicted path"),
                        Line2D([], [], marker="s", linestyle="none", markerfacecolor="none",
                               markeredgecolor=ANSWER_PATH, label="answer's path")],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _png(fig)


def arc_gallery(panels: Sequence[ArcPanel]) -> bytes:
    """One row per example: input | prediction | answer, in the ARC palette, cell lines grey.
    A row's grids share one cell size, so their shapes compare at a glance; wrong cells are
    outlined in white on black."""
    from matplotlib.colors import ListedColormap

    columns = max(len(p.grids) for p in panels)
    fig = _figure((PANEL_SIDE * columns, (PANEL_SIDE - 0.2) * len(panels) + 0.2))
    axes = fig.subplots(len(panels), columns, squeeze=False)
    palette = ListedColormap(ARC_PALETTE)
    for row, p in zip(axes, panels):
        height = max([len(grid) for _, grid in p.grids] + [1])
        width = max([len(grid[0]) for _, grid in p.grids if grid] + [1])
        span = max(height, width)
        for i, (ax, (label, grid)) in enumerate(zip(row, p.grids)):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"{p.title}\n{label}" if i == 0 else label, fontsize=8)
            rows = len(grid)
            cols = len(grid[0]) if rows else 0
            # The same span around every grid of the row, the grid centred in it.
            ax.set_xlim(-0.5 - (span - cols) / 2, cols - 0.5 + (span - cols) / 2)
            ax.set_ylim(rows - 0.5 + (span - rows) / 2, -0.5 - (span - rows) / 2)
            ax.set_aspect("equal")
            if not rows or not cols:
                ax.text(0.5, 0.5, "no grid", ha="center", va="center", fontsize=8, color="#7f7f7f",
                        transform=ax.transAxes)
                continue
            ax.imshow(grid, cmap=palette, vmin=-0.5, vmax=9.5, interpolation="nearest")
            for x in range(cols + 1):
                ax.plot([x - 0.5, x - 0.5], [-0.5, rows - 0.5], color="#555555", linewidth=0.4)
            for y in range(rows + 1):
                ax.plot([-0.5, cols - 0.5], [y - 0.5, y - 0.5], color="#555555", linewidth=0.4)
            ax.add_patch(Rectangle((-0.5, -0.5), cols, rows, facecolor="none", edgecolor="black", linewidth=1.0))
            for r, marks in enumerate(p.wrong.get(i, [])):
                for c, mark in enumerate(marks):
                    if mark:
                        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="none", edgecolor="black",
                                               linewidth=2.4))
                        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="none", edgecolor="white",
                                               linewidth=1.2, linestyle=(0, (2, 1))))
            ax.text(0.5, -0.02, f"{rows}×{cols}", ha="center", va="top", fontsize=7, transform=ax.transAxes)
    return _png(fig)
