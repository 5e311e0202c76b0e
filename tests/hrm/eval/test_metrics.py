import itertools
import json

import numpy as np
import pytest

from hrm.eval.metrics import LOGIT_BINS, HaltCalibration, MetricStats, StatsTable
from hrm.eval.stats import auroc, sigmoid, wilson_interval

from tests.factories import SHARED


def batch(**overrides):
    """Four examples: 3/4, 2/2 (exact), 0/0 (no valid label), 1/3 tokens correct."""
    data = {
        "valid_tokens": np.array([4, 2, 0, 3]),
        "correct_tokens": np.array([3, 2, 0, 1]),
        "exact": np.array([False, True, True, False]),
        "q_halt_logit": np.array([-1.0, 2.0, 5.0, 0.0], dtype=np.float32),
        "q_continue_logit": np.zeros(4, dtype=np.float32),
        "steps": np.array([2, 3, 1, 3]),
        "lm_loss": np.array([0.5, 0.25, 9.0, 1.0]),
        "exact_per_step": np.array([[False, False, False], [False, True, True], [True, True, True], [False, False, False]]),
    }
    data.update(overrides)
    return data


def random_batch(rng, n, steps=4):
    valid = rng.integers(0, 30, n)
    correct = np.minimum(valid, rng.integers(0, 31, n))
    correct = np.where(rng.random(n) < 0.3, valid, correct)
    exact = correct == valid
    return {
        "valid_tokens": valid,
        "correct_tokens": correct,
        "exact": exact,
        "q_halt_logit": rng.normal(0, 3, n).astype(np.float32).round(1),
        "steps": rng.integers(1, steps + 1, n),
        "lm_loss": rng.exponential(1.0, n),
        "exact_per_step": rng.random((n, steps)) < 0.5,
        "set": rng.choice(["easy", "hard"], n),
        "tier": rng.choice(["1", "2", "3"], n),
    }


def slice_batch(data, rows):
    return {k: np.asarray(v)[rows] for k, v in data.items()}


def test_hand_computed_small_batch():
    figures = MetricStats().update(**batch()).finalize()
    assert figures["count"] == 3  # the example with no valid label counts nowhere
    assert figures["token_accuracy"] == pytest.approx((3 / 4 + 1 + 1 / 3) / 3, abs=1e-9)
    assert figures["exact_accuracy"] == pytest.approx(1 / 3)
    # (q>=0)==exact: (-1,F) right, (2,T) right, (0,F) wrong
    assert figures["q_halt_accuracy"] == pytest.approx(2 / 3)
    assert figures["mean_steps"] == pytest.approx(8 / 3)
    assert figures["steps_histogram"] == {2: 1, 3: 2}
    assert figures["lm_loss"] == pytest.approx(1.75 / 3, abs=1e-9)
    assert figures["exact_accuracy_by_step"] == pytest.approx([0, 1 / 3, 1 / 3])


def test_token_accuracy_has_the_normal_interval_of_a_mean_over_examples():
    figures = MetricStats().update(**batch()).finalize()
    accuracies = np.array([3 / 4, 1, 1 / 3])  # the counted examples' correct/valid
    half = 1.959963984540054 * accuracies.std(ddof=1) / np.sqrt(3)
    assert figures["token_ci_low"] == pytest.approx(max(0.0, accuracies.mean() - half), abs=1e-8)
    assert figures["token_ci_high"] == pytest.approx(min(1.0, accuracies.mean() + half), abs=1e-8)
    one = MetricStats().update(**slice_batch(batch(), [0])).finalize()
    assert (one["token_ci_low"], one["token_ci_high"]) == (None, None)  # no spread to measure from one example


def test_token_accuracy_is_a_mean_of_ratios_not_a_ratio_of_sums():
    figures = MetricStats().update(**batch()).finalize()
    assert figures["token_accuracy"] != pytest.approx(6 / 9)


def test_no_counted_examples_give_none_figures_not_nan():
    figures = MetricStats().update(**batch(valid_tokens=np.zeros(4, dtype=int))).finalize()
    assert figures["count"] == 0
    assert figures["exact_accuracy"] is None and figures["token_accuracy"] is None
    assert figures["exact_ci_low"] is None and figures["q_halt_auroc"] is None
    json.dumps(figures, allow_nan=False)


def test_merge_of_two_halves_equals_the_whole_bit_for_bit_in_either_order():
    data = random_batch(np.random.default_rng(0), 500)
    del data["set"], data["tier"]
    whole = MetricStats().update(**data)
    first = MetricStats().update(**slice_batch(data, slice(0, 217)))
    second = MetricStats().update(**slice_batch(data, slice(217, None)))
    ab = MetricStats().merge(first).merge(second)
    ba = MetricStats().merge(second).merge(first)
    assert ab.to_dict() == whole.to_dict() == ba.to_dict()
    assert ab.finalize() == whole.finalize() == ba.finalize()


