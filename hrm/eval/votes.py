"""Votes over predictions: ARC augmentation voting, and the majorities that test-time
augmentation and checkpoint ensembles use. Nothing here runs a model.

ARC voting follows TRM's `evaluators/arc.py` (HRM's `arc_eval.ipynb` does the same up to
the final scoring rule):

* each example's input and prediction are cropped (`hrm.puzzles.arc_grids.crop_tokens`) and mapped
  back with the inverse of the augmentation named by its puzzle identifier;
* the example votes for (original puzzle, hash of its un-augmented input): that is how an
  augmented row is matched to the test input it came from;
* candidates of a test input are ranked by vote count, then by the mean of sigmoid(q_halt)
  (float64) over their votes, both descending; exact ties keep the order in which the
  candidates were first voted for (the reference sorts a dict in insertion order with a
  stable sort);
* pass@k, TRM rule: per puzzle, the fraction of its test inputs whose label is among the
  top k, summed and divided by the number of puzzles in test_puzzles.json.
  HRM rule: a puzzle scores 1 only if every test input passes.
* submission.json: per puzzle, per test input that received votes, attempt_1..K from the
  top K candidates, padded with the first. A test input with no votes gets no entry, as
  in the reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hrm.data.schema import TEST_PUZZLES_FILE
from hrm.errors import InputError
from hrm.eval.stats import mean_interval, sigmoid, wilson_interval
from hrm.puzzles.arc_grids import ArcIdentifier, crop_tokens, grid_hash, parse_arc_identifier, parse_grid

PASS_KS = (1, 2, 5, 10, 100, 1000)
SUBMISSION_ATTEMPTS = 2

VoteLevel = Literal["token", "sequence"]


def halt_confidence(q_halt_logit: np.ndarray) -> np.ndarray:
    """sigmoid(q_halt) in float64; a NaN would make the candidate ranking meaningless."""
    logits = np.asarray(q_halt_logit)
    if not np.all(np.isfinite(logits)):
        raise ValueError("q_halt_logit must be finite to rank candidates")
    return sigmoid(logits)


def score_tokens(pred: np.ndarray, labels: np.ndarray, ignore_label_id: int | None) -> dict[str, np.ndarray]:
    """valid_tokens, correct_tokens and exact per example, for voted predictions."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    valid = np.ones(labels.shape, dtype=bool) if ignore_label_id is None else labels != ignore_label_id
    correct = valid & (pred == labels)
    valid_tokens = valid.sum(-1)
    correct_tokens = correct.sum(-1)
    return {"valid_tokens": valid_tokens, "correct_tokens": correct_tokens, "exact": correct_tokens == valid_tokens}


# =========================================================================== ARC voting


@dataclass(frozen=True, eq=False)
class Candidate:
    """One distinct answer for a test input, in the original (un-augmented) frame."""

    hash: str  # grid_hash(grid)
    grid: np.ndarray
    votes: int
    mean_confidence: float  # mean sigmoid(q_halt) over its votes


@dataclass
class ArcVoteResult:
    pass_at_k: dict[str, dict[int, float]]  # rule ("trm" | "hrm") -> k -> score
    # rule -> k -> 95% interval over puzzles (the puzzles are the independent units): Wilson for
    # the HRM rule's pass/fail per puzzle, the normal interval of a mean for the TRM rule's fractions
    intervals: dict[str, dict[int, tuple[float, float] | None]]
    submission: dict[str, list[dict[str, list[list[int]]]]]
    candidates: dict[str, list[list[Candidate]]]  # puzzle -> test input -> ranked candidates
    unmatched_examples: int  # votes for no test input of test_puzzles.json


def submission_json(submission: Mapping[str, Any]) -> str:
    """Serialise a submission as the reference does (`json.dump` defaults)."""
    return json.dumps(submission)


