import json

import numpy as np
import pytest

from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.eval.stats import mcnemar, wilson_interval
from hrm.eval.votes import (
    ArcVoteCollector,
    majority_vote,
    score_tokens,
    sequence_majority,
    submission_json,
    token_majority,
    top_k_members,
)
from hrm.puzzles.arc_grids import ArcAugmentation, ArcIdentifier, grid_to_tokens, parse_arc_identifier

from tests.factories import SHARED

ARC_TINY = SHARED / "conformance" / "trm-arc-tiny"

# --------------------------------------------------------------------------- a tiny ARC world

INPUT_A = [[1, 2], [3, 4]]
ANSWER_A = [[4, 3], [2, 1]]
INPUT_B = [[5, 5, 0]]
ANSWER_B = [[0, 5, 5]]
WRONG = [[7]]
AUG = ArcAugmentation(1, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9))  # rot90, colours 1 <-> 2
IDENTIFIERS = ["<blank>", "p", ArcIdentifier("p", AUG).format("trm"), "q", ArcIdentifier("q", AUG).format("hrm")]
TEST_PUZZLES = {
    "p": {"train": [], "test": [{"input": INPUT_A, "output": ANSWER_A}, {"input": INPUT_B, "output": ANSWER_B}]},
    "q": {"train": [], "test": [{"input": INPUT_B, "output": ANSWER_A}]},
}


def row(identifier: int, test_input, answer, q: float):
    """One example as the engine sees it: augmented input and prediction tokens."""
    aug = parse_arc_identifier(IDENTIFIERS[identifier]).augmentation
    return (
        grid_to_tokens(aug.apply(np.array(test_input))),
        grid_to_tokens(aug.apply(np.array(answer))),
        identifier,
        q,
    )


def vote(rows, test_puzzles=TEST_PUZZLES):
    inputs, preds, ids, qs = zip(*rows)
    collector = ArcVoteCollector(IDENTIFIERS)
    collector.add(np.stack(inputs), np.stack(preds), np.array(ids), np.array(qs, np.float32))
    return collector.result(test_puzzles)


def test_augmented_predictions_vote_for_the_answer_in_the_original_frame():
    result = vote([row(2, INPUT_A, ANSWER_A, 0.0), row(1, INPUT_A, WRONG, 5.0), row(2, INPUT_A, ANSWER_A, -5.0)])
    ranked = result.candidates["p"][0]
    assert ranked[0].grid.tolist() == ANSWER_A and ranked[0].votes == 2
    assert ranked[1].grid.tolist() == WRONG


def test_augmented_row_is_matched_to_its_test_input_by_its_inverted_input():
    result = vote([row(2, INPUT_B, ANSWER_B, 0.0), row(4, INPUT_B, ANSWER_A, 0.0)])
    assert [len(c) for c in result.candidates["p"]] == [0, 1]
    assert result.candidates["p"][1][0].grid.tolist() == ANSWER_B
    assert result.candidates["q"][0][0].grid.tolist() == ANSWER_A  # the HRM-style name works too


def test_equal_vote_counts_rank_by_mean_halting_confidence():
    result = vote([row(1, INPUT_A, WRONG, 0.0), row(1, INPUT_A, WRONG, 0.0), row(1, INPUT_A, ANSWER_A, 3.0), row(2, INPUT_A, ANSWER_A, -2.0)])
    ranked = result.candidates["p"][0]
    assert ranked[0].grid.tolist() == ANSWER_A  # mean(sigmoid 3, sigmoid -2) ~ 0.54 > 0.5
    assert ranked[0].mean_confidence == pytest.approx((1 / (1 + np.exp(-3)) + 1 / (1 + np.exp(2))) / 2)


def test_more_votes_beat_higher_confidence():
    result = vote([row(1, INPUT_A, WRONG, -9.0), row(1, INPUT_A, WRONG, -9.0), row(1, INPUT_A, ANSWER_A, 9.0)])
    assert result.candidates["p"][0][0].grid.tolist() == WRONG


def test_exact_ties_keep_the_first_voted_candidate_first():
    result = vote([row(1, INPUT_A, WRONG, 1.0), row(1, INPUT_A, ANSWER_A, 1.0)])
    assert [c.grid.tolist() for c in result.candidates["p"][0]] == [WRONG, ANSWER_A]


