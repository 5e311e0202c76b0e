import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm import storage
from hrm.data.reader import open_dataset

from cluster.results.layout import prediction_parts, predictions_prefix
from cluster.results.metrics import read_metrics
from cluster.results.text_checks import check_run_texts, checks_uri

from jobs.cli import main

from tests.cluster_factories import run_config, run_in_process
from tests.factories import REPO, make_checkpoint

TASKS = REPO / "tasks"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[str, Path]:
    """A run of a tiny random HRM on a byte-level text dataset converted from a few of the repo's
    tasks (their references as completions): it predicts noise, which the checkers must fail."""
    root = tmp_path_factory.mktemp("text")
    python = [json.loads(line) for line in (TASKS / "python.jsonl").read_text().splitlines()[:3]]
    strings = [{"task_id": "say-ok", "kind": "exact", "prompt": "Say ok.", "reference": "ok", "tier": "easy"}]
    (root / "tasks.jsonl").write_text("".join(json.dumps(task) + "\n" for task in python + strings))
    assert main(["convert", "jsonl", "--test", str(root / "tasks.jsonl"), "--tokenizer", "bytes", "--truncate",
                 "--seq-len", "64", "--output", str(root / "data")]) == 0
    meta = open_dataset(root / "data").metadata("test")
    make_checkpoint(root / "sweep", steps=(1, 2), vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                    num_puzzle_identifiers=meta.num_puzzle_identifiers)
    return run_in_process(run_config([{"run": str(root / "sweep")}], str(root / "data"), str(root / "out"))).run, root


def test_every_decoded_prediction_that_names_a_task_is_checked_and_summarised_per_checkpoint(text_run):
    run, _ = text_run
    text = read_metrics(run)["text"]
    for name in ("sweep-step_1", "sweep-step_2"):
        summary = text["checkpoints"][name]
        assert summary["completions"] == 4 and summary["tasks"] == 4
        assert sum(summary["statuses"].values()) == 4 and "passed" not in summary["statuses"]  # noise fails
        (python,) = [row for row in summary["by_kind"] if row["kind"] == "python"]
        assert python["completions"] == 3 and python["rates"]["passes_tests"] == 0.0
    assert "## Text checks" in (Path(run) / "report.md").read_text()


def test_a_rerun_checks_only_the_parts_without_results_and_perfect_completions_pass(text_run):
    run, root = text_run
    assert check_run_texts(run, ["sweep-step_1"], str(root / "data"))["checked_parts"] == 0  # all committed
    # the stored predictions replaced by the references: every check must pass
    references = {json.loads(line)["task_id"]: json.loads(line)["reference"]
                  for line in (root / "tasks.jsonl").read_text().splitlines()}
    for part in prediction_parts(run, "sweep-step_1"):
        uri = storage.join(run, predictions_prefix("sweep-step_1"), part)
        table = pq.read_table(uri)
        perfect = pa.array([references[t] for t in table.column("task_id").to_pylist()])
        storage.write_parquet_atomic(uri, [table.set_column(table.schema.get_field_index("decoded"), "decoded", perfect)])
        storage.delete(checks_uri(run, "sweep-step_1", part))
    text = check_run_texts(run, ["sweep-step_1"], str(root / "data"))
    assert text["checked_parts"] == len(prediction_parts(run, "sweep-step_1"))
    assert text["checkpoints"]["sweep-step_1"]["statuses"] == {"passed": 4}


def test_a_lossy_tokenizer_says_in_the_report_how_many_words_had_no_token(tmp_path):
    (tmp_path / "keywords.txt").write_text("start\ntest\nend\n")
    tasks = [{"task_id": f"t{i}", "kind": "exact", "prompt": f"Start the {i} test now", "reference": "test end"}
             for i in range(3)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(task) + "\n" for task in tasks))
    assert main(["convert", "jsonl", "--test", str(tmp_path / "tasks.jsonl"), "--tokenizer",
                 str(tmp_path / "keywords.txt"), "--allow-lossy", "--seq-len", "8", "--output",
                 str(tmp_path / "data")]) == 0
    missing = open_dataset(tmp_path / "data").index.summary["words_without_token"]
    meta = open_dataset(tmp_path / "data").metadata("test")
    make_checkpoint(tmp_path / "sweep", vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                    num_puzzle_identifiers=meta.num_puzzle_identifiers)
    run = run_in_process(run_config([{"run": str(tmp_path / "sweep")}], str(tmp_path / "data"),
                                    str(tmp_path / "out"))).run
    section = (Path(run) / "report.md").read_text().split("## Text checks", 1)[1].split("\n## ", 1)[0]
    assert missing > 0 and f"The dataset's tokenizer is lossy: {missing} word(s) of its prompts and completions" in section
