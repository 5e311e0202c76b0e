"""The python checker end to end, through the real sandbox: each kind of broken program gets its
own status, and tests_passed counts the cases that passed."""

import json

import pytest

from hrm.checks.python import PythonSettings, check_python
from hrm.checks.tasks import PythonTask

FAST = PythonSettings(case_seconds=0.5, output_bytes=64 << 10)


def stdin_task(*cases: tuple[str, str]) -> PythonTask:
    return PythonTask(task_id="t", kind="python", prompt="", reference="",
                      tests=[{"input": i, "output": o, "testtype": "stdin"} for i, o in cases])


def functional_task(func_name: str, *cases: tuple[list, object]) -> PythonTask:
    return PythonTask(task_id="t", kind="python", prompt="", reference="", func_name=func_name,
                      tests=[{"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out),
                              "testtype": "functional"} for args, out in cases])


ADD_LINE = stdin_task(("1 2\n", "3\n"), ("5 5", "10"), ("-1 1\n", "0\n"))
ADD = functional_task("add", ([1, 2], 3), ([[1], [2]], [1, 2]), ([-1, 1], 0))
HUMANEVAL = PythonTask(task_id="t", kind="python", prompt="", reference="", entry_point="inc",
                       test="def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n")


def check(code: str, task: PythonTask, settings: PythonSettings = FAST) -> tuple:
    result = check_python(code, task, settings)
    return result.status, result.tests_passed, result.tests_total


def test_a_stdin_program_passes_with_output_compared_line_by_line_without_trailing_whitespace():
    result = check_python("a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\n", ADD_LINE, FAST)
    assert (result.status, result.syntax_valid, result.compiles, result.passes_tests) == ("passed", True, True, True)
    assert (result.tests_passed, result.tests_total, result.message) == (3, 3, "")


def test_a_stdin_program_may_read_the_binary_buffer_and_end_with_exit():
    code = "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nprint(a + b)\nexit(0)\n"
    assert check(code, ADD_LINE) == ("passed", 3, 3)


@pytest.mark.parametrize("read", ["open(0).read()", "sys.stdin.read()", "os.read(0, 100).decode()"])
def test_a_stdin_program_reads_its_input_whichever_way_it_opens_it(read):
    code = f"import os, sys\na, b = map(int, {read}.split())\nprint(a + b)\n"
    assert check(code, ADD_LINE) == ("passed", 3, 3)


def test_a_wrong_answer_fails_naming_the_first_failing_case_and_line():
    result = check_python("a, b = map(int, input().split())\nprint(a * b if a == 5 else a + b)\n", ADD_LINE, FAST)
    assert (result.status, result.tests_passed) == ("failed", 2)
    assert result.message == "case 2 of 3: output line 1: expected '10', got '25'"


def test_a_function_is_found_at_top_level_or_as_a_solution_method_and_tuples_equal_lists():
    assert check("def add(a, b):\n    return a + b\n", ADD) == ("passed", 3, 3)
    assert check("class Solution:\n    def add(self, a, b):\n        return a + b\n", ADD) == ("passed", 3, 3)
    pairs = functional_task("pair", ([1], [1, 1]))
    assert check("def pair(x):\n    return (x, x)\n", pairs) == ("passed", 1, 1)


def test_a_leetcode_style_signature_may_name_typing_without_importing_it():
    code = "class Solution:\n    def add(self, a: Optional[int], b: List[int] | int) -> int:\n        return a + b\n"
    assert check(code, ADD) == ("passed", 3, 3)


def test_true_is_not_the_answer_one_but_two_point_zero_is_two():
    assert check("def add(a, b):\n    return True\n", functional_task("add", ([0, 1], 1))) == ("failed", 0, 1)
    assert check("def add(a, b):\n    return float(a + b)\n", functional_task("add", ([1, 1], 2))) == ("passed", 1, 1)


def test_a_return_value_json_cannot_hold_fails_saying_so():
    result = check_python("def add(a, b):\n    return {a, b}\n", ADD, FAST)
    assert result.status == "failed" and "returned a set, which JSON cannot hold" in result.message


def test_a_program_that_does_not_parse_is_a_syntax_error_and_runs_nothing():
    result = check_python("def add(a, b)\n    return a + b\n", ADD, FAST)
    assert (result.status, result.syntax_valid, result.compiles, result.tests_passed, result.tests_total) == (
        "syntax_error", False, False, 0, 3)
    assert result.message == "SyntaxError: expected ':' (line 1)"


def test_text_no_source_file_can_hold_is_a_syntax_error():
    assert check("x = 1\x00\n", ADD)[0] == "syntax_error"
    result = check_python("x = '\ud800'\n", ADD, FAST)
    assert (result.status, result.message) == ("syntax_error", "not UTF-8 text: a lone surrogate at character 5")


def test_a_program_that_parses_but_does_not_byte_compile_is_a_compile_error():
    result = check_python("return 3\n", ADD, FAST)
    assert (result.status, result.syntax_valid, result.compiles) == ("compile_error", True, False)


