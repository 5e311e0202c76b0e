"""The command line's contract (docs/errors.md): bad input exits 2, a storage fault that
outlasted the retries 3, a bug 1 with its traceback in a crash log; -v and -q on every command."""

import importlib.metadata
from pathlib import Path

import pytest

from hrm.errors import StorageUnavailable

import jobs.convert
import jobs.inspect
from jobs.cli import COMMANDS, main


def test_version_prints_the_installed_packages_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"hrm-eval {importlib.metadata.version('hrm-eval')}"


def test_a_bug_exits_1_with_one_line_naming_the_crash_log_that_holds_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise KeyError("no such thing")

    monkeypatch.setattr(jobs.inspect, "run", broken)
    assert main(["inspect", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hrm-eval inspect: internal error (a bug in hrm-eval): KeyError: ")
    log = Path(err.rstrip().rsplit("traceback in ", 1)[1])
    assert "Traceback (most recent call last)" in log.read_text() and "no such thing" in log.read_text()


def test_a_storage_fault_that_outlasted_the_retries_exits_3_and_says_a_rerun_resumes(monkeypatch, capsys):
    def unavailable(args):
        raise StorageUnavailable("s3://b/x: storage unavailable, gave up after 61 s of retries: connect failed")

    monkeypatch.setattr(jobs.inspect, "run", unavailable)
    assert main(["inspect", "anything"]) == 3
    assert capsys.readouterr().err == ("hrm-eval inspect: error: s3://b/x: storage unavailable, gave up after 61 s of "
                                       "retries: connect failed (a run resumes where it stopped: run the same command "
                                       "again)\n")


@pytest.mark.parametrize("argv", [[name, "--help"] for name in COMMANDS] + [["convert", "sudoku-csv", "--help"]])
def test_every_command_offers_verbose_and_quiet(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())  # argparse wraps the usage line
    assert "[-v | -q]" in usage


@pytest.mark.parametrize("argv", [["inspect", "-q", "-v", "x"], ["-q", "inspect", "-v", "x"]])
def test_verbose_and_quiet_together_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: argument -v/--verbose: not allowed with argument -q/--quiet")


def test_quiet_after_a_converter_is_taken_like_before_it(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(jobs.convert, "run", lambda args: seen.append(getattr(args, "quiet", False)) or 0)
    assert main(["convert", "sudoku-csv", "--test", "t.csv", "--output", "out", "-q"]) == 0
    assert main(["convert", "-q", "sudoku-csv", "--test", "t.csv", "--output", "out"]) == 0
    assert seen == [True, True]
