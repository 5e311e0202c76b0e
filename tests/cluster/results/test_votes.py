"""Votes over a run's stored predictions (cluster.votes): ARC augmentation voting on the
conformance vectors, checkpoint ensembles with hand-checked McNemar figures, and test-time
augmentation end to end through the real driver on Ray."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm.checkpoint.loading import load_checkpoint
from hrm.data.arrow import column_matrix
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.data.schema import Shard
from hrm.errors import InputError
from hrm.eval.engine import EngineResult
from hrm.eval.predictions import prediction_table
from hrm.eval.shard import build_engine
from hrm.eval.votes import score_tokens, token_majority
from hrm.puzzles.sudoku_generator import write_demo_sudoku

from cluster.config import RunConfig, validate_run_config
from cluster.driver import execute
from cluster.plan import check_votes, prepare
from cluster.progress import RunProgress
from cluster.results import votes
from cluster.results.layout import prediction_key, read_predictions, write_predictions
from cluster.results.metrics import read_metrics
from cluster.results.votes import apply_votes

from tests.cluster_factories import make_dataset, run_config
from tests.factories import CONFORMANCE, make_checkpoint

ARC_TINY = CONFORMANCE / "trm-arc-tiny"
WRONG_AT = 5  # the valid label position the ensemble test corrupts


def store_predictions(run: str, checkpoint: str, dataset: Dataset, set_name: str, pred: np.ndarray,
                      q_halt: np.ndarray, *, part_rows: int | None = None, copy: int = 0) -> None:
    """Write `pred` as a run's stored predictions of `checkpoint` (or of its TTA copy `copy`),
    with the real writers, a part per `part_rows` examples (default: one part)."""
    n = dataset.num_examples("test", set_name)
    step = part_rows or n
    for start in range(0, n, step):
        stop = min(start + step, n)
        table = predictions_table(dataset, set_name, start, pred[start:stop], q_halt[start:stop])
        write_predictions(run, prediction_key(checkpoint, Shard("test", set_name, start, stop), copy), table)


def predictions_table(dataset: Dataset, set_name: str, start: int, pred: np.ndarray, q_halt: np.ndarray) -> pa.Table:
    """What an actor stores for examples start.. of a set predicted as `pred`."""
    batch = dataset.examples("test", set_name, start, start + len(pred))
    scored = score_tokens(pred, batch.labels, dataset.metadata("test").ignore_label_id)
    n = len(batch)
    result = EngineResult(pred=pred.astype(np.int32), q_halt_logit=q_halt.astype(np.float32),
                          q_continue_logit=np.zeros(n, np.float32), steps=np.ones(n, np.int32),
                          valid_tokens=scored["valid_tokens"].astype(np.int32),
                          correct_tokens=scored["correct_tokens"].astype(np.int32), exact=scored["exact"],
                          lm_loss=np.zeros(n), exact_per_step=None)
    return prediction_table(result, set_name=set_name, example_id=batch.example_id, puzzle_index=batch.puzzle_index,
                            puzzle_identifier=batch.puzzle_identifiers)


def with_ensembles(config: RunConfig, ensembles: list[dict]) -> RunConfig:
    return RunConfig.model_validate({**config.model_dump(exclude_unset=True), "ensembles": ensembles})


def exact_metrics(exact: dict[str, float]) -> dict:
    return {"checkpoints": {name: {"metrics": {"all": {"exact_accuracy": x}}} for name, x in exact.items()}}


# --------------------------------------------------------------------------- ARC


@pytest.mark.skipif(not ARC_TINY.is_dir(), reason=f"conformance vectors not found at {ARC_TINY} "
                                                   "(the shared checkout is absent)")
@pytest.mark.parametrize("part_rows, chunk_rows", [(None, 4096), (7, 3)], ids=["one-part", "small-parts"])
def test_arc_voting_of_stored_predictions_matches_the_reference_evaluator_however_the_parts_are_cut(
        tmp_path, monkeypatch, part_rows, chunk_rows):
    # Exact ties keep the first-voted candidate first, so a part or chunk read out of order
    # would change the ranking: small parts and chunks must give the reference's answer too.
    monkeypatch.setattr(votes, "CHUNK_ROWS", chunk_rows)
    reference = np.load(ARC_TINY / "expected" / "trm-fp32.npz")
    dataset = open_dataset(str(ARC_TINY / "data"))
    assert np.array_equal(dataset.examples("test", "all").inputs, reference["inputs"])  # same rows, same order
    run = str(tmp_path / "run")
    store_predictions(run, "trm-fp32", dataset, "all", np.load(ARC_TINY / "voting" / "preds_modified.npz")["pred"],
                      reference["q_halt_logits"], part_rows=part_rows)
    config = run_config([{"path": "unused"}], str(ARC_TINY / "data"), str(tmp_path),
                        voting={"enabled": True, "pass_k": [1, 2, 5, 10, 100, 1000]})

    arc = apply_votes(config, run, dataset, exact_metrics({"trm-fp32": 0.0}))["votes"]["arc"]["trm-fp32"]

    # The most candidates any test input has is 7: pass@10 covers them, 100 and 1000 would repeat it.
    assert arc["pass_at_k"] == {"trm": {"1": 0.375, "2": 0.375, "5": 0.375, "10": 0.625},
                                "hrm": {"1": 0.25, "2": 0.25, "5": 0.25, "10": 0.5}}
    assert (arc["puzzles"], arc["test_inputs"]) == (4, 5)
    submission = Path(run) / "votes" / "trm-fp32" / "submission.json"
    assert submission.read_text() == (ARC_TINY / "voting" / "submission_modified.json").read_text()


def test_arc_voting_needs_identifiers_and_test_puzzles(tmp_path):
    data = make_dataset(tmp_path / "data")
    config = run_config([{"path": "unused"}], data, str(tmp_path), voting={"enabled": True})
    with pytest.raises(InputError, match="voting.enabled: ARC voting needs the dataset's test_puzzles.json"):
        check_votes(config, open_dataset(data), ["a"])


# --------------------------------------------------------------------------- ensembles


def ensemble_members(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Three members on 100 examples, each wrong at one position where it errs:
    a wrong on 0..29; b wrong on 30..64 and 90..94; c wrong on 65..99, where on 90..94 b
    gives c's wrong token (so b and c outvote a there)."""
    truth = labels[:, WRONG_AT]
    wrong = {name: (truth + shift) % 10 + 1 for name, shift in (("a", 0), ("b", 1), ("c", 2))}  # never the label
    errors = {"a": range(0, 30), "b": range(30, 65), "c": range(65, 100)}
    preds = {}
    for name, rows in errors.items():
        pred = labels.copy()
        pred[list(rows), WRONG_AT] = wrong[name][list(rows)]
        preds[name] = pred
    preds["b"][90:95, WRONG_AT] = wrong["c"][90:95]
    return preds


