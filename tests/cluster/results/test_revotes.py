import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hrm import storage
from hrm.errors import InputError

from cluster.config import EnsembleConfig
from cluster.results.metrics import read_metrics
from cluster.results.revotes import read_revotes, revote

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> str:
    """A finished run of three checkpoints with a top-2 ensemble voted both ways."""
    root = tmp_path_factory.mktemp("revote")
    data = make_dataset(root / "data")
    make_checkpoint(root / "sweep", steps=(1, 2, 3), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS,
                    q_scale=1.0)
    config = run_config([{"run": str(root / "sweep")}], data, str(root / "out"))
    config = config.model_copy(update={"ensembles": [EnsembleConfig(name="top2", top_k=2, method="both")]})
    return run_in_process(config).run


def snapshot(run: str) -> dict[str, bytes]:
    """Every file the run itself wrote, byte for byte (re-votes and the report aside)."""
    return {name: storage.read_bytes(storage.join(run, name)) for name in storage.list_files(run)
            if not name.startswith(("revotes/", "report.", "plots/"))}


def test_a_vote_with_the_runs_own_settings_reproduces_its_stored_votes_exactly(finished):
    document = revote(finished, "same")
    assert document["votes"] == read_metrics(finished)["votes"]
    for level in ("sequence", "token"):
        again = pq.read_table(Path(finished) / "revotes" / "same" / "ensembles" / f"top2-{level}.parquet")
        assert again.equals(pq.read_table(Path(finished) / "votes" / "ensembles" / f"top2-{level}.parquet"))


def test_a_vote_with_other_settings_goes_beside_the_runs_own_and_changes_nothing_of_it(finished, capsys):
    before = snapshot(finished)
    assert main(["vote", finished, "--ensemble", "pair=members:sweep-step_1,sweep-step_3", "--method", "token",
                 "--id", "pair"]) == 0
    assert snapshot(finished) == before
    (document,) = [d for d in read_revotes(finished) if d["id"] == "pair"]
    assert [(e["name"], e["level"], e["members"]) for e in document["votes"]["ensembles"]] == [
        ("pair", "token", ["sweep-step_1", "sweep-step_3"])]
    report = (Path(finished) / "report.md").read_text()
    assert "## Re-votes" in report and "Re-vote pair (" in report and "pair (sweep-step_1, sweep-step_3, token)" in report


@pytest.mark.parametrize("argv, message", [
    (["--id", "same"], "revotes/same/votes.json: a re-vote with id 'same' exists: give another --id"),
    (["--id", "../x"], "--id: '../x': letters, digits, '.', '_' and '-' only (it names a folder)"),
    (["--ensemble", "top9=top_k:9"], "1 problem(s) with the votes of the run config:\n  ensembles.0.top_k: 9 members, "
                                     "but the run has 3 checkpoints"),
    (["--ensemble", "x=best"], "--ensemble 'x=best': expected NAME=top_k:K or NAME=members:A,B,…"),
])
def test_bad_vote_settings_are_refused_and_publish_nothing(finished, capsys, argv, message):
    if not (Path(finished) / "revotes" / "same").exists():  # the re-vote whose id is taken
        revote(finished, "same")
    count = len(read_revotes(finished))
    assert main(["vote", finished, *argv]) == 2
    assert capsys.readouterr().err.rstrip("\n").endswith(message)
    assert len(read_revotes(finished)) == count


def test_a_run_that_did_not_finish_or_whose_data_changed_is_refused(finished, tmp_path):
    with pytest.raises(InputError, match=r"metrics.json: not found: votes need every unit's predictions"):
        revote(str(tmp_path), "x")
    manifest = json.loads((Path(finished) / "manifest.json").read_text())
    manifest["dataset"]["content_hash"] = "0" * 64
    moved = tmp_path / "moved"
    for name in storage.list_files(finished):
        (moved / name).parent.mkdir(parents=True, exist_ok=True)
        (moved / name).write_bytes(storage.read_bytes(storage.join(finished, name)))
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"not the dataset the run evaluated"):
        revote(str(moved), "x")