class ArcVoteCollector:
    """Accumulates votes batch by batch, so a whole aug-1000 split never sits in memory.

    Feed rows in dataset order: it decides which of exactly-tied candidates comes first.
    """

    def __init__(self, identifiers: Sequence[str], blank_identifier_id: int = 0) -> None:
        self._identifiers = list(identifiers)
        self._blank = blank_identifier_id
        self._parsed: dict[int, ArcIdentifier] = {}
        self._grids: dict[str, np.ndarray] = {}
        # puzzle name -> input hash -> [(prediction hash, confidence)], in row order
        self._votes: dict[str, dict[str, list[tuple[str, float]]]] = {}

    def add(self, inputs: np.ndarray, preds: np.ndarray, puzzle_identifiers: np.ndarray, q_halt_logits: np.ndarray) -> None:
        """One batch: token inputs and predictions [N, 900], identifiers [N], q_halt [N]."""
        confidences = halt_confidence(q_halt_logits)
        for identifier, tokens_in, tokens_out, confidence in zip(
            np.asarray(puzzle_identifiers).tolist(), inputs, preds, confidences.tolist()
        ):
            if identifier == self._blank:
                continue  # padding row
            parsed = self._identifier(identifier)
            undo = parsed.augmentation.invert
            input_hash = grid_hash(undo(crop_tokens(tokens_in)))
            answer = undo(crop_tokens(tokens_out))
            answer_hash = grid_hash(answer)
            self._grids.setdefault(answer_hash, answer)
            self._votes.setdefault(parsed.name, {}).setdefault(input_hash, []).append((answer_hash, confidence))

    def merge(self, other: ArcVoteCollector) -> ArcVoteCollector:
        """Append another collector's votes after ours (its rows follow ours in order)."""
        self._grids.update({h: g for h, g in other._grids.items() if h not in self._grids})
        for name, by_input in other._votes.items():
            mine = self._votes.setdefault(name, {})
            for input_hash, votes in by_input.items():
                mine.setdefault(input_hash, []).extend(votes)
        return self

    def _identifier(self, identifier: int) -> ArcIdentifier:
        if identifier not in self._parsed:
            if not 0 <= identifier < len(self._identifiers):
                raise InputError(
                    f"identifiers.json: puzzle identifier {identifier} is out of range "
                    f"(the list has {len(self._identifiers)} names)"
                )
            self._parsed[identifier] = parse_arc_identifier(self._identifiers[identifier])
        return self._parsed[identifier]

    def _ranked(self, votes: list[tuple[str, float]]) -> list[Candidate]:
        counts: dict[str, int] = {}
        confidence_sums: dict[str, float] = {}
        for answer_hash, confidence in votes:  # row order, like the reference's float sum
            counts[answer_hash] = counts.get(answer_hash, 0) + 1
            confidence_sums[answer_hash] = confidence_sums.get(answer_hash, 0.0) + confidence
        means = {h: confidence_sums[h] / counts[h] for h in counts}
        order = sorted(counts, key=lambda h: (-counts[h], -means[h]))  # stable: first-voted first
        return [Candidate(h, self._grids[h], counts[h], means[h]) for h in order]

    def result(
        self,
        test_puzzles: Mapping[str, Any],
        pass_ks: Sequence[int] = PASS_KS,
        attempts: int = SUBMISSION_ATTEMPTS,
    ) -> ArcVoteResult:
        trm_total = dict.fromkeys(pass_ks, 0.0)
        trm_squares = dict.fromkeys(pass_ks, 0.0)
        hrm_total = dict.fromkeys(pass_ks, 0)
        submission: dict[str, list[dict[str, list[list[int]]]]] = {}
        candidates: dict[str, list[list[Candidate]]] = {}
        matched = 0
        for name, puzzle in test_puzzles.items():
            submission[name], candidates[name] = [], []
            passed = dict.fromkeys(pass_ks, 0)
            for index, pair in enumerate(puzzle["test"]):
                where = f"{TEST_PUZZLES_FILE}: puzzle {name!r} test[{index}]"
                input_hash = grid_hash(parse_grid(pair["input"], f"{where}.input"))
                label_hash = grid_hash(parse_grid(pair["output"], f"{where}.output"))
                votes = self._votes.get(name, {}).get(input_hash, [])
                matched += len(votes)
                ranked = self._ranked(votes)
                candidates[name].append(ranked)
                if not ranked:
                    continue  # the reference writes no attempts for an input without votes
                for k in pass_ks:
                    passed[k] += any(c.hash == label_hash for c in ranked[:k])
                top = [c.grid for c in ranked[:attempts]]
                top += [top[0]] * (attempts - len(top))
                submission[name].append({f"attempt_{i + 1}": grid.tolist() for i, grid in enumerate(top)})
            for k in pass_ks:
                trm_total[k] += passed[k] / len(puzzle["test"])
                trm_squares[k] += (passed[k] / len(puzzle["test"])) ** 2
                hrm_total[k] += passed[k] == len(puzzle["test"])
        puzzles = len(test_puzzles)
        return ArcVoteResult(
            pass_at_k={
                "trm": {k: trm_total[k] / puzzles for k in pass_ks},
                "hrm": {k: hrm_total[k] / puzzles for k in pass_ks},
            },
            intervals={
                "trm": {k: mean_interval(trm_total[k], trm_squares[k], puzzles) for k in pass_ks},
                "hrm": {k: wilson_interval(hrm_total[k], puzzles) if puzzles else None for k in pass_ks},
            },
            submission=submission,
            candidates=candidates,
            unmatched_examples=sum(len(v) for by_input in self._votes.values() for v in by_input.values()) - matched,
        )


