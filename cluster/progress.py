"""What long work shows while it runs, and the metrics table it prints at the end.

`Meter` is the one progress display: a live bar on a terminal, and an INFO record every
LOG_INTERVAL_S otherwise (a plain line in what `ray job submit` and CI logs show); what it has
to say on the way (`event`) is a log record of the "cluster.progress" logger. `RunProgress`
follows a distributed run on it (units, examples/s, ETA, checkpoints finished, actors); `hrm-eval
evaluate` follows its chunks on it. `print_metrics_table` is the one summary table of both: a
result, so it goes to stdout, not to the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

from cluster.results.layout import UnitRecord

if TYPE_CHECKING:  # planning reports its own progress here: no import cycle at run time
    from rich.console import Console

    from cluster.plan import PreparedRun

LOG_INTERVAL_S = 10.0  # off a terminal: one progress line this often
UNDEFINED = "—"
METRIC_COLUMNS = ("examples", "exact (95% CI)", "token acc", "q-halt acc", "mean steps", "lm loss")

log = logging.getLogger(__name__)


class Meter:
    """`done` of `total` with a status text; `event` logs a record without garbling the bar.

    Its records go to the "cluster.progress" logger, and the bar to the terminal the log's rich
    handler writes to (jobs.logs), if there is one and INFO records are shown. With `stream`
    they go to that stream instead, as bare lines, and the bar only if it is a terminal (a test
    keeps a run's progress off its output); `quiet` shows nothing."""

    def __init__(self, what: str, total: int, *, stream: IO[str] | None = None, quiet: bool = False):
        self.what, self.total, self.quiet = what, total, quiet
        self.log = log if stream is None else _stream_logger(stream)
        self.console = _log_console() if stream is None else _console(stream)
        self.done, self.status = 0, ""
        self._bar: Any = None
        self._last_line = time.perf_counter()

    def start(self, done: int = 0, status: str = "") -> None:
        self.done, self.status = done, status
        shown = self.console is not None and self.console.is_terminal and self.log.isEnabledFor(logging.INFO)
        if self.quiet or not shown:
            return
        from rich.progress import BarColumn, Progress, TextColumn

        # the console the log records print on: they go above the bar while it is live
        self._bar = Progress(TextColumn(f"{self.what} {{task.completed}}/{{task.total}}"), BarColumn(bar_width=12),
                             TextColumn("{task.fields[status]}"), transient=True, console=self.console)
        self._task = self._bar.add_task(self.what, total=self.total, completed=done, status=status)
        self._bar.start()

    def update(self, done: int, status: str = "") -> None:
        self.done, self.status = done, status
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
        elif not self.quiet and time.perf_counter() - self._last_line >= LOG_INTERVAL_S:
            self._last_line = time.perf_counter()
            self.event(f"{self.what} {done}/{self.total} · {status}")

    def event(self, message: str, level: int = logging.INFO) -> None:
        if not self.quiet:
            self.log.log(level, message)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _log_console() -> Console | None:
    """The console of the rich handler the log's records go through, if any."""
    from rich.logging import RichHandler

    return next((h.console for h in logging.getLogger().handlers if isinstance(h, RichHandler)), None)


def _console(stream: IO[str]) -> Console:
    from rich.console import Console

    return Console(file=stream)


def _stream_logger(stream: IO[str]) -> logging.Logger:
    """A logger of its own, outside logging's tree (no parent, no level but INFO), writing bare
    message lines to `stream`."""
    logger = logging.Logger(f"{__name__}.stream", logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


class RunProgress:
    """Units done/total, examples/s, ETA and checkpoints finished, on the driver; a summary
    table at the end. Subclass it to observe a run. `stream`: as Meter's."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

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

    def event(self, message: str, level: int = logging.INFO) -> None:
        self.meter.event(message, level)

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
            f"{manifest.scheduling['model_loads']} model loads",
            logging.INFO if manifest.status == "completed" else logging.ERROR,
        )
        if metrics is not None:
            loads = {c.name: c.loads for c in manifest.checkpoints}
            rows = [[name, str(entry["step"]), *metric_cells(entry["metrics"]["all"]), str(loads[name])]
                    for name, entry in metrics["checkpoints"].items()]
            print_metrics_table(f"run {manifest.run_id}: {manifest.dataset['uri']} [{manifest.dataset['split']}]",
                                ["checkpoint", "step", *METRIC_COLUMNS, "loads"], rows)

    def report_written(self, uri: str) -> None:
        """Where the run's report is: part of the result, so on stdout like the table (-q keeps it)."""
        print(f"report: {uri}", flush=True)


def metric_cells(m: dict[str, Any]) -> list[str]:
    """The METRIC_COLUMNS cells of one group's finalised figures."""
    fixed = lambda x, digits=4: UNDEFINED if x is None else f"{x:.{digits}f}"
    exact = UNDEFINED if m["exact_accuracy"] is None else (
        f"{m['exact_accuracy']:.4f} ({m['exact_ci_low']:.4f}–{m['exact_ci_high']:.4f})")
    return [str(m["count"]), exact, fixed(m["token_accuracy"]), fixed(m["q_halt_accuracy"]),
            fixed(m["mean_steps"], 2), fixed(m["lm_loss"])]


def print_metrics_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A title line and a table on stdout: the first column left-aligned (names), the rest
    right-aligned (figures). Off a terminal it is as wide as it needs and the title one line,
    never cut or wrapped at 80 columns; names and URIs print as they are (no rich markup:
    `[test]` is a split, not a style)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(80, Console(width=100_000).measure(table).maximum))
    console.print(Text(title, style="italic"), soft_wrap=True)
    console.print(table)
