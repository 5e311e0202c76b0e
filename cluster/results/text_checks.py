"""A run's text checks: every decoded prediction of a text dataset whose examples name tasks
(`hrm-eval convert jsonl` keeps a `task_id` column and the dataset's tasks.jsonl) checked
against its task by the checkers of `hrm.checks` (Python run against tests in the sandbox,
tool chains replayed, strings compared).

    checks/checkpoint=<checkpoint>/<prediction part>   one row per checked example: set, example_id
                                                       and the check's result fields (docs/tasks.md)

A prediction part is checked by one Ray CPU task (the GPU actors have finished and never wait
on a sandbox), and its results are published atomically under the part's own name: a part's
results existing is its commit, so a rerun checks only the parts that have none, as it
evaluates only the units that have no record.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from hrm import storage
from hrm.checks.score import Checker, summarise
from hrm.checks.tasks import Completion, load_tasks
from hrm.data.reader import open_dataset
from hrm.puzzles.text import TASKS_FILE, tasks_file

from cluster.results.layout import prediction_parts, read_prediction_part

CHECKS = "checks"


def checks_uri(run: str, checkpoint: str, part: str) -> str:
    return storage.join(run, CHECKS, f"checkpoint={checkpoint}", part)


def has_tasks(dataset_uri: str) -> bool:
    return storage.exists(storage.join(dataset_uri, TASKS_FILE))


def check_part(run: str, checkpoint: str, part: str, dataset_uri: str) -> int:
    """Check one prediction part's examples that name a task and publish their results; the
    number checked."""
    with tempfile.TemporaryDirectory(prefix="hrm-eval-checks-") as scratch:
        path = tasks_file(open_dataset(dataset_uri), Path(scratch))
        checker = Checker(load_tasks(path), base_dir=path.parent)
        rows = read_prediction_part(run, checkpoint, part, columns=["set", "example_id", "task_id", "decoded"])
        named = [row for row in rows.to_pylist() if row["task_id"]]
        completions = [Completion(task_id=row["task_id"], completion=row["decoded"], source=checkpoint)
                       for row in named]
        results = checker.check_all(completions, workers=len(os.sched_getaffinity(0)))
    checked = [{"set": row["set"], "example_id": row["example_id"], **result} for row, result in zip(named, results)]
    # Results of different kinds have different fields (python's syntax_valid, tool_chain's
    # tool_chain_valid): pa.array infers one struct type from every row, where
    # Table.from_pylist would keep only the first row's fields and drop the other kinds'.
    table = pa.Table.from_struct_array(pa.array(checked)) if checked else pa.table({})
    storage.write_parquet_atomic(checks_uri(run, checkpoint, part), [table])
    return len(results)


def check_run_texts(run: str, checkpoints: list[str], dataset_uri: str) -> dict[str, Any] | None:
    """Check every checkpoint's stored predictions (the parts not yet checked, as Ray tasks
    when Ray is up) and summarise them per checkpoint; None when the dataset names no tasks."""
    if not has_tasks(dataset_uri):
        return None
    parts = {name: prediction_parts(run, name) for name in checkpoints}  # each part's footer read once
    todo = [(name, part) for name in checkpoints for part in parts[name]
            if not storage.exists(checks_uri(run, name, part))]
    if ray.is_initialized():
        remote = ray.remote(num_cpus=1)(check_part)
        ray.get([remote.remote(run, name, part, dataset_uri) for name, part in todo])
    else:
        for name, part in todo:
            check_part(run, name, part, dataset_uri)
    return {"checked_parts": len(todo),
            "checkpoints": {name: summarise_checkpoint(run, name, parts[name]) for name in checkpoints}}


def first_of_each_status(run: str, checkpoint: str, statuses: Iterable[str]) -> list[dict[str, Any]]:
    """The report's examples: for each of `statuses`, the first checked example that ended with
    it, in dataset order, with its decoded completion. Parts are read in order until every status
    has its example, so a large run reads only as far as its rarest outcome."""
    wanted, found = set(statuses), []
    for part in prediction_parts(run, checkpoint):
        picked = []
        for row in storage.read_parquet(checks_uri(run, checkpoint, part)).to_pylist():
            if row["status"] in wanted:
                wanted.discard(row["status"])
                picked.append(row)
        if picked:
            decoded = read_prediction_part(run, checkpoint, part, columns=["set", "example_id", "decoded"]).to_pylist()
            completions = {(row["set"], row["example_id"]): row["decoded"] for row in decoded}
            found += [{**row, "completion": completions[row["set"], row["example_id"]]} for row in picked]
        if not wanted:
            break
    return found


def summarise_checkpoint(run: str, checkpoint: str, parts: list[str]) -> dict[str, Any]:
    results = [row for part in parts for row in storage.read_parquet(checks_uri(run, checkpoint, part)).to_pylist()]
    return {**summarise(results, ks=(1,)), "statuses": dict(Counter(r["status"] for r in results).most_common())}
