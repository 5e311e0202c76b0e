"""The statistics the report states, each computed exactly from counts: Wilson intervals,
AUROC and calibration of the halting head, and McNemar's paired test.

Nothing here is estimated by sampling: AUROC and the reliability bins are computed from the
exact {q_halt_logit: (exact, not exact)} table the metrics merge, and McNemar's test uses the
exact binomial tail when few pairs disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def auroc(halt_table: Mapping[float, tuple[int, int]]) -> float | None:
    """Exact AUROC (ties count 1/2) of score vs label from {score: (positives, negatives)}.

    None when only one class is present. The logit ranks like sigmoid(logit) does —
    sigmoid is strictly increasing — without float saturation creating spurious ties.
    """
    positives = sum(pos for pos, _ in halt_table.values())
    negatives = sum(neg for _, neg in halt_table.values())
    if positives == 0 or negatives == 0:
        return None
    twice_wins = 0  # 2 * (#pairs positive ranked above negative) + #tied pairs
    negatives_below = 0
    for score in sorted(halt_table):
        pos, neg = halt_table[score]
        twice_wins += pos * (2 * negatives_below + neg)
        negatives_below += neg
    return twice_wins / (2 * positives * negatives)


def reliability_bins(halt_table: Mapping[float, tuple[int, int]]) -> list[dict[str, Any]]:
    """Equal-width bins of sigmoid(q_halt): count, mean confidence, accuracy (exact rate)."""
    counts = [0] * CALIBRATION_BINS
    hits = [0] * CALIBRATION_BINS
    confidences: list[list[float]] = [[] for _ in range(CALIBRATION_BINS)]
    logits = sorted(halt_table)
    for logit, confidence in zip(logits, sigmoid(np.array(logits, dtype=np.float64)).tolist()):
        pos, neg = halt_table[logit]
        b = min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        counts[b] += pos + neg
        hits[b] += pos
        confidences[b].append(confidence * (pos + neg))
    return [
        {
            "low": b / CALIBRATION_BINS,
            "high": (b + 1) / CALIBRATION_BINS,
            "count": counts[b],
            "mean_confidence": math.fsum(confidences[b]) / counts[b] if counts[b] else None,
            "accuracy": hits[b] / counts[b] if counts[b] else None,
        }
        for b in range(CALIBRATION_BINS)
    ]


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


def mcnemar(a_exact: np.ndarray, b_exact: np.ndarray) -> McNemarResult:
    """Paired McNemar test of two prediction sets' exact flags on the same examples.

    With few discordant pairs the exact two-sided binomial test (p = 1/2) is used; otherwise
    the chi-square statistic with continuity correction, 1 degree of freedom.
    """
    a, b = np.asarray(a_exact, dtype=bool), np.asarray(b_exact, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired flags must align, got shapes {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant < MCNEMAR_EXACT_BELOW:
        tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
        return McNemarResult(only_a, only_b, None, min(1.0, 2 * tail / 2**discordant), "exact")
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemarResult(only_a, only_b, statistic, math.erfc(math.sqrt(statistic / 2)), "chi2")