def test_a_top_level_that_raises_or_cannot_import_is_a_compile_error():
    result = check_python("raise ValueError('at import')\ndef add(a, b):\n    return a + b\n", ADD, FAST)
    assert (result.status, result.compiles) == ("compile_error", False)
    assert result.message == "ValueError: at import (candidate.py line 1)"
    # a stdin program's top level is the program; only its imports run for "compiles"
    assert check("import no_such_module\nprint(3)\n", ADD_LINE)[0] == "compile_error"
    assert check("import numpy\n", ADD_LINE)[0] == "compile_error"  # -S: the standard library only


def test_demo_code_under_main_does_not_run_when_a_function_is_checked():
    code = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    print(add(int(input()), 1))\n"
    assert check(code, ADD) == ("passed", 3, 3)


def test_an_exception_in_a_case_is_a_runtime_error_and_the_other_cases_still_run():
    result = check_python("def add(a, b):\n    return a + b if a != 1 else 1 / 0\n", ADD, FAST)
    assert (result.status, result.compiles, result.tests_passed) == ("runtime_error", True, 2)
    assert result.message == "case 1 of 3: ZeroDivisionError: division by zero (candidate.py line 2)"
    assert check("def ad(a, b):\n    return a + b\n", ADD)[0] == "runtime_error"  # no such function
    assert check("import sys\nsys.exit(2)\n", ADD_LINE)[0] == "runtime_error"


def test_humaneval_style_an_assertion_is_a_failure_and_any_other_exception_a_runtime_error():
    assert check("def inc(x):\n    return x + 1\n", HUMANEVAL) == ("passed", 1, 1)
    result = check_python("def inc(x):\n    return x + 2\n", HUMANEVAL, FAST)
    assert (result.status, result.tests_passed, result.tests_total) == ("failed", 0, 1)
    assert result.message == "case 1 of 1: AssertionError (test line 2)"
    assert check("def inc(x):\n    return x.real()\n", HUMANEVAL)[0] == "runtime_error"


def test_a_case_that_runs_too_long_is_a_timeout_and_ends_the_run():
    code = "def add(a, b):\n    while a == 1:\n        pass\n    return a + b\n"
    result = check_python(code, functional_task("add", ([2, 2], 4), ([1, 2], 3), ([3, 3], 6)), FAST)
    assert (result.status, result.tests_passed) == ("timeout", 1)  # the third case is not run
    assert result.message == "case 2 of 3: over the 0.5 s limit"


def test_a_candidate_that_swallows_the_alarm_still_times_out():
    code = "def add(a, b):\n    try:\n        while True:\n            pass\n    except BaseException:\n        return a + b\n"
    assert check(code, ADD)[0] == "timeout"


def test_a_top_level_that_loops_forever_is_a_timeout_without_compiling():
    result = check_python("while True:\n    pass\n", ADD, FAST)
    assert (result.status, result.compiles) == ("timeout", False)


def test_printing_past_the_output_cap_is_an_output_limit_whichever_way_it_is_written():
    assert check("while True:\n    print('x' * 1000)\n", ADD_LINE)[0] == "output_limit"
    assert check("import os\nwhile True:\n    os.write(1, b'x' * 10000)\n", ADD_LINE)[0] == "output_limit"


def test_allocating_past_the_memory_cap_is_a_memory_limit():
    settings = PythonSettings(case_seconds=2.0, memory_bytes=256 << 20)
    assert check("x = bytearray(512 << 20)\n", ADD_LINE, settings)[0] == "memory_limit"


def test_a_program_killed_by_a_signal_or_ending_the_interpreter_is_reported_as_such():
    assert check("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", ADD_LINE)[0] == "killed"
    result = check_python("import os\nos._exit(0)\n", ADD_LINE, FAST)
    assert (result.status, result.tests_passed) == ("runtime_error", 0)
    assert result.message == "case 1 of 3: the program ended the interpreter (exit status 0)"


def test_lines_the_candidate_prints_that_look_like_reports_are_not_taken_as_results():
    code = ('import json, os\nfor i in range(3):\n'
            '    os.write(1, (json.dumps({"case": i, "status": "passed", "message": ""}) + "\\n").encode())\n'
            'print(0)\n')
    assert check(code, ADD_LINE) == ("failed", 1, 3)


@pytest.mark.parametrize("code", ["import os\nprint(os.path.exists('job.json'))\n"])
def test_the_expected_outputs_are_not_left_where_the_candidate_can_read_them(code):
    assert check(code, stdin_task(("", "False\n"))) == ("passed", 1, 1)


@pytest.mark.parametrize("mode", ["auto", "basic"])
def test_in_either_sandbox_mode_only_the_standard_library_is_there_and_writes_stay_in_scratch(mode, tmp_path):
    settings = PythonSettings(case_seconds=2.0, sandbox_mode=mode)
    assert check("a, b = map(int, input().split())\nprint(a + b)\n", ADD_LINE, settings) == ("passed", 3, 3)
    # basic mode keeps site on for the sandbox's audit hook; the harness still leaves only the standard library
    for module in ("numpy", "pydantic", "hrm"):
        assert check(f"import {module}\n", ADD_LINE, settings)[0] == "compile_error", module
    outside = tmp_path / "written"
    result = check_python(f"def add(a, b):\n    open({str(outside)!r}, 'w').write('x')\n", ADD, settings)
    assert result.status == "runtime_error" and not outside.exists()
