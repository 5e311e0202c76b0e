"""What long work shows while it runs, and the metrics table it prints at the end.

`Meter` is the one progress display: a live bar on a terminal, and one plain line every
LOG_INTERVAL_S otherwise (what `ray job submit` and CI logs show). `RunProgress` follows a
distributed run on it (units, examples/s, ETA, checkpoints finished, actors); `hrm-eval
evaluate` follows its chunks on it. `print_metrics_table` is the one summary table of both.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

from cluster.results.layout import UnitRecord

if TYPE_CHECKING:  # planning reports its own progress here: no import cycle at run time
    from cluster.plan import PreparedRun

LOG_INTERVAL_S = 10.0  # off a terminal: one progress line this often
UNDEFINED = "—"
METRIC_COLUMNS = ("examples", "exact (95% CI)", "token acc", "q-halt acc", "mean steps", "lm loss")


class Meter:
    """`done` of `total` with a status text; `event` prints a line without garbling the bar."""

    def __init__(self, what: str, total: int, *, stream: IO[str] | None = None, quiet: bool = False):
        self.what, self.total, self.quiet = what, total, quiet
        self.stream = stream or sys.stderr
        self.done, self.status = 0, ""
        self._bar: Any = None
        self._last_line = time.perf_counter()

    def start(self, done: int = 0, status: str = "") -> None:
        self.done, self.status = done, status
        if self.quiet or not self.stream.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._bar = Progress(TextColumn(f"{self.what} {{task.completed}}/{{task.total}}"), BarColumn(bar_width=12),
                             TextColumn("{task.fields[status]}"), transient=True, console=Console(file=self.stream))
        self._task = self._bar.add_task(self.what, total=self.total, completed=done, status=status)
        self._bar.start()

    def update(self, done: int, status: str = "") -> None:
        self.done, self.status = done, status
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
        elif not self.quiet and time.perf_counter() - self._last_line >= LOG_INTERVAL_S:
            self._last_line = time.perf_counter()
            self.event(f"{self.what} {done}/{self.total} · {status}")

    def event(self, message: str) -> None:
        if self.quiet:
            return
        line = f"[hrm-eval {time.strftime('%H:%M:%S')}] {message}"
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class RunProgress:
    """Units done/total, examples/s, ETA and checkpoints finished, on the driver; a summary
    table at the end. Subclass it to observe a run."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr

    def start(self, prepared: PreparedRun, resumed: list[UnitRecord]) -> None:
        self.prepared = prepared
        self.total_examples = sum(u.examples for u in prepared.units)
        self.done_units = len(resumed)
        self.done_examples = sum(r.examples for r in resumed)
        self.evaluated_examples = 0
        self.units_left = Counter(u.checkpoint for u in prepared.units)
        for record in resumed:
            self.units_left[record.checkpoint] -= 1
        self.started = time.perf_counter()
        self.actors = 0
        self.meter = Meter("units", len(prepared.units), stream=self.stream)
        self.event(
            f"run {prepared.run_id}: {len(prepared.checkpoints)} checkpoint(s) × {len(prepared.shards)} "
            f"shard(s) = {len(prepared.units)} units, {self.total_examples} examples; {len(resumed)} units already "
            f"committed; results: {prepared.run}"
        )
        self.meter.start(self.done_units, self.status())

    def unit_done(self, record: UnitRecord) -> None:
        self.done_units += 1
        self.done_examples += record.examples
        self.evaluated_examples += record.examples
        self.units_left[record.checkpoint] -= 1
        self.tick()

    def checkpoint_replanned(self, name: str, forgotten: list[UnitRecord], units: int) -> None:
        """Its committed units no longer count; `units` are to do."""
        self.done_units -= len(forgotten)
        self.done_examples -= sum(r.examples for r in forgotten)
        self.units_left[name] = units
        self.tick()

    def actors_changed(self, ready: int) -> None:
        self.actors = ready

    def event(self, message: str) -> None:
        self.meter.event(message)

    def tick(self) -> None:
        self.meter.update(self.done_units, self.status())

    def status(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.evaluated_examples / elapsed if elapsed > 0 else 0.0
        left = self.total_examples - self.done_examples
        eta = f"{left / rate:,.0f} s" if rate > 0 else "–"
        finished = sum(1 for n in self.units_left.values() if n == 0)
        return (f"{self.done_examples}/{self.total_examples} ex · {rate:,.1f} ex/s · ETA {eta} · "
                f"ckpts {finished}/{len(self.units_left)} · actors {self.actors}")

    def finish(self, manifest: Any, metrics: dict[str, Any] | None) -> None:
        self.meter.stop()
        counts, timings = manifest.counts, manifest.timings
        # a fully resumed run evaluated nothing: it has no rate to state
        work = (f"{timings['evaluate_s']:.1f} s evaluating, {timings['examples_per_s']:.1f} examples/s; "
                if counts["evaluated"] else "nothing left to evaluate; ")
        self.event(
            f"{manifest.status}: {counts['evaluated']} units evaluated, {counts['resumed']} resumed, "
            f"{counts['failed']} failed, {counts['pending']} pending; {work}"
            f"{manifest.scheduling['model_loads']} model loads"
        )
        if metrics is not None:
            loads = {c.name: c.loads for c in manifest.checkpoints}
            rows = [[name, str(entry["step"]), *metric_cells(entry["metrics"]["all"]), str(loads[name])]
                    for name, entry in metrics["checkpoints"].items()]
            print_metrics_table(f"run {manifest.run_id}: {manifest.dataset['uri']} [{manifest.dataset['split']}]",
                                ["checkpoint", "step", *METRIC_COLUMNS, "loads"], rows)


def metric_cells(m: dict[str, Any]) -> list[str]:
    """The METRIC_COLUMNS cells of one group's finalised figures."""
    fixed = lambda x, digits=4: UNDEFINED if x is None else f"{x:.{digits}f}"
    exact = UNDEFINED if m["exact_accuracy"] is None else (
        f"{m['exact_accuracy']:.4f} ({m['exact_ci_low']:.4f}–{m['exact_ci_high']:.4f})")
    return [str(m["count"]), exact, fixed(m["token_accuracy"]), fixed(m["q_halt_accuracy"]),
            fixed(m["mean_steps"], 2), fixed(m["lm_loss"])]


def print_metrics_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table on stdout: the first column left-aligned (names), the rest right-aligned (figures).
    Never cut to the terminal: off a terminal it is as wide as it needs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(80, Console(width=100_000).measure(table).maximum))
    console.print(table)
