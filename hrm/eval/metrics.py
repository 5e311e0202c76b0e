"""Evaluation metrics as sufficient statistics that merge exactly.

Workers turn per-example engine outputs into `MetricStats` (one group) or a `StatsTable`
(groups keyed by (set, tier)); the driver merges them and calls `finalize()`.

Exactness: every accumulator is a Python int (unbounded, so addition is associative and
commutative), which makes 1 worker and N workers — in any merge order — bit-identical.
Per-example real numbers (token accuracy correct/valid, lm loss) are stored in fixed point
as round(x * 2**32): floating-point sums would depend on the order of additions. The
quantisation error is at most 2**-33 per example, far below the 1e-5 conformance tolerance.
q_halt calibration keeps an exact table {q_halt_logit: (exact, not exact)} so AUROC, ECE
and the reliability diagram are computed exactly at the end, whatever the sharding.

Semantics follow the reference loss head: an example with no valid label token counts
nowhere; token accuracy is the mean over examples of correct/valid; q_halt is "right" when
(q_halt_logit >= 0) == exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hrm.eval.stats import auroc, expected_calibration_error, reliability_bins, wilson_interval

FIXED_POINT_BITS = 32
TOTAL_KEY = "all"

GroupKey = tuple[str, str | None]  # (set, tier)


def _ints(values: np.ndarray) -> int:
    """Exact sum of an integer array as a Python int (no int64 overflow possible)."""
    return sum(np.asarray(values, dtype=np.int64).tolist())


def _fixed_point_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """round(numerator / denominator * 2**32) per element, in exact integer arithmetic."""
    num = np.asarray(numerator, dtype=np.int64) << (FIXED_POINT_BITS + 1)
    den = np.asarray(denominator, dtype=np.int64)
    return (num + den) // (2 * den)


def _fixed_point(values: np.ndarray) -> np.ndarray:
    """round(x * 2**32); the scaling by a power of two is exact in float64."""
    return np.rint(np.asarray(values, dtype=np.float64) * 2.0**FIXED_POINT_BITS).astype(np.int64)


def _from_fixed_point(total: int, count: int) -> float:
    return total / (count << FIXED_POINT_BITS)  # int / int: correctly rounded


@dataclass
class MetricStats:
    """Sufficient statistics of one group of examples. All fields are exact integers."""

    count: int = 0
    exact: int = 0
    q_halt_correct: int = 0
    steps_sum: int = 0
    token_accuracy_fp: int = 0  # sum of round(correct/valid * 2**32)
    lm_loss_fp: int = 0  # sum of round(lm_loss * 2**32)
    steps_histogram: dict[int, int] = field(default_factory=dict)
    # Exact-example count after each ACT step (fixed protocol); None when not supplied.
    exact_by_step: list[int] | None = None
    halt_table: dict[float, tuple[int, int]] = field(default_factory=dict)  # logit -> (exact, not)

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
        self.steps_sum += _ints(step)
        self.token_accuracy_fp += _ints(_fixed_point_ratio(correct, valid))
        self.lm_loss_fp += _ints(_fixed_point(loss))
        for value, n in zip(*np.unique(step, return_counts=True)):
            self.steps_histogram[int(value)] = self.steps_histogram.get(int(value), 0) + int(n)
        for logit, flag in zip(q_halt.tolist(), is_exact.tolist()):
            pos, neg = self.halt_table.get(logit, (0, 0))
            self.halt_table[logit] = (pos + 1, neg) if flag else (pos, neg + 1)
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
        self.lm_loss_fp += other.lm_loss_fp
        for step, n in other.steps_histogram.items():
            self.steps_histogram[step] = self.steps_histogram.get(step, 0) + n
        for logit, (pos, neg) in other.halt_table.items():
            mine = self.halt_table.get(logit, (0, 0))
            self.halt_table[logit] = (mine[0] + pos, mine[1] + neg)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form. Floats are logits, which JSON round-trips exactly (repr)."""
        return {
            "count": self.count,
            "exact": self.exact,
            "q_halt_correct": self.q_halt_correct,
            "steps_sum": self.steps_sum,
            "token_accuracy_fp": self.token_accuracy_fp,
            "lm_loss_fp": self.lm_loss_fp,
            "steps_histogram": [[s, self.steps_histogram[s]] for s in sorted(self.steps_histogram)],
            "exact_by_step": self.exact_by_step,
            "halt_table": [[logit, *self.halt_table[logit]] for logit in sorted(self.halt_table)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricStats:
        return cls(
            count=int(data["count"]),
            exact=int(data["exact"]),
            q_halt_correct=int(data["q_halt_correct"]),
            steps_sum=int(data["steps_sum"]),
            token_accuracy_fp=int(data["token_accuracy_fp"]),
            lm_loss_fp=int(data["lm_loss_fp"]),
            steps_histogram={int(s): int(n) for s, n in data["steps_histogram"]},
            exact_by_step=None if data["exact_by_step"] is None else [int(n) for n in data["exact_by_step"]],
            halt_table={float(logit): (int(pos), int(neg)) for logit, pos, neg in data["halt_table"]},
        )

    def finalize(self) -> dict[str, Any]:
        """The reported figures. Ratios are None when no example counted."""
        n = self.count
        bins = reliability_bins(self.halt_table)
        ci = wilson_interval(self.exact, n) if n else (None, None)
        return {
            "count": n,
            "token_accuracy": _from_fixed_point(self.token_accuracy_fp, n) if n else None,
            "exact_accuracy": self.exact / n if n else None,
            "exact_ci_low": ci[0],
            "exact_ci_high": ci[1],
            "q_halt_accuracy": self.q_halt_correct / n if n else None,
            "mean_steps": self.steps_sum / n if n else None,
            "steps_histogram": {s: self.steps_histogram[s] for s in sorted(self.steps_histogram)},
            "lm_loss": _from_fixed_point(self.lm_loss_fp, n) if n else None,
            "exact_accuracy_by_step": (
                [k / n for k in self.exact_by_step] if n and self.exact_by_step is not None else None
            ),
            "q_halt_auroc": auroc(self.halt_table),
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
