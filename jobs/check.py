"""`hrm-eval check --tasks TASKS.jsonl --completions COMPLETIONS.jsonl`: score completions (any
model's) on the tasks' checkers."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

from hrm.checks.python import PythonSettings
from hrm.checks.score import Checker, summarise
from hrm.checks.tasks import load_completions, load_tasks

from jobs.cli import positive_int

EPILOG = """\
tasks (JSONL, one object per line; docs/tasks.md):
  task_id, kind ("python" | "tool_chain" | "exact" | "normalized"), prompt, reference, tier (optional)
  python, LiveCodeBench-style: "tests": [{"input": ..., "output": ..., "testtype": "stdin" | "functional"}]
    stdin: input is the program's standard input; its output is compared line by line, trailing
    whitespace stripped. functional: "func_name" names a top-level function or a class Solution method;
    input holds one JSON value per line (the positional arguments), output the JSON of the return value.
  python, HumanEval-style: "test": "def check(candidate): ...", "entry_point": the function check() gets
  tool_chain: "tools": "builtin" or a list of JSON-Schema files (relative to the tasks file); reference
    is the reference chain, one {"tool": ..., "args": {...}} call per line (docs/tool-chains.md)
  exact: the completion equals reference; normalized: equal after NFKC, case folding and whitespace runs
    collapsed to one space
completions (JSONL): task_id, completion (the whole program, for python), candidate (optional: the
  sample's index for pass@k; default its order among the task's completions), source (optional: who
  produced it; summaries are per source)

result fields: task_id, candidate, source, kind, tier, status, passed, message; python adds syntax_valid,
  compiles, passes_tests, tests_passed, tests_total; tool_chain adds tool_chain_valid, execution_success,
  first_failing_call. python statuses: passed, failed, syntax_error, compile_error, runtime_error,
  timeout, memory_limit, output_limit, killed.
Python completions run in a sandbox (docs/sandbox.md) with the standard library only.
Exit status 0 when checking ran, whatever the completions scored; 2 for bad input.

examples:
  hrm-eval check --tasks tasks/python.jsonl --completions outputs.jsonl
  hrm-eval check --tasks tasks/python.jsonl --completions outputs.jsonl --k 1 --k 10 --json
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(  # the raw formatter the epilog needs leaves it as written
        "Score completions on the tasks' checkers: python programs run against their tests in a sandbox, "
        "tool chains replayed on a mock environment, strings matched. Prints rates per kind and tier and "
        "pass@k (the unbiased estimator over the candidates present for each task), or with --json one "
        "object with 'results' (one per completion) and 'summary'.", width=100)
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--tasks", metavar="TASKS.jsonl", required=True, type=Path,
                        help="the tasks (format below)")
    parser.add_argument("--completions", metavar="COMPLETIONS.jsonl", required=True, type=Path,
                        help="the outputs to score, any model's (format below)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: results and summary")
    parser.add_argument("--k", metavar="K", type=positive_int, action="append",
                        help="a k for pass@k (repeatable; default 1, 5 and 10, each where a task has k candidates)")
    parser.add_argument("--workers", metavar="N", type=positive_int, default=os.cpu_count() or 1,
                        help="completions checked at once (default: the CPU count)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=PythonSettings.case_seconds,
                        help="wall seconds each test case (and a program's top level) may run "
                        f"(default {PythonSettings.case_seconds:g})")


def run(args: argparse.Namespace) -> int:
    from hrm.errors import InputError

    if not 0 < args.timeout < 3600:  # also refuses nan; a case is a test, not a job
        raise InputError(f"--timeout: must be more than 0 and less than 3600 seconds, got {args.timeout}")
    tasks = load_tasks(args.tasks)
    completions = load_completions(args.completions, tasks)
    checker = Checker(tasks, args.tasks.parent, PythonSettings(case_seconds=args.timeout))
    results = checker.check_all(completions, args.workers)
    summary = summarise(results, sorted(set(args.k or (1, 5, 10))))
    if args.json:
        print(json.dumps({"results": results, "summary": summary}))
    else:
        print_summary(summary)
    return 0


# the table's short column names for the result fields whose rates it shows
HEADINGS = {"syntax_valid": "parses", "compiles": "compiles", "passes_tests": "tests", "tool_chain_valid": "valid",
            "execution_success": "runs", "passed": "passed"}


def print_summary(summary: dict) -> None:
    """Two tables, each fitting an 80-column terminal: the rates, then pass@k. Rows: each source's
    tiers (in the order they came) per kind, then its kind totals, then its total."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    rows = [*summary["by_kind_tier"], *summary["by_kind"], *summary["overall"]]
    order = {id(row): i for i, row in enumerate(rows)}
    rows.sort(key=lambda r: (str(r["source"]), str(r.get("kind", "~")), "tier" not in r, order[id(r)]))
    sources = any(row["source"] is not None for row in rows)  # a column only when completions name them
    # only the rates of the kinds present, so a table of string tasks is not five empty columns wide
    rates = [rate for rate in HEADINGS if any(rate in row["rates"] for row in rows)]
    ks = [str(k) for k in summary["ks"] if any(str(k) in row["pass_at_k"] for row in rows)]
    console = Console()
    for title, columns, values in (
            (f"{summary['completions']} completions of {summary['tasks']} tasks: rates",
             ["completions", *(HEADINGS[rate] for rate in rates)],
             lambda row: [str(row["completions"]), *(_rate(row["rates"], rate) for rate in rates)]),
            ("pass@k (in brackets: the tasks with k or more candidates)", [f"pass@{k}" for k in ks],
             lambda row: [_pass_at(row["pass_at_k"].get(k)) for k in ks])):
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
        for column in ("source", "kind", "tier", "tasks")[0 if sources else 1:]:
            table.add_column(column, justify="right" if column == "tasks" else "left")
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            tier = row.get("tier", "all") if "kind" in row else "all"
            cells = [escape(str(row["source"] or "-"))] if sources else []
            cells += [escape(row.get("kind", "all")), escape("(none)" if tier is None else tier), str(row["tasks"])]
            table.add_row(*cells, *values(row), style="bold" if "tier" not in row else None)
        console.print(table)


def _pass_at(value: dict | None) -> str:
    return "" if value is None else f"{value['estimate']:.3f} ({value['tasks']})"


def _rate(rates: dict, rate: str) -> str:
    if rate not in rates:
        return ""  # not a rate of this row's kind
    return "not measured" if rates[rate] is None else f"{rates[rate]:.3f}"
