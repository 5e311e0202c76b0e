import json
from pathlib import Path

import pytest

from hrm.checks.tasks import PythonTask, load_completions, load_tasks
from hrm.errors import InputError

REPO = Path(__file__).resolve().parents[3]
ADD = {"task_id": "add", "kind": "python", "prompt": "add two numbers", "reference": "def add(a, b):\n    return a + b\n",
       "func_name": "add", "tests": [{"input": "1\n2", "output": "3", "testtype": "functional"}]}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def refusal(path: Path, records: list) -> str:
    with pytest.raises(InputError) as err:
        load_tasks(write_jsonl(path, records))
    return str(err.value)


def test_the_repos_python_task_set_has_thirty_problems_in_three_tiers_and_every_form_of_test():
    tasks = load_tasks(REPO / "tasks" / "python.jsonl")
    assert len(tasks) >= 30 and all(isinstance(task, PythonTask) for task in tasks)
    tiers = {tier: sum(task.tier == tier for task in tasks) for tier in ("easy", "medium", "hard")}
    assert min(tiers.values()) >= 8 and sum(tiers.values()) == len(tasks)
    forms = {form: sum(task.testtype == form for task in tasks) for form in ("stdin", "functional", "humaneval")}
    assert min(forms.values()) >= 5
    assert any("class Solution" in task.reference for task in tasks if task.testtype == "functional")
    assert all(len(task.tests) >= 3 for task in tasks if task.tests is not None)


def test_every_kind_of_task_loads_with_its_own_fields(tmp_path):
    tasks = load_tasks(write_jsonl(tmp_path / "t.jsonl", [
        ADD,
        {"task_id": "he", "kind": "python", "prompt": "p", "reference": "def f():\n    return 1\n", "tier": "easy",
         "test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"},
        {"task_id": "io", "kind": "python", "prompt": "p", "reference": "print(input())",
         "tests": [{"input": "x\n", "output": "x\n", "testtype": "stdin"}]},
        {"task_id": "chain", "kind": "tool_chain", "prompt": "p", "reference": "", "tools": ["a.json"]},
        {"task_id": "s", "kind": "normalized", "prompt": "p", "reference": "Paris"},
    ]))
    assert [task.kind for task in tasks] == ["python", "python", "python", "tool_chain", "normalized"]
    assert [task.testtype for task in tasks[:3]] == ["functional", "humaneval", "stdin"]
    assert tasks[1].tier == "easy" and tasks[0].tier is None and tasks[3].tools == ["a.json"]


def test_keys_a_benchmark_export_carries_beyond_the_format_are_ignored(tmp_path):
    (task,) = load_tasks(write_jsonl(tmp_path / "t.jsonl", [{**ADD, "platform": "leetcode", "contest_date": "x"}]))
    assert task.task_id == "add"


def test_a_line_that_is_not_json_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "t.jsonl"
    assert refusal(path, [ADD, "", "{oops"]) == f"{path}:3: not valid JSON: Expecting property name enclosed in double quotes"


def test_a_missing_field_is_refused_naming_the_line_and_the_field(tmp_path):
    path = tmp_path / "t.jsonl"
    record = {key: value for key, value in ADD.items() if key != "reference"}
    assert refusal(path, [record]) == f"{path}:1: reference: Field required"


def test_an_unknown_kind_is_refused_naming_the_kinds_there_are(tmp_path):
    message = refusal(tmp_path / "t.jsonl", [{**ADD, "kind": "haskell"}])
    assert message.startswith(f"{tmp_path / 't.jsonl'}:1: ") and "'python', 'tool_chain', 'exact'" in message


@pytest.mark.parametrize("change, says", [
    ({"test": "def check(candidate): pass", "entry_point": "add"}, "either 'tests'"),
    ({"tests": []}, "'tests' is empty"),
    ({"func_name": None}, "functional cases need 'func_name'"),
    ({"tests": [{"input": "1\n", "output": "1", "testtype": "functional"},
                {"input": "1", "output": "1", "testtype": "stdin"}]}, "mixes stdin and functional"),
    ({"tests": [{"input": "[1,", "output": "3", "testtype": "functional"}]}, "tests.0.input: not a JSON value"),
    ({"tests": [{"input": "1", "output": "three", "testtype": "functional"}]}, "tests.0.output: not a JSON value"),
    ({"tests": [{"input": "1", "output": "3", "testtype": "unit"}]}, "tests.0.testtype: Input should be 'stdin' or"),
    ({"tests": [{"input": "\ud800", "output": "3", "testtype": "stdin"}]}, "tests.0.input: not UTF-8 text"),
])
def test_a_python_task_whose_tests_cannot_run_is_refused_saying_why(tmp_path, change, says):
    assert says in refusal(tmp_path / "t.jsonl", [{**ADD, **change}])


def test_a_humaneval_test_needs_its_entry_point_and_must_compile(tmp_path):
    he = {key: value for key, value in ADD.items() if key not in ("tests", "func_name")}
    assert "needs 'entry_point'" in refusal(tmp_path / "a.jsonl", [{**he, "test": "def check(c): pass"}])
    assert "'test' does not compile" in refusal(tmp_path / "b.jsonl",
                                                [{**he, "test": "def check(c) pass", "entry_point": "add"}])


def test_a_task_id_given_twice_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    assert refusal(path, [ADD, {**ADD, "kind": "exact"}]) == f"{path}:2: task_id 'add' is already the task at {path}:1"


def test_completions_are_numbered_per_task_and_source_unless_they_say_their_candidate(tmp_path):
    tasks = load_tasks(write_jsonl(tmp_path / "t.jsonl", [ADD, {**ADD, "task_id": "other"}]))
    completions = load_completions(write_jsonl(tmp_path / "c.jsonl", [
        {"task_id": "add", "completion": "a"},
        {"task_id": "add", "completion": "b", "source": "m2"},
        {"task_id": "add", "completion": "c"},
        {"task_id": "other", "completion": "d", "candidate": 4},
        {"task_id": "other", "completion": "e"},
    ]), tasks)
    assert [(c.task_id, c.source, c.candidate) for c in completions] == [
        ("add", None, 0), ("add", "m2", 0), ("add", None, 1), ("other", None, 4), ("other", None, 5)]


def test_a_completion_for_an_unknown_task_or_a_repeated_candidate_is_refused_naming_its_line(tmp_path):
    tasks = load_tasks(write_jsonl(tmp_path / "t.jsonl", [ADD]))
    path = tmp_path / "c.jsonl"
    with pytest.raises(InputError) as err:
        load_completions(write_jsonl(path, [{"task_id": "add", "completion": ""}, {"task_id": "sub", "completion": ""}]),
                         tasks)
    assert str(err.value) == f"{path}:2: task_id: 'sub' is not a task of the tasks file"
    with pytest.raises(InputError) as err:
        load_completions(write_jsonl(path, [{"task_id": "add", "completion": "", "candidate": 1},
                                            {"task_id": "add", "completion": "", "candidate": 1}]), tasks)
    assert str(err.value) == f"{path}:2: candidate: 1 of task 'add' is already the completion at {path}:1"
    with pytest.raises(InputError) as err:
        load_completions(write_jsonl(path, [{"task_id": "add", "completion": 3}]), tasks)
    assert str(err.value) == f"{path}:1: completion: Input should be a valid string"


def test_an_empty_or_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="no records in it"):
        load_tasks(write_jsonl(tmp_path / "t.jsonl", [""]))
    with pytest.raises(InputError, match="no such file"):
        load_tasks(tmp_path / "missing.jsonl")
