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

Memory: every vote streams the stored predictions part by part (`cluster.results.layout`:
one part per shard, in dataset order), reading the dataset's inputs or labels of just
those rows, so what it holds does not grow with the split: one part of each voter (TTA: the
plain copy and every transformed one; ensembles: every member), plus what the result
itself needs. That is the ARC collector's votes (a hash and a confidence per example, and
each distinct answer grid once), and for TTA and ensembles a few exact integers: examples,
exact ones and token accuracy in fixed point (so the figures do not depend on how the
rows were cut into parts), and per ensemble member its exact examples and its discordant
pairs with the ensemble, from which McNemar's test follows. An ensemble's voted
predictions are written as they are voted, a row group per part.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from hrm import storage
from hrm.data.arrow import column_matrix, fixed_size_list
from hrm.data.dataset import Dataset
from hrm.errors import InputError
from hrm.eval.metrics import fixed_point_ratio, from_fixed_point, int_sum
from hrm.eval.stats import mcnemar
from hrm.eval.votes import ArcVoteCollector, VoteLevel, majority_vote, score_tokens, submission_json, top_k_members

from cluster.config import EnsembleConfig, RunConfig, TTAConfig
from cluster.results.layout import iter_predictions, prediction_parts, read_prediction_part, votes_uri

SUBMISSION = "submission.json"
# Rows voted at once. A part is a whole shard, which a run may make large: chunks keep the
# numpy copies and temporaries of a vote small whatever the shard size.
CHUNK_ROWS = 4096
ARC_COLUMNS = ["set", "example_id", "puzzle_identifier", "pred", "q_halt_logit"]
VOTE_COLUMNS = ["set", "example_id", "pred", "q_halt_logit"]


def apply_votes(config: RunConfig, run_uri: str, dataset: Dataset, metrics: dict[str, Any],
                files: str | None = None) -> dict[str, Any]:
    """`metrics` with a "votes" section (arc, tta, ensembles) computed from the run's stored
    predictions; unchanged when the config asks for no vote. Submission files and voted
    predictions go under `files` (default: the run's votes/; `hrm-eval vote`: a re-vote's own)."""
    if not (config.voting.enabled or config.tta.enabled or config.ensembles):
        return metrics
    files = files or votes_uri(run_uri)
    split = config.dataset.split
    names = list(metrics["checkpoints"])
    labels = _Labels(dataset, split)
    votes: dict[str, Any] = {"arc": {}, "tta": {}, "ensembles": []}
    if config.voting.enabled:
        votes["arc"] = {name: arc_votes(config, run_uri, dataset, name, files) for name in names}
    if config.tta.enabled:
        votes["tta"] = {name: tta_votes(config.tta, run_uri, name, labels) for name in names}
    exact = {name: metrics["checkpoints"][name]["metrics"]["all"]["exact_accuracy"] or 0.0 for name in names}
    for ensemble in config.ensembles:
        members = ensemble.members or top_k_members(exact, ensemble.top_k)
        failed = [name for name in members if name not in exact]
        if failed:  # a member failed to load: the ensemble the config describes cannot be formed
            votes.setdefault("skipped_ensembles", {})[ensemble.name] = f"member(s) failed: {', '.join(failed)}"
            continue
        votes["ensembles"] += ensemble_votes(ensemble, members, run_uri, labels, files)
    return {**metrics, "votes": votes}


