"""The command line's contract (docs/errors.md): bad input exits 2, a storage fault that
outlasted the retries 3, a bug 1 with its traceback in a crash log."""

import importlib.metadata
from pathlib import Path

import pytest

from hrm.errors import StorageUnavailable

import jobs.inspect
from jobs.cli import main


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
