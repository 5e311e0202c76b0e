import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from hrm import storage
from hrm.errors import InputError

from cluster.results.compare import compare_runs
from cluster.results.layout import prediction_parts, predictions_prefix, read_predictions

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """Two checkpoints evaluated twice on one dataset (4 and 2 ACT steps), and once on another."""
    root = tmp_path_factory.mktemp("compare")
    data, other = make_dataset(root / "data"), make_dataset(root / "other", seed=5)
    make_checkpoint(root / "sweep", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS,
                    q_scale=1.0)
    checkpoints = [{"run": str(root / "sweep")}]
    return {
        "four": run_in_process(run_config(checkpoints, data, str(root / "four"))).run,
        "two": run_in_process(run_config(checkpoints, data, str(root / "two"), eval={"steps": 2})).run,
        "other": run_in_process(run_config(checkpoints, other, str(root / "other-run"))).run,
    }


def exact(run: str, checkpoint: str) -> np.ndarray:
    table = read_predictions(run, checkpoint, columns=["set", "example_id", "exact"]).sort_by(
        [("set", "ascending"), ("example_id", "ascending")])
    return table.column("exact").to_numpy(zero_copy_only=False).astype(bool)


def test_a_run_compared_with_itself_shows_no_difference(runs):
    document = compare_runs(runs["four"], runs["four"])
    assert document["settings_compared"] == {} and document["significant"] == 0
    assert [(r["a"], r["b"], r["matched_by"]) for r in document["pairs"]] == [
        ("sweep-step_1", "sweep-step_1", "name"), ("sweep-step_2", "sweep-step_2", "name")]
    assert all((r["only_a"], r["only_b"], r["exact_difference"], r["p_value"]) == (0, 0, 0.0, 1.0)
               for r in document["pairs"])


def plant_exact(run: str, checkpoint: str, every: int) -> None:
    """Mark every `every`-th example of each stored part as exactly right (a random model on
    random labels gets none right, and a paired test of all-wrong against all-wrong is vacuous)."""
    for part in prediction_parts(run, checkpoint):
        uri = storage.join(run, predictions_prefix(checkpoint), part)
        table = storage.read_parquet(uri)
        planted = pa.array(table.column("example_id").to_numpy() % every == 0)
        table = table.set_column(table.schema.get_field_index("exact"), "exact", planted)
        storage.write_parquet_atomic(uri, [table])


def test_two_settings_are_compared_on_the_examples_each_gets_right_alone(runs, tmp_path):
    two = str(tmp_path / "two")
    shutil.copytree(runs["two"], two)
    plant_exact(two, "sweep-step_2", every=4)
    document = compare_runs(runs["four"], two)
    assert document["settings_compared"] == {"steps": [None, 2]}
    for row in document["pairs"]:
        a, b = exact(runs["four"], row["a"]), exact(two, row["b"])
        assert (row["only_a"], row["only_b"]) == (int((a & ~b).sum()), int((b & ~a).sum()))
    planted = next(row for row in document["pairs"] if row["b"] == "sweep-step_2")
    assert planted["only_b"] > 10 and planted["significant"]


def test_runs_on_different_datasets_are_refused_naming_both(runs, capsys):
    with pytest.raises(InputError, match=r"other-run/\S+: its dataset \(.*other, sha256 [0-9a-f]{16}…\) is not that "
                                         r"of .*: a paired comparison needs the same examples"):
        compare_runs(runs["four"], runs["other"])
    assert main(["compare", runs["four"], runs["other"]]) == 2


def test_the_command_prints_the_comparison_as_json_and_as_a_table(runs, capsys):
    assert main(["compare", runs["four"], runs["two"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings_compared"] == {"steps": [None, 2]}
    assert main(["compare", runs["four"], runs["two"]]) == 0
    out = capsys.readouterr().out
    assert "settings compared: steps None → 2" in out and "sweep-step_2" in out


def test_the_comparison_is_written_as_markdown_and_html_like_the_report(runs, tmp_path, capsys):
    assert main(["compare", runs["four"], runs["two"], "--output", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Settings compared: steps None → 2." in md and "| sweep-step_1 | sweep-step_1 | name |" in md
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<table" in html and "sweep-step_2" in html
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["pairs"][0]["a"] == "sweep-step_1"