def arc_votes(config: RunConfig, run_uri: str, dataset: Dataset, checkpoint: str, files: str) -> dict[str, Any]:
    """ARC augmentation voting of one checkpoint; writes its submission.json when asked.

    The predictions go in part by part, in dataset order (it decides exact ties), each part
    in chunks of CHUNK_ROWS with the dataset inputs of just those rows."""
    split = config.dataset.split
    collector = ArcVoteCollector(dataset.identifiers, dataset.metadata(split).blank_identifier_id)
    for part in iter_predictions(run_uri, checkpoint, columns=ARC_COLUMNS):
        for rows in _chunks(part):
            inputs = _dataset_rows(dataset, split, rows, "inputs")
            collector.add(inputs, column_matrix(rows, "pred"), rows.column("puzzle_identifier").to_numpy(),
                          rows.column("q_halt_logit").to_numpy())
    test_puzzles = dataset.test_puzzles
    result = collector.result(test_puzzles, sorted(set(config.voting.pass_k)))
    most = max((len(ranked) for puzzle in result.candidates.values() for ranked in puzzle), default=0)
    ks = reported_ks(sorted(set(config.voting.pass_k)), most)
    if config.voting.submission:
        storage.write_bytes_atomic(storage.join(files, checkpoint, SUBMISSION),
                                   submission_json(result.submission).encode())
    return {
        "pass_at_k": {rule: {str(k): scores[k] for k in ks} for rule, scores in result.pass_at_k.items()},
        "pass_at_k_ci": {rule: {str(k): None if bounds[k] is None else list(bounds[k]) for k in ks}
                         for rule, bounds in result.intervals.items()},
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
    vote; the plain copy comes first, so it wins ties (`hrm.eval.votes` tie rules). Part by
    part: the plain part and the same-named part of every copy."""
    sources = [_Source(checkpoint, copy, ("the plain predictions" if copy == 0 else f"TTA copy {copy}")
                       + f" of checkpoint {checkpoint!r}") for copy in range(tta.copies + 1)]
    plain, voted = _Tally(), _Tally()
    for tables in _aligned_chunks(run_uri, sources, _common_parts(run_uri, sources)):
        preds, q_halt = _stacked(tables)
        target = labels.of(tables[0])
        plain.add(score_tokens(preds[0], target, labels.ignore_label_id))
        voted.add(score_tokens(majority_vote(preds, tta.level, q_halt), target, labels.ignore_label_id))
    return {"copies": tta.copies, "level": tta.level, "plain": plain.figures(), "voted": voted.figures()}


def ensemble_votes(ensemble: EnsembleConfig, members: list[str], run_uri: str, labels: _Labels,
                   files: str) -> list[dict[str, Any]]:
    """One entry per vote level of the ensemble, each beside its best member; each level reads
    the members' predictions once more, part by part."""
    sources = [_Source(name, 0, f"ensemble member {name!r}") for name in members]
    parts = _common_parts(run_uri, sources)
    levels: list[VoteLevel] = ["sequence", "token"] if ensemble.method == "both" else [ensemble.method]
    entries = []
    for level in levels:
        tally = _EnsembleTally(len(members))
        voted = (tally.add(tables, level, labels) for tables in _aligned_chunks(run_uri, sources, parts))
        storage.write_parquet_atomic(storage.join(files, "ensembles", f"{ensemble.name}-{level}.parquet"), voted)
        best = tally.best_member()
        # b: only the ensemble is exact, c: only the best member (the report's reading).
        test = mcnemar(tally.only_ensemble[best], tally.only_member[best])
        count = tally.ensemble.count
        entries.append({
            "name": ensemble.name,
            "members": members,
            "level": level,
            **tally.ensemble.figures(),
            "best_member": members[best],
            "best_member_exact_accuracy": tally.member_exact[best] / count if count else None,
            "mcnemar": {"statistic": test.statistic, "p_value": test.p_value, "b": test.only_a, "c": test.only_b},
        })
    return entries


# --------------------------------------------------------------------------- tallies


@dataclass
class _Tally:
    """Figures of scored examples as exact integers, so they do not depend on how the rows were
    cut into parts: the examples with at least one valid label (as the run's metrics count
    them), the exact ones, and the sum of their token accuracies (correct / valid tokens) in
    the fixed point of `hrm.eval.metrics`."""

    count: int = 0
    exact: int = 0
    token_accuracy_fp: int = 0

    def add(self, scored: dict[str, np.ndarray]) -> None:
        counted = scored["valid_tokens"] > 0
        self.count += int(counted.sum())
        self.exact += int(scored["exact"][counted].sum())
        self.token_accuracy_fp += int_sum(fixed_point_ratio(scored["correct_tokens"][counted],
                                                            scored["valid_tokens"][counted]))

    def figures(self) -> dict[str, Any]:
        n = self.count
        return {
            "exact_accuracy": self.exact / n if n else None,
            "token_accuracy": from_fixed_point(self.token_accuracy_fp, n) if n else None,
            "count": n,
        }


class _EnsembleTally:
    """An ensemble's figures, and per member the counts its comparison needs: its exact
    examples, and its discordant pairs with the ensemble (McNemar's test needs nothing else)."""

    def __init__(self, members: int):
        self.ensemble = _Tally()
        self.member_exact = [0] * members
        self.only_ensemble = [0] * members  # the ensemble exact, the member not
        self.only_member = [0] * members

    def add(self, tables: Sequence[pa.Table], level: VoteLevel, labels: _Labels) -> pa.Table:
        """Vote one chunk (the same rows of every member), count it; the voted rows to store."""
        preds, q_halt = _stacked(tables)
        voted = majority_vote(preds, level, q_halt)
        target = labels.of(tables[0])
        scored = score_tokens(voted, target, labels.ignore_label_id)
        self.ensemble.add(scored)
        counted = scored["valid_tokens"] > 0
        ensemble_exact = scored["exact"][counted]
        for i, pred in enumerate(preds):
            member_exact = score_tokens(pred, target, labels.ignore_label_id)["exact"][counted]
            self.member_exact[i] += int(member_exact.sum())
            self.only_ensemble[i] += int((ensemble_exact & ~member_exact).sum())
            self.only_member[i] += int((member_exact & ~ensemble_exact).sum())
        return pa.table({
            "set": tables[0].column("set"),
            "example_id": tables[0].column("example_id"),
            "pred": fixed_size_list(np.asarray(voted, dtype=np.int32)),
            **{name: pa.array(values) for name, values in scored.items()},
        })

    def best_member(self) -> int:
        """The member with the most exact examples; the first of equals."""
        return self.member_exact.index(max(self.member_exact))


# --------------------------------------------------------------------------- stored and dataset rows


@dataclass(frozen=True)
class _Source:
    """Stored predictions that vote: a checkpoint's plain ones (copy 0) or a TTA copy's."""

    checkpoint: str
    copy: int
    description: str  # for messages


def _common_parts(run_uri: str, sources: list[_Source]) -> list[str]:
    """The first source's parts in dataset order; every other source must have parts of the
    same names (one per shard of the run's plan)."""
    first = sources[0]
    parts = prediction_parts(run_uri, first.checkpoint, first.copy)
    for source in sources[1:]:
        theirs = prediction_parts(run_uri, source.checkpoint, source.copy)
        if theirs != parts:
            missing, extra = sorted(set(parts) - set(theirs)), sorted(set(theirs) - set(parts))
            raise InputError(f"{run_uri}: {source.description}: its prediction parts differ from those of "
                             f"{first.description} (missing: {missing or 'none'}, extra: {extra or 'none'}); "
                             "they must cover the same examples")
    return parts


def _aligned_chunks(run_uri: str, sources: list[_Source], parts: list[str]) -> Iterator[tuple[pa.Table, ...]]:
    """Per part, every source's part of that name, whose rows must be the first's (set,
    example_id) rows in the same order, in chunks of the same rows; one part of each source
    is in memory at a time."""
    for part in parts:
        tables = [read_prediction_part(run_uri, s.checkpoint, part, s.copy, VOTE_COLUMNS) for s in sources]
        first = tables[0]
        for source, table in zip(sources[1:], tables[1:]):
            if not (table.column("set").equals(first.column("set"))
                    and table.column("example_id").equals(first.column("example_id"))):
                raise InputError(f"{run_uri}: {source.description}: part {part} covers other examples than "
                                 f"that of {sources[0].description}")
        yield from zip(*(_chunks(table) for table in tables))


def _chunks(table: pa.Table) -> Iterator[pa.Table]:
    """Consecutive slices of CHUNK_ROWS rows (no copy)."""
    for start in range(0, table.num_rows, CHUNK_ROWS):
        yield table.slice(start, CHUNK_ROWS)


def _stacked(tables: Sequence[pa.Table]) -> tuple[np.ndarray, np.ndarray]:
    """The voters' predictions [V, N, L] and halting logits [V, N]."""
    return (np.stack([column_matrix(t, "pred") for t in tables]),
            np.stack([t.column("q_halt_logit").to_numpy() for t in tables]))


class _Labels:
    """The dataset's labels of stored prediction rows."""

    def __init__(self, dataset: Dataset, split: str):
        self.dataset, self.split = dataset, split
        self.ignore_label_id = dataset.metadata(split).ignore_label_id

    def of(self, rows: pa.Table) -> np.ndarray:
        """The labels of `rows`: prediction rows of one set (a part or a slice of one)."""
        return _dataset_rows(self.dataset, self.split, rows, "labels")


def _dataset_rows(dataset: Dataset, split: str, rows: pa.Table, field: Literal["inputs", "labels"]) -> np.ndarray:
    """The dataset's `field` of stored prediction rows of one set (a part or a slice of one),
    reading only the range of examples they span."""
    set_name = rows.column("set")[0].as_py()
    example_id = rows.column("example_id").to_numpy()
    first = int(example_id.min())
    batch = dataset.examples(split, set_name, first, int(example_id.max()) + 1)
    return np.asarray(getattr(batch, field))[example_id - first]