def test_table_of_many_shards_merged_in_any_order_is_identical_to_one_pass():
    data = random_batch(np.random.default_rng(1), 400)
    one_pass = StatsTable().update(**data)
    shards = [StatsTable().update(**slice_batch(data, slice(i, i + 50))) for i in range(0, 400, 50)]
    expected = json.dumps(one_pass.finalize(), sort_keys=True)
    for order in itertools.islice(itertools.permutations(shards), 0, None, 5000):
        merged = StatsTable()
        for shard in order:
            merged.merge(shard)
        assert json.dumps(merged.finalize(), sort_keys=True) == expected
    assert merged.to_dict() == one_pass.to_dict()


def test_statistics_survive_a_json_round_trip_exactly():
    data = random_batch(np.random.default_rng(2), 300)
    table = StatsTable().update(**data)
    restored = StatsTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert restored.to_dict() == table.to_dict()
    assert restored.finalize() == table.finalize()


def test_table_reports_total_per_set_and_per_tier():
    data = random_batch(np.random.default_rng(3), 200)
    result = StatsTable().update(**data).finalize()
    assert result["all"]["count"] == int((data["valid_tokens"] > 0).sum())
    assert sorted(result["sets"]) == ["easy", "hard"]
    assert sum(f["count"] for f in result["sets"].values()) == result["all"]["count"]
    easy_rows = (data["set"] == "easy") & (data["valid_tokens"] > 0)
    assert result["sets"]["easy"]["exact_accuracy"] == pytest.approx(data["exact"][easy_rows].mean())
    assert sorted(result["tiers"]["hard"]) == ["1", "2", "3"]
    assert sum(f["count"] for f in result["tiers"]["hard"].values()) == result["sets"]["hard"]["count"]


def test_table_without_tiers_reports_no_tiers_and_accepts_one_set_name_per_batch():
    result = StatsTable().update(set="all", **batch()).finalize()
    assert result["tiers"] == {}
    assert result["sets"]["all"] == result["all"]


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0


def test_finalize_reports_the_wilson_interval_of_exact_accuracy():
    figures = MetricStats().update(**batch()).finalize()
    assert (figures["exact_ci_low"], figures["exact_ci_high"]) == wilson_interval(1, 3)


def brute_force_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_equals_a_brute_force_pairwise_count_with_ties():
    rng = np.random.default_rng(4)
    scores = rng.integers(-3, 4, 200).astype(np.float32)  # many ties
    labels = rng.random(200) < sigmoid(scores)
    stats = MetricStats().update(
        valid_tokens=np.ones(200, dtype=int),
        correct_tokens=labels.astype(int),
        exact=labels,
        q_halt_logit=scores,
        steps=np.ones(200, dtype=int),
        lm_loss=np.zeros(200),
    )
    assert stats.finalize()["q_halt_auroc"] == pytest.approx(brute_force_auroc(scores, labels), abs=1e-15)


def test_auroc_is_undefined_with_one_class():
    assert auroc([3, 1], [0, 0]) is None
    assert auroc([0, 1], [1, 0]) == (1.0, 0.0)


def halting_of(logits, exact) -> HaltCalibration:
    sketch = HaltCalibration()
    sketch.update(np.asarray(logits, dtype=np.float32), np.asarray(exact, dtype=bool))
    return sketch


def test_auroc_ranks_saturated_logits_that_sigmoid_would_tie():
    assert halting_of([40.0, 39.0], [True, False]).auroc() == (1.0, 0.0)


def test_the_sketched_auroc_lies_within_its_stated_bound_of_the_exact_value():
    rng = np.random.default_rng(7)
    logits = (rng.normal(0, 0.05, 3000)).astype(np.float32)  # crowded: many pairs share a 1/64 bin
    labels = rng.random(3000) < sigmoid(40 * logits)
    value, bound = halting_of(logits, labels).auroc()
    pos, neg = logits[labels], logits[~labels]
    exact = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert value != exact  # the binning did move it here ...
    assert abs(value - exact) <= bound  # ... by no more than the bound says
    assert bound < 0.1


def test_the_halting_sketch_has_a_fixed_size_whatever_the_number_of_examples():
    rng = np.random.default_rng(8)
    sketch = halting_of(rng.normal(0, 1000, 200_000), rng.random(200_000) < 0.5)
    assert len(sketch.bins) <= LOGIT_BINS and len(sketch.reliability_count) == 10
    assert int(sketch.exact.sum() + sketch.inexact.sum()) == 200_000


