"""Work planning: which checkpoints, checked against which data, split into which units.

- Discovery turns the config's checkpoint sources (explicit files, run directories or s3://
  prefixes with a glob and step filters) into `CheckpointRef`s.
- Preflight checks every checkpoint against the dataset metadata before any actor starts
  and reports every problem at once.
- Planning cuts each set of the split into shards and pairs every checkpoint with every
  shard: a work unit. A unit's id hashes everything that decides its result, so a rerun
  recognises units it has already committed.

Shards are whole multiples of the batch size, so the engine sees the same batches whether
one process evaluates a set or many actors evaluate its shards: results are bit-identical
however the work is split.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from pydantic import BaseModel, ConfigDict

from hrm import storage
from hrm.augment import GridTransform, tta_transform
from hrm.checkpoint import check_dataset_sizes, check_state_dict, load_checkpoint
from hrm.dataset import Dataset, Shard, open_dataset
from hrm.errors import InputError
from hrm.models import build_model

from cluster.config import CheckpointSource, RunConfig

DEFAULT_STEP_GLOB = "step_*"
STEP_NUMBER = re.compile(r"(\d+)$")
UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class CheckpointRef(BaseModel):
    """One checkpoint of the run: where its weights and training config are, and (after
    preflight) what it is."""

    model_config = ConfigDict(frozen=True)

    name: str  # unique in the run, safe as a path component
    uri: str  # the step_N file
    config_uri: str  # its all_config.yaml
    step: int | None
    content_hash: str | None = None  # sha256 of the weights file, set by preflight
    family: str | None = None


class TTACopy(BaseModel):
    """One transformed copy of the data for test-time augmentation (copy 0, the plain data,
    has none). The actor transforms a unit's inputs and labels with it and stores the
    predictions mapped back, so everything downstream sees the original frame."""

    model_config = ConfigDict(frozen=True)

    family: str  # hrm.augment.TTA_FAMILIES
    side: int  # board side: seq_len = side * side
    index: int  # 1, 2, …
    seed: int

    def transform(self) -> GridTransform:
        return tta_transform(self.family, self.side, self.index, self.seed)


class Unit(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    checkpoint: str  # CheckpointRef.name
    shard: Shard
    tta: TTACopy | None = None  # None: the plain data

    @property
    def examples(self) -> int:
        return self.shard.stop - self.shard.start


# --------------------------------------------------------------------------- discovery


def source_checkpoints(source: CheckpointSource) -> list[CheckpointRef]:
    """The checkpoints one config entry names, oldest step first."""
    if source.path is not None:
        uri = source.path if storage.exists(source.path) else _newest_step(source.path)
        name = source.name or f"{_basename(_parent(uri))}-{_basename(uri)}"
        return [_ref(name, uri, source.config, _step_number(_basename(uri)))]
    files = _step_files(source.run, source.glob)
    if not files:
        raise InputError(f"{source.run}: no checkpoint files matching {source.glob!r}")
    unnumbered = sorted(file for file, step in files.items() if step is None)
    if unnumbered and _filters_steps(source):
        raise InputError(f"{source.run}: step filters need step numbers, but {unnumbered[0]!r} has none")
    ordered = sorted(files.items(), key=lambda fs: (fs[1] is None, fs[1] or 0, fs[0]))
    prefix = source.name or _basename(source.run)
    return [_ref(f"{prefix}-{file}", storage.join(source.run, file), source.config, step)
            for file, step in select_steps(ordered, source)]


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


def _step_files(run_uri: str, pattern: str) -> dict[str, int | None]:
    """{file name: step number} of the files directly in `run_uri` that match `pattern`."""
    names = [p for p in storage.list_files(run_uri) if "/" not in p]
    return {n: _step_number(n) for n in names if fnmatch.fnmatchcase(n, pattern) and ".tmp-" not in n}


def _step_number(file_name: str) -> int | None:
    match = STEP_NUMBER.search(file_name)
    return int(match.group(1)) if match else None


def _newest_step(run_uri: str) -> str:
    numbered = {f: s for f, s in _step_files(run_uri, DEFAULT_STEP_GLOB).items() if s is not None}
    if not numbered:
        raise InputError(f"{run_uri}: no such checkpoint file, and no step_<N> files below it")
    return storage.join(run_uri, max(numbered, key=numbered.__getitem__))


def _ref(name: str, uri: str, config: str | None, step: int | None) -> CheckpointRef:
    config_uri = config or _sibling(uri, "all_config.yaml")
    return CheckpointRef(name=UNSAFE_NAME_CHARS.sub("-", name), uri=uri, config_uri=config_uri, step=step)


def _sibling(uri: str, name: str) -> str:
    """The object `name` in the same directory as `uri` (keeping an s3 URI's ?settings)."""
    base, sep, query = uri.partition("?")
    return posixpath.join(posixpath.dirname(base), name) + sep + query


def _parent(uri: str) -> str:
    return posixpath.dirname(uri.partition("?")[0].rstrip("/"))


def _basename(uri: str) -> str:
    return posixpath.basename(uri.partition("?")[0].rstrip("/"))


# --------------------------------------------------------------------------- local copies


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "hrm-eval-checkpoints")