def test_ensembles_vote_stored_predictions_and_are_tested_against_their_best_member(tmp_path):
    data = make_dataset(tmp_path / "data", {"all": 100})
    dataset = open_dataset(data)
    labels = dataset.examples("test", "all").labels
    run = str(tmp_path / "run")
    for name, pred in ensemble_members(labels).items():
        store_predictions(run, name, dataset, "all", pred, np.zeros(100))
    config = with_ensembles(run_config([{"path": "unused"}], data, str(tmp_path)),
                            [{"name": "top3", "top_k": 3, "method": "both"}])

    metrics = apply_votes(config, run, dataset, exact_metrics({"a": 0.70, "b": 0.60, "c": 0.65}))
    sequence, token = metrics["votes"]["ensembles"]

    # Every example has 14 valid tokens (positions 0 and 1 are ignored). The ensemble is wrong
    # only on 90..94, at one token each; a (the best member) is wrong on 0..29.
    expected = {"name": "top3", "members": ["a", "c", "b"], "exact_accuracy": 0.95,
                "token_accuracy": pytest.approx((95 + 5 * 13 / 14) / 100), "count": 100,
                "best_member": "a", "best_member_exact_accuracy": 0.70}
    assert sequence == {**expected, "level": "sequence", "mcnemar": sequence["mcnemar"]}
    assert token == {**expected, "level": "token", "mcnemar": token["mcnemar"]}
    # b = 30 (0..29: only the ensemble exact), c = 5 (90..94: only a exact); 35 discordant pairs
    # use the continuity-corrected chi-square: (|30 - 5| - 1)² / 35.
    statistic = 24**2 / 35
    assert sequence["mcnemar"] == token["mcnemar"] == {
        "statistic": pytest.approx(statistic), "p_value": pytest.approx(math.erfc(math.sqrt(statistic / 2))),
        "b": 30, "c": 5}
    assert sequence["mcnemar"]["p_value"] == pytest.approx(4.98e-5, rel=1e-2)  # chi2(1) survival at 16.457
    stored = pq.read_table(Path(run) / "votes" / "ensembles" / "top3-sequence.parquet")
    assert stored.column("exact").to_numpy().sum() == 95
    voted = column_matrix(stored, "pred")
    assert np.array_equal(voted[90:95, WRONG_AT], ensemble_members(labels)["c"][90:95, WRONG_AT])


