"""Evaluation metrics as sufficient statistics that merge exactly.

Workers turn per-example engine outputs into `MetricStats` (one group) or a `StatsTable`
(groups keyed by (set, tier)); the driver merges them and calls `finalize()`.

Exactness: every accumulator is a Python int (unbounded, so addition is associative and
commutative), which makes 1 worker and N workers — in any merge order — bit-identical.
Per-example real numbers (token accuracy correct/valid, lm loss) are stored in fixed point
as round(x * 2**32): floating-point sums would depend on the order of additions. The
quantisation error is at most 2**-33 per example, far below the 1e-5 conformance tolerance.

Size: nothing here grows with the number of examples. q_halt calibration is kept in a
`HaltCalibration` sketch of at most LOGIT_BINS + CALIBRATION_BINS integer counters: the
reliability bins and ECE from it are exact (confidence sums in the same fixed point); AUROC
is computed over q_halt logits binned at 1/LOGIT_SCALE, which can move it by at most the
bound it is reported with (`q_halt_auroc_bound`, argued in `hrm.eval.stats.auroc`).

Semantics follow the reference loss head: an example with no valid label token counts
nowhere; token accuracy is the mean over examples of correct/valid; q_halt is "right" when
(q_halt_logit >= 0) == exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hrm.eval.stats import (
    CALIBRATION_BINS,
    auroc,
    calibration_bin,
    expected_calibration_error,
    mean_interval,
    sigmoid,
    wilson_interval,
)

FIXED_POINT_BITS = 32
# of `StatsTable.to_dict`; 2: q_halt calibration as a fixed-size sketch; 3: the sum of squared
# per-example token accuracies, for its interval
STATS_FORMAT = 3
TOTAL_KEY = "all"
# q_halt logits are binned at 1/LOGIT_SCALE within ±LOGIT_LIMIT (beyond it, into the end bins).
# Trained halting heads give logits within about ±20, so bins of 1/64 leave few pairs of
# opposite classes sharing one; the power-of-two scale makes the binning of a float exact.
LOGIT_SCALE = 64
LOGIT_LIMIT = 128
LOGIT_BINS = 2 * LOGIT_LIMIT * LOGIT_SCALE

GroupKey = tuple[str, str | None]  # (set, tier)


def int_sum(values: np.ndarray) -> int:
    """Exact sum of an integer array as a Python int (no int64 overflow possible)."""
    return sum(np.asarray(values, dtype=np.int64).tolist())


def fixed_point_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """round(numerator / denominator * 2**32) per element, in exact integer arithmetic."""
    num = np.asarray(numerator, dtype=np.int64) << (FIXED_POINT_BITS + 1)
    den = np.asarray(denominator, dtype=np.int64)
    return (num + den) // (2 * den)


def _fixed_point(values: np.ndarray) -> np.ndarray:
    """round(x * 2**32); the scaling by a power of two is exact in float64."""
    return np.rint(np.asarray(values, dtype=np.float64) * 2.0**FIXED_POINT_BITS).astype(np.int64)


def from_fixed_point(total: int, count: int) -> float:
    """The mean of `count` values whose fixed-point sum is `total`."""
    return total / (count << FIXED_POINT_BITS)  # int / int: correctly rounded


@dataclass
class HaltCalibration:
    """How well sigmoid(q_halt) predicts an exact answer, as integer counters of fixed size.

    For AUROC: examples of each class per q_halt logit bin (`floor(logit * LOGIT_SCALE)`,
    clipped to the LOGIT_BINS bins), stored sparsely: only occupied bins, ascending. For the
    reliability bins: per equal-width bin of sigmoid(q_halt), the examples, the exact ones and
    the sum of their confidences in fixed point.
    """

    bins: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # occupied logit bins, ascending
    exact: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # exact examples per bin
    inexact: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reliability_count: list[int] = field(default_factory=lambda: [0] * CALIBRATION_BINS)
    reliability_exact: list[int] = field(default_factory=lambda: [0] * CALIBRATION_BINS)
    confidence_fp: list[int] = field(default_factory=lambda: [0] * CALIBRATION_BINS)  # sum of round(conf * 2**32)

    def update(self, q_halt_logit: np.ndarray, is_exact: np.ndarray) -> None:
        logits = np.asarray(q_halt_logit, dtype=np.float64)
        flags = np.asarray(is_exact, dtype=bool)
        index = np.clip(np.floor(logits * LOGIT_SCALE), -LOGIT_LIMIT * LOGIT_SCALE, LOGIT_LIMIT * LOGIT_SCALE - 1)
        self._add(index.astype(np.int64), flags.astype(np.int64), (~flags).astype(np.int64))
        confidence = sigmoid(logits)
        which = calibration_bin(confidence)
        fixed = _fixed_point(confidence)
        for b in np.unique(which).tolist():
            rows = which == b
            self.reliability_count[b] += int(rows.sum())
            self.reliability_exact[b] += int(flags[rows].sum())
            self.confidence_fp[b] += int_sum(fixed[rows])

    def merge(self, other: HaltCalibration) -> None:
        self._add(other.bins, other.exact, other.inexact)
        for b in range(CALIBRATION_BINS):
            self.reliability_count[b] += other.reliability_count[b]
            self.reliability_exact[b] += other.reliability_exact[b]
            self.confidence_fp[b] += other.confidence_fp[b]

    def _add(self, bins: np.ndarray, exact: np.ndarray, inexact: np.ndarray) -> None:
        """Add counts per bin (bins may repeat) into the sparse ascending table, in int64
        (exact: no count comes near 2**63)."""
        merged, where = np.unique(np.concatenate([self.bins, bins]), return_inverse=True)
        totals = np.zeros((2, len(merged)), np.int64)
        np.add.at(totals[0], where, np.concatenate([self.exact, exact]))
        np.add.at(totals[1], where, np.concatenate([self.inexact, inexact]))
        self.bins, self.exact, self.inexact = merged, totals[0], totals[1]

    def auroc(self) -> tuple[float, float] | None:
        """(AUROC, bound on its distance from the unbinned AUROC), or None with one class."""
        return auroc(self.exact.tolist(), self.inexact.tolist())

    def reliability(self) -> list[dict[str, Any]]:
        """Per equal-width bin of sigmoid(q_halt): count, mean confidence, accuracy (exact rate)."""
        return [
            {
                "low": b / CALIBRATION_BINS,
                "high": (b + 1) / CALIBRATION_BINS,
                "count": n,
                "mean_confidence": from_fixed_point(self.confidence_fp[b], n) if n else None,
                "accuracy": self.reliability_exact[b] / n if n else None,
            }
            for b, n in enumerate(self.reliability_count)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "logit_scale": LOGIT_SCALE,
            "logit_bins": [[int(b), int(p), int(n)] for b, p, n in zip(self.bins, self.exact, self.inexact)],
            "reliability": [list(row) for row in zip(self.reliability_count, self.reliability_exact,
                                                     self.confidence_fp)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HaltCalibration:
        if data["logit_scale"] != LOGIT_SCALE:
            raise ValueError(f"halting statistics binned at 1/{data['logit_scale']}, expected 1/{LOGIT_SCALE}")
        table = np.array(data["logit_bins"], dtype=np.int64).reshape(-1, 3)
        rows = [[int(v) for v in row] for row in data["reliability"]]
        if len(rows) != CALIBRATION_BINS:
            raise ValueError(f"{len(rows)} reliability bins, expected {CALIBRATION_BINS}")
        count, exact, confidence = (list(column) for column in zip(*rows))
        return cls(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(), count, exact, confidence)


@dataclass
class MetricStats:
    """Sufficient statistics of one group of examples. All fields are exact integers."""

    count: int = 0
    exact: int = 0
    q_halt_correct: int = 0
    steps_sum: int = 0
    token_accuracy_fp: int = 0  # sum of round(correct/valid * 2**32)
    token_accuracy_sq_fp: int = 0  # sum of round((correct/valid)**2 * 2**32): its interval
    lm_loss_fp: int = 0  # sum of round(lm_loss * 2**32)
    steps_histogram: dict[int, int] = field(default_factory=dict)
    # Exact-example count after each ACT step (fixed protocol); None when not supplied.
    exact_by_step: list[int] | None = None
    halting: HaltCalibration = field(default_factory=HaltCalibration)

    def update(
        self,
        *,
        valid_tokens: np.ndarray,
        correct_tokens: np.ndarray,
        exact: np.ndarray,
        q_halt_logit: np.ndarray,
        steps: np.ndarray,
        lm_loss: np.ndarray,
        exact_per_step: np.ndarray | None = None,
        **_not_metrics: Any,  # the engine's other outputs (pred, q_continue_logit, ...)
    ) -> MetricStats:
        """Add a batch of per-example arrays. Examples with no valid token are dropped."""
        valid_tokens = np.asarray(valid_tokens)
        keep = valid_tokens > 0
        columns = {
            "correct_tokens": correct_tokens,
            "exact": exact,
            "q_halt_logit": q_halt_logit,
            "steps": steps,
            "lm_loss": lm_loss,
        }
        for name, values in columns.items():
            if np.shape(values)[:1] != valid_tokens.shape:
                raise ValueError(f"{name} has shape {np.shape(values)}, expected {valid_tokens.shape}")
        valid = valid_tokens[keep]
        correct = np.asarray(correct_tokens)[keep]
        is_exact = np.asarray(exact, dtype=bool)[keep]
        q_halt = np.asarray(q_halt_logit, dtype=np.float32)[keep]
        step = np.asarray(steps, dtype=np.int64)[keep]
        loss = np.asarray(lm_loss, dtype=np.float64)[keep]
        if not (np.all(np.isfinite(q_halt)) and np.all(np.isfinite(loss))):
            raise ValueError("q_halt_logit and lm_loss must be finite")

        self._update_per_step(None if exact_per_step is None else np.asarray(exact_per_step, dtype=bool)[keep])
        self.count += int(keep.sum())
        self.exact += int(is_exact.sum())
        self.q_halt_correct += int(((q_halt >= 0) == is_exact).sum())
        self.steps_sum += int_sum(step)
        self.token_accuracy_fp += int_sum(fixed_point_ratio(correct, valid))
        squared = np.asarray(correct, dtype=np.int64) ** 2, np.asarray(valid, dtype=np.int64) ** 2
        self.token_accuracy_sq_fp += int_sum(fixed_point_ratio(*squared))
        self.lm_loss_fp += int_sum(_fixed_point(loss))
        for value, n in zip(*np.unique(step, return_counts=True)):
            self.steps_histogram[int(value)] = self.steps_histogram.get(int(value), 0) + int(n)
        self.halting.update(q_halt, is_exact)
        return self

    def _update_per_step(self, flags: np.ndarray | None) -> None:
        """Per-step counts are only meaningful if every counted example supplied them."""
        if flags is None:
            if self.exact_by_step is not None:
                raise ValueError("exact_per_step missing for a batch after earlier batches had it")
            return
        if flags.ndim != 2:
            raise ValueError(f"exact_per_step must be [examples, steps], got shape {flags.shape}")
        if self.exact_by_step is None:
            if self.count:
                raise ValueError("exact_per_step supplied after earlier batches lacked it")
            self.exact_by_step = [0] * flags.shape[1]
        if flags.shape[1] != len(self.exact_by_step):
            raise ValueError(f"exact_per_step has {flags.shape[1]} steps, earlier batches had {len(self.exact_by_step)}")
        self.exact_by_step = [a + int(b) for a, b in zip(self.exact_by_step, flags.sum(axis=0))]

    def merge(self, other: MetricStats) -> MetricStats:
        """Add another group's statistics into this one (exact, order-independent)."""
        self.exact_by_step = _merge_per_step(self, other)
        self.count += other.count
        self.exact += other.exact
        self.q_halt_correct += other.q_halt_correct
        self.steps_sum += other.steps_sum
        self.token_accuracy_fp += other.token_accuracy_fp
        self.token_accuracy_sq_fp += other.token_accuracy_sq_fp
        self.lm_loss_fp += other.lm_loss_fp
        for step, n in other.steps_histogram.items():
            self.steps_histogram[step] = self.steps_histogram.get(step, 0) + n
        self.halting.merge(other.halting)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: integers only."""
        return {
            "count": self.count,
            "exact": self.exact,
            "q_halt_correct": self.q_halt_correct,
            "steps_sum": self.steps_sum,
            "token_accuracy_fp": self.token_accuracy_fp,
            "token_accuracy_sq_fp": self.token_accuracy_sq_fp,
            "lm_loss_fp": self.lm_loss_fp,
            "steps_histogram": [[s, self.steps_histogram[s]] for s in sorted(self.steps_histogram)],
            "exact_by_step": self.exact_by_step,
            "halting": self.halting.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricStats:
        return cls(
            count=int(data["count"]),
            exact=int(data["exact"]),
            q_halt_correct=int(data["q_halt_correct"]),
            steps_sum=int(data["steps_sum"]),
            token_accuracy_fp=int(data["token_accuracy_fp"]),
            token_accuracy_sq_fp=int(data["token_accuracy_sq_fp"]),
            lm_loss_fp=int(data["lm_loss_fp"]),
            steps_histogram={int(s): int(n) for s, n in data["steps_histogram"]},
            exact_by_step=None if data["exact_by_step"] is None else [int(n) for n in data["exact_by_step"]],
            halting=HaltCalibration.from_dict(data["halting"]),
        )

    def finalize(self) -> dict[str, Any]:
        """The reported figures. Ratios are None when no example counted."""
        n = self.count
        bins = self.halting.reliability()
        ranked = self.halting.auroc()
        ci = wilson_interval(self.exact, n) if n else (None, None)
        scale = float(1 << FIXED_POINT_BITS)
        token_ci = mean_interval(self.token_accuracy_fp / scale, self.token_accuracy_sq_fp / scale, n) or (None, None)
        return {
            "count": n,
            "token_accuracy": from_fixed_point(self.token_accuracy_fp, n) if n else None,
            "token_ci_low": token_ci[0],
            "token_ci_high": token_ci[1],
            "exact_accuracy": self.exact / n if n else None,
            "exact_ci_low": ci[0],
            "exact_ci_high": ci[1],
            "q_halt_accuracy": self.q_halt_correct / n if n else None,
            "mean_steps": self.steps_sum / n if n else None,
            "steps_histogram": {s: self.steps_histogram[s] for s in sorted(self.steps_histogram)},
            "lm_loss": from_fixed_point(self.lm_loss_fp, n) if n else None,
            "exact_accuracy_by_step": (
                [k / n for k in self.exact_by_step] if n and self.exact_by_step is not None else None
            ),
            "q_halt_auroc": ranked[0] if ranked else None,
            "q_halt_auroc_bound": ranked[1] if ranked else None,
            "q_halt_ece": expected_calibration_error(bins),
            "q_halt_reliability": bins,
        }


def _merge_per_step(a: MetricStats, b: MetricStats) -> list[int] | None:
    """Per-step counts of a + b; an empty side adopts the other's, mismatches are errors."""
    if a.count == 0 and a.exact_by_step is None:
        return None if b.exact_by_step is None else list(b.exact_by_step)
    if b.count == 0 and b.exact_by_step is None:
        return a.exact_by_step
    if a.exact_by_step is None and b.exact_by_step is None:
        return None  # the adaptive protocol: no example ran every step
    if a.exact_by_step is None or b.exact_by_step is None:
        raise ValueError("cannot merge statistics with and without exact_per_step")
    if len(a.exact_by_step) != len(b.exact_by_step):
        raise ValueError(f"cannot merge {len(a.exact_by_step)}-step and {len(b.exact_by_step)}-step statistics")
    return [x + y for x, y in zip(a.exact_by_step, b.exact_by_step)]


