"""`hrm-eval`: one command, one sub-command per job module.

Each job module exposes `configure(parser)` and `run(args) -> int`. Modules are imported only
when their sub-command runs, so `hrm-eval --help` and `hrm-eval convert` stay fast and never
import torch or Ray unless needed.

What goes wrong ends the command as docs/errors.md says: bad input (InputError) exits 2 with
its one line; a storage fault that outlasted the retries (StorageUnavailable) exits 3; anything
else is a bug: its traceback goes to a log file, one line names it, and the exit status is 1.
That last line is the command's verdict, printed as it is; what comes before it (progress,
warnings) is logging records (jobs.logs), which -v and -q turn up and down on every command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import io
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from hrm.errors import InputError, StorageUnavailable
from hrm.secrets import redact

from jobs.logs import configured

EXIT_BUG, EXIT_BAD_INPUT, EXIT_STORAGE = 1, 2, 3

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": ("jobs.evaluate", "evaluate one checkpoint on one dataset (single process, no Ray)"),
    "run": ("jobs.run", "run a config-driven evaluation job on an embedded local Ray"),
    "convert": ("jobs.convert", "convert raw data (Sudoku CSV, ARC JSON, mazes, JSONL, reference) to puzzles"),
    "inspect": ("jobs.inspect", "inspect a checkpoint: parameters per component, NaN/Inf, drift between two"),
    "report": ("jobs.report", "regenerate report.html / report.md from stored results"),
    "compare": ("jobs.compare", "compare two runs on the same examples: per checkpoint the change and McNemar's test"),
    "check": ("jobs.check", "score completions on text tasks: python run against tests, tool chains, strings; pass@k"),
    "vote": ("jobs.vote", "vote again on a finished run's stored predictions: other pass@k, ensembles, TTA level"),
    "overlap": ("jobs.overlap", "test examples also in train (or another dataset), exactly or up to augmentation; duplicates"),
    "demo": ("jobs.demo", "the quickstart: make data, train tiny HRM checkpoints, evaluate, report"),
}


def positive_int(text: str) -> int:
    """argparse `type=` for counts and sizes: an integer of at least 1. argparse names the flag
    in front of the message ("argument --batch-size: ...")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (expected a positive integer)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (expected an integer >= 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrm-eval",
        description="Evaluate HRM / TRM checkpoints on puzzle datasets. "
        "Run `hrm-eval COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"hrm-eval {package_version()}")
    add_verbosity_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """-v/-q on `parser` and on its sub-commands' own parsers (`convert KIND …`), so they go
    anywhere on the line. They set nothing unless given: a nested parser's default would
    overwrite what its parent parsed."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="show debug records of hrm-eval too (-vv: of every library as well)")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="show only warnings and errors; results (tables, JSON, where they were written) still print")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in {id(p): p for p in action.choices.values()}.values():  # an alias is the same parser
                add_verbosity_flags(child)


def verbosity(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """-1 for -q, else how many -v (jobs.logs.levels)."""
    verbose, quiet = getattr(args, "verbose", 0), getattr(args, "quiet", False)
    if verbose and quiet:  # given on different levels of the line (`hrm-eval -q evaluate -v`)
        parser.error("argument -v/--verbose: not allowed with argument -q/--quiet")
    return -1 if quiet else verbose


def package_version() -> str:
    try:
        return importlib.metadata.version("hrm-eval")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    at = next((i for i, token in enumerate(argv) if token in COMMANDS), None)
    if at is None:
        parser.parse_args(argv)  # prints help / usage error and exits
        return 2
    head = parser.parse_args(argv[:at + 1])  # the flags before the command (-v, -q) and its name
    name, rest = argv[at], argv[at + 1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"hrm-eval {name}", description=help_text)
    module.configure(sub_parser)
    add_verbosity_flags(sub_parser)
    given = {key: value for key, value in vars(head).items() if key in ("verbose", "quiet")}
    args = sub_parser.parse_args(rest, namespace=argparse.Namespace(**given))
    level = verbosity(args, sub_parser)
    with redacted_output(), configured(level):  # the handler writes to the redacting stderr
        return run_command(name, module, args)


def run_command(name: str, module: Any, args: argparse.Namespace) -> int:
    try:
        return int(module.run(args) or 0)
    except InputError as err:
        print(f"hrm-eval {name}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageUnavailable as err:
        print(f"hrm-eval {name}: error: {err} (a run resumes where it stopped: run the same command again)",
              file=sys.stderr)
        return EXIT_STORAGE
    except Exception as err:  # noqa: BLE001 - the contract: any other exception is a bug, reported as one
        log = crash_log(name)
        first_line = str(err).splitlines()[0] if str(err) else ""
        print(f"hrm-eval {name}: internal error (a bug in hrm-eval): {type(err).__name__}: {first_line}; "
              f"traceback in {log}", file=sys.stderr)
        return EXIT_BUG


@contextmanager
def redacted_output() -> Iterator[None]:
    """Everything the command prints (its own lines, log records, Ray's forwarded worker logs)
    goes out with credentials hidden (hrm.secrets)."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class RedactingStream(io.TextIOBase):
    """A text stream that writes to another with `redact` applied to every write."""

    def __init__(self, target: TextIO):
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


def crash_log(command: str) -> Path:
    """Write the current exception's traceback to a fresh file in the temp dir; its path."""
    path = Path(tempfile.gettempdir()) / f"hrm-eval-crash-{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
    path.write_text(redact(f"hrm-eval {command}\n{traceback.format_exc()}"))
    return path


if __name__ == "__main__":
    sys.exit(main())
