"""The python checker: does a completion parse, compile and pass its task's tests.

Parsing (`ast.parse`) happens here, in-process: it runs nothing. Everything that runs the code
runs in hrm.checks.sandbox, in a fresh interpreter with the standard library only, under
hrm.checks.python_harness, which reports per case on its standard output.

Statuses: passed (every case passes), failed (a wrong answer: a case's output or return value, or
a HumanEval check's assertion), syntax_error (does not parse), compile_error (parses, but does not
byte-compile, or its top level raises, exits or cannot import; a stdin program's top level is the
program itself, so only its top-level imports run for this), runtime_error (an exception in a
case), timeout, memory_limit, output_limit (a case, or the whole run, went past the limit),
killed (ended by a signal no limit explains). With several failing cases the status is the
first one's; a timeout or a memory or output limit ends the run, and the cases after it count as
not passed.
"""

from __future__ import annotations

import ast
import functools
import json
import secrets
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hrm.checks.sandbox import PYTHON_AUDIT_HOOK, Limits, Outcome, protections, run_sandboxed
from hrm.checks.tasks import PythonTask

PythonStatus = Literal["passed", "failed", "syntax_error", "compile_error", "runtime_error", "timeout",
                       "memory_limit", "output_limit", "killed"]
HARNESS = Path(__file__).with_name("python_harness.py")
STARTUP_SECONDS = 5.0  # the interpreter's start and the harness's own work, beyond the cases' time


@dataclass(frozen=True)
class PythonSettings:
    """How long each case may run (wall seconds; the top level gets as long again), and the memory
    (address space) and output (bytes of standard output per case, and per stream of the run) caps."""

    case_seconds: float = 5.0
    memory_bytes: int = 1 << 30
    output_bytes: int = 1 << 20
    sandbox_mode: Literal["auto", "namespaces", "basic"] = "auto"  # hrm.checks.sandbox's confinement


@dataclass(frozen=True)
class PythonResult:
    status: PythonStatus
    syntax_valid: bool
    compiles: bool
    passes_tests: bool
    tests_passed: int
    tests_total: int
    message: str  # one line: why not passed ("" when it passed)


def check_python(completion: str, task: PythonTask, settings: PythonSettings = PythonSettings()) -> PythonResult:
    total = len(task.tests) if task.tests is not None else 1
    try:
        with warnings.catch_warnings():  # a candidate's invalid escape sequences are not ours to print
            warnings.simplefilter("ignore")
            ast.parse(completion, "candidate.py")
    except (SyntaxError, ValueError) as err:  # ValueError: a NUL byte; UnicodeEncodeError: a lone surrogate
        return PythonResult("syntax_error", False, False, False, 0, total, _syntax_message(err))
    marker = f"@@hrm-check-{secrets.token_hex(16)}@@"
    flags = _interpreter_flags(settings.sandbox_mode)
    job = {"marker": marker, "mode": task.testtype, "case_seconds": settings.case_seconds,
           "standard_library_only": "-S" not in flags,
           "output_bytes": settings.output_bytes, "func_name": task.func_name, "test": task.test,
           "entry_point": task.entry_point,
           "cases": [case.model_dump() for case in task.tests] if task.tests is not None else []}
    budget = settings.case_seconds * (total + 1) + STARTUP_SECONDS
    limits = Limits(cpu_seconds=budget, wall_seconds=budget, memory_bytes=settings.memory_bytes,
                    output_bytes=settings.output_bytes)
    outcome = run_sandboxed([sys.executable, *flags, "harness.py"],
                            {"harness.py": HARNESS.read_bytes(), "candidate.py": completion.encode("utf-8"),
                             "job.json": json.dumps(job).encode("utf-8")}, limits, mode=settings.sandbox_mode)
    return _result(outcome, _reports(outcome.stdout, marker), total)


@functools.cache
def _interpreter_flags(mode: Literal["auto", "namespaces", "basic"]) -> tuple[str, ...]:
    """-I -S: isolated (no environment, no script folder on the path) and no site, so the standard
    library only. Where the sandbox confines a Python program's writes with an audit hook (basic
    mode), the hook comes in through site and PYTHONPATH: then only -s (no user site), and the
    harness itself takes site-packages off the path before the candidate runs."""
    return ("-s",) if PYTHON_AUDIT_HOOK in protections(mode) else ("-I", "-S")


def _syntax_message(err: SyntaxError | ValueError) -> str:
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} (line {err.lineno})"
    if isinstance(err, UnicodeEncodeError):  # JSON can carry "\ud800", which no source file can
        return f"not UTF-8 text: a lone surrogate at character {err.start}"
    return f"{type(err).__name__}: {err}"


def _reports(stdout: bytes, marker: str) -> list[dict]:
    found = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        if marker in line:
            try:
                found.append(json.loads(line.split(marker, 1)[1]))
            except json.JSONDecodeError:  # cut short by the output cap
                break
    return found


def _result(outcome: Outcome, reports: list[dict], total: int) -> PythonResult:
    compiled = next((r for r in reports if r.get("stage") == "compile"), None)
    cases = [r for r in reports if "case" in r]
    done = any(r.get("stage") == "done" for r in reports)
    passed = sum(r["status"] == "passed" for r in cases)
    ended = _ended(outcome)
    if compiled is None or compiled["status"] != "ok":
        status, message = (compiled["status"], compiled["message"]) if compiled else (
            "compile_error" if ended[0] == "runtime_error" else ended[0], ended[1])
        return PythonResult(status, True, False, False, 0, total, message)
    failing = next((r for r in cases if r["status"] != "passed"), None)
    if failing is not None:
        message = f"case {failing['case'] + 1} of {total}: {failing['message']}".rstrip(": ")
        return PythonResult(failing["status"], True, True, False, passed, total, message)
    if len(cases) < total or not done:
        status, message = ended
        return PythonResult(status, True, True, False, passed, total, f"case {len(cases) + 1} of {total}: {message}")
    return PythonResult("passed", True, True, True, passed, total, "")


def _ended(outcome: Outcome) -> tuple[PythonStatus, str]:
    """Why the run ended before the harness reported everything: the sandbox's limit, or the
    program ending the interpreter itself (os._exit, a crash)."""
    if outcome.status == "timeout":
        return "timeout", f"the run went past its time limit ({outcome.wall_seconds:.1f} s wall)"
    if outcome.status in ("memory_limit", "output_limit"):
        return outcome.status, f"the run went past its {outcome.status.replace('_', ' ')}"
    if outcome.status == "killed":
        return "killed", f"killed by signal {outcome.signal}"
    last = outcome.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    return "runtime_error", (f"the program ended the interpreter (exit status {outcome.returncode})"
                             + (f": {last[0][:200]}" if last[0] else ""))
