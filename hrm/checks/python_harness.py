"""The harness hrm.checks.python runs in the sandbox (`python -I -S harness.py`, or `python -s` where
the sandbox's audit hook needs site, see standard_library_only): it compiles the
candidate, runs its top level, runs each test case and reports on its standard output.

Standard library only: it runs without site-packages. Its files in the scratch directory:
candidate.py (the completion), job.json (what to run, read then deleted). Each report is a line
"\\n<marker><json>\\n" written to a private copy of file descriptor 1, so the candidate's own
output never reads as one. The marker is random per run and held in memory, which stops
accidental look-alikes, not a hostile candidate: it runs in this same interpreter (docs/tasks.md).

Reports, in order: {"stage": "compile", "status": "ok"|..., "message"}, then one
{"case": i, "status", "message"} per case run, then {"stage": "done"}. A case that times out or
exceeds the memory or output limit ends the run (the process may be in no state to go on).
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import math
import os
import signal
import sys
import traceback
from typing import Any, Callable

CANDIDATE = "candidate.py"
STDIN_FILE = ".stdin"
STOPPING = ("timeout", "memory_limit", "output_limit")


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so `except Exception` in the candidate lets it pass."""


class OutputLimit(BaseException):
    pass


class CappedBuffer(io.BytesIO):
    """The candidate's standard output for one run, refused beyond `cap` bytes."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap, self.over = cap, False

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.cap:
            self.over = True
            raise OutputLimit()
        return super().write(data)

    def close(self) -> None:
        """Kept open: the text wrapper closes it when dropped, before its value is read."""


class Runner:
    def __init__(self, job: dict, report: Callable[[dict], None]):
        self.job, self.report = job, report
        self.seconds = float(job["case_seconds"])
        self.timed_out = False
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum: int, frame: Any) -> None:
        self.timed_out = True
        raise CaseTimeout()

    def guarded(self, action: Callable[[], Any], stdin: str = "") -> tuple[str, str, Any, str]:
        """Run `action` with `stdin` as standard input, its standard output captured (capped) and
        the alarm set: (status, message, value, stdout). status "ok", "timeout", "memory_limit",
        "output_limit", "exit" (SystemExit, message its code), or "error" (message the exception;
        value the exception itself)."""
        saved = sys.stdin, sys.stdout, sys.stderr
        buffer = CappedBuffer(int(self.job["output_bytes"]))
        sys.stdin = feed_stdin(stdin)
        sys.stdout = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
        self.timed_out = False
        outcome: tuple[str, str, Any]
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.seconds)
                value = action()
                sys.stdout.flush()
                outcome = ("ok", "", value)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CaseTimeout:
            outcome = ("timeout", "", None)
        except OutputLimit:
            outcome = ("output_limit", "", None)
        except MemoryError:
            outcome = ("memory_limit", "MemoryError", None)
        except SystemExit as err:
            outcome = ("exit", "" if err.code is None else str(err.code), None)
        except BaseException as err:  # noqa: BLE001 - whatever the candidate raised is its result
            outcome = ("error", describe(err), err)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
        status, message, value = outcome
        if self.timed_out:  # the candidate caught the alarm's exception and went on
            status, message = "timeout", ""
        elif buffer.over:
            status, message = "output_limit", ""
        if status == "timeout":
            message = f"over the {self.seconds:g} s limit"
        elif status == "output_limit":
            message = f"printed more than {self.job['output_bytes']} bytes"
        return status, message, value, buffer.getvalue().decode("utf-8", "replace")


def feed_stdin(text: str) -> io.TextIOWrapper:
    """`text` as the standard input, at the file descriptor too: programs read it with input(),
    sys.stdin(.buffer), and also open(0) or os.read(0, …). A file in the scratch directory (a pipe
    would block on a large input); sys.stdin shares fd 0's offset, so the ways can be mixed."""
    with open(STDIN_FILE, "wb") as handle:
        handle.write(text.encode("utf-8"))
    fd = os.open(STDIN_FILE, os.O_RDONLY)
    if fd != 0:  # 0 itself when the last case's open(0) closed it
        os.dup2(fd, 0)
        os.close(fd)
    os.remove(STDIN_FILE)
    return io.TextIOWrapper(io.BufferedReader(io.FileIO(0, closefd=False)), encoding="utf-8")


