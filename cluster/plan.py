"""Work planning: which checkpoints, checked against which data, split into which units.

- Discovery turns the config's checkpoint sources (explicit files, run directories or s3://
  prefixes with a glob and step filters) into `CheckpointRef`s.
- Preflight checks every checkpoint against the dataset metadata, and every vote the config
  asks for against the data, before any actor starts, and reports every problem at once. It
  reads no checkpoint whole: each file's storage `version` (a stat or a HEAD request), its
  training config (once per distinct file) and its tensors' shapes from the archive's header.
  The actors read the weights, and refuse a file whose version is not the planned one.
- Planning cuts each set of the split into shards and pairs every checkpoint with every
  shard (and every test-time-augmentation copy): a work unit. A unit's id hashes everything
  that decides its result, so a rerun recognises units it has already committed.

Shards are whole multiples of the batch size, so the engine sees the same batches whether
one process evaluates a set or many actors evaluate its shards: results are bit-identical
however the work is split.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from hrm import storage
from hrm.checkpoint.discovery import resolve_checkpoint, step_files, step_number
from hrm.checkpoint.loading import CONFIG_FILE, ArchSpec, check_fits, read_arch_spec, read_checkpoint_header
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.data.schema import DatasetMetadata, ExampleBatch, Shard
from hrm.errors import InputError
from hrm.eval.metrics import STATS_FORMAT
from hrm.puzzles.grids import GridTransform, board_side
from hrm.puzzles.tta import tta_transform

from cluster.config import CheckpointSource, EnsembleConfig, RunConfig, TTAConfig
from cluster.progress import Meter
from cluster.results.layout import prediction_key, run_uri
from cluster.results.quoted import read_quoted_figures

PREFLIGHT_THREADS = 8  # checkpoints checked at once: their small reads wait on storage, not on this process
UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAZE_COPIES = 7  # non-identity dihedral transforms


class CheckpointRef(BaseModel):
    """One checkpoint of the run: where its weights and training config are, and (after
    preflight) what it is."""

    model_config = ConfigDict(frozen=True)

    name: str  # unique in the run, safe as a path component
    uri: str  # the step_N file
    config_uri: str  # its all_config.yaml
    step: int | None
    version: str | None = None  # hrm.storage.version of the weights file, set by preflight
    family: str | None = None


class TTACopy(BaseModel):
    """One transformed copy of the data for test-time augmentation (copy 0, the plain data,
    has none). The actor transforms a unit's inputs and labels with it and stores the
    predictions mapped back, so everything downstream sees the original frame."""

    model_config = ConfigDict(frozen=True)

    family: str  # hrm.puzzles.tta.TTA_FAMILIES
    side: int  # board side: seq_len = side * side
    index: int  # 1, 2, …
    seed: int

    def transform(self) -> GridTransform:
        return tta_transform(self.family, self.side, self.index, self.seed)


class Sample(BaseModel):
    """A seeded sample of each set in place of its first `limit` examples (dataset.sample_seed).
    A sampled unit's shard ranges over positions in its set's sample, not over the set."""

    model_config = ConfigDict(frozen=True)

    seed: int
    limit: int

    def rows(self, total: int) -> np.ndarray:
        """The examples sampled from a set of `total`: min(limit, total) positions drawn without
        replacement by numpy's default_rng(seed), in dataset order (read-only: shared)."""
        return sampled_rows(self.seed, self.limit, total)

    @classmethod
    def of(cls, limit: int | None, seed: int | None) -> Sample | None:
        return None if seed is None or limit is None else cls(seed=seed, limit=limit)


@lru_cache(maxsize=8)
def sampled_rows(seed: int, limit: int, total: int) -> np.ndarray:
    """Drawn once per set: every shard (evaluate's every chunk, an actor's every unit) of a
    sampled set takes its slice of the same draw."""
    rows = np.sort(np.random.default_rng(seed).choice(total, size=min(limit, total), replace=False))
    rows.flags.writeable = False
    return rows


SAMPLE_READ_TOKENS = 1 << 22  # a sampled shard is read in windows of at most this many tokens of its set


