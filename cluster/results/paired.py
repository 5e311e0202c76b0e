"""Paired comparisons of checkpoints on the same examples: the exact McNemar test.

Two checkpoints evaluated on one split disagree on some examples: `only_a` that a gets exactly
right and b does not, `only_b` the reverse. Those discordant counts are all McNemar's test needs
(`hrm.eval.stats.mcnemar`), and they come from the stored per-example `exact` column, so the
comparison costs one column read per checkpoint and never runs a model.

Examples are matched by (set, example_id), not by position, so two runs that split the data
into different shards still compare; a checkpoint that does not cover exactly the same
examples as the other is refused, since a paired test on different examples means nothing.

Per set, a checkpoint's flags are one boolean per example (423k examples: 423 kB), so
comparing every checkpoint of a sweep with the best and with its previous step holds three
checkpoints' flags at a time, whatever the number of checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from hrm.errors import InputError
from hrm.eval.stats import mcnemar

from cluster.results.layout import iter_predictions

# A difference with p below this is reported as significant ("distinguishable from the best").
SIGNIFICANCE = 0.05

ExactFlags = dict[str, np.ndarray]  # set -> exact flag per example, by example_id


def exact_flags(run: str, checkpoint: str, ablation: str | None = None) -> ExactFlags:
    """Per set, whether each example was predicted exactly (with its puzzle identifiers
    ablated, when given), indexed by example_id (each set's ids are 0..n-1, each stored once)."""
    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in iter_predictions(run, checkpoint, columns=["set", "example_id", "exact"], ablation=ablation):
        for name in pc.unique(part.column("set")).to_pylist():
            rows = part.filter(pc.equal(part.column("set"), name))
            found.setdefault(name, []).append((rows.column("example_id").to_numpy(),
                                               rows.column("exact").to_numpy(zero_copy_only=False)))
    flags = {}
    for name, chunks in found.items():
        ids = np.concatenate([ids for ids, _ in chunks])
        if not np.array_equal(np.sort(ids), np.arange(len(ids))):
            raise InputError(f"{run}: the predictions of {checkpoint!r} for set {name!r} do not hold each of its "
                             f"examples 0..{len(ids) - 1} once")
        flags[name] = np.empty(len(ids), bool)
        flags[name][ids] = np.concatenate([exact for _, exact in chunks]).astype(bool)
    return flags


def discordant(a: ExactFlags, b: ExactFlags, what: str) -> tuple[int, int]:
    """(examples only a gets exactly right, examples only b does). `what` names the pair in
    the error when they were not evaluated on the same examples."""
    sizes_a, sizes_b = {k: len(v) for k, v in a.items()}, {k: len(v) for k, v in b.items()}
    if sizes_a != sizes_b:
        raise InputError(f"{what}: not evaluated on the same examples (examples per set: {sizes_a} vs {sizes_b})")
    only_a = sum(int(np.count_nonzero(a[k] & ~b[k])) for k in a)
    only_b = sum(int(np.count_nonzero(b[k] & ~a[k])) for k in a)
    return only_a, only_b


@dataclass(frozen=True)
class Comparison:
    """A checkpoint against another (`against`) on the same examples."""

    against: str
    only_this: int  # examples this checkpoint gets exactly right and `against` does not
    only_against: int
    p_value: float
    method: str  # "exact" (binomial) or "chi2" (with continuity correction)

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE


def compare(this: ExactFlags, against: ExactFlags, names: tuple[str, str]) -> Comparison:
    only_this, only_against = discordant(this, against, f"{names[0]} against {names[1]}")
    test = mcnemar(only_this, only_against)
    return Comparison(names[1], only_this, only_against, test.p_value, test.method)


@dataclass(frozen=True)
class CheckpointInRun:
    name: str
    training_run: str  # checkpoints of one training run are compared with their previous step
    step: int | None


def paired_comparisons(run: str, checkpoints: Sequence[CheckpointInRun], best: str) -> dict[str, dict[str, Any]]:
    """For every checkpoint: McNemar against the run's best (`vs_best`, None for the best
    itself) and against the previous step of its training run (`vs_previous`, None for the
    first), with `indistinguishable_from_best` (p >= SIGNIFICANCE, or the best itself)."""
    best_flags = exact_flags(run, best)
    out: dict[str, dict[str, Any]] = {}
    for name, flags, previous in _in_step_order(run, checkpoints):
        vs_best = None if name == best else compare(flags, best_flags, (name, best))
        vs_previous = None if previous is None else compare(flags, previous[1], (name, previous[0]))
        out[name] = {"vs_best": None if vs_best is None else asdict(vs_best),
                     "vs_previous": None if vs_previous is None else asdict(vs_previous),
                     "indistinguishable_from_best": vs_best is None or not vs_best.significant}
    return {ref.name: out[ref.name] for ref in checkpoints}


def _in_step_order(run: str, checkpoints: Sequence[CheckpointInRun]
                   ) -> Iterator[tuple[str, ExactFlags, tuple[str, ExactFlags] | None]]:
    """(name, flags, (previous step's name, flags) or None), training run by training run and
    by step within each; a checkpoint without a step has no previous one."""
    groups: dict[str, list[CheckpointInRun]] = {}
    for ref in checkpoints:
        groups.setdefault(ref.training_run if ref.step is not None else f"\0{ref.name}", []).append(ref)
    for group in groups.values():
        previous = None
        for ref in sorted(group, key=lambda r: r.step or 0):
            flags = exact_flags(run, ref.name)
            yield ref.name, flags, previous
            previous = (ref.name, flags)


def ablation_comparisons(run: str, checkpoints: Sequence[str], ablations: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For every checkpoint and puzzle-identifier ablation (hrm.eval.ablation): examples
    exactly right with the identifiers as trained and with them ablated, of how many, and
    McNemar's test of the ablated predictions against the plain ones on the same examples."""
    out: dict[str, dict[str, Any]] = {}
    for name in checkpoints:
        plain = exact_flags(run, name)
        examples = sum(len(flags) for flags in plain.values())
        out[name] = {}
        for ablation in ablations:
            ablated = exact_flags(run, name, ablation)
            test = compare(ablated, plain, (f"{name} with {ablation}", name))
            out[name][ablation] = {
                "examples": examples,
                "exact_plain": sum(int(np.count_nonzero(flags)) for flags in plain.values()),
                "exact_ablated": sum(int(np.count_nonzero(flags)) for flags in ablated.values()),
                "vs_plain": asdict(test),
            }
    return out
