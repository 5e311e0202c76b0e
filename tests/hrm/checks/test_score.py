import json
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from hrm.checks.exact import normalize
from hrm.checks.score import Checker, pass_at_k, summarise
from hrm.checks.tasks import Completion, PythonTask, StringTask, ToolChainTask
from hrm.errors import InputError


def closed_form(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize("n, c, k", [(5, 2, 1), (5, 2, 2), (5, 2, 5), (5, 0, 1), (5, 0, 5), (5, 5, 1), (5, 5, 5),
                                     (10, 3, 4), (1, 1, 1), (1, 0, 1)])
def test_pass_at_k_equals_the_closed_form_on_small_cases(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(closed_form(n, c, k)), abs=1e-12)


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # one draw of five, two good
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # C(3,2)/C(5,2) of pairs miss both
    assert pass_at_k(5, 2, 5) == 1.0 and pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0


def test_pass_at_k_stays_exact_where_the_binomials_are_huge():
    assert pass_at_k(1000, 3, 500) == pytest.approx(float(closed_form(1000, 3, 500)), rel=1e-12)
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)])
def test_pass_at_k_refuses_counts_that_cannot_be(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_normalized_matching_folds_width_case_and_whitespace_but_not_words():
    assert normalize("  Ｐａｒｉｓ\u00a0 IS\n\tthe  CAPITAL ") == "paris is the capital"
    assert normalize("Straße") == normalize("STRASSE")
    assert normalize("a b") != normalize("ab")


def result(task_id: str, passed: bool, kind: str = "exact", tier: str | None = "easy", source: str | None = None,
           **fields) -> dict:
    return {"task_id": task_id, "kind": kind, "tier": tier, "source": source, "passed": passed, **fields}


def test_summary_rates_are_per_kind_and_tier_and_pass_at_k_averages_tasks_with_enough_candidates():
    results = [result("a", True), result("a", False), result("a", False), result("a", True), result("a", False),
               result("b", False, tier="hard"), result("b", True, tier="hard"),
               result("c", True, kind="normalized", tier=None)]
    summary = summarise(results, ks=(1, 2, 5))
    rows = {(r["kind"], r["tier"]): r for r in summary["by_kind_tier"]}
    assert rows["exact", "easy"]["rates"] == {"passed": 0.4}
    assert rows["exact", "easy"]["pass_at_k"] == {"1": {"estimate": pytest.approx(0.4), "tasks": 1},
                                                  "2": {"estimate": pytest.approx(0.7), "tasks": 1},
                                                  "5": {"estimate": 1.0, "tasks": 1}}
    assert rows["normalized", None]["completions"] == 1
    (overall,) = summary["overall"]
    assert overall["tasks"] == 3 and overall["completions"] == 8 and overall["rates"] == {"passed": 0.5}
    # pass@2 over the two tasks with two or more candidates: a (0.7) and b (1.0); pass@5 over a alone
    assert overall["pass_at_k"]["2"] == {"estimate": pytest.approx(0.85), "tasks": 2}
    assert overall["pass_at_k"]["5"] == {"estimate": 1.0, "tasks": 1}
    assert overall["pass_at_k"]["1"]["estimate"] == pytest.approx((0.4 + 0.5 + 1.0) / 3)


def test_summary_keeps_sources_apart_so_two_models_candidates_are_never_pooled():
    results = [result("a", True, source="m1"), result("a", False, source="m2"), result("a", False, source="m2")]
    summary = summarise(results, ks=(1, 2, 3))
    by_source = {row["source"]: row for row in summary["overall"]}
    assert by_source["m1"]["pass_at_k"] == {"1": {"estimate": 1.0, "tasks": 1}}
    assert by_source["m2"]["pass_at_k"]["2"] == {"estimate": 0.0, "tasks": 1}
    assert "3" not in by_source["m2"]["pass_at_k"]  # no task has three candidates from one source


def test_summary_rates_count_only_the_completions_where_a_field_was_measured():
    results = [result("a", True, kind="tool_chain", tool_chain_valid=True, execution_success=None),
               result("b", True, kind="tool_chain", tool_chain_valid=True, execution_success=True),
               result("c", False, kind="tool_chain", tool_chain_valid=False, execution_success=False)]
    (row,) = summarise(results)["by_kind"]
    assert row["rates"] == {"tool_chain_valid": pytest.approx(2 / 3), "execution_success": 0.5,
                            "passed": pytest.approx(2 / 3)}
    only_unmeasured = summarise(results[:1])["by_kind"][0]["rates"]
    assert only_unmeasured["execution_success"] is None


def test_checker_gives_each_kind_its_fields(tmp_path):
    tasks = [
        PythonTask(task_id="py", kind="python", prompt="", reference="", tier="easy", func_name="f",
                   tests=[{"input": "2", "output": "4", "testtype": "functional"}]),
        StringTask(task_id="ex", kind="exact", prompt="", reference="Paris"),
        StringTask(task_id="no", kind="normalized", prompt="", reference="Paris"),
        ToolChainTask(task_id="tc", kind="tool_chain", prompt="",
                      reference=json.dumps({"tool": "write_file", "args": {"path": "/a", "content": "x"}})),
    ]
    checker = Checker(tasks, tmp_path)
    found = checker.check_all([
        Completion(task_id="py", completion="def f(x):\n    return x * x\n", candidate=0),
        Completion(task_id="ex", completion="paris", candidate=0, source="m"),
        Completion(task_id="no", completion=" PARIS ", candidate=3),
        Completion(task_id="tc", completion=json.dumps({"tool": "write_file", "args": {"path": "/a"}}), candidate=0),
    ], workers=2)
    assert found[0] == {"task_id": "py", "candidate": 0, "source": None, "kind": "python", "tier": "easy",
                        "status": "passed", "passed": True, "message": "", "syntax_valid": True, "compiles": True,
                        "passes_tests": True, "tests_passed": 1, "tests_total": 1}
    assert (found[1]["status"], found[1]["passed"], found[1]["source"]) == ("failed", False, "m")
    assert found[1]["message"] == "does not match the reference (exact)"
    assert (found[2]["status"], found[2]["candidate"]) == ("passed", 3)
    assert found[3]["status"] == "invalid_call" and found[3]["passed"] is False
    assert (found[3]["tool_chain_valid"], found[3]["first_failing_call"]) == (False, 0)
    assert "content" in found[3]["message"]


def test_a_tool_set_that_cannot_load_is_refused_before_anything_runs(tmp_path):
    task = ToolChainTask(task_id="tc", kind="tool_chain", prompt="", reference="", tools=["missing.json"])
    with pytest.raises(InputError) as err:
        Checker([task], Path(tmp_path))
    assert "missing.json" in str(err.value)