def local_files(ref: CheckpointRef, cache_dir: str | None) -> tuple[Path, Path]:
    """Local paths of the checkpoint file and its training config, downloading remote ones
    into `cache_dir` (shared by all actors on a node; reused while the object is unchanged)."""
    cache = Path(cache_dir or default_cache_dir())
    return _local_copy(ref.uri, cache), _local_copy(ref.config_uri, cache)


def _local_copy(uri: str, cache: Path) -> Path:
    fs, path = storage.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise InputError(f"{uri}: not found")
    # The key covers size and modification time, so a replaced object is downloaded again.
    key = hashlib.sha256(f"{uri}\0{info.size}\0{info.mtime_ns}".encode()).hexdigest()[:24]
    target = cache / key / posixpath.basename(path)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.part-{uuid.uuid4().hex}")
    try:
        with storage.open_input_stream(uri) as stream, open(partial, "wb") as out:
            while chunk := stream.read(storage.READ_CHUNK_BYTES):
                out.write(chunk)
        os.replace(partial, target)  # concurrent downloaders on one node: last rename wins, same bytes
    finally:
        partial.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- preflight


def preflight(config: RunConfig) -> tuple[Dataset, list[CheckpointRef]]:
    """Open the dataset, discover the checkpoints and check every one against the dataset
    metadata. Returns the dataset and the checkpoints with content hashes, or raises one
    InputError listing every problem found (not just the first).

    The checks need only each checkpoint's header: tensors are memory-mapped and compared by
    shape with a model built on the meta device. The content hash does read the file."""
    data = config.dataset
    problems: list[str] = []
    dataset = meta = None
    try:
        dataset = open_dataset(data.uri)
        meta = dataset.metadata(data.split)
        unknown = sorted(set(data.sets or []) - set(dataset.sets(data.split)))
        if unknown:
            problems.append(f"{data.uri}: split {data.split!r} has no set(s) {', '.join(unknown)} "
                            f"(dataset.sets: {', '.join(dataset.sets(data.split))})")
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
    for ref in refs.values():
        try:
            checked.append(_check_checkpoint(ref, meta, data.uri, config.cluster.checkpoint_cache_dir))
        except InputError as err:
            problems.append(str(err))
    if problems:
        raise InputError(f"preflight found {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return dataset, checked


def _check_checkpoint(ref: CheckpointRef, meta: Any, dataset_uri: str, cache_dir: str | None) -> CheckpointRef:
    """Loadable with its training config, and (when the dataset opened) shaped for the dataset."""
    weights, arch_config = local_files(ref, cache_dir)
    ckpt = load_checkpoint(weights, arch_config)
    if meta is None:
        return ref
    check_dataset_sizes(ckpt, meta.vocab_size, meta.num_puzzle_identifiers, dataset_uri)
    model_config = ckpt.spec.model_config(meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
    with torch.device("meta"):
        check_state_dict(ckpt, build_model(model_config))
    return ref.model_copy(update={"content_hash": ckpt.content_hash(), "family": ckpt.spec.family})


# --------------------------------------------------------------------------- units


def plan_shards(dataset: Dataset, split: str, sets: list[str], shard_size: int, batch_size: int) -> list[Shard]:
    """Consecutive example ranges per set, each a whole number of batches (but the last)."""
    size = -(-shard_size // batch_size) * batch_size
    shards = []
    for set_name in sets:
        total = dataset.num_examples(split, set_name)
        shards += [Shard(split, set_name, start, min(total, start + size)) for start in range(0, total, size)]
    return shards


def unit_id(
    checkpoint_hash: str, dataset_hash: str, eval_identity: dict[str, Any], shard: Shard, tta: TTACopy | None = None
) -> str:
    key: dict[str, Any] = {
        "checkpoint": checkpoint_hash,
        "dataset": dataset_hash,
        "eval": eval_identity,
        "shard": [shard.split, shard.set, shard.start, shard.stop],
    }
    if tta is not None:
        # The transform itself, not just its index: a change in how copies are drawn must not
        # resume results of different copies. Plain units keep their ids (resumable by a TTA run).
        key["tta"] = {**tta.model_dump(), "transform": repr(tta.transform())}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def plan_units(
    checkpoints: list[CheckpointRef], shards: list[Shard], dataset_hash: str, eval_identity: dict[str, Any],
    tta_copies: list[TTACopy] | None = None,
) -> list[Unit]:
    """Checkpoint-major order (the plain data, then each test-time-augmentation copy): the driver
    then naturally finishes one checkpoint before the next."""
    return [
        Unit(id=unit_id(ref.content_hash, dataset_hash, eval_identity, shard, copy), checkpoint=ref.name, shard=shard,
             tta=copy)
        for ref in checkpoints
        for copy in [None, *(tta_copies or [])]
        for shard in shards
    ]
