"""`hrm-eval run` on a text dataset with a model that was trained, not drawn at random: a tiny
byte-level HRM taught to restate its prompt (tests.factories.train_restating_hrm), so the
checkers see real decoded output, passing where the prompt carried a task's reference and
failing with the designed status where it carried a broken program."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hrm import storage
from hrm.checkpoint.loading import load_checkpoint

from cluster.manifest import read_manifest
from cluster.results.layout import iter_predictions
from cluster.results.metrics import read_metrics
from cluster.results.text_checks import checks_uri

from jobs.cli import main

from tests.factories import (
    RESTATE_EARLY_STEP,
    RESTATE_SEQ_LEN,
    RESTATE_STEPS,
    train_restating_hrm,
    write_restating_tasks,
)

pytestmark = pytest.mark.ray

EARLY, FINAL = f"hrm-step_{RESTATE_EARLY_STEP}", f"hrm-step_{RESTATE_STEPS}"
BATCH_SIZE = 8  # 13 examples: two shards, so two prediction parts and two checks parts per checkpoint


@dataclass(frozen=True)
class TextRun:
    root: Path  # the tasks, the dataset (data), the trained model (hrm), run.yaml and the results (out)
    config: Path
    run: Path
    statuses: dict[str, str]  # task_id → the status its restated prompt was built to get
    prompts: dict[str, str]  # task_id → the prompt (the text the model should restate)
    metrics: dict[str, Any]  # the first run's


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, ray_runtime) -> TextRun:
    root = tmp_path_factory.mktemp("text-hrm")
    statuses = write_restating_tasks(root)
    assert main(["convert", "jsonl", "--train", str(root / "train.jsonl"), "--test", str(root / "test.jsonl"),
                 "--tokenizer", "bytes", "--seq-len", str(RESTATE_SEQ_LEN), "--output", str(root / "data"),
                 "-q"]) == 0
    train_restating_hrm(root / "data", root / "hrm")  # about 11 s on 2 shared cores
    steps = (RESTATE_EARLY_STEP, RESTATE_STEPS)
    doc = {"checkpoints": [{"path": str(root / "hrm" / f"step_{step}")} for step in steps],
           "dataset": {"uri": str(root / "data")}, "eval": {"batch_size": BATCH_SIZE},
           "cluster": {"shard_size": BATCH_SIZE, "torch_threads": 1, "actors": 1},
           "output": {"uri": str(root / "out"), "run_id": "r"}}
    (root / "run.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(root / "run.yaml"), "-q"]) == 0
    tasks = map(json.loads, (root / "test.jsonl").read_text().splitlines())
    run = root / "out" / "r"
    return TextRun(root, root / "run.yaml", run, statuses, {t["task_id"]: t["prompt"] for t in tasks},
                   read_metrics(str(run)))


def checks_parts(run: Path, checkpoint: str) -> dict[str, int]:
    """A checkpoint's committed checks parts: name → modification time (ns)."""
    directory = Path(checks_uri(str(run), checkpoint, "part")).parent
    return {path.name: path.stat().st_mtime_ns for path in sorted(directory.iterdir())}


def checked_statuses(run: Path, checkpoint: str) -> dict[str, str]:
    """task_id → the status its check gave, read from the committed checks parts."""
    return {row["task_id"]: row["status"] for part in checks_parts(run, checkpoint)
            for row in storage.read_parquet(checks_uri(str(run), checkpoint, part)).to_pylist()}