def read_examples(dataset: Dataset, shard: Shard, sample: Sample | None = None) -> ExampleBatch:
    """The examples of a shard: its range of the set, or (sampled) the sampled examples at its
    range of positions, read window by window so that only the parts holding them are read
    and no more than one window is in memory besides what is kept."""
    if sample is None:
        return dataset.examples(shard.split, shard.set, shard.start, shard.stop)
    rows = sample.rows(dataset.num_examples(shard.split, shard.set))[shard.start:shard.stop]
    span = max(1, SAMPLE_READ_TOKENS // max(1, dataset.metadata(shard.split).seq_len))
    parts = []
    at = 0
    while at < len(rows):
        end = int(np.searchsorted(rows, rows[at] + span))  # the rows within one window from rows[at]
        window = dataset.examples(shard.split, shard.set, int(rows[at]), int(rows[end - 1]) + 1)
        parts.append(take_examples(window, rows[at:end] - rows[at]))
        at = end
    if not parts:
        return dataset.examples(shard.split, shard.set, 0, 0)
    return parts[0] if len(parts) == 1 else concat_examples(parts)


def take_examples(batch: ExampleBatch, rows: np.ndarray) -> ExampleBatch:
    """The examples of `batch` at `rows` (every per-example array and column taken alike)."""
    return replace(batch, **{name: value[rows] for name, value in vars(batch).items() if isinstance(value, np.ndarray)},
                   columns={name: column[rows] for name, column in batch.columns.items()})


def concat_examples(batches: list[ExampleBatch]) -> ExampleBatch:
    first = batches[0]
    return replace(first, **{name: np.concatenate([vars(b)[name] for b in batches])
                             for name, value in vars(first).items() if isinstance(value, np.ndarray)},
                   columns={name: np.concatenate([b.columns[name] for b in batches]) for name in first.columns})


class Unit(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    checkpoint: str  # CheckpointRef.name
    shard: Shard  # sampled: a range of positions in its set's sample (`read_examples`)
    tta: TTACopy | None = None  # None: the plain data
    ablation: str | None = None  # hrm.eval.ablation.ABLATIONS: the puzzle identifiers ablated
    sample: Sample | None = None  # dataset.sample_seed: the seeded sample its shard ranges over

    @property
    def examples(self) -> int:
        return self.shard.examples

    @property
    def plain(self) -> bool:
        """On the plain data as the dataset gives it: what the run's metrics count."""
        return self.tta is None and self.ablation is None

    @property
    def prediction_key(self) -> str:
        """Where its predictions are stored, relative to the run."""
        return prediction_key(self.checkpoint, self.shard, self.tta.index if self.tta is not None else 0,
                              self.ablation)


@dataclass
class PreparedRun:
    config: RunConfig
    run_id: str
    run: str  # results URI of this run
    dataset_hash: str
    sets: list[str]
    shards: list[Shard]
    checkpoints: list[CheckpointRef]
    units: list[Unit]
    tta_copies: list[TTACopy]
    started_at: float  # time.time()
    preflight_s: float

    def units_per_checkpoint(self) -> dict[str, tuple[int, int]]:
        """{checkpoint name: (units, examples)} of the plan, in one pass over the units."""
        tally = {ref.name: (0, 0) for ref in self.checkpoints}
        for unit in self.units:
            units, examples = tally[unit.checkpoint]
            tally[unit.checkpoint] = (units + 1, examples + unit.examples)
        return tally


def prepare(config: RunConfig) -> PreparedRun:
    """Everything before Ray: preflight (raises InputError listing every problem) and planning."""
    started, clock = time.time(), time.perf_counter()
    dataset, checkpoints = preflight(config)
    split = config.dataset.split
    sets = dataset.selected_sets(split, config.dataset.sets, "dataset.sets")
    shards = plan_shards(dataset, split, sets, config.cluster.shard_size, config.eval.batch_size, config.dataset.limit)
    dataset_hash = dataset.content_hash()
    tta_copies = check_votes(config, dataset, [ref.name for ref in checkpoints])
    if config.output.quoted_figures:
        read_quoted_figures(config.output.quoted_figures)  # refused now, not after the run
    if "overlap" in config.audits and "train" not in dataset.splits:
        raise InputError(f"{config.dataset.uri}: audits: overlap needs a 'train' split to audit the test split "
                         f"against (splits: {', '.join(dataset.splits)})")
    run_id = config.resolved_run_id(started)
    return PreparedRun(
        config=config,
        run_id=run_id,
        run=run_uri(config.output.uri, run_id),
        dataset_hash=dataset_hash,
        sets=sets,
        shards=shards,
        checkpoints=checkpoints,
        units=plan_units(checkpoints, shards, dataset_hash, config.eval_identity(), tta_copies,
                         config.output.log_samples, config.ablations,
                         Sample.of(config.dataset.limit, config.dataset.sample_seed)),
        tta_copies=tta_copies,
        started_at=started,
        preflight_s=time.perf_counter() - clock,
    )


def replan_checkpoint(prepared: PreparedRun, name: str) -> PreparedRun:
    """The plan with checkpoint `name` checked again and its units planned under its current
    version (new unit ids, so nothing evaluated on its former bytes is counted for it); raises
    InputError when it no longer passes."""
    config = prepared.config
    meta = open_dataset(config.dataset.uri).metadata(config.dataset.split)
    ref = next(r for r in prepared.checkpoints if r.name == name)
    checked = _check_checkpoint(ref, read_arch_spec(ref.config_uri), meta, config.dataset.uri,
                                config.cluster.checkpoint_cache_dir)
    fresh = iter(plan_units([checked], prepared.shards, prepared.dataset_hash, config.eval_identity(),
                            prepared.tta_copies, config.output.log_samples, config.ablations))
    return replace(prepared, checkpoints=[checked if r.name == name else r for r in prepared.checkpoints],
                   units=[next(fresh) if u.checkpoint == name else u for u in prepared.units])


# --------------------------------------------------------------------------- discovery


def source_checkpoints(source: CheckpointSource) -> list[CheckpointRef]:
    """The checkpoints one config entry names, oldest step first."""
    if source.path is not None:
        uri = resolve_checkpoint(source.path)
        name = source.name or f"{storage.basename(storage.parent(uri))}-{storage.basename(uri)}"
        return [_ref(name, uri, source.config, step_number(storage.basename(uri)))]
    files = step_files(source.run, source.glob)
    if not files:
        raise InputError(f"{source.run}: no checkpoint files matching {source.glob!r}")
    unnumbered = sorted(file for file, step in files.items() if step is None)
    if unnumbered and _filters_steps(source):
        raise InputError(f"{source.run}: step filters need step numbers, but {unnumbered[0]!r} has none")
    ordered = sorted(files.items(), key=lambda fs: (fs[1] is None, fs[1] or 0, fs[0]))
    selected = select_steps(ordered, source)
    if not selected:  # only min_step/max_step can empty a non-empty list
        steps = [step for _, step in ordered]
        raise InputError(f"{source.run}: min_step {source.min_step} / max_step {source.max_step} select none of its "
                         f"{len(steps)} checkpoint(s) (steps {steps[0]}..{steps[-1]})")
    prefix = source.name or storage.basename(source.run)
    return [_ref(f"{prefix}-{file}", storage.join(source.run, file), source.config, step)
            for file, step in selected]


def _filters_steps(source: CheckpointSource) -> bool:
    return any(v is not None for v in (source.min_step, source.max_step, source.every, source.last))


def select_steps(files: list[tuple[str, int]], source: CheckpointSource) -> list[tuple[str, int]]:
    """(file, step) pairs by increasing step, filtered in a fixed order: the range, then every
    Nth counted back from the newest (so the newest is always kept), then the last K."""
    if source.min_step is not None:
        files = [f for f in files if f[1] >= source.min_step]
    if source.max_step is not None:
        files = [f for f in files if f[1] <= source.max_step]
    if source.every is not None:
        files = files[::-1][:: source.every][::-1]
    if source.last is not None:
        files = files[-source.last :]
    return files


def _ref(name: str, uri: str, config: str | None, step: int | None) -> CheckpointRef:
    config_uri = config or storage.sibling(uri, CONFIG_FILE)
    return CheckpointRef(name=UNSAFE_NAME_CHARS.sub("-", name), uri=uri, config_uri=config_uri, step=step)


# --------------------------------------------------------------------------- preflight


def preflight(config: RunConfig) -> tuple[Dataset, list[CheckpointRef]]:
    """Open the dataset, discover the checkpoints and check every one against the dataset
    metadata. Returns the dataset and the checkpoints with their storage versions, or raises
    one InputError listing every problem found (not just the first, and each once)."""
    data = config.dataset
    problems: list[str] = []
    dataset = meta = None
    try:
        dataset = open_dataset(data.uri)
        meta = dataset.metadata(data.split)
        dataset.selected_sets(data.split, data.sets, "dataset.sets")
    except InputError as err:
        problems.append(str(err))
    refs: dict[str, CheckpointRef] = {}  # by file: the same file named twice counts once
    for i, source in enumerate(config.checkpoints):
        try:
            for ref in source_checkpoints(source):
                refs.setdefault(ref.uri, ref)
        except InputError as err:
            problems.append(f"checkpoints.{i}: {err}")
    names: dict[str, str] = {}
    for ref in refs.values():
        if ref.name in names:
            problems.append(f"{ref.uri}: checkpoint name {ref.name!r} is also {names[ref.name]}'s: give `name:`")
        names.setdefault(ref.name, ref.uri)
    checked = []
    for ref, problem in check_checkpoints(list(refs.values()), meta, data.uri, config.cluster.checkpoint_cache_dir):
        if problem is None:
            checked.append(ref)
        else:
            problems.append(problem)
    problems = list(dict.fromkeys(problems))  # checkpoints sharing a broken all_config.yaml: said once
    if problems:
        raise InputError(f"preflight found {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return dataset, checked


def check_checkpoints(refs: list[CheckpointRef], meta: DatasetMetadata | None, dataset_uri: str,
                      cache_dir: str | None) -> Iterator[tuple[CheckpointRef, str | None]]:
    """Each checkpoint checked, PREFLIGHT_THREADS at a time, in plan order: with its version
    and family, and its problem or None. A training config shared by many checkpoints is read once."""
    meter = Meter("checkpoints checked", len(refs))
    meter.start()
    specs = _ArchSpecs()

    def check(ref: CheckpointRef) -> tuple[CheckpointRef, str | None]:
        try:
            return _check_checkpoint(ref, specs.get(ref.config_uri), meta, dataset_uri, cache_dir), None
        except InputError as err:
            return ref, str(err)

    try:
        with ThreadPoolExecutor(PREFLIGHT_THREADS) as pool:
            for done, result in enumerate(pool.map(check, refs), start=1):
                meter.update(done, result[0].name)
                yield result
    finally:
        meter.stop()


class _ArchSpecs:
    """Training configs by URI, each read once (or its error, raised again for every checkpoint
    that shares it). Threads that miss at once may both read it: the same result."""

    def __init__(self) -> None:
        self._read: dict[str, ArchSpec | InputError] = {}

    def get(self, uri: str) -> ArchSpec:
        if uri not in self._read:
            try:
                self._read[uri] = read_arch_spec(uri)
            except InputError as err:
                self._read[uri] = err
        found = self._read[uri]
        if isinstance(found, InputError):
            raise found
        return found


def _check_checkpoint(ref: CheckpointRef, spec: ArchSpec, meta: DatasetMetadata | None, dataset_uri: str,
                      cache_dir: str | None) -> CheckpointRef:
    """Loadable as a checkpoint of its training config, and (when the dataset opened) shaped for
    the dataset; its version is taken before its header is read, so a rewrite in between is
    caught when an actor loads it."""
    version = storage.version(ref.uri)
    header = read_checkpoint_header(ref.uri, spec, cache_dir)
    if meta is not None:
        check_fits(header, meta.sizes, dataset_uri)
    return ref.model_copy(update={"version": version, "family": spec.family})


def check_votes(config: RunConfig, dataset: Dataset, checkpoints: list[str]) -> list[TTACopy]:
    """Check, before any actor starts, that every vote the config asks for can be computed on
    this dataset and these checkpoints; raise one InputError listing every problem. Returns
    the test-time-augmentation copies to plan (none when TTA is off)."""
    problems = []
    if config.voting.enabled:
        missing = [name for name, value in (("identifiers.json", dataset.identifiers),
                                            ("test_puzzles.json", dataset.test_puzzles)) if value is None]
        if missing:
            problems.append(f"voting.enabled: ARC voting needs the dataset's {' and '.join(missing)}, "
                            f"which {dataset.uri} lacks")
    names = [e.name for e in config.ensembles]
    for i, ensemble in enumerate(config.ensembles):
        problems += _ensemble_problems(i, ensemble, checkpoints, names)
    copies: list[TTACopy] = []
    if config.tta.enabled:
        try:
            copies = tta_copies(config.tta, dataset.metadata(config.dataset.split))
        except InputError as err:
            problems.append(str(err))
    if problems:
        raise InputError(f"{len(problems)} problem(s) with the votes of the run config:\n  " + "\n  ".join(problems))
    return copies


def _ensemble_problems(i: int, ensemble: EnsembleConfig, checkpoints: list[str], names: list[str]) -> list[str]:
    problems = []
    if names.count(ensemble.name) > 1:
        problems.append(f"ensembles.{i}.name: {ensemble.name!r} names more than one ensemble")
    unknown = [m for m in ensemble.members or [] if m not in checkpoints]
    if unknown:
        problems.append(f"ensembles.{i}.members: no checkpoint named {', '.join(map(repr, unknown))} "
                        f"(the run's checkpoints: {', '.join(checkpoints)})")
    if ensemble.top_k is not None and ensemble.top_k > len(checkpoints):
        problems.append(f"ensembles.{i}.top_k: {ensemble.top_k} members, but the run has {len(checkpoints)} checkpoints")
    return problems


def tta_copies(tta: TTAConfig, meta: DatasetMetadata) -> list[TTACopy]:
    """The transformed copies `tta` asks for, checked against the dataset: the board must be
    square, a Sudoku board's vocabulary must be pad, blank and its digits (the transform
    relabels digit tokens and keeps 0), and a maze has only 7 non-identity transforms."""
    side = board_side(meta.seq_len)
    if side is None:
        raise InputError(f"tta.transform: {tta.transform} needs a square board, but the dataset's seq_len "
                         f"{meta.seq_len} is not a square")
    if tta.transform == "sudoku":
        box = board_side(side)
        if box is None or meta.vocab_size != side + 2 or meta.ignore_label_id not in (None, 0):
            raise InputError(
                f"tta.transform: sudoku needs a {side}×{side} Sudoku board (box side a whole number, vocab_size "
                f"{side + 2}: pad 0, blank 1, digits; ignore_label_id 0 or none), but the dataset has vocab_size "
                f"{meta.vocab_size} and ignore_label_id {meta.ignore_label_id}")
    elif tta.copies > MAZE_COPIES:
        raise InputError(f"tta.copies: a maze has {MAZE_COPIES} non-identity dihedral transforms, got {tta.copies}")
    return [TTACopy(family=tta.transform, side=side, index=i, seed=tta.seed) for i in range(1, tta.copies + 1)]


# --------------------------------------------------------------------------- units


def plan_shards(dataset: Dataset, split: str, sets: list[str], shard_size: int, batch_size: int,
                limit: int | None = None) -> list[Shard]:
    """Consecutive example ranges per set, each a whole number of batches (but the last), over
    the first `limit` examples of each set when given (a sampled run: over the positions of
    its `limit` sampled examples, the same ranges)."""
    size = math.ceil(shard_size / batch_size) * batch_size
    shards = []
    for set_name in sets:
        total = dataset.num_examples(split, set_name)
        total = total if limit is None else min(total, limit)
        shards += [Shard(split, set_name, start, min(total, start + size)) for start in range(0, total, size)]
    return shards


def unit_id(
    checkpoint: CheckpointRef, dataset_hash: str, eval_identity: dict[str, Any], shard: Shard, tta: TTACopy | None = None,
    samples: bool = False, ablation: str | None = None, sample: Sample | None = None,
) -> str:
    key: dict[str, Any] = {
        # The name as well as the version: two files of equal size and modification time (or
        # equal ETags: the same bytes) are still two checkpoints of the run, each with its units.
        "checkpoint": [checkpoint.name, checkpoint.version],
        "dataset": dataset_hash,
        "eval": eval_identity,
        "shard": [shard.split, shard.set, shard.start, shard.stop],
        "stats": STATS_FORMAT,  # a unit committed with statistics of another format is evaluated again
    }
    if tta is not None:
        # The transform itself, not just its index: a change in how copies are drawn must not
        # resume results of different copies. Plain units keep their ids (resumable by a TTA run).
        key["tta"] = {**tta.model_dump(), "transform": repr(tta.transform())}
    if ablation is not None:
        key["ablation"] = ablation
    if sample is not None:
        # The shard is a range of the sample's positions: another seed or size is other examples.
        key["sample"] = sample.model_dump()
    if samples:
        # Predictions stored with their inputs and labels (output.log_samples) are other files:
        # switching it must not resume parts without them. Units without keep their ids.
        key["samples"] = True
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def plan_units(
    checkpoints: list[CheckpointRef], shards: list[Shard], dataset_hash: str, eval_identity: dict[str, Any],
    tta_copies: list[TTACopy] | None = None, samples: bool = False, ablations: list[str] | None = None,
    sample: Sample | None = None,
) -> list[Unit]:
    """Checkpoint-major order (the plain data, then each test-time-augmentation copy, then each
    puzzle-identifier ablation): the driver then naturally finishes one checkpoint before the next."""
    units = []
    for ref in checkpoints:
        units += [Unit(id=unit_id(ref, dataset_hash, eval_identity, shard, copy, samples, sample=sample),
                       checkpoint=ref.name, shard=shard, tta=copy, sample=sample)
                  for copy in [None, *(tta_copies or [])] for shard in shards]
        units += [Unit(id=unit_id(ref, dataset_hash, eval_identity, shard, None, samples, ablation, sample),
                       checkpoint=ref.name, shard=shard, ablation=ablation, sample=sample)
                  for ablation in ablations or [] for shard in shards]
    return units
