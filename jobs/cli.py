"""`hrm-eval`: one command, one sub-command per job module.

Each job module exposes `configure(parser)` and `run(args) -> int`. Modules are imported only
when their sub-command runs, so `hrm-eval --help` and `hrm-eval convert` stay fast and never
import torch or Ray unless needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hrm.errors import InputError

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": ("jobs.evaluate", "evaluate one checkpoint on one dataset (single process, no Ray)"),
    "run": ("jobs.run", "run a config-driven evaluation job on an embedded local Ray"),
    "convert": ("jobs.convert", "convert raw data (Sudoku CSV, ARC JSON, mazes, JSONL, reference) to puzzles"),
    "inspect": ("jobs.inspect", "inspect a checkpoint: parameters per component, NaN/Inf, drift between two"),
    "report": ("jobs.report", "regenerate report.html / report.md from stored results"),
    "demo": ("jobs.demo", "the quickstart: make data, train tiny HRM checkpoints, evaluate, report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrm-eval",
        description="Evaluate HRM / TRM checkpoints on puzzle datasets. "
        "Run `hrm-eval COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / usage error and exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"hrm-eval {name}", description=help_text)
    module.configure(sub_parser)
    args = sub_parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except InputError as err:
        print(f"hrm-eval {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
