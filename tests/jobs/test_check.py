"""`hrm-eval check` on the repository's task sets: the references pass, broken completions get
the matching statuses, bad input exits 2 naming the line."""

import json
from pathlib import Path

import pytest

from hrm.checks.tasks import load_tasks

from jobs.cli import main

REPO = Path(__file__).resolve().parents[2]
PYTHON_TASKS = REPO / "tasks" / "python.jsonl"
CHAIN_TASKS = REPO / "tasks" / "tool_chains.jsonl"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def check_json(capsys, tasks: Path, completions: Path, *flags: str) -> dict:
    assert main(["check", "--tasks", str(tasks), "--completions", str(completions), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("tasks_file", [PYTHON_TASKS, CHAIN_TASKS], ids=["python", "tool_chain"])
def test_every_task_of_the_repos_sets_passes_with_its_reference_as_the_completion(tmp_path, capsys, tasks_file):
    tasks = load_tasks(tasks_file)
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": t.task_id, "completion": t.reference} for t in tasks])
    report = check_json(capsys, tasks_file, completions)
    failing = [r for r in report["results"] if not r["passed"]]
    assert failing == [] and len(report["results"]) == len(tasks)
    (overall,) = report["summary"]["overall"]
    assert overall["rates"]["passed"] == 1.0 and overall["pass_at_k"]["1"] == {"estimate": 1.0, "tasks": len(tasks)}
    if tasks_file == PYTHON_TASKS:
        assert all(r["tests_passed"] == r["tests_total"] > 0 for r in report["results"])
        tiers = {row["tier"]: row["rates"] for row in report["summary"]["by_kind_tier"]}
        assert set(tiers) == {"easy", "medium", "hard"}
        assert all(rates == {"syntax_valid": 1.0, "compiles": 1.0, "passes_tests": 1.0, "passed": 1.0}
                   for rates in tiers.values())


BROKEN = {  # digit-sum reads one integer and prints the sum of its digits
    "syntax_error": "n = input(\nprint(n)\n",
    "failed": "print(0)\n",
    "runtime_error": "print(1 // (len(input()) - len(input())))\n",  # the second input() meets the end of stdin
    "timeout": "while True:\n    pass\n",
    "compile_error": "import not_a_module_anywhere\nprint(sum(map(int, input())))\n",
    "output_limit": "while True:\n    print('9' * 4096)\n",
}


def test_broken_completions_get_the_matching_statuses_and_pass_at_k_counts_candidates(tmp_path, capsys):
    reference = next(t for t in load_tasks(PYTHON_TASKS) if t.task_id == "easy/digit-sum").reference
    records = [{"task_id": "easy/digit-sum", "completion": code, "source": "broken"} for code in BROKEN.values()]
    records.append({"task_id": "easy/digit-sum", "completion": reference, "source": "broken"})
    report = check_json(capsys, PYTHON_TASKS, write_jsonl(tmp_path / "c.jsonl", records), "--timeout", "0.5",
                        "--k", "1", "--k", "7", "--k", "8")
    statuses = [r["status"] for r in report["results"]]
    assert statuses == [*BROKEN, "passed"]
    assert [r["candidate"] for r in report["results"]] == list(range(7))
    syntax, failed, runtime = report["results"][:3]
    assert (syntax["syntax_valid"], syntax["compiles"], syntax["tests_passed"], syntax["tests_total"]) == (False, False, 0, 4)
    assert (failed["compiles"], failed["tests_passed"], failed["tests_total"]) == (True, 1, 4)  # "0" sums to 0
    assert runtime["message"].startswith("case 1 of 4: EOFError")
    (overall,) = report["summary"]["overall"]
    assert overall["pass_at_k"] == {"1": {"estimate": pytest.approx(1 / 7), "tasks": 1},
                                    "7": {"estimate": 1.0, "tasks": 1}}  # no k of 8 with 7 candidates
    assert overall["rates"]["syntax_valid"] == pytest.approx(6 / 7)
    assert overall["rates"]["compiles"] == pytest.approx(5 / 7)


def test_exact_and_normalized_tasks_are_matched_as_strings(tmp_path, capsys):
    tasks = write_jsonl(tmp_path / "t.jsonl", [
        {"task_id": "capital", "kind": "exact", "prompt": "Capital of France?", "reference": "Paris"},
        {"task_id": "capital-n", "kind": "normalized", "prompt": "Capital of France?", "reference": "Paris"}])
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "capital", "completion": "paris"},
                                                     {"task_id": "capital-n", "completion": "  PARIS\n"}])
    assert [r["status"] for r in check_json(capsys, tasks, completions)["results"]] == ["failed", "passed"]


def test_without_json_the_summary_is_a_table_per_kind_and_tier(tmp_path, capsys):
    tasks = write_jsonl(tmp_path / "t.jsonl", [
        {"task_id": "a", "kind": "exact", "prompt": "", "reference": "x", "tier": "easy"},
        {"task_id": "b", "kind": "normalized", "prompt": "", "reference": "y", "tier": "hard"}])
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "a", "completion": "x"},
                                                     {"task_id": "a", "completion": "z"},
                                                     {"task_id": "b", "completion": "Y"}])
    assert main(["check", "--tasks", str(tasks), "--completions", str(completions)]) == 0
    out = capsys.readouterr().out
    assert "3 completions of 2 tasks" in out and "pass@1" in out and "easy" in out and "hard" in out
    assert "0.500" in out and "0.667" in out  # exact's pass rate, and the overall one


def test_a_completion_for_a_task_not_in_the_set_exits_2_naming_its_line(tmp_path, capsys):
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "easy/digit-sum", "completion": ""},
                                                     {"task_id": "nope", "completion": ""}])
    assert main(["check", "--tasks", str(PYTHON_TASKS), "--completions", str(completions)]) == 2
    assert capsys.readouterr().err == (f"hrm-eval check: error: {completions}:2: task_id: 'nope' is not a task "
                                       "of the tasks file\n")


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_no_time_or_forever_exits_2(tmp_path, capsys, timeout):
    completions = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "easy/digit-sum", "completion": ""}])
    assert main(["check", "--tasks", str(PYTHON_TASKS), "--completions", str(completions), "--timeout", timeout]) == 2
    assert capsys.readouterr().err.startswith("hrm-eval check: error: --timeout: must be more than 0")


def test_help_documents_both_formats_and_the_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = capsys.readouterr().out
    for words in ("testtype", "func_name", "entry_point", "class Solution", "candidate", "source", "tools",
                  "docs/tasks.md", "memory_limit", "pass@k"):
        assert words in text, words