def noisy_predictions(dataset: Dataset, set_name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The labels with about one token in ten replaced at random, and random halting logits:
    examples differ in exactness and token accuracy, and sequence votes tie in places."""
    labels = dataset.examples("test", set_name).labels
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(labels.shape) < 0.1, rng.integers(1, 4, labels.shape), labels)
    return pred, rng.normal(size=len(labels))


def store_checkpoints(run: str, dataset: Dataset, *, part_rows: int | None, copies: int) -> None:
    """Checkpoints a, b, c on every set, each with `copies` TTA copies: the same predictions
    whatever `part_rows` cuts them into."""
    for i, name in enumerate("abc"):
        for copy in range(copies + 1):
            for j, set_name in enumerate(dataset.sets("test")):
                pred, q_halt = noisy_predictions(dataset, set_name, seed=100 * i + 10 * copy + j)
                store_predictions(run, name, dataset, set_name, pred, q_halt, part_rows=part_rows, copy=copy)


def test_tta_and_ensemble_votes_of_small_parts_and_chunks_equal_those_of_one_part_per_set(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data")  # sets easy (40) and hard (24)
    dataset = open_dataset(data)
    config = with_ensembles(
        run_config([{"path": "unused"}], data, str(tmp_path),
                   tta={"enabled": True, "transform": "sudoku", "copies": 2, "level": "sequence"}),
        [{"name": "top3", "top_k": 3, "method": "both"}])
    metrics = exact_metrics({"a": 0.5, "b": 0.5, "c": 0.5})
    results = {}
    for part_rows, chunk_rows in ((None, 4096), (7, 3)):
        monkeypatch.setattr(votes, "CHUNK_ROWS", chunk_rows)
        run = str(tmp_path / f"run-{part_rows}")
        store_checkpoints(run, dataset, part_rows=part_rows, copies=2)
        voted = apply_votes(config, run, dataset, metrics)["votes"]
        stored = {level: pq.read_table(Path(run) / "votes" / "ensembles" / f"top3-{level}.parquet")
                  for level in ("sequence", "token")}
        results[part_rows] = voted, stored

    (whole, whole_stored), (parts, parts_stored) = results[None], results[7]
    # Exact integers throughout: token accuracy too is the same to the last bit.
    assert parts == whole
    assert all(parts_stored[level].equals(whole_stored[level]) for level in whole_stored)
    assert parts_stored["sequence"].num_rows == 64 and whole["ensembles"][0]["count"] == 64
    assert whole["tta"]["a"]["voted"] != whole["tta"]["a"]["plain"]


def test_an_ensemble_member_whose_part_covers_other_examples_is_refused_naming_it_and_the_part(tmp_path):
    data = make_dataset(tmp_path / "data", {"all": 40})
    dataset = open_dataset(data)
    run = str(tmp_path / "run")
    pred, q_halt = noisy_predictions(dataset, "all", seed=0)
    store_predictions(run, "a", dataset, "all", pred, q_halt)
    # b's part of the same name holds examples 0..29 only.
    write_predictions(run, prediction_key("b", Shard("test", "all", 0, 40)),
                      predictions_table(dataset, "all", 0, pred[:30], q_halt[:30]))
    config = with_ensembles(run_config([{"path": "unused"}], data, str(tmp_path)),
                            [{"name": "ab", "members": ["a", "b"]}])
    with pytest.raises(InputError, match=r"ensemble member 'b': part part-all-000000000.parquet covers other "
                                         r"examples than that of ensemble member 'a'"):
        apply_votes(config, run, dataset, exact_metrics({"a": 0.5, "b": 0.5}))


def test_a_tta_copy_missing_a_part_is_refused_naming_the_copy_and_the_part(tmp_path):
    data = make_dataset(tmp_path / "data")
    dataset = open_dataset(data)
    run = str(tmp_path / "run")
    store_checkpoints(run, dataset, part_rows=None, copies=2)
    (Path(run) / "tta" / "checkpoint=b" / "copy=002" / "part-hard-000000000.parquet").unlink()
    config = run_config([{"path": "unused"}], data, str(tmp_path),
                        tta={"enabled": True, "transform": "sudoku", "copies": 2})
    with pytest.raises(InputError, match=r"TTA copy 2 of checkpoint 'b': its prediction parts differ from those "
                                         r"of the plain predictions of checkpoint 'b' "
                                         r"\(missing: \['part-hard-000000000.parquet'\], extra: none\)"):
        apply_votes(config, run, dataset, exact_metrics({"a": 0.5, "b": 0.5, "c": 0.5}))


def test_an_ensemble_naming_an_unknown_checkpoint_is_refused_before_the_run(tmp_path):
    data = make_dataset(tmp_path / "data")
    config = with_ensembles(run_config([{"path": "unused"}], data, str(tmp_path)), [{"name": "e", "members": ["a", "zz"]}])
    with pytest.raises(InputError, match=r"ensembles.0.members: no checkpoint named 'zz'"):
        check_votes(config, open_dataset(data), ["a", "b"])


# --------------------------------------------------------------------------- test-time augmentation


def test_tta_is_refused_for_data_its_transform_does_not_fit(tmp_path):
    data = make_dataset(tmp_path / "data")  # seq_len 16 (a 4×4 board) but vocab 11, not a 4×4 Sudoku's 6
    sudoku = run_config([{"path": "unused"}], data, str(tmp_path), tta={"enabled": True, "transform": "sudoku"})
    with pytest.raises(InputError, match="tta.transform: sudoku needs a 4×4 Sudoku board"):
        check_votes(sudoku, open_dataset(data), ["a"])
    maze = run_config([{"path": "unused"}], data, str(tmp_path), tta={"enabled": True, "transform": "maze"})
    with pytest.raises(InputError, match="tta.copies: a maze has 7 non-identity dihedral transforms, got 8"):
        check_votes(maze, open_dataset(data), ["a"])
    doc = {**sudoku.model_dump(exclude_unset=True), "tta": {"enabled": True}}
    with pytest.raises(InputError, match="tta: tta.transform is required when tta.enabled"):
        validate_run_config(doc, "run.yaml")


def one_actor_run(checkpoints: list[dict], data: str, output: str, run_id: str, **sections) -> RunConfig:
    config = run_config(checkpoints, data, output, cluster={"actors": 1}, **sections)
    return RunConfig.model_validate({**config.model_dump(exclude_unset=True), "output": {"uri": output, "run_id": run_id}})


def run_quietly(config: RunConfig) -> tuple:
    prepared = prepare(config)
    return prepared, execute(prepared, RunProgress(stream=io.StringIO()))


@pytest.mark.ray
def test_tta_through_the_driver_keeps_the_plain_figures_and_votes_the_stored_copies(tmp_path, ray_runtime):
    data = str(tmp_path / "sudoku")
    dataset = write_demo_sudoku(data, train_size=10, test_size=48)
    make_checkpoint(tmp_path / "ckpt", vocab_size=6, seq_len=16, num_puzzle_identifiers=1, q_scale=0.5)
    checkpoints = [{"run": str(tmp_path / "ckpt"), "name": "tiny"}]
    output = str(tmp_path / "results")
    copies = 3
    tta = {"enabled": True, "transform": "sudoku", "copies": copies, "level": "token"}
    plain_prepared, _ = run_quietly(one_actor_run(checkpoints, data, output, "plain"))
    tta_prepared, manifest = run_quietly(one_actor_run(checkpoints, data, output, "tta", tta=tta))
    name = "tiny-step_10"
    plain_metrics = read_metrics(plain_prepared.run)
    metrics = read_metrics(tta_prepared.run)

    # The plain units are the same units (same ids), the copies are new ones: 3 shards × (1 + 3).
    plain_ids = {u.id for u in plain_prepared.units}
    assert plain_ids == {u.id for u in tta_prepared.units if u.tta is None}
    assert len({u.id for u in tta_prepared.units}) == manifest.counts["planned"] == 3 * (1 + copies)
    # The copies change no plain figure, and the plain TTA figure is the run's own.
    assert metrics["checkpoints"][name]["metrics"] == plain_metrics["checkpoints"][name]["metrics"]
    entry = metrics["votes"]["tta"][name]
    plain_all = plain_metrics["checkpoints"][name]["metrics"]["all"]
    assert entry["plain"]["exact_accuracy"] == plain_all["exact_accuracy"]
    assert entry["plain"]["token_accuracy"] == pytest.approx(plain_all["token_accuracy"], abs=1e-9)
    assert (entry["copies"], entry["level"], entry["plain"]["count"]) == (copies, "token", 48)

    # Each copy is stored in the original frame: what the engine predicts on the transformed
    # board, mapped back; its stored scores (made in the transformed frame) agree with that.
    batch = dataset.examples("test", "all")
    stored = [read_predictions(tta_prepared.run, name, copy) for copy in range(copies + 1)]
    preds = np.stack([column_matrix(t, "pred") for t in stored])
    copy_one = next(u.tta for u in tta_prepared.units if u.tta is not None and u.tta.index == 1)
    ckpt = load_checkpoint(tta_prepared.checkpoints[0].uri)
    engine = build_engine(ckpt, dataset.metadata("test"), "demo", batch_size=8)
    transform = copy_one.transform()
    direct = engine.run(transform.apply(batch.inputs), transform.apply(batch.labels), batch.puzzle_identifiers)
    assert np.array_equal(preds[1], transform.invert(direct.pred))
    assert not np.array_equal(preds[1], preds[0])
    for table, pred in zip(stored, preds):
        scored = score_tokens(pred, batch.labels, 0)
        assert np.array_equal(table.column("correct_tokens").to_numpy(), scored["correct_tokens"])

    # The voted figure is the token majority of the stored copies, plain copy first.
    voted = score_tokens(token_majority(preds), batch.labels, 0)
    assert entry["voted"]["exact_accuracy"] == voted["exact"].mean()
    assert entry["voted"]["token_accuracy"] == pytest.approx((voted["correct_tokens"] / 16).mean())
    assert (Path(tta_prepared.run) / "report.html").is_file()

    # A rerun resumes every unit, the copies included.
    _, rerun = run_quietly(one_actor_run(checkpoints, data, output, "tta", tta=tta))
    assert (rerun.counts["resumed"], rerun.counts["evaluated"]) == (3 * (1 + copies), 0)