def _merged(stats: Iterable[MetricStats]) -> MetricStats:
    total = MetricStats()
    for s in stats:
        total.merge(s)
    return total


class StatsTable:
    """MetricStats per (set, tier) group, finalised per set, per (set, tier) and in total."""

    def __init__(self, groups: Mapping[GroupKey, MetricStats] | None = None) -> None:
        self.groups: dict[GroupKey, MetricStats] = dict(groups or {})

    def update(self, *, set: str | np.ndarray, tier: Any = None, **per_example: Any) -> StatsTable:
        """Add a batch; `set` and `tier` are one value for the batch or one per example."""
        n = len(np.asarray(per_example["valid_tokens"]))
        sets = np.broadcast_to(np.asarray(set, dtype=object), (n,))
        tiers = np.broadcast_to(np.asarray(tier, dtype=object), (n,))
        keys = [(str(s), None if t is None else str(t)) for s, t in zip(sets.tolist(), tiers.tolist())]
        for key in sorted(dict.fromkeys(keys), key=_group_order):
            rows = np.array([k == key for k in keys])
            batch = {
                name: (values if values is None else np.asarray(values)[rows])
                for name, values in per_example.items()
            }
            self.groups.setdefault(key, MetricStats()).update(**batch)
        return self

    def merge(self, other: StatsTable) -> StatsTable:
        for key, stats in other.groups.items():
            self.groups.setdefault(key, MetricStats()).merge(stats)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [
                {"set": s, "tier": t, "stats": self.groups[(s, t)].to_dict()}
                for s, t in sorted(self.groups, key=_group_order)
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatsTable:
        return cls({(g["set"], g["tier"]): MetricStats.from_dict(g["stats"]) for g in data["groups"]})

    def finalize(self) -> dict[str, Any]:
        """{"all": figures, "sets": {set: figures}, "tiers": {set: {tier: figures}}}.

        The total sits beside "sets" rather than among them because reference datasets
        name their only set "all".
        """
        keys = sorted(self.groups, key=_group_order)
        set_names = list(dict.fromkeys(s for s, _ in keys))
        return {
            TOTAL_KEY: _merged(self.groups.values()).finalize(),
            "sets": {s: _merged(self.groups[k] for k in keys if k[0] == s).finalize() for s in set_names},
            "tiers": {
                s: {t: self.groups[(s, t)].finalize() for s_, t in keys if s_ == s and t is not None}
                for s in set_names
                if any(k[0] == s and k[1] is not None for k in keys)
            },
        }


def _group_order(key: GroupKey) -> tuple[str, bool, str]:
    return key[0], key[1] is not None, key[1] or ""