def test_pass_at_k_under_the_trm_and_hrm_rules():
    # p: test 0 right at rank 2, test 1 wrong; q: right at rank 1.
    result = vote([row(1, INPUT_A, WRONG, 1.0), row(1, INPUT_A, ANSWER_A, 0.0), row(1, INPUT_B, WRONG, 0.0), row(3, INPUT_B, ANSWER_A, 0.0)])
    trm, hrm = result.pass_at_k["trm"], result.pass_at_k["hrm"]
    assert trm[1] == pytest.approx((0 + 1) / 2) and trm[2] == pytest.approx((0.5 + 1) / 2)
    assert hrm[1] == 0.5 and hrm[2] == 0.5  # p never has both tests right
    # intervals over the 2 puzzles: Wilson for the HRM rule's 1 of 2, the normal one of the
    # mean of the TRM rule's per-puzzle fractions (pass@2: 0.5 and 1)
    assert result.intervals["hrm"][2] == pytest.approx(wilson_interval(1, 2))
    half = 1.959963984540054 * np.std([0.5, 1.0], ddof=1) / np.sqrt(2)
    assert result.intervals["trm"][2] == pytest.approx((max(0.0, 0.75 - half), min(1.0, 0.75 + half)))


def test_hrm_rule_scores_a_puzzle_once_all_its_tests_pass():
    result = vote([row(1, INPUT_A, ANSWER_A, 0.0), row(1, INPUT_B, ANSWER_B, 0.0)])
    assert result.pass_at_k["hrm"][1] == 0.5 and result.pass_at_k["trm"][1] == 0.5


def test_submission_pads_with_the_first_attempt_and_skips_inputs_without_votes():
    result = vote([row(1, INPUT_B, ANSWER_B, 0.0), row(3, INPUT_B, WRONG, 0.0), row(3, INPUT_B, ANSWER_A, 2.0)])
    assert result.submission == {
        "p": [{"attempt_1": ANSWER_B, "attempt_2": ANSWER_B}],
        "q": [{"attempt_1": ANSWER_A, "attempt_2": WRONG}],
    }
    assert json.loads(submission_json(result.submission)) == result.submission


def test_padding_rows_are_ignored_and_stray_examples_are_counted():
    result = vote([row(1, INPUT_A, ANSWER_A, 0.0), row(0, INPUT_A, WRONG, 9.0), row(3, INPUT_A, ANSWER_A, 0.0)])
    assert [c.votes for c in result.candidates["p"][0]] == [1]
    assert result.unmatched_examples == 1  # q has no test input INPUT_A


def test_collectors_merged_in_row_order_equal_one_collector():
    rows = [row(1, INPUT_A, WRONG, 1.0), row(2, INPUT_A, ANSWER_A, 1.0), row(3, INPUT_B, ANSWER_A, 0.5)]
    inputs, preds, ids, qs = (np.array(x) for x in zip(*rows))
    whole = ArcVoteCollector(IDENTIFIERS)
    whole.add(inputs, preds, ids, qs)
    first, second = ArcVoteCollector(IDENTIFIERS), ArcVoteCollector(IDENTIFIERS)
    first.add(inputs[:1], preds[:1], ids[:1], qs[:1])
    second.add(inputs[1:], preds[1:], ids[1:], qs[1:])
    merged = first.merge(second).result(TEST_PUZZLES)
    expected = whole.result(TEST_PUZZLES)
    assert merged.submission == expected.submission and merged.pass_at_k == expected.pass_at_k


def test_an_identifier_outside_identifiers_json_is_an_input_error():
    with pytest.raises(InputError, match="identifiers.json.*out of range"):
        vote([row(1, INPUT_A, ANSWER_A, 0.0)[:2] + (99, 0.0)])


def test_a_malformed_test_grid_is_an_input_error_naming_the_puzzle():
    bad = {"p": {"test": [{"input": [[1, 2], [3]], "output": ANSWER_A}]}}
    with pytest.raises(InputError, match="test_puzzles.json.*'p' test\\[0\\].input"):
        vote([row(1, INPUT_A, ANSWER_A, 0.0)], bad)


