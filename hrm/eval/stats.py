"""The statistics the report states, each computed exactly from counts: Wilson intervals,
AUROC and calibration of the halting head, and McNemar's paired test.

Nothing here is estimated by sampling: AUROC comes from the counts per q_halt bin that the
metrics merge, with the bound its binning allows stated beside it; the reliability bins and
the calibration error from exact per-bin sums; McNemar's test uses the exact binomial tail
when few pairs disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

WILSON_Z = 1.959963984540054  # standard normal 97.5% quantile: a two-sided 95% interval
CALIBRATION_BINS = 10
MCNEMAR_EXACT_BELOW = 25  # discordant pairs under which the chi-square approximation is poor


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float64 sigmoid computed by torch, as the reference's ARC evaluator does, so that
    confidences (and the vote tie-breaks built on them) match it bit for bit."""
    return torch.from_numpy(np.asarray(logits, dtype=np.float64)).sigmoid().numpy()


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if trials <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, total_sq: float, n: int, z: float = WILSON_Z) -> tuple[float, float] | None:
    """Normal-approximation interval of the mean of n values in [0, 1] from their sum and sum
    of squares (examples are the independent units, so tokens of one example, which are not
    independent, do not narrow it), clipped to [0, 1]; None below two values."""
    if n < 2:
        return None
    mean = total / n
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return max(0.0, mean - half), min(1.0, mean + half)


def auroc(positives: Sequence[int], negatives: Sequence[int]) -> tuple[float, float] | None:
    """AUROC of score vs label from counts per score bin, bins in ascending score order, with
    the bound on how far binning can have moved it; None when only one class is present.

    Pairs of a positive and a negative in different bins are ranked by their bins; pairs in
    the same bin count 1/2, as ties do. Each such pair counts 0, 1/2 or 1 with the scores
    themselves, so the AUROC of the unbinned scores lies within
    bound = (1/2) * sum_b positives_b * negatives_b / (P * N) of the value returned. With one
    bin per distinct score the value is the exact AUROC (ties count 1/2) and the bound counts
    only the true ties.
    """
    total_pos, total_neg = sum(positives), sum(negatives)
    if total_pos == 0 or total_neg == 0:
        return None
    twice_wins = 0  # 2 * (#pairs positive ranked above negative) + #pairs within a bin
    within = 0
    negatives_below = 0
    for pos, neg in zip(positives, negatives):
        twice_wins += pos * (2 * negatives_below + neg)
        within += pos * neg
        negatives_below += neg
    pairs = total_pos * total_neg
    return twice_wins / (2 * pairs), within / (2 * pairs)


def calibration_bin(confidence: np.ndarray) -> np.ndarray:
    """The equal-width reliability bin of each confidence in [0, 1] (1.0 goes in the last)."""
    return np.minimum((np.asarray(confidence) * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)


def expected_calibration_error(bins: list[dict[str, Any]]) -> float | None:
    total = sum(b["count"] for b in bins)
    if total == 0:
        return None
    gaps = [b["count"] * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"]]
    return math.fsum(gaps) / total


@dataclass(frozen=True)
class McNemarResult:
    only_a: int  # examples a gets exactly right and b does not
    only_b: int
    statistic: float | None  # chi-square with continuity correction; None for the exact test
    p_value: float
    method: Literal["exact", "chi2"]


def mcnemar(only_a: int, only_b: int) -> McNemarResult:
    """Paired McNemar test of two prediction sets on the same examples, from its discordant
    pairs: `only_a` examples a gets exactly right and b does not, `only_b` the reverse. The
    counts are all it needs, so callers can tally them part by part.

    With few discordant pairs the exact two-sided binomial test (p = 1/2) is used; otherwise
    the chi-square statistic with continuity correction, 1 degree of freedom.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant pair counts must be non-negative, got {only_a} and {only_b}")
    discordant = only_a + only_b
    if discordant < MCNEMAR_EXACT_BELOW:
        tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
        return McNemarResult(only_a, only_b, None, min(1.0, 2 * tail / 2**discordant), "exact")
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemarResult(only_a, only_b, statistic, math.erfc(math.sqrt(statistic / 2)), "chi2")
