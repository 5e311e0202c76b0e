"""Scoring: one completion against its task (a result), many in parallel, and the summary:
rates per source, kind and tier, and pass@k by the unbiased estimator.

A result is a flat dict (docs/tasks.md): task_id, candidate, source, kind, tier, status, passed,
message, and the kind's own fields — python: syntax_valid, compiles, passes_tests, tests_passed,
tests_total; tool_chain: tool_chain_valid, execution_success, first_failing_call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hrm.checks.exact import check_string
from hrm.checks.python import PythonSettings, check_python
from hrm.checks.tasks import Completion, PythonTask, StringTask, Task, ToolChainTask
from hrm.checks.tool_chain import ToolSet, check_tool_chain, load_tool_set

# The rates a summary gives for each kind (fractions of its completions), "passed" for every kind.
RATES: dict[str, tuple[str, ...]] = {
    "python": ("syntax_valid", "compiles", "passes_tests", "passed"),
    "tool_chain": ("tool_chain_valid", "execution_success", "passed"),
    "exact": ("passed",),
    "normalized": ("passed",),
}


class Checker:
    """Checks completions against `tasks`; tool sets are loaded once, up front, so a bad tool file
    is refused before anything runs. `base_dir`: where a tool_chain task's tool files are
    (the tasks file's folder)."""

    def __init__(self, tasks: Sequence[Task], base_dir: Path, settings: PythonSettings = PythonSettings()):
        self.tasks = {task.task_id: task for task in tasks}
        self.settings = settings
        self.tool_sets: dict[str, ToolSet] = {task.task_id: load_tool_set(task.tools, base_dir)
                                              for task in tasks if isinstance(task, ToolChainTask)}

    def check(self, completion: Completion) -> dict[str, Any]:
        task = self.tasks[completion.task_id]
        result: dict[str, Any] = {"task_id": task.task_id, "candidate": completion.candidate,
                                  "source": completion.source, "kind": task.kind, "tier": task.tier}
        if isinstance(task, PythonTask):
            found = asdict(check_python(completion.completion, task, self.settings))
            result.update(status=found.pop("status"), passed=found["passes_tests"], message=found.pop("message"),
                          **found)
        elif isinstance(task, ToolChainTask):
            chain = check_tool_chain(completion.completion, task.reference, self.tool_sets[task.task_id])
            result.update(status=chain.status, passed=chain.status == "passed", message=chain.message,
                          tool_chain_valid=chain.tool_chain_valid, execution_success=chain.execution_success,
                          first_failing_call=chain.first_failing_call)
        else:
            assert isinstance(task, StringTask)
            passed = check_string(completion.completion, task.reference, task.kind)
            result.update(status="passed" if passed else "failed", passed=passed,
                          message="" if passed else f"does not match the reference ({task.kind})")
        return result

    def check_all(self, completions: Iterable[Completion], workers: int) -> list[dict[str, Any]]:
        """Results in the completions' order. Threads suffice: the python checks wait on sandboxed
        processes, the string and tool-chain checks are quick."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.check, completions))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k),
    computed as a product (Chen et al. 2021) so large n neither overflows nor loses precision."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarise(results: Sequence[dict[str, Any]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Rates per source and kind and tier (`by_kind_tier`), per source and kind (`by_kind`) and per
    source (`overall`): each row the number of tasks and completions, the kind's rates (fractions
    of the completions where the field was measured; None if it never was), and
    `pass_at_k`: for each k, the estimate averaged over the row's tasks that have at least k
    candidates (n = that task's candidates from that source), with how many tasks that is; a k
    no task reaches is left out."""
    rows: dict[str, list[dict[str, Any]]] = {"by_kind_tier": [], "by_kind": [], "overall": []}
    groupings = {"by_kind_tier": ("source", "kind", "tier"), "by_kind": ("source", "kind"), "overall": ("source",)}
    for name, keys in groupings.items():
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for result in results:
            groups[tuple(result[key] for key in keys)].append(result)
        for values in groups:  # in the order they first come: the completions' order (tiers as the tasks list them)
            rows[name].append({**dict(zip(keys, values)), **_row(groups[values], ks)})
    return {"completions": len(results), "tasks": len({r["task_id"] for r in results}), "ks": list(ks), **rows}


def _row(results: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    kinds = {r["kind"] for r in results}
    rates = RATES[next(iter(kinds))] if len(kinds) == 1 else ("passed",)
    per_task: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        per_task[result["task_id"]].append(result["passed"])
    estimates = {}
    for k in ks:
        values = [pass_at_k(len(flags), sum(flags), k) for flags in per_task.values() if len(flags) >= k]
        if values:
            estimates[str(k)] = {"estimate": sum(values) / len(values), "tasks": len(values)}
    return {"tasks": len(per_task), "completions": len(results),
            "rates": {rate: _rate([r[rate] for r in results]) for rate in rates}, "pass_at_k": estimates}


def _rate(values: list[bool | None]) -> float | None:
    """The fraction true among the measured values (None: not measured, e.g. execution_success of
    a tool set without semantics); None when none was measured."""
    measured = [value for value in values if value is not None]
    return sum(measured) / len(measured) if measured else None
