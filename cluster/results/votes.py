"""Votes over a run's stored predictions: ARC augmentation voting, test-time augmentation
(TTA) and checkpoint ensembles. Nothing here runs a model, so any vote can be recomputed
later from the results alone (`apply_votes` on a finished run).

- ARC: per checkpoint, the predictions with the dataset's inputs and identifiers go through
  `hrm.eval.votes.ArcVoteCollector`; pass@k under both scoring rules, and
  `votes/<checkpoint>/submission.json`.
- TTA: the run evaluated `tta.copies` transformed copies of the data besides the plain one
  (units carry a `TTACopy`; the actor stores each copy's predictions already mapped back).
  Per example, the plain copy and the transformed ones vote; the plain and voted figures are
  reported side by side.
- Ensembles: members' predictions vote per example; the ensemble is scored against the
  dataset's labels and compared with its best member by McNemar's test. The voted
  predictions are stored as `votes/ensembles/<name>-<level>.parquet`.

Figures count examples with at least one valid label, as the run's metrics do. Whether the
votes can be computed at all was checked before the run (`cluster.plan.check_votes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from hrm import storage
from hrm.data.arrow import column_matrix, fixed_size_list
from hrm.data.dataset import Dataset
from hrm.errors import InputError
from hrm.eval.stats import mcnemar
from hrm.eval.votes import (
    ArcVoteCollector,
    MemberPredictions,
    VoteLevel,
    ensemble_vote,
    majority_vote,
    score_tokens,
    submission_json,
    top_k_members,
)

from cluster.config import EnsembleConfig, RunConfig, TTAConfig
from cluster.results.layout import read_predictions, votes_uri

SUBMISSION = "submission.json"
ARC_CHUNK_ROWS = 4096  # ARC splits are large (aug-1000: ~400k × 900 tokens): read inputs in chunks


def apply_votes(config: RunConfig, run_uri: str, dataset: Dataset, metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` with a "votes" section (arc, tta, ensembles) computed from the run's stored
    predictions; unchanged when the config asks for no vote."""
    if not (config.voting.enabled or config.tta.enabled or config.ensembles):
        return metrics
    split = config.dataset.split
    names = list(metrics["checkpoints"])
    labels = _Labels(dataset, split)
    votes: dict[str, Any] = {"arc": {}, "tta": {}, "ensembles": []}
    if config.voting.enabled:
        votes["arc"] = {name: arc_votes(config, run_uri, dataset, name) for name in names}
    if config.tta.enabled:
        votes["tta"] = {name: tta_votes(config.tta, run_uri, name, labels) for name in names}
    exact = {name: metrics["checkpoints"][name]["metrics"]["all"]["exact_accuracy"] or 0.0 for name in names}
    for ensemble in config.ensembles:
        members = ensemble.members or top_k_members(exact, ensemble.top_k)
        failed = [name for name in members if name not in exact]
        if failed:  # a member failed to load: the ensemble the config describes cannot be formed
            votes.setdefault("skipped_ensembles", {})[ensemble.name] = f"member(s) failed: {', '.join(failed)}"
            continue
        votes["ensembles"] += ensemble_votes(ensemble, members, run_uri, labels)
    return {**metrics, "votes": votes}


def arc_votes(config: RunConfig, run_uri: str, dataset: Dataset, checkpoint: str) -> dict[str, Any]:
    """ARC augmentation voting of one checkpoint; writes its submission.json when asked."""
    split = config.dataset.split
    collector = ArcVoteCollector(dataset.identifiers, dataset.metadata(split).blank_identifier_id)
    table = read_predictions(run_uri, checkpoint)
    for rows, inputs in _with_inputs(dataset, split, table):
        collector.add(inputs, column_matrix(rows, "pred"), rows.column("puzzle_identifier").to_numpy(),
                      rows.column("q_halt_logit").to_numpy())
    test_puzzles = dataset.test_puzzles
    result = collector.result(test_puzzles, sorted(set(config.voting.pass_k)))
    most = max((len(ranked) for puzzle in result.candidates.values() for ranked in puzzle), default=0)
    ks = reported_ks(sorted(set(config.voting.pass_k)), most)
    if config.voting.submission:
        storage.write_bytes_atomic(votes_uri(run_uri, checkpoint, SUBMISSION),
                                   submission_json(result.submission).encode())
    return {
        "pass_at_k": {rule: {str(k): scores[k] for k in ks} for rule, scores in result.pass_at_k.items()},
        "puzzles": len(test_puzzles),
        "test_inputs": sum(len(puzzle["test"]) for puzzle in test_puzzles.values()),
    }


def reported_ks(ks: list[int], most_candidates: int) -> list[int]:
    """pass@k "as far as candidates exist": every k up to the first that covers the most
    candidates any test input has; larger k could only repeat that figure."""
    covering = [k for k in ks if k >= most_candidates]
    return [k for k in ks if k < most_candidates] + covering[:1]


def tta_votes(tta: TTAConfig, run_uri: str, checkpoint: str, labels: _Labels) -> dict[str, Any]:
    """Per example, the plain copy and every transformed copy (stored already mapped back)
    vote; the plain copy comes first, so it wins ties (`hrm.eval.votes` tie rules)."""
    tables = [read_predictions(run_uri, checkpoint, copy) for copy in range(tta.copies + 1)]
    plain = tables[0]
    for copy, table in enumerate(tables[1:], start=1):
        if not (table.column("set").equals(plain.column("set"))
                and table.column("example_id").equals(plain.column("example_id"))):
            raise InputError(f"{run_uri}: checkpoint {checkpoint!r}: the predictions of TTA copy {copy} "
                             "cover other examples than the plain ones")
    preds = np.stack([column_matrix(t, "pred") for t in tables])
    q_halt = np.stack([t.column("q_halt_logit").to_numpy() for t in tables])
    voted = majority_vote(preds, tta.level, q_halt)
    target = labels.of(plain.column("set").to_numpy(zero_copy_only=False), plain.column("example_id").to_numpy())
    return {
        "copies": tta.copies,
        "level": tta.level,
        "plain": figures(preds[0], target, labels.ignore_label_id),
        "voted": figures(voted, target, labels.ignore_label_id),
    }


