"""Where hrm-eval's messages go: every command's progress, warnings and errors are `logging`
records, set up here once (jobs.cli calls `configured`, so `python -m jobs.evaluate` in a Ray
job gets the same).

On a terminal they go through rich's handler (time, coloured level, message), the console the
progress bar draws on (cluster.progress), so records print above the bar instead of through
it. Anywhere else, `ray job submit` and CI logs, each record is one plain line on stderr:
`2026-12-03 13:20:01 INFO run 3f2a…: 4 units, …`. Either way credentials are hidden
(hrm.secrets), whatever stream stderr is at the time.

What a command prints as its result (JSON, tables, where the results are) is no log record:
it goes to stdout and stays there with -q.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from hrm.secrets import redact

OWN_LOGGERS = ("hrm", "cluster", "jobs")  # hrm-eval's packages; any other logger is a library's
PLAIN_FORMAT, DATE_FORMAT = "%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"


def levels(verbosity: int) -> tuple[int, int]:
    """(level of hrm-eval's loggers, level of every library's) for -q (-1), nothing (0), -v (1), -vv (2+)."""
    if verbosity < 0:
        return logging.WARNING, logging.WARNING
    if verbosity == 0:
        return logging.INFO, logging.WARNING
    if verbosity == 1:
        return logging.DEBUG, logging.WARNING
    return logging.DEBUG, logging.DEBUG


class RedactingFormatter(logging.Formatter):
    """A record's whole text, message, arguments and traceback, with credentials hidden."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (the CLI's redacting wrapper, a
    test's capture), not to the stream it was when the handler was made."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def make_handler() -> logging.Handler:
    """rich's handler on a terminal, plain lines with date and level otherwise."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        # Console(stderr=True) looks sys.stderr up at each write, like StderrHandler
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False,
                                               log_time_format="[%H:%M:%S]")
        handler.setFormatter(RedactingFormatter("%(message)s"))
    else:
        handler = StderrHandler()
        handler.setFormatter(RedactingFormatter(PLAIN_FORMAT, DATE_FORMAT))
    return handler


@contextmanager
def configured(verbosity: int = 0) -> Iterator[logging.Handler]:
    """Records of hrm-eval's loggers at INFO and up (DEBUG with -v, WARNING with -q) and of
    libraries at WARNING and up (everything with -vv) go to stderr while the block runs; the
    logging setup before it is restored afterwards (a test runs many commands in one process)."""
    root = logging.getLogger()
    ours, others = levels(verbosity)
    before = root.level, {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    handler = make_handler()
    root.addHandler(handler)
    root.setLevel(others)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(ours)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])
        for name, level in before[1].items():
            logging.getLogger(name).setLevel(level)