def describe(err: BaseException) -> str:
    """'Type: message (candidate.py line N)', one line."""
    text = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    frames = [frame for frame in traceback.extract_tb(err.__traceback__) if frame.filename in (CANDIDATE, "test")]
    return text[:300] + (f" ({frames[-1].filename} line {frames[-1].lineno})" if frames else "")


def same(value: Any, expected: Any) -> bool:
    """JSON values equal, with a bool only equal to a bool (Python's True == 1 is not an answer 1)
    and numbers compared by value (2.0 is 2)."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(value, (int, float)) and isinstance(expected, (int, float)):
        return value == expected or (isinstance(value, float) and isinstance(expected, float)
                                     and math.isnan(value) and math.isnan(expected))
    if isinstance(value, list) and isinstance(expected, list):
        return len(value) == len(expected) and all(same(a, b) for a, b in zip(value, expected))
    if isinstance(value, dict) and isinstance(expected, dict):
        return value.keys() == expected.keys() and all(same(value[k], expected[k]) for k in value)
    return type(value) is type(expected) and value == expected


def output_lines(text: str) -> list[str]:
    """Lines with trailing whitespace stripped, trailing empty lines dropped."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def shorten(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def run_stdin(runner: Runner, code: Any, source: bytes) -> None:
    # The top level is the program the cases run, so "compiles" runs only its top-level imports.
    tree = ast.parse(source, CANDIDATE)
    imports = ast.Module([node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
    status, message, _, _ = runner.guarded(lambda: exec(compile(imports, CANDIDATE, "exec"), {"__name__": "imports"}))
    if not compile_stage(runner, status, message):
        return
    for index, case in enumerate(runner.job["cases"]):
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        status, message, _, stdout = runner.guarded(lambda: exec(code, namespace), stdin=case["input"])
        if status == "exit":
            status, message = ("ok", "") if message in ("", "0") else ("runtime_error", f"exited with status {message}")
        if status == "ok":
            got, expected = output_lines(stdout), output_lines(case["output"])
            status, message = ("passed", "") if got == expected else ("failed", first_difference(got, expected))
        if not finish_case(runner, index, status, message):
            return


def first_difference(got: list[str], expected: list[str]) -> str:
    for number, (a, b) in enumerate(zip(got, expected), start=1):
        if a != b:
            return f"output line {number}: expected {shorten(b)}, got {shorten(a)}"
    return f"expected {len(expected)} output lines, got {len(got)}"


def run_module(runner: Runner, code: Any, preamble: dict | None = None) -> dict | None:
    """The candidate's top level run as a module (not as __main__, so its own demo code under
    `if __name__ == "__main__":` stays out), its namespace starting with `preamble`; the
    namespace, or None when it did not run."""
    namespace: dict = {**(preamble or {}), "__name__": "solution", "__builtins__": builtins}
    status, message, _, _ = runner.guarded(lambda: exec(code, namespace))
    return namespace if compile_stage(runner, status, message) else None


def compile_stage(runner: Runner, status: str, message: str) -> bool:
    """Report how the top level ran: "ok", or why not ("compile_error" for an exception or an exit,
    else the limit it hit); True when the cases may run."""
    if status == "exit":
        status, message = "error", f"exited (status {message or 0}) while its top level ran"
    if status == "error":
        status = "compile_error"
    runner.report({"stage": "compile", "status": status, "message": message})
    return status == "ok"


def run_functional(runner: Runner, code: Any) -> None:
    # LeetCode-style signatures name typing's List, Optional, … without importing them, as that
    # site's own environment has them; so does this one, for functional tasks.
    import typing

    namespace = run_module(runner, code, {name: getattr(typing, name) for name in typing.__all__})
    if namespace is None:
        return
    name = runner.job["func_name"]

    def call(arguments: list) -> Any:
        solution = namespace.get("Solution")
        if isinstance(solution, type) and hasattr(solution, name):
            return getattr(solution(), name)(*arguments)
        function = namespace.get(name)
        if not callable(function):
            raise LookupError(f"the completion defines neither a function {name!r} nor class Solution with it")
        return function(*arguments)

    for index, case in enumerate(runner.job["cases"]):
        arguments = [json.loads(line) for line in case["input"].splitlines() if line.strip()]
        status, message, value, _ = runner.guarded(lambda: call(arguments))
        if status == "ok":
            try:
                returned = json.loads(json.dumps(value))  # tuples become lists, as JSON has them
            except (TypeError, ValueError):
                status, message = "failed", f"returned a {type(value).__name__}, which JSON cannot hold"
            else:
                expected = json.loads(case["output"])
                status, message = ("passed", "") if same(returned, expected) else (
                    "failed", f"expected {shorten(case['output'].strip())}, got {shorten(json.dumps(returned))}")
        elif status == "exit":
            status, message = "runtime_error", f"called exit({message})"
        if not finish_case(runner, index, status, message):
            return


def run_humaneval(runner: Runner, code: Any) -> None:
    namespace = run_module(runner, code)
    if namespace is None:
        return
    entry = runner.job["entry_point"]

    def check() -> None:
        exec(compile(runner.job["test"], "test", "exec"), namespace)  # the test shares the module, as in HumanEval
        if entry not in namespace:
            raise LookupError(f"the completion defines no {entry!r}")
        namespace["check"](namespace[entry])

    status, message, error, _ = runner.guarded(check)
    if status == "ok":
        status = "passed"
    elif status == "exit":
        status, message = "runtime_error", f"called exit({message})"
    elif status == "error" and isinstance(error, AssertionError):
        status = "failed"
    finish_case(runner, 0, status, message)


def finish_case(runner: Runner, index: int, status: str, message: str) -> bool:
    """Report case `index`; False when the run must stop."""
    if status == "error":
        status = "runtime_error"
    runner.report({"case": index, "status": status, "message": message})
    return status not in STOPPING


def standard_library_only() -> None:
    """What `python -I -S` leaves a program, for a run that kept site on (for the sandbox's audit
    hook): no site-packages or script folder on the path, and none of the import finders that
    packages' .pth files installed (editable installs map their packages in that way)."""
    from importlib.machinery import BuiltinImporter, FrozenImporter, PathFinder

    sys.path[:] = [entry for entry in sys.path[1:] if entry and "-packages" not in entry]
    sys.meta_path[:] = [finder for finder in sys.meta_path if finder in (BuiltinImporter, FrozenImporter, PathFinder)]
    sys.path_importer_cache.clear()
    for name, module in list(sys.modules.items()):  # what site imported from packages at start-up
        if "-packages" in (getattr(module, "__file__", None) or ""):
            del sys.modules[name]


def main() -> None:
    with open("job.json", encoding="utf-8") as handle:
        job = json.load(handle)
    os.remove("job.json")  # the expected outputs are not left lying where the candidate could read them
    channel = os.dup(1)
    marker = job.pop("marker")

    def report(record: dict) -> None:
        os.write(channel, f"\n{marker}{json.dumps(record)}\n".encode("utf-8"))

    if job["standard_library_only"]:
        standard_library_only()
    # `python -S` leaves out site's exit() and quit(); programs call them to end.
    builtins.exit = builtins.quit = sys.exit  # type: ignore[attr-defined]
    runner = Runner(job, report)
    with open(CANDIDATE, "rb") as handle:
        source = handle.read()
    try:
        code = compile(source, CANDIDATE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as err:  # ValueError: a NUL byte in the source
        report({"stage": "compile", "status": "compile_error", "message": describe(err)})
    else:
        {"stdin": run_stdin, "functional": run_functional, "humaneval": run_humaneval}[job["mode"]](
            runner, code, *([source] if job["mode"] == "stdin" else []))
    report({"stage": "done"})
    # os._exit: the candidate's atexit hooks and threads must not outlive the report
    os._exit(0)


if __name__ == "__main__":
    main()
