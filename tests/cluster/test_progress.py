"""What long work shows: progress as log records (a live bar on a terminal), and the metrics
table, whole however wide it is."""

import io
import logging
import re
import sys
from types import SimpleNamespace

import pytest

import cluster.progress
from cluster.progress import Meter, RunProgress, print_metrics_table

from jobs.logs import configured


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_meter_logs_a_progress_line_each_interval(monkeypatch, caplog):
    monkeypatch.setattr(cluster.progress, "LOG_INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, "cluster.progress")
    meter = Meter("units", 4)
    meter.start()
    assert meter._bar is None
    meter.update(2, "set all")
    meter.event("actor 0 died", logging.WARNING)
    meter.stop()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("cluster.progress", "INFO", "units 2/4 · set all"), ("cluster.progress", "WARNING", "actor 0 died")]


def test_a_meter_given_a_stream_writes_its_lines_there_and_not_to_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    Meter("units", 4, stream=stream).event("completed: 4 units evaluated")
    assert stream.getvalue() == "completed: 4 units evaluated\n"
    assert caplog.records == []


def test_a_quiet_meter_says_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    meter = Meter("examples", 10, quiet=True)
    meter.start()
    meter.event("anything")
    assert meter._bar is None and caplog.records == []


def test_on_a_terminal_the_bar_draws_on_the_log_consoles_and_records_print_above_it(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with configured(0) as handler:
        meter = Meter("units", 4)
        meter.start()
        assert meter._bar is not None and meter._bar.console is handler.console
        meter.event("actor 0 ready")
        meter.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", terminal.getvalue())
    assert re.search(r"\[\d\d:\d\d:\d\d\] INFO +actor 0 ready", text), text


def test_with_quiet_logging_no_bar_is_drawn_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    with configured(-1):
        meter = Meter("units", 4)
        meter.start()
        assert meter._bar is None


def run_progress() -> tuple[RunProgress, io.StringIO]:
    stream = io.StringIO()
    progress = RunProgress(stream)
    unit = SimpleNamespace(checkpoint="step_1", examples=8)
    progress.start(SimpleNamespace(run_id="r1", checkpoints=["step_1"], shards=[0], units=[unit], run="out/r1"), [])
    return progress, stream


def manifest(status: str, evaluated: int) -> SimpleNamespace:
    return SimpleNamespace(status=status, counts={"evaluated": evaluated, "resumed": 0, "failed": 1 - evaluated,
                                                  "pending": 0},
                           timings={"evaluate_s": 2.0, "examples_per_s": 4.0}, scheduling={"model_loads": 1})


@pytest.mark.parametrize("status, evaluated, level", [("completed", 1, logging.INFO), ("failed", 0, logging.ERROR)])
def test_a_runs_last_line_is_an_error_when_it_failed(monkeypatch, status, evaluated, level):
    progress, _ = run_progress()
    levels = []
    monkeypatch.setattr(progress.meter, "event", lambda message, level=logging.INFO: levels.append(level))
    progress.finish(manifest(status, evaluated), None)
    assert levels == [level]


def test_a_run_says_where_its_results_are_then_how_it_ended(capsys):
    progress, stream = run_progress()
    progress.finish(manifest("completed", 1), None)
    progress.report_written("out/r1/report.html")
    assert stream.getvalue().splitlines() == [
        "run r1: 1 checkpoint(s) × 1 shard(s) = 1 units, 8 examples; 0 units already committed; results: out/r1",
        "completed: 1 units evaluated, 0 resumed, 0 failed, 0 pending; 2.0 s evaluating, 4.0 examples/s; "
        "1 model loads"]
    assert capsys.readouterr().out == "report: out/r1/report.html\n"  # a result: on stdout, -q or not


def test_off_a_terminal_a_wide_table_and_its_title_print_whole(capsys):
    name = "checkpoints/" + "a-long-run-name-" * 6 + "step_1000"
    title = f"run r1: s3://bucket/{'deep/' * 20}data [test]"
    print_metrics_table(title, ["checkpoint", "examples", "exact (95% CI)"], [[name, "1000", "0.9120 (0.89–0.93)"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == title
    (row,) = [line for line in lines if name in line]
    assert re.fullmatch(rf"│ {name} │ +1000 │ 0\.9120 \(0\.89–0\.93\) │", row)
    assert len(row) > 120 and len({len(line) for line in lines[1:]}) == 1  # every line of the table as wide