def section(report: str, title: str) -> str:
    return report.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the Markdown tables in `markdown`, by their first cell: the other cells."""
    rows = [[cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split(" | ")]
            for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in rows}


def test_the_trained_model_restates_its_prompts_so_each_check_ends_with_the_status_its_prompt_was_built_for(text_run):
    # The premise first: the final checkpoint's decoded predictions are its prompts, exactly.
    predictions = iter_predictions(str(text_run.run), FINAL, columns=["task_id", "decoded"])
    decoded = {row["task_id"]: row["decoded"] for table in predictions for row in table.to_pylist()}
    assert decoded == text_run.prompts
    assert checked_statuses(text_run.run, FINAL) == text_run.statuses
    text = text_run.metrics["text"]["checkpoints"]
    assert text[FINAL]["statuses"] == dict(Counter(text_run.statuses.values()))
    assert {"passed", "failed", "runtime_error", "syntax_error", "compile_error", "invalid_call",
            "execution_failed", "wrong_end_state"} == set(text[FINAL]["statuses"])
    passed = sum(status == "passed" for status in text_run.statuses.values())
    assert text[FINAL]["overall"][0]["pass_at_k"]["1"]["estimate"] == pytest.approx(passed / len(text_run.statuses))
    # The early checkpoint is checked as well, whatever it predicted.
    assert text[EARLY]["completions"] == len(text_run.statuses) == sum(text[EARLY]["statuses"].values())
    outcomes = section((text_run.run / "report.md").read_text(), "Text checks").split("*Outcomes of the checks*")[1]
    completions, shown = table_rows(outcomes)[FINAL]
    assert completions == str(len(text_run.statuses))
    assert dict(item.rsplit(" ", 1) for item in shown.split(", ")) == \
        {status: str(n) for status, n in Counter(text_run.statuses.values()).items()}


def test_the_text_section_shows_the_best_checkpoints_first_completion_of_each_outcome_decoded_and_escaped(text_run):
    first = {}
    for table in iter_predictions(str(text_run.run), FINAL, columns=["set", "example_id", "task_id"]):
        for row in table.to_pylist():
            first.setdefault(text_run.statuses[row["task_id"]], row)
    report = section((text_run.run / "report.md").read_text(), "Text checks")
    summaries = re.findall(r"<details><summary>(.*?)</summary>\s*<pre><code>(.*?)</code></pre>", report, re.S)
    shown = {summary.split(", task ")[0]: html.unescape(code) for summary, code in summaries}
    assert len(summaries) == len(first)
    for status, row in first.items():
        key = f"{row['set']}/{row['example_id']}"
        assert shown[key] == text_run.prompts[row["task_id"]]  # the decoded completion, as the model restated it
        (summary,) = [s for s, _ in summaries if s.startswith(key + ",")]
        assert f"task {row['task_id']} " in summary and f": {status}" in summary


def test_the_report_has_a_model_card_of_measured_figures_with_the_pass_at_1_the_checks_found(text_run):
    card = text_run.metrics["model_card"]
    checked = text_run.metrics["text"]["checkpoints"][card["checkpoint"]]
    assert card["pass_at_1"] == checked["overall"][0]["pass_at_k"]["1"]["estimate"]
    step_file = text_run.root / "hrm" / f"step_{card['step']}"
    assert card["parameters"] == sum(t.numel() for t in load_checkpoint(str(step_file)).state.values())
    assert set(card["latency"]) == {"batch_1", f"batch_{BATCH_SIZE}"}
    for timed in card["latency"].values():
        assert timed["calls"] >= 3 and 0 < timed["p50_s"] <= timed["p95_s"]
    assert card["examples_per_s"] > 0 and card["peak_rss_bytes"] > 0

    shown = table_rows(section((text_run.run / "report.md").read_text(), "Model card"))
    assert shown["parameters"] == [f"{card['parameters']:,}"]
    assert shown["pass@1 % (text checks)"] == [f"{100 * card['pass_at_1']:.2f}"]
    assert float(shown["examples/s in this run (actors' evaluation time)"][0]) > 0
    assert float(shown["peak memory of its actors (MiB)"][0]) > 0
    for examples in (1, BATCH_SIZE):
        (latency,) = [cells for label, cells in shown.items()
                      if label.startswith(f"latency per call, {examples} example(s), p50 / p95")]
        p50, p95 = map(float, latency[0].split(" / "))
        assert 0 < p50 <= p95


def test_a_rerun_evaluates_no_unit_and_checks_no_part_again_and_gives_the_same_metrics(text_run):
    parts = {name: checks_parts(text_run.run, name) for name in (EARLY, FINAL)}
    assert main(["run", str(text_run.config), "-q"]) == 0
    counts = read_manifest(str(text_run.run)).counts
    assert counts["evaluated"] == 0 and counts["resumed"] == counts["planned"] == 4
    metrics = read_metrics(str(text_run.run))
    assert metrics["text"]["checked_parts"] == 0
    assert {name: checks_parts(text_run.run, name) for name in (EARLY, FINAL)} == parts  # not one rewritten
    assert metrics["text"]["checkpoints"] == text_run.metrics["text"]["checkpoints"]
    assert {n: c["metrics"] for n, c in metrics["checkpoints"].items()} == \
        {n: c["metrics"] for n, c in text_run.metrics["checkpoints"].items()}


def test_a_rerun_after_a_checks_part_is_deleted_checks_that_part_alone(text_run):
    parts = checks_parts(text_run.run, FINAL)
    deleted = sorted(parts)[-1]  # the part with the tool chains
    Path(checks_uri(str(text_run.run), FINAL, deleted)).unlink()
    early = checks_parts(text_run.run, EARLY)
    assert main(["run", str(text_run.config), "-q"]) == 0
    metrics = read_metrics(str(text_run.run))
    assert metrics["text"]["checked_parts"] == 1
    again = checks_parts(text_run.run, FINAL)
    assert set(again) == set(parts) and again[deleted] != parts[deleted]  # written anew
    assert {n: t for n, t in again.items() if n != deleted} == {n: t for n, t in parts.items() if n != deleted}
    assert checks_parts(text_run.run, EARLY) == early
    assert metrics["text"]["checkpoints"] == text_run.metrics["text"]["checkpoints"]
