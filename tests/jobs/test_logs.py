"""Every command's messages are logging records (jobs.logs): plain dated lines off a terminal,
rich's handler on one, -v and -q on every command, credentials hidden."""

import io
import logging
import re
import sys

import pytest

import jobs.inspect
from jobs.cli import main
from jobs.logs import configured

DATED = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def chatty(monkeypatch):
    """`hrm-eval inspect` replaced by a command that logs at each level (hrm-eval's loggers and a
    library's) and prints its result on stdout."""

    def run(args):
        logging.getLogger("hrm.storage").debug("opened a connection")
        logging.getLogger("botocore.hooks").debug("a library's chatter")
        logging.getLogger("cluster.progress").info("units 2/4")
        logging.getLogger("hrm.storage").warning("s3://b/x: connection reset; retrying in 0.5 s")
        print("the result")
        return 0

    monkeypatch.setattr(jobs.inspect, "run", run)


def test_off_a_terminal_each_record_is_one_plain_line_with_date_and_level(chatty, capsys):
    assert main(["inspect", "anything"]) == 0
    printed = capsys.readouterr()
    lines = printed.err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"{DATED} INFO units 2/4", lines[0]), lines
    assert re.fullmatch(rf"{DATED} WARNING s3://b/x: connection reset; retrying in 0.5 s", lines[1]), lines
    assert printed.out == "the result\n"


@pytest.mark.parametrize("argv", [["inspect", "-q", "anything"], ["-q", "inspect", "anything"],
                                  ["inspect", "--quiet", "anything"]])
def test_quiet_drops_progress_but_keeps_warnings_and_the_result(chatty, capsys, argv):
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert [line.split(" ", 2)[2] for line in printed.err.splitlines()] == [
        "WARNING s3://b/x: connection reset; retrying in 0.5 s"]
    assert printed.out == "the result\n"


def test_verbose_shows_hrm_evals_debug_records_and_twice_verbose_a_librarys_too(chatty, capsys):
    assert main(["inspect", "-v", "anything"]) == 0
    once = [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()]
    assert once == ["DEBUG opened a connection", "INFO units 2/4",
                    "WARNING s3://b/x: connection reset; retrying in 0.5 s"]
    assert main(["-v", "inspect", "-v", "anything"]) == 0
    twice = [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()]
    assert twice == ["DEBUG opened a connection", "DEBUG a library's chatter", *once[1:]]


def test_a_credential_in_a_log_record_is_hidden(monkeypatch, capsys):
    def run(args):
        logging.getLogger("hrm.storage").warning("%s: connection reset", "s3://KEY:SECRET@b/x?secret_key=abc&region=x")
        return 0

    monkeypatch.setattr(jobs.inspect, "run", run)
    assert main(["inspect", "anything"]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING s3://***@b/x?secret_key=***&region=x: connection reset")


def test_on_a_terminal_records_go_through_richs_handler_with_credentials_hidden(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    def run(args):
        logging.getLogger("cluster.progress").info("results: s3://KEY:SECRET@b/run")
        return 0

    monkeypatch.setattr(jobs.inspect, "run", run)
    assert main(["inspect", "anything"]) == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())  # without rich's colours
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] INFO +results: s3://\*\*\*@b/run\s*", text), text


def test_a_command_leaves_the_logging_setup_as_it_found_it(chatty, capsys):
    root = logging.getLogger()
    before = list(root.handlers), root.level, logging.getLogger("hrm").level
    assert main(["inspect", "-v", "anything"]) == 0
    assert (list(root.handlers), root.level, logging.getLogger("hrm").level) == before


def test_records_follow_stderr_when_it_changes_after_setup(monkeypatch):
    with configured(0):
        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        logging.getLogger("jobs.run").info("connected")
    assert re.fullmatch(rf"{DATED} INFO connected\n", later.getvalue())