def test_halting_sketches_merge_exactly_in_any_order_and_round_trip_through_json():
    rng = np.random.default_rng(9)
    logits, labels = rng.normal(0, 3, 900).astype(np.float32), rng.random(900) < 0.4
    whole = halting_of(logits, labels)
    parts = [halting_of(logits[i:i + 100], labels[i:i + 100]) for i in range(0, 900, 100)]
    merged = HaltCalibration()
    for part in (parts[i] for i in rng.permutation(len(parts))):
        merged.merge(HaltCalibration.from_dict(json.loads(json.dumps(part.to_dict()))))
    assert merged.to_dict() == whole.to_dict()
    assert merged.auroc() == whole.auroc() and merged.reliability() == whole.reliability()


def test_ece_and_reliability_bins_by_hand():
    # sigmoid(0) = 0.5 and sigmoid(0.3) = 0.574 -> bin 5 (one exact); sigmoid(log 9) = 0.9 -> bin 9 (exact).
    logits = np.array([0.0, 0.3, np.log(9.0)], dtype=np.float32)
    exact = np.array([True, False, True])
    stats = MetricStats().update(
        valid_tokens=np.ones(3, dtype=int),
        correct_tokens=exact.astype(int),
        exact=exact,
        q_halt_logit=logits,
        steps=np.ones(3, dtype=int),
        lm_loss=np.zeros(3),
    )
    figures = stats.finalize()
    bins = figures["q_halt_reliability"]
    mid = 1 / (1 + np.exp(-np.float64(np.float32(0.3))))
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 1]
    assert bins[5]["mean_confidence"] == pytest.approx((0.5 + mid) / 2) and bins[5]["accuracy"] == 0.5
    assert bins[9]["mean_confidence"] == pytest.approx(0.9) and bins[9]["accuracy"] == 1.0
    assert (bins[5]["low"], bins[5]["high"]) == (0.5, 0.6) and bins[0]["mean_confidence"] is None
    expected_ece = 2 / 3 * abs(0.5 - (0.5 + mid) / 2) + 1 / 3 * abs(1.0 - 0.9)
    assert figures["q_halt_ece"] == pytest.approx(expected_ece, abs=1e-7)


def test_per_step_flags_must_be_supplied_for_every_batch_or_none():
    stats = MetricStats().update(**batch())
    without = {k: v for k, v in batch().items() if k != "exact_per_step"}
    with pytest.raises(ValueError, match="exact_per_step missing"):
        stats.update(**without)
    assert MetricStats().update(**without).finalize()["exact_accuracy_by_step"] is None
    with pytest.raises(ValueError, match="with and without"):
        MetricStats().update(**batch()).merge(MetricStats().update(**without))


def test_statistics_without_per_step_flags_merge_as_the_adaptive_protocol_produces_them():
    without = {k: v for k, v in batch().items() if k != "exact_per_step"}
    merged = MetricStats().update(**without).merge(MetricStats().update(**without))
    assert merged.count == 6 and merged.exact_by_step is None
    assert merged.finalize()["exact_accuracy_by_step"] is None


def test_mismatched_array_lengths_are_refused():
    with pytest.raises(ValueError, match="exact has shape"):
        MetricStats().update(**batch(exact=np.array([True])))


def test_non_finite_loss_is_refused():
    with pytest.raises(ValueError, match="finite"):
        MetricStats().update(**batch(lm_loss=np.array([np.nan, 0, 0, 0])))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (conformance vectors) is absent")
def test_reference_accuracy_figures_come_out_of_the_conformance_predictions():
    vector = SHARED / "conformance" / "hrm-sudoku-tiny" / "expected"
    npz = np.load(vector / "small-fp32.npz")
    reference = json.loads((vector / "small-fp32.metrics.json").read_text())["metrics"]["all"]
    labels, pred, q_halt = npz["labels"], npz["pred"], npz["q_halt_logits"]
    valid = labels != 0  # ignore_label_id of the reference Sudoku builder
    correct = (valid & (pred == labels)).sum(1)
    figures = MetricStats().update(
        valid_tokens=valid.sum(1),
        correct_tokens=correct,
        exact=correct == valid.sum(1),
        q_halt_logit=q_halt,
        steps=np.full(len(labels), 8),
        lm_loss=np.zeros(len(labels)),
    ).finalize()
    assert figures["token_accuracy"] == pytest.approx(reference["accuracy"], abs=1e-5)
    assert figures["exact_accuracy"] == pytest.approx(reference["exact_accuracy"], abs=1e-5)
    assert figures["q_halt_accuracy"] == pytest.approx(reference["q_halt_accuracy"], abs=1e-5)
    assert figures["mean_steps"] == reference["steps"]