def ensemble_votes(ensemble: EnsembleConfig, members: list[str], run_uri: str, labels: _Labels) -> list[dict[str, Any]]:
    """One entry per vote level of the ensemble, each beside its best member."""
    stored = [read_predictions(run_uri, name) for name in members]
    predictions = [
        MemberPredictions(name, t.column("set").to_numpy(zero_copy_only=False), t.column("example_id").to_numpy(),
                          column_matrix(t, "pred"), t.column("q_halt_logit").to_numpy())
        for name, t in zip(members, stored)
    ]
    levels: list[VoteLevel] = ["sequence", "token"] if ensemble.method == "both" else [ensemble.method]
    entries = []
    for level in levels:
        aligned, voted = ensemble_vote(predictions, level)
        target = labels.of(aligned.set, aligned.example_id)
        scored = score_tokens(voted, target, labels.ignore_label_id)
        counted = scored["valid_tokens"] > 0
        member_exact = [score_tokens(p, target, labels.ignore_label_id)["exact"][counted] for p in aligned.pred]
        best = int(np.argmax([flags.mean() if flags.size else 0.0 for flags in member_exact]))  # first of equals
        test = mcnemar(scored["exact"][counted], member_exact[best])
        _write_ensemble(run_uri, f"{ensemble.name}-{level}", aligned.set, aligned.example_id, voted, scored)
        entries.append({
            "name": ensemble.name,
            "members": members,
            "level": level,
            **figures(voted, target, labels.ignore_label_id),
            "best_member": aligned.names[best],
            "best_member_exact_accuracy": float(member_exact[best].mean()) if member_exact[best].size else None,
            # b: only the ensemble is exact, c: only the best member (the report's reading).
            "mcnemar": {"statistic": test.statistic, "p_value": test.p_value, "b": test.only_a, "c": test.only_b},
        })
    return entries


def _write_ensemble(run_uri: str, stem: str, sets: np.ndarray, example_id: np.ndarray, pred: np.ndarray,
                    scored: dict[str, np.ndarray]) -> None:
    table = pa.table({
        "set": pa.array(sets.astype(str), pa.string()),
        "example_id": pa.array(np.asarray(example_id, np.int64)),
        "pred": fixed_size_list(np.asarray(pred, dtype=np.int32)),
        **{name: pa.array(values) for name, values in scored.items()},
    })
    storage.write_parquet_atomic(votes_uri(run_uri, "ensembles", f"{stem}.parquet"), [table])


def figures(pred: np.ndarray, labels: np.ndarray, ignore_label_id: int | None) -> dict[str, Any]:
    """exact and token accuracy over the examples with a valid label, as the run's metrics
    define them (token accuracy: the mean over examples of correct / valid tokens)."""
    scored = score_tokens(pred, labels, ignore_label_id)
    counted = scored["valid_tokens"] > 0
    n = int(counted.sum())
    token = scored["correct_tokens"][counted] / scored["valid_tokens"][counted]
    return {
        "exact_accuracy": float(scored["exact"][counted].mean()) if n else None,
        "token_accuracy": float(token.mean()) if n else None,
        "count": n,
    }


# --------------------------------------------------------------------------- dataset rows


class _Labels:
    """The dataset's labels of given (set, example_id) rows; each set is read once."""

    def __init__(self, dataset: Dataset, split: str):
        self.dataset, self.split = dataset, split
        self.ignore_label_id = dataset.metadata(split).ignore_label_id
        self._sets: dict[str, np.ndarray] = {}

    def of(self, sets: np.ndarray, example_id: np.ndarray) -> np.ndarray:
        sets, example_id = np.asarray(sets).astype(str), np.asarray(example_id, dtype=np.int64)
        out = None
        for name in np.unique(sets):
            if name not in self._sets:
                self._sets[name] = np.asarray(self.dataset.examples(self.split, name).labels)
            rows = sets == name
            chosen = self._sets[name][example_id[rows]]
            out = np.empty((len(sets), chosen.shape[1]), chosen.dtype) if out is None else out
            out[rows] = chosen
        if out is None:
            raise InputError(f"{self.dataset.uri}: no stored predictions to score")
        return out


def _with_inputs(dataset: Dataset, split: str, table: pa.Table) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The predictions table in chunks of rows, each with the dataset inputs of its rows, in
    table order ((set, example_id): the dataset's order, which decides ARC tie-breaks)."""
    sets = table.column("set").to_numpy(zero_copy_only=False).astype(str)
    ids = table.column("example_id").to_numpy()
    start = 0
    while start < len(sets):
        stop = min(start + ARC_CHUNK_ROWS, len(sets))
        stop = start + int(np.argmax(np.append(sets[start:stop] != sets[start], True)))  # one set per chunk
        chunk_ids = ids[start:stop]
        first = int(chunk_ids.min())
        batch = dataset.examples(split, sets[start], first, int(chunk_ids.max()) + 1)
        yield table.slice(start, stop - start), np.asarray(batch.inputs)[chunk_ids - first]
        start = stop
