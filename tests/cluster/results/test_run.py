"""A run's results loaded as tables for analysis."""

import io

import pytest

from hrm import storage

from cluster.actor import Evaluator
from cluster.driver import execute
from cluster.plan import prepare
from cluster.progress import RunProgress
from cluster.results.layout import METRICS, commit_unit, file_uri
from cluster.results.metrics import read_metrics
from cluster.results.run import load_run

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