# =========================================================================== majorities


def token_majority(votes: np.ndarray) -> np.ndarray:
    """Per-token majority over voters: votes [V, N, L] -> [N, L].

    A tie goes to the tied token that the earliest voter predicted (voter order is
    member order / copy order, so put the strongest member or the identity copy first).
    Voters are scanned in order and only a strictly larger count replaces the current
    best, which is what makes the earliest voter win ties. Memory stays O(N * L).
    """
    votes = np.asarray(votes)
    best = votes[0].copy()
    best_count = np.zeros(votes.shape[1:], dtype=np.int64)
    for candidate in votes:
        count = sum((other == candidate).astype(np.int64) for other in votes)
        better = count > best_count
        best = np.where(better, candidate, best)
        best_count = np.where(better, count, best_count)
    return best


@dataclass
class SequenceVote:
    pred: np.ndarray  # [N, L] the winning full sequence per example
    support: np.ndarray  # [N] how many voters predicted exactly it
    winner: np.ndarray  # [N] the earliest voter that predicted it


def _row_keys(sequences: np.ndarray) -> np.ndarray:
    """[N, L] -> [N] opaque keys that compare equal exactly when whole rows are equal."""
    rows = np.ascontiguousarray(sequences)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[-1])))[:, 0]


def sequence_majority(votes: np.ndarray, q_halt_logit: np.ndarray | None = None) -> SequenceVote:
    """Whole-sequence majority over voters: votes [V, N, L], q_halt_logit [V, N].

    Identical sequences pool their votes; ties go to the higher mean sigmoid(q_halt) of
    the pooled voters (when given), then to the earliest voter.
    """
    votes = np.asarray(votes)
    num_voters, n = votes.shape[:2]
    confidence = np.zeros((num_voters, n)) if q_halt_logit is None else halt_confidence(q_halt_logit)
    keys = [_row_keys(v) for v in votes]
    winner = np.zeros(n, dtype=np.int64)
    best_support = np.zeros(n, dtype=np.int64)
    best_confidence = np.full(n, -np.inf)
    for i in range(num_voters):
        same = [keys[j] == keys[i] for j in range(num_voters)]
        support = sum(s.astype(np.int64) for s in same)
        # Summed over j in voter order, so every voter of a group gets bit-identical means.
        mean_confidence = sum(np.where(s, c, 0.0) for s, c in zip(same, confidence)) / support
        # Strictly better only: the earliest voter of the best group wins, and so do ties.
        better = (support > best_support) | ((support == best_support) & (mean_confidence > best_confidence))
        winner = np.where(better, i, winner)
        best_support = np.where(better, support, best_support)
        best_confidence = np.where(better, mean_confidence, best_confidence)
    return SequenceVote(votes[winner, np.arange(n)], best_support, winner)


def majority_vote(votes: np.ndarray, level: VoteLevel, q_halt_logit: np.ndarray | None = None) -> np.ndarray:
    if level == "token":
        return token_majority(votes)
    if level == "sequence":
        return sequence_majority(votes, q_halt_logit).pred
    raise ValueError(f"vote level must be 'token' or 'sequence', got {level!r}")


# =========================================================================== checkpoint ensembles


def top_k_members(exact_accuracy: Mapping[str, float], k: int) -> list[str]:
    """The k members with the highest exact accuracy; equal accuracies keep the given order."""
    if k < 1:
        raise InputError(f"ensemble top_k must be at least 1, got {k}")
    return sorted(exact_accuracy, key=lambda name: -exact_accuracy[name])[:k]