@pytest.mark.skipif(not ARC_TINY.is_dir(), reason="../shared/conformance/trm-arc-tiny is absent")
@pytest.mark.parametrize(
    "preds_file, expected_pass, submission_file",
    [
        ("voting/preds_modified.npz", [0.375, 0.375, 0.375, 0.625, 0.625, 0.625], "voting/submission_modified.json"),
        (None, [0.0] * 6, "expected/trm-fp32.submission.json"),
    ],
)
def test_conformance_voting_matches_the_reference_evaluator(preds_file, expected_pass, submission_file):
    reference = np.load(ARC_TINY / "expected" / "trm-fp32.npz")
    preds = reference["pred"] if preds_file is None else np.load(ARC_TINY / preds_file)["pred"]
    dataset = open_dataset(ARC_TINY / "data")
    collector = ArcVoteCollector(dataset.identifiers)
    collector.add(reference["inputs"], preds, reference["puzzle_identifiers"], reference["q_halt_logits"])
    result = collector.result(dataset.test_puzzles)
    assert [result.pass_at_k["trm"][k] for k in (1, 2, 5, 10, 100, 1000)] == expected_pass
    assert submission_json(result.submission) == (ARC_TINY / submission_file).read_text()  # byte for byte
    assert result.unmatched_examples == 0


# --------------------------------------------------------------------------- majorities


def test_token_majority_takes_the_most_common_token_per_position():
    votes = np.array([[[1, 2, 3]], [[1, 5, 3]], [[4, 5, 3]]])
    assert token_majority(votes).tolist() == [[1, 5, 3]]


def test_token_majority_ties_go_to_the_earliest_voter():
    votes = np.array([[[7, 1]], [[2, 3]], [[2, 1]], [[7, 3]]])
    assert token_majority(votes).tolist() == [[7, 1]]
    assert token_majority(votes[[1, 0, 2, 3]]).tolist() == [[2, 3]]


def test_sequence_majority_pools_identical_sequences():
    votes = np.array([[[1, 2]], [[1, 3]], [[1, 3]]])
    result = sequence_majority(votes)
    assert result.pred.tolist() == [[1, 3]] and result.support.tolist() == [2] and result.winner.tolist() == [1]


def test_sequence_majority_ties_break_by_mean_halting_confidence_then_earliest_voter():
    votes = np.array([[[1]], [[2]], [[2]], [[1]]])
    q = np.array([[0.0], [1.0], [-0.5], [0.2]], dtype=np.float32)  # mean sigmoid: seq 1 0.525, seq 2 0.554
    assert sequence_majority(votes, q).pred.tolist() == [[2]]
    assert sequence_majority(votes).pred.tolist() == [[1]]  # no q: earliest voter


def test_sequence_and_token_majorities_can_disagree():
    votes = np.array([[[1, 2]], [[2, 1]], [[2, 2]]])
    assert token_majority(votes).tolist() == [[2, 2]] and sequence_majority(votes).pred.tolist() == [[1, 2]]


# --------------------------------------------------------------------------- ensembles


def test_majority_vote_of_members_breaks_sequence_ties_by_mean_q_and_token_ties_by_the_first_member():
    preds = np.array([[[1], [2], [3]], [[1], [5], [4]]])  # [members, examples, tokens]
    q = np.array([[0.0, -1.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    assert majority_vote(preds, "sequence", q).tolist() == [[1], [5], [3]]  # 1: m2 more confident; 2: exact tie -> m1
    assert majority_vote(preds, "token", q).tolist() == [[1], [2], [3]]


def test_top_k_members_by_exact_accuracy_keeps_given_order_on_ties():
    accuracy = {"step_100": 0.5, "step_200": 0.7, "step_300": 0.5, "step_400": 0.6}
    assert top_k_members(accuracy, 3) == ["step_200", "step_400", "step_100"]
    assert top_k_members(accuracy, 10) == ["step_200", "step_400", "step_100", "step_300"]


def test_voted_predictions_are_scored_like_plain_ones():
    scores = score_tokens(np.array([[1, 2, 9], [1, 0, 3]]), np.array([[1, 2, 0], [1, 2, 3]]), ignore_label_id=0)
    assert scores["valid_tokens"].tolist() == [2, 3]
    assert scores["correct_tokens"].tolist() == [2, 2]
    assert scores["exact"].tolist() == [True, False]


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_binomial_with_few_discordant_pairs():
    result = mcnemar(1, 9)
    assert (result.only_a, result.only_b, result.method) == (1, 9, "exact")
    assert result.p_value == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar(9, 1).p_value == result.p_value


def test_mcnemar_chi_square_with_many_discordant_pairs():
    result = mcnemar(10, 30)
    assert result.method == "chi2" and result.statistic == pytest.approx(19**2 / 40)
    assert result.p_value == pytest.approx(0.0026631, abs=1e-6)


def test_mcnemar_of_identical_predictions_is_not_significant():
    assert mcnemar(0, 0).p_value == 1.0


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar(-1, 3)
