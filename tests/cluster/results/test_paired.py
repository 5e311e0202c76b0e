import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hrm.data.schema import Shard
from hrm.errors import InputError

from cluster.results.layout import iter_predictions, prediction_key, write_predictions
from cluster.results.metrics import read_metrics
from cluster.results.paired import CheckpointInRun, discordant, exact_flags, paired_comparisons

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint


def store(run: str, checkpoint: str, exact: dict[str, list[bool]], shard_size: int = 4) -> None:
    """Predictions of `checkpoint` with the given exact flags per set, in parts of `shard_size`."""
    for name, flags in exact.items():
        for start in range(0, len(flags), shard_size):
            stop = min(len(flags), start + shard_size)
            table = pa.table({"set": [name] * (stop - start), "example_id": list(range(start, stop)),
                              "exact": flags[start:stop]})
            write_predictions(run, prediction_key(checkpoint, Shard("test", name, start, stop)), table)


def binomial_two_sided(only_a: int, only_b: int) -> float:
    n = only_a + only_b
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n)


def test_flags_are_indexed_by_example_id_whatever_the_parts(tmp_path):
    run = str(tmp_path / "run")
    store(run, "a", {"easy": [True, False, True, True, False], "hard": [False, True]}, shard_size=2)
    flags = exact_flags(run, "a")
    assert flags["easy"].tolist() == [True, False, True, True, False] and flags["hard"].tolist() == [False, True]


def test_discordant_counts_and_the_exact_test_match_a_hand_computed_binomial_tail(tmp_path):
    run = str(tmp_path / "run")
    a = [True] * 3 + [False] * 6 + [True, False]  # right on 0-2 and 9
    b = [False] * 2 + [True] * 7 + [True, True]   # right on 2-10
    store(run, "a", {"all": a})
    store(run, "b", {"all": b}, shard_size=3)  # other shards: matched by example id, not position
    only_a, only_b = discordant(exact_flags(run, "a"), exact_flags(run, "b"), "a against b")
    assert (only_a, only_b) == (2, 7)
    result = paired_comparisons(run, [CheckpointInRun("a", "r", 1), CheckpointInRun("b", "r", 2)], best="b")
    assert result["a"]["vs_best"]["p_value"] == pytest.approx(binomial_two_sided(2, 7))  # 2·(1+9+36)/512
    assert result["a"]["vs_best"]["p_value"] == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert result["b"]["vs_previous"] == {"against": "a", "only_this": 7, "only_against": 2,
                                          "p_value": pytest.approx(0.1796875), "method": "exact"}
    assert result["b"]["vs_best"] is None and result["a"]["vs_previous"] is None
    assert result["a"]["indistinguishable_from_best"] and result["b"]["indistinguishable_from_best"]


def test_a_checkpoint_far_behind_the_best_is_distinguishable_and_steps_follow_each_training_run(tmp_path):
    run = str(tmp_path / "run")
    rng = np.random.default_rng(0)
    good = rng.random(400) < 0.9
    store(run, "x-step_2", {"all": good.tolist()}, shard_size=100)
    store(run, "x-step_1", {"all": (good & (rng.random(400) < 0.5)).tolist()}, shard_size=100)
    store(run, "y-step_1", {"all": good.tolist()}, shard_size=100)
    checkpoints = [CheckpointInRun("x-step_1", "x", 1), CheckpointInRun("x-step_2", "x", 2),
                   CheckpointInRun("y-step_1", "y", 1)]
    result = paired_comparisons(run, checkpoints, best="x-step_2")
    assert list(result) == ["x-step_1", "x-step_2", "y-step_1"]
    assert not result["x-step_1"]["indistinguishable_from_best"] and result["x-step_1"]["vs_best"]["p_value"] < 1e-6
    assert result["x-step_2"]["vs_previous"]["against"] == "x-step_1"
    assert result["y-step_1"]["vs_previous"] is None  # the first step of another training run
    assert result["y-step_1"]["vs_best"]["only_this"] == result["y-step_1"]["vs_best"]["only_against"] == 0


def test_checkpoints_evaluated_on_different_examples_are_not_compared(tmp_path):
    run = str(tmp_path / "run")
    store(run, "a", {"all": [True, False, True]})
    store(run, "b", {"all": [True, False]})
    with pytest.raises(InputError, match=r"a against b: not evaluated on the same examples"):
        discordant(exact_flags(run, "a"), exact_flags(run, "b"), "a against b")


def plain_and_ablated_run(tmp_path, **arch) -> str:
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "sweep", steps=(1,), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS,
                    **arch)
    config = run_config([{"run": str(tmp_path / "sweep")}], data, str(tmp_path / "out"))
    config = config.model_copy(update={"ablations": ["blank_puzzle_ids", "shuffled_puzzle_ids"]})
    return run_in_process(config).run


def preds(run: str, ablation: str | None = None) -> list:
    table = read_predictions_of(run, ablation)
    return table.sort_by([("set", "ascending"), ("example_id", "ascending")]).column("pred").to_pylist()


def read_predictions_of(run: str, ablation: str | None):
    return pa.concat_tables(iter_predictions(run, "sweep-step_1", columns=["set", "example_id", "pred"],
                                             ablation=ablation))


def test_ablated_identifiers_change_a_model_with_puzzle_embeddings_and_the_run_reports_it_paired(tmp_path):
    run = plain_and_ablated_run(tmp_path)
    assert preds(run, "blank_puzzle_ids") != preds(run) and preds(run, "shuffled_puzzle_ids") != preds(run)
    found = read_metrics(run)["ablations"]["sweep-step_1"]
    for kind in ("blank_puzzle_ids", "shuffled_puzzle_ids"):
        plain, ablated = exact_flags(run, "sweep-step_1"), exact_flags(run, "sweep-step_1", kind)
        assert found[kind]["examples"] == 64
        assert found[kind]["exact_ablated"] == sum(int(f.sum()) for f in ablated.values())
        assert (found[kind]["vs_plain"]["only_this"], found[kind]["vs_plain"]["only_against"]) == discordant(
            ablated, plain, kind)
    assert read_metrics(run)["checkpoints"]["sweep-step_1"]["metrics"]["all"]["count"] == 64  # plain units only
    assert "Puzzle-identifier ablation" in (Path(run) / "report.md").read_text()


def test_a_model_without_a_puzzle_embedding_cannot_be_changed_by_its_identifiers(tmp_path):
    run = plain_and_ablated_run(tmp_path, puzzle_emb_ndim=0)
    assert preds(run, "blank_puzzle_ids") == preds(run) == preds(run, "shuffled_puzzle_ids")
    for entry in read_metrics(run)["ablations"]["sweep-step_1"].values():
        assert entry["exact_plain"] == entry["exact_ablated"] and entry["vs_plain"]["p_value"] == 1.0
