"""A run's results loaded as tables for analysis."""

import io
import json

import numpy as np
import pyarrow.compute as pc
import pytest

from hrm import storage
from hrm.data.arrow import column_matrix
from hrm.data.reader import open_dataset

from cluster.actor import Evaluator
from cluster.config import RunConfig
from cluster.driver import execute
from cluster.plan import prepare
from cluster.progress import RunProgress
from cluster.results.layout import METRICS, commit_unit, file_uri, read_predictions
from cluster.results.metrics import read_metrics
from cluster.results.run import load_run

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config
from tests.factories import make_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A completed run of 3 checkpoints on 2 sets: every unit evaluated in this process and
    committed, then the driver (no Ray needed: nothing left to schedule) aggregates."""
    root = tmp_path_factory.mktemp("api")
    data = make_dataset(root / "data")
    make_checkpoint(root / "sweep", steps=(1, 2, 3), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    prepared = prepare(run_config([{"run": str(root / "sweep")}], data, str(root / "out")))
    actor = Evaluator(prepared.config, prepared.run)
    refs = {ref.name: ref for ref in prepared.checkpoints}
    for unit in prepared.units:
        commit_unit(prepared.run, actor(unit, refs[unit.checkpoint]))
    execute(prepared, RunProgress(stream=io.StringIO()))
    return prepared.run


def test_the_metrics_table_has_a_row_per_checkpoint_for_the_split_each_set_and_each_tier_as_in_metrics_json(run):
    loaded = load_run(run)
    rows = loaded.metrics.to_pylist()
    assert [(r["checkpoint"], r["scope"], r["set"]) for r in rows if r["scope"] != "tier"] == [
        (f"sweep-step_{n}", scope, s) for n in (1, 2, 3) for scope, s in (("all", None), ("set", "easy"), ("set", "hard"))]
    stored = read_metrics(run)["checkpoints"]
    for row in rows:
        figures = stored[row["checkpoint"]]["metrics"]
        expected = {"all": lambda: figures["all"], "set": lambda: figures["sets"][row["set"]],
                    "tier": lambda: figures["tiers"][row["set"]][row["tier"]]}[row["scope"]]()
        assert row["exact_accuracy"] == expected["exact_accuracy"] and row["count"] == expected["count"]
    tiers = {(r["checkpoint"], r["set"], r["tier"]) for r in rows if r["scope"] == "tier"}
    assert tiers == {(name, s, t) for name, c in stored.items() for s, ts in c["metrics"]["tiers"].items() for t in ts}
    assert tiers  # the test data has tiers


def test_predictions_read_as_one_dataset_with_a_checkpoint_column(run):
    table = load_run(run).predictions().to_table(columns=["checkpoint", "set", "example_id"])
    names = table["checkpoint"].to_pylist()
    assert {name: names.count(name) for name in set(names)} == {f"sweep-step_{n}": 64 for n in (1, 2, 3)}  # 40 + 24


def test_the_leaderboard_and_unit_states_come_with_the_manifest(run):
    loaded = load_run(run)
    assert loaded.leaderboard.num_rows == 3 and loaded.manifest.status == "completed"
    assert set(loaded.units["state"].to_pylist()) == {"resumed"}  # all committed before the driver ran


def test_a_run_without_metrics_loads_with_none_for_them(run, tmp_path):
    copy = tmp_path / "stopped"
    for name in storage.list_files(run):
        if name not in (METRICS, "leaderboard.parquet"):
            storage.write_bytes_atomic(str(copy / name), storage.read_bytes(storage.join(run, name)))
    loaded = load_run(str(copy))
    assert loaded.metrics is None and loaded.leaderboard is None and loaded.units.num_rows == 15
    assert not storage.exists(file_uri(str(copy), METRICS))


def test_a_runs_predictions_hold_no_inputs_or_labels_unless_the_config_asks(run):
    assert not {"inputs", "labels"} & set(load_run(run).predictions().schema.names)


def test_with_log_samples_every_prediction_row_holds_its_examples_inputs_and_labels(tmp_path):
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "ckpt", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    doc = run_config([{"path": str(tmp_path / "ckpt")}], data, str(tmp_path / "out")).model_dump()
    prepared = prepare(RunConfig.model_validate({**doc, "output": {**doc["output"], "log_samples": True}}))
    actor = Evaluator(prepared.config, prepared.run)
    for unit in prepared.units:
        actor(unit, prepared.checkpoints[0])
    table = read_predictions(prepared.run, prepared.checkpoints[0].name)
    dataset = open_dataset(data)
    for set_name in ("easy", "hard"):
        rows, stored = dataset.examples("test", set_name), table.filter(pc.field("set") == set_name)
        np.testing.assert_array_equal(column_matrix(stored, "inputs"), rows.inputs)
        np.testing.assert_array_equal(column_matrix(stored, "labels"), rows.labels)
        assert stored["puzzle_identifier"].to_pylist() == rows.puzzle_identifiers.tolist()


def test_an_evaluate_output_loads_as_a_run_of_its_one_checkpoint(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "ckpt", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    out = str(tmp_path / "out")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--data", data, "--device", "cpu",
                 "--output", out, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    loaded = load_run(out)
    assert loaded.manifest is None and loaded.units is None and loaded.job.examples == 64
    assert [(r["checkpoint"], r["scope"], r["set"]) for r in loaded.metrics.to_pylist() if r["scope"] != "tier"] == [
        ("ckpt-step_10", "all", None), ("ckpt-step_10", "set", "easy"), ("ckpt-step_10", "set", "hard")]
    assert loaded.leaderboard.to_pylist()[0]["exact_accuracy"] == \
        document["checkpoints"]["ckpt-step_10"]["metrics"]["all"]["exact_accuracy"]
    names = loaded.predictions().to_table(columns=["checkpoint"])["checkpoint"].to_pylist()
    assert names == ["ckpt-step_10"] * 64
