"""Puzzle datasets: the reference numpy layout and our Parquet layout, read and written.

Reference layout (what the HRM / TRM builders write)::

    <split>/dataset.json                      DatasetMetadata
    <split>/<set>__inputs.npy                 [examples, seq_len] tokens
    <split>/<set>__labels.npy                 [examples, seq_len] tokens (raw ignore_label_id)
    <split>/<set>__puzzle_identifiers.npy     [puzzles]
    <split>/<set>__puzzle_indices.npy         [puzzles + 1] example offsets (CSR)
    <split>/<set>__group_indices.npy          [groups + 1] puzzle offsets (CSR)
    identifiers.json, test_puzzles.json (TRM ARC)

Per-example extras (tier, name, …) are kept there as `<set>__<column>.npy`; the reference
code ignores files it does not know.

Our layout (object-storage friendly)::

    dataset.json                   ParquetIndex: per split the metadata, counts, dtypes and
                                   parts; the commit point, published last
    <split>/part-NNNNN.parquet     a contiguous example range of one set, one row per example
    identifiers.json, extra files

Nothing here needs memory proportional to a set: local .npy files are memory-mapped,
remote .npy files are read by byte ranges, Parquet by row groups, and `read_set` of
anything else is spooled to a scratch .npy on local disk and memory-mapped.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
import re
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic

from hrm import storage
from hrm.errors import InputError

INDEX_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")  # per puzzle / group: small
ARRAY_FIELDS = ("inputs", "labels", *INDEX_FIELDS)
ROW_COLUMNS = ("example_id", "set", "puzzle_index", "group_index", "puzzle_identifier", "inputs", "labels")
META_FILE = "dataset.json"
IDENTIFIERS_FILE = "identifiers.json"
TEST_PUZZLES_FILE = "test_puzzles.json"
PARQUET_FORMAT = "hrm-eval/parquet"
FORMATS = ("parquet", "reference")
DEFAULT_SHARD_BYTES = 64 << 20
# The unit of every streamed check and copy.
CHUNK_BYTES = 8 << 20
# Uncompressed bytes per Parquet row group: the smallest unit a range read decodes, so small
# enough that reading one engine batch decodes little more than the batch.
ROW_GROUP_BYTES = 1 << 20
# Decoded row groups kept per Parquet dataset: consecutive batches share the row group at their
# boundary, so keeping the last two decodes each row group once when reading in order.
DECODED_ROW_GROUPS = 2

Namer = Callable[[str], str]  # array field -> where it lives, for error messages


# ---------------------------------------------------------------- file formats


class DatasetMetadata(pydantic.BaseModel):
    """`<split>/dataset.json` of the reference layout (field order as TRM writes it)."""

    model_config = pydantic.ConfigDict(extra="allow")

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int | None = None
    sets: list[str]

    @pydantic.model_serializer(mode="wrap")
    def _omit_missing_total_puzzles(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        # HRM files have no total_puzzles; writing `null` would make the round trip differ.
        data = handler(self)
        if data.get("total_puzzles") is None:
            data.pop("total_puzzles", None)
        return data


class SetInfo(pydantic.BaseModel):
    examples: int
    puzzles: int
    groups: int
    # numpy dtype.str of every reference array and extra column: what makes the round trip
    # back to .npy byte-identical (e.g. HRM writes uint8 test but int64 train inputs).
    dtypes: dict[str, str]
    columns: list[str] = []


class PartInfo(pydantic.BaseModel):
    file: str
    set: str
    start: int
    stop: int


class SplitInfo(pydantic.BaseModel):
    metadata: DatasetMetadata
    sets: dict[str, SetInfo]
    parts: list[PartInfo]


class ParquetIndex(pydantic.BaseModel):
    """Top-level `dataset.json` of our layout."""

    model_config = pydantic.ConfigDict(extra="allow")

    format: Literal["hrm-eval/parquet"]
    version: Literal[1]
    splits: dict[str, SplitInfo]
    files: list[str]  # top-level files besides dataset.json (identifiers.json, test_puzzles.json, …)
    summary: dict[str, Any] = {}


# ---------------------------------------------------------------- in-memory shapes


@dataclass
class PuzzleArrays:
    """One set of one split in the reference layout. `inputs`, `labels` and `columns` may be
    read-only memory maps; the three index arrays are small and in memory."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ExampleBatch:
    """A contiguous range of examples of one set; per-puzzle data expanded per example.
    Arrays are read-only views where the storage allows it."""

    set: str
    example_id: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_index: np.ndarray
    group_index: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.example_id)


@dataclass(frozen=True)
class Shard:
    """A range of examples of one set: the data half of a work unit (`dataclasses.asdict` /
    `Shard(**d)` make it JSON)."""

    split: str
    set: str
    start: int
    stop: int


# ---------------------------------------------------------------- validation


def _parse(model: type[pydantic.BaseModel], data: Any, uri: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise InputError(f"{uri}: key '{key}': {first['msg']}") from None


def _check_layout(arrays: PuzzleArrays, meta: DatasetMetadata, name: Namer) -> None:
    """Shapes and dtypes only: works on headers, touches no data."""
    for key in ARRAY_FIELDS:
        array = getattr(arrays, key)
        if array.dtype.kind not in "iu":
            raise InputError(f"{name(key)}: dtype {array.dtype} is not an integer type")
    inputs, labels = arrays.inputs, arrays.labels
    if len(inputs.shape) != 2:
        raise InputError(f"{name('inputs')}: shape {inputs.shape} is not [examples, seq_len]")
    if inputs.shape[1] != meta.seq_len:
        raise InputError(f"{name('inputs')}: rows hold {inputs.shape[1]} tokens but seq_len is "
                         f"{meta.seq_len} in dataset.json")
    if labels.shape != inputs.shape:
        raise InputError(f"{name('labels')}: shape {labels.shape} differs from inputs {inputs.shape}")
    for key in INDEX_FIELDS:
        if len(getattr(arrays, key).shape) != 1:
            raise InputError(f"{name(key)}: shape {getattr(arrays, key).shape} is not one-dimensional")
    puzzles = arrays.puzzle_identifiers.shape[0]
    if arrays.puzzle_indices.shape[0] != puzzles + 1:
        raise InputError(f"{name('puzzle_indices')}: {arrays.puzzle_indices.shape[0]} offsets for "
                         f"{puzzles} puzzles in puzzle_identifiers (expected puzzles + 1)")
    if arrays.group_indices.shape[0] < 1:
        raise InputError(f"{name('group_indices')}: empty (expected groups + 1 offsets)")
    for key, column in arrays.columns.items():
        if column.dtype.hasobject or len(column.shape) != 1 or column.shape[0] != inputs.shape[0]:
            raise InputError(f"{name(key)}: column must be one plain value per example "
                             f"({inputs.shape[0]}), got shape {column.shape} dtype {column.dtype}")


def _check_offsets(offsets: np.ndarray, total: int, counted: str, name: str) -> None:
    if offsets[0] != 0:
        raise InputError(f"{name}: first offset is {offsets[0]}, expected 0")
    if offsets[-1] != total:
        raise InputError(f"{name}: last offset is {offsets[-1]} but there are {total} {counted}")
    drops = np.flatnonzero(np.diff(offsets.astype(np.int64)) < 0)
    if drops.size:
        at = int(drops[0]) + 1
        raise InputError(f"{name}: offsets decrease at index {at} ({offsets[at - 1]} then {offsets[at]})")


def _check_index_arrays(arrays: PuzzleArrays, meta: DatasetMetadata, name: Namer) -> None:
    """CSR offsets and identifier range; these arrays are per puzzle/group, small enough to scan whole."""
    _check_offsets(arrays.puzzle_indices, arrays.inputs.shape[0], "examples", name("puzzle_indices"))
    _check_offsets(arrays.group_indices, arrays.puzzle_identifiers.shape[0], "puzzles", name("group_indices"))
    ids = arrays.puzzle_identifiers
    bad = np.flatnonzero((ids < 0) | (ids >= meta.num_puzzle_identifiers))
    if bad.size:
        at = int(bad[0])
        raise InputError(f"{name('puzzle_identifiers')}: puzzle {at} has identifier {ids[at]}, outside "
                         f"0..{meta.num_puzzle_identifiers - 1} (num_puzzle_identifiers in dataset.json)")


def _check_token_range(tokens: np.ndarray, vocab_size: int, allowed: int | None, first_example: int,
                       name: str) -> None:
    if tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < vocab_size):
        return  # the common case costs two reductions, no masks
    bad = (tokens < 0) | (tokens >= vocab_size)
    if allowed is not None:
        bad &= tokens != allowed
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        row = int(rows[0])
        col = int(np.flatnonzero(bad[row])[0])
        raise InputError(f"{name}: example {first_example + row} position {col} holds token "
                         f"{tokens[row, col]}, outside 0..{vocab_size - 1} (vocab_size in dataset.json)")


def _check_tokens(batch: ExampleBatch, meta: DatasetMetadata, name: Namer) -> None:
    first = int(batch.example_id[0]) if len(batch) else 0
    _check_token_range(batch.inputs, meta.vocab_size, None, first, name("inputs"))
    _check_token_range(batch.labels, meta.vocab_size, meta.ignore_label_id, first, name("labels"))


def _check_arrays(arrays: PuzzleArrays, meta: DatasetMetadata, set_name: str, name: Namer) -> None:
    """Everything: layout, offsets, identifiers, and every token, chunk by chunk."""
    _check_layout(arrays, meta, name)
    _check_index_arrays(arrays, meta, name)
    for start, stop in _ranges(arrays.inputs.shape[0], _rows_per(CHUNK_BYTES, arrays)):
        _check_tokens(_slice(arrays, set_name, start, stop), meta, name)


def _read_metadata(uri: str) -> DatasetMetadata:
    return _parse(DatasetMetadata, storage.read_json(uri), uri)


def _check_identifiers(data: Any, uri: str) -> list[str]:
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise InputError(f"{uri}: expected a JSON list of identifier strings")
    return data


# ---------------------------------------------------------------- small helpers


def _row_bytes(arrays: PuzzleArrays) -> int:
    return arrays.inputs.shape[1] * (arrays.inputs.dtype.itemsize + arrays.labels.dtype.itemsize)


def _rows_per(budget_bytes: int, arrays: PuzzleArrays) -> int:
    return max(1, budget_bytes // max(1, _row_bytes(arrays)))


def _ranges(total: int, step: int, start: int = 0) -> list[tuple[int, int]]:
    return [(a, min(total, a + step)) for a in range(start, total, step)]


def _slice(arrays: PuzzleArrays, set_name: str, start: int, stop: int) -> ExampleBatch:
    """Examples [start, stop) with their puzzle and group found through the CSR offsets."""
    example_id = np.arange(start, stop, dtype=np.int64)
    # side="right" - 1: the last puzzle starting at or before the example (skips empty puzzles)
    puzzle_index = np.searchsorted(arrays.puzzle_indices, example_id, side="right") - 1
    group_index = np.searchsorted(arrays.group_indices, puzzle_index, side="right") - 1
    return ExampleBatch(
        set=set_name, example_id=example_id,
        inputs=np.asarray(arrays.inputs[start:stop]), labels=np.asarray(arrays.labels[start:stop]),
        puzzle_identifiers=arrays.puzzle_identifiers[puzzle_index],
        puzzle_index=puzzle_index, group_index=group_index,
        columns={key: np.asarray(column[start:stop]) for key, column in arrays.columns.items()})


class _NpyFile:
    """An .npy file with its header parsed and checked; rows are read by byte ranges (on S3
    an HTTP range request per slice)."""

    def __init__(self, uri: str):
        self.uri = uri
        self._file = storage.open_input_file(uri)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        try:
            version = np.lib.format.read_magic(self._file)
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = readers[version](self._file)
        except ValueError as err:
            raise InputError(f"{uri}: not a readable .npy file ({err})") from None
        if dtype.hasobject:
            raise InputError(f"{uri}: holds Python objects (a ragged array?); only plain arrays are supported")
        if fortran_order and len(shape) > 1:
            raise InputError(f"{uri}: Fortran-ordered array; save it in C order (as the reference builders do)")
        self.shape, self.dtype = shape, dtype
        self.offset = self._file.tell()
        self._row_bytes = dtype.itemsize * math.prod(shape[1:])
        expected = self.offset + self._row_bytes * (shape[0] if shape else 1)
        if self._file.size() != expected:
            raise InputError(f"{uri}: {self._file.size()} bytes but its header promises {expected} (truncated?)")

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        assert step == 1, "row ranges only"
        count = max(0, stop - start)
        data = self._file.read_at(self._row_bytes * count, self.offset + self._row_bytes * start)
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))


def _open_npy(uri: str) -> Any:
    """A local .npy memory-mapped, a remote one as an `_NpyFile`; both slice by rows."""
    npy = _NpyFile(uri)
    if not storage.is_local(uri):
        return npy
    if math.prod(npy.shape) == 0:  # mmap cannot map zero bytes
        return np.zeros(npy.shape, npy.dtype)
    return np.memmap(storage.resolve(uri)[1], dtype=npy.dtype, mode="r", offset=npy.offset, shape=npy.shape)


def _whole(array: Any) -> np.ndarray:
    return np.array(array[0:array.shape[0]])


# ---------------------------------------------------------------- datasets


class Dataset(abc.ABC):
    """A dataset in either layout; get one from `open_dataset`."""

    format: str

    def __init__(self, uri: str, splits: list[str]):
        self.uri = uri
        self.splits = splits
        self._hash: str | None = None
        self._scratch: str | None = None

    @abc.abstractmethod
    def metadata(self, split: str) -> DatasetMetadata: ...

    @abc.abstractmethod
    def num_examples(self, split: str, set: str) -> int: ...

    @abc.abstractmethod
    def examples(self, split: str, set: str, start: int = 0, stop: int | None = None) -> ExampleBatch:
        """Examples [start, stop) of one set, reading only that range; tokens are checked."""

    @abc.abstractmethod
    def read_set(self, split: str, set: str) -> PuzzleArrays:
        """The whole set in the reference layout, memory-mapped (never loaded whole)."""

    @abc.abstractmethod
    def files(self) -> list[str]:
        """Relative names of the files that make up the dataset."""

    @abc.abstractmethod
    def _shard_ranges(self, split: str, set: str, target_examples: int | None) -> list[tuple[int, int]]: ...

    @abc.abstractmethod
    def _read_ranges(self, split: str, set: str) -> list[tuple[int, int]]:
        """Ranges that each cost one sequential read (a row group, a chunk)."""

    @abc.abstractmethod
    def _example_dtypes(self, split: str, set: str) -> dict[str, np.dtype]:
        """dtype of every per-example array: inputs, labels and the extra columns."""

    def sets(self, split: str) -> list[str]:
        return list(self.metadata(split).sets)

    def shards(self, split: str, sets: list[str] | None = None,
               target_examples: int | None = None) -> list[Shard]:
        """Work ranges: by default one per Parquet part (reference: the ranges our writer would
        make parts of), or at most `target_examples` examples each."""
        if target_examples is not None and target_examples < 1:
            raise ValueError(f"target_examples must be positive, got {target_examples}")
        chosen = self.sets(split) if sets is None else sets
        for name in chosen:
            self._check_set(split, name)
        return [Shard(split, name, start, stop) for name in chosen
                for start, stop in self._shard_ranges(split, name, target_examples)]

    @cached_property
    def identifiers(self) -> list[str] | None:
        if IDENTIFIERS_FILE not in self.files():
            return None
        uri = storage.join(self.uri, IDENTIFIERS_FILE)
        return _check_identifiers(storage.read_json(uri), uri)

    @cached_property
    def test_puzzles(self) -> dict | None:
        if TEST_PUZZLES_FILE not in self.files():
            return None
        return storage.read_json(storage.join(self.uri, TEST_PUZZLES_FILE))

    def content_hash(self) -> str:
        """sha256 over the sorted (file name, sha256 of its bytes) pairs; computed once."""
        if self._hash is None:
            digest = hashlib.sha256()
            for name in sorted(self.files()):
                digest.update(f"{name}\0{storage.sha256(storage.join(self.uri, name))}\n".encode())
            self._hash = digest.hexdigest()
        return self._hash

    def _check_set(self, split: str, set: str) -> None:
        if set not in self.sets(split):
            raise InputError(f"{self.uri}: split '{split}' has no set '{set}' (sets: {self.sets(split)})")

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise InputError(f"{self.uri}: no split '{split}' (splits: {self.splits})")

    def _bounds(self, split: str, set: str, start: int, stop: int | None) -> tuple[int, int]:
        self._check_set(split, set)
        total = self.num_examples(split, set)
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise IndexError(f"{self.uri}: examples [{start}, {stop}) outside split '{split}' set "
                             f"'{set}' of {total} examples")
        return start, stop

    def _spool(self, split: str, set: str,
               on_batch: Callable[[ExampleBatch], None] = lambda batch: None) -> dict[str, np.ndarray]:
        """Copy every per-example array of a set into scratch .npy files on local disk, one
        read range at a time, and return them memory-mapped."""
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="hrm-dataset-")
            # memory maps stay valid after the files are unlinked (POSIX)
            weakref.finalize(self, shutil.rmtree, self._scratch, True)
        total, seq_len = self.num_examples(split, set), self.metadata(split).seq_len
        outputs = {}
        for key, dtype in self._example_dtypes(split, set).items():
            shape = (total, seq_len) if key in ("inputs", "labels") else (total,)
            path = os.path.join(self._scratch, f"{uuid.uuid4().hex}.npy")
            outputs[key] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        for start, stop in self._read_ranges(split, set):
            batch = self.examples(split, set, start, stop)
            on_batch(batch)
            for key, values in {"inputs": batch.inputs, "labels": batch.labels, **batch.columns}.items():
                outputs[key][start:stop] = values
        for key, array in outputs.items():
            array.flush()
            outputs[key] = np.load(array.filename, mmap_mode="r")
        return outputs


class ReferenceDataset(Dataset):
    format = "reference"

    def __init__(self, uri: str, listing: list[str]):
        split_names = sorted(name.split("/")[0] for name in listing
                             if name.count("/") == 1 and name.endswith("/" + META_FILE))
        super().__init__(uri, split_names)
        self._listing = set(listing)
        self._metadata = {split: _read_metadata(storage.join(uri, split, META_FILE)) for split in split_names}
        self._arrays: dict[tuple[str, str], tuple[PuzzleArrays, dict[str, str]]] = {}

    def metadata(self, split: str) -> DatasetMetadata:
        self._check_split(split)
        return self._metadata[split]

    def _set_files(self, split: str, set: str) -> dict[str, str]:
        """Array field / extra column -> relative file name."""
        files = {key: f"{split}/{set}__{key}.npy" for key in ARRAY_FIELDS}
        pattern = re.compile(re.escape(f"{split}/{set}__") + r"([A-Za-z0-9_]+)\.npy")
        for name in sorted(self._listing):
            match = pattern.fullmatch(name)
            if match and match.group(1) not in ARRAY_FIELDS and "__" not in match.group(1):
                files[match.group(1)] = name
        return files

    def _set(self, split: str, set: str) -> tuple[PuzzleArrays, dict[str, str]]:
        """The set's arrays (big ones mapped or remote, index arrays in memory), layout-checked,
        and the URI of each for messages."""
        self._check_set(split, set)
        if (split, set) not in self._arrays:
            meta = self.metadata(split)
            files = self._set_files(split, set)
            uris = {key: storage.join(self.uri, name) for key, name in files.items()}
            for key in ARRAY_FIELDS:
                if files[key] not in self._listing:
                    raise InputError(f"{uris[key]}: not found (set '{set}' is listed under 'sets' in "
                                     f"{split}/{META_FILE})")
            opened = {key: _open_npy(uri) for key, uri in uris.items()}
            arrays = PuzzleArrays(**{key: opened.pop(key) for key in ARRAY_FIELDS}, columns=opened)
            _check_layout(arrays, meta, uris.__getitem__)
            for key in INDEX_FIELDS:
                setattr(arrays, key, _whole(getattr(arrays, key)))
            _check_index_arrays(arrays, meta, uris.__getitem__)
            self._arrays[split, set] = arrays, uris
        return self._arrays[split, set]

    def num_examples(self, split: str, set: str) -> int:
        return self._set(split, set)[0].inputs.shape[0]

    def examples(self, split: str, set: str, start: int = 0, stop: int | None = None) -> ExampleBatch:
        start, stop = self._bounds(split, set, start, stop)
        arrays, uris = self._set(split, set)
        batch = _slice(arrays, set, start, stop)
        _check_tokens(batch, self.metadata(split), uris.__getitem__)
        return batch

    def read_set(self, split: str, set: str) -> PuzzleArrays:
        arrays, _ = self._set(split, set)
        if storage.is_local(self.uri):
            for start, stop in self._read_ranges(split, set):
                self.examples(split, set, start, stop)  # token check, chunk by chunk
            return PuzzleArrays(arrays.inputs, arrays.labels, arrays.puzzle_identifiers,
                                arrays.puzzle_indices, arrays.group_indices, dict(arrays.columns))
        spooled = self._spool(split, set)
        return PuzzleArrays(spooled.pop("inputs"), spooled.pop("labels"), arrays.puzzle_identifiers,
                            arrays.puzzle_indices, arrays.group_indices, spooled)

    def _example_dtypes(self, split: str, set: str) -> dict[str, np.dtype]:
        arrays, _ = self._set(split, set)
        return {"inputs": arrays.inputs.dtype, "labels": arrays.labels.dtype,
                **{key: column.dtype for key, column in arrays.columns.items()}}

    def _read_ranges(self, split: str, set: str) -> list[tuple[int, int]]:
        arrays, _ = self._set(split, set)
        return _ranges(arrays.inputs.shape[0], _rows_per(CHUNK_BYTES, arrays))

    def _shard_ranges(self, split: str, set: str, target_examples: int | None) -> list[tuple[int, int]]:
        arrays, _ = self._set(split, set)
        # By default the ranges our writer would make parts of, so both layouts give the same work units.
        return _ranges(arrays.inputs.shape[0], target_examples or _rows_per(DEFAULT_SHARD_BYTES, arrays))

    def files(self) -> list[str]:
        known = {IDENTIFIERS_FILE, TEST_PUZZLES_FILE}
        for split in self.splits:
            known.add(f"{split}/{META_FILE}")
            known.update(name for set in self.sets(split) for name in self._set_files(split, set).values())
        return sorted(known & self._listing)


class ParquetDataset(Dataset):
    format = "parquet"

    def __init__(self, uri: str, index: ParquetIndex):
        super().__init__(uri, list(index.splits))
        self.index = index
        present = set(storage.list_files(uri))  # one listing finds every missing part up front
        for name in self.files():
            if name not in present:
                raise InputError(f"{storage.join(uri, name)}: not found, but listed in {META_FILE}")
        self._parts: dict[tuple[str, str], tuple[pq.ParquetFile, np.ndarray]] = {}
        self._decoded: dict[tuple[str, str, int], pa.Table] = {}  # least recently used first

    def metadata(self, split: str) -> DatasetMetadata:
        self._check_split(split)
        return self.index.splits[split].metadata

    def _info(self, split: str, set: str) -> SetInfo:
        self._check_set(split, set)
        info = self.index.splits[split].sets.get(set)
        if info is None:
            raise InputError(f"{storage.join(self.uri, META_FILE)}: key 'splits.{split}.sets' has no '{set}'")
        return info

    def num_examples(self, split: str, set: str) -> int:
        return self._info(split, set).examples

    def _set_parts(self, split: str, set: str) -> list[PartInfo]:
        return [part for part in self.index.splits[split].parts if part.set == set]

    def _part(self, split: str, part: PartInfo) -> tuple[pq.ParquetFile, np.ndarray]:
        """The part's reader (footer read once, schema checked) and its row-group offsets."""
        if (split, part.file) not in self._parts:
            uri = storage.join(self.uri, split, part.file)
            try:
                reader = pq.ParquetFile(storage.open_input_file(uri))
            except pa.ArrowException as err:
                raise InputError(f"{uri}: not a readable Parquet file ({err})") from None
            info, seq_len = self._info(split, part.set), self.metadata(split).seq_len
            schema = reader.schema_arrow
            for column in (*ROW_COLUMNS, *info.columns):
                if column not in schema.names:
                    raise InputError(f"{uri}: column '{column}' is missing")
            for column in ("inputs", "labels"):
                kind = schema.field(column).type
                if not pa.types.is_fixed_size_list(kind) or kind.list_size != seq_len:
                    raise InputError(f"{uri}: column '{column}' is {kind}, expected a fixed-size list of "
                                     f"seq_len={seq_len} tokens (dataset.json)")
            if reader.metadata.num_rows != part.stop - part.start:
                raise InputError(f"{uri}: {reader.metadata.num_rows} rows but dataset.json key 'parts' "
                                 f"says examples [{part.start}, {part.stop})")
            sizes = [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)]
            self._parts[split, part.file] = reader, np.cumsum([0, *sizes])
        return self._parts[split, part.file]

    def examples(self, split: str, set: str, start: int = 0, stop: int | None = None) -> ExampleBatch:
        start, stop = self._bounds(split, set, start, stop)
        batches = []
        for part in self._set_parts(split, set):
            low, high = max(start, part.start) - part.start, min(stop, part.stop) - part.start
            if low < high:
                batches.append(self._read_part_rows(split, part, low, high))
        if not batches:
            return self._empty(split, set)
        if len(batches) == 1:
            return batches[0]
        return ExampleBatch(
            set=set, **{key: np.concatenate([getattr(b, key) for b in batches])
                        for key in ("example_id", "inputs", "labels", "puzzle_identifiers",
                                    "puzzle_index", "group_index")},
            columns={key: np.concatenate([b.columns[key] for b in batches]) for key in batches[0].columns})

    def _read_part_rows(self, split: str, part: PartInfo, low: int, high: int) -> ExampleBatch:
        """Rows [low, high) of one part, reading only the row groups that hold them."""
        offsets = self._part(split, part)[1]
        first = int(np.searchsorted(offsets, low, side="right")) - 1
        last = int(np.searchsorted(offsets, high, side="left"))
        table = pa.concat_tables([self._row_group(split, part, index) for index in range(first, last)])
        return self._to_batch(split, part, table.slice(low - offsets[first], high - low), part.start + low)

    def _row_group(self, split: str, part: PartInfo, index: int) -> pa.Table:
        key = (split, part.file, index)
        table = self._decoded.pop(key, None)
        if table is None:
            table = self._part(split, part)[0].read_row_group(index)
        self._decoded[key] = table
        while len(self._decoded) > DECODED_ROW_GROUPS:
            del self._decoded[next(iter(self._decoded))]
        return table

    def _to_batch(self, split: str, part: PartInfo, table: pa.Table, first_example: int) -> ExampleBatch:
        uri = storage.join(self.uri, split, part.file)
        meta, info = self.metadata(split), self._info(split, part.set)
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}

        def column(key: str) -> np.ndarray:
            values = table.column(key)
            if values.null_count:
                raise InputError(f"{uri}: column '{key}' has null values")
            values = values.combine_chunks()
            if pa.types.is_fixed_size_list(values.type):
                return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, meta.seq_len)
            return values.to_numpy(zero_copy_only=False)

        example_id = column("example_id")
        if not np.array_equal(example_id, np.arange(first_example, first_example + len(example_id))):
            raise InputError(f"{uri}: column 'example_id' does not hold examples {first_example}.."
                             f"{first_example + len(example_id) - 1} of set '{part.set}' in order")
        batch = ExampleBatch(
            set=part.set, example_id=example_id.astype(np.int64, copy=False),
            inputs=column("inputs").astype(dtypes["inputs"], copy=False),
            labels=column("labels").astype(dtypes["labels"], copy=False),
            puzzle_identifiers=column("puzzle_identifier").astype(dtypes["puzzle_identifiers"], copy=False),
            puzzle_index=column("puzzle_index").astype(np.int64, copy=False),
            group_index=column("group_index").astype(np.int64, copy=False),
            columns={key: column(key).astype(dtypes[key], copy=False) for key in info.columns})

        def name(key: str) -> str:
            return f"{uri} column '{'puzzle_identifier' if key == 'puzzle_identifiers' else key}'"

        _check_tokens(batch, meta, name)
        for key, limit, limit_name in (("puzzle_index", info.puzzles, "puzzles"),
                                       ("group_index", info.groups, "groups"),
                                       ("puzzle_identifiers", meta.num_puzzle_identifiers,
                                        "num_puzzle_identifiers")):
            values = getattr(batch, key)
            if len(values) and (values.min() < 0 or values.max() >= limit):
                raise InputError(f"{name(key)}: values must lie in 0..{limit - 1} ({limit_name} in dataset.json)")
        return batch

    def _empty(self, split: str, set: str) -> ExampleBatch:
        info, seq_len = self._info(split, set), self.metadata(split).seq_len
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}
        index = np.zeros(0, np.int64)
        return ExampleBatch(set, index, np.zeros((0, seq_len), dtypes["inputs"]),
                            np.zeros((0, seq_len), dtypes["labels"]),
                            np.zeros(0, dtypes["puzzle_identifiers"]), index, index,
                            {key: np.zeros(0, dtypes[key]) for key in info.columns})

    def read_set(self, split: str, set: str) -> PuzzleArrays:
        info = self._info(split, set)
        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        spooled = self._spool(split, set, lambda b: rows.append((b.puzzle_index, b.group_index,
                                                                    b.puzzle_identifiers)))
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}
        if rows:
            puzzle_index, group_index, identifiers = (np.concatenate(column) for column in zip(*rows))
        else:
            puzzle_index = group_index = identifiers = np.zeros(0, np.int64)
        ids, puzzle_indices, group_indices = _offsets_from_rows(
            puzzle_index, group_index, identifiers, info, storage.join(self.uri, split))
        return PuzzleArrays(spooled.pop("inputs"), spooled.pop("labels"),
                            ids.astype(dtypes["puzzle_identifiers"]),
                            puzzle_indices.astype(dtypes["puzzle_indices"]),
                            group_indices.astype(dtypes["group_indices"]), spooled)

    def _example_dtypes(self, split: str, set: str) -> dict[str, np.dtype]:
        info = self._info(split, set)
        return {key: np.dtype(info.dtypes[key]) for key in ("inputs", "labels", *info.columns)}

    def _read_ranges(self, split: str, set: str) -> list[tuple[int, int]]:
        ranges = []
        for part in self._set_parts(split, set):
            offsets = self._part(split, part)[1] + part.start
            ranges.extend(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        return ranges

    def _shard_ranges(self, split: str, set: str, target_examples: int | None) -> list[tuple[int, int]]:
        ranges = []
        for part in self._set_parts(split, set):
            step = target_examples or part.stop - part.start
            ranges.extend(_ranges(part.stop, step, start=part.start))
        return ranges

    def files(self) -> list[str]:
        return [META_FILE, *self.index.files,
                *(f"{split}/{part.file}" for split, info in self.index.splits.items() for part in info.parts)]


def _offsets_from_rows(puzzle_index: np.ndarray, group_index: np.ndarray, identifiers: np.ndarray,
                       info: SetInfo, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild the reference per-puzzle arrays from per-example rows (every puzzle has ≥ 1 example,
    which the writer enforces)."""
    if np.any(np.diff(puzzle_index) < 0):
        raise InputError(f"{where}: column 'puzzle_index' decreases between examples")
    puzzle_indices = np.searchsorted(puzzle_index, np.arange(info.puzzles + 1), side="left")
    starts = puzzle_indices[:-1]
    if np.any(puzzle_indices[1:] == starts):
        missing = int(np.flatnonzero(puzzle_indices[1:] == starts)[0])
        raise InputError(f"{where}: column 'puzzle_index' never holds puzzle {missing} "
                         f"(dataset.json says {info.puzzles} puzzles)")
    ids, group_of_puzzle = identifiers[starts], group_index[starts]
    if not np.array_equal(ids[puzzle_index], identifiers):
        raise InputError(f"{where}: column 'puzzle_identifier' differs between examples of one puzzle")
    if not np.array_equal(group_of_puzzle[puzzle_index], group_index) or np.any(np.diff(group_of_puzzle) < 0):
        raise InputError(f"{where}: column 'group_index' is not constant per puzzle and non-decreasing")
    group_indices = np.searchsorted(group_of_puzzle, np.arange(info.groups + 1), side="left")
    return ids, puzzle_indices, group_indices


def open_dataset(uri: str | os.PathLike) -> Dataset:
    """Open a dataset in our layout (top-level dataset.json) or the reference layout
    (<split>/dataset.json), on local disk or object storage."""
    uri = os.fspath(uri)
    top = storage.join(uri, META_FILE)
    if storage.exists(top):
        data = storage.read_json(top)
        if isinstance(data, dict) and "seq_len" in data and "format" not in data:
            raise InputError(f"{top}: this is one split of a reference dataset; open its parent directory")
        return ParquetDataset(uri, _parse(ParquetIndex, data, top))
    listing = storage.list_files(uri)
    if any(name.count("/") == 1 and name.endswith("/" + META_FILE) for name in listing):
        return ReferenceDataset(uri, listing)
    if any(re.fullmatch(r"[^/]+/part-\d{5}\.parquet", name) for name in listing):
        raise InputError(f"{top}: missing, so the dataset is incomplete (dataset.json is published last; "
                         f"a write did not finish)")
    raise InputError(f"{uri}: not a dataset: no {META_FILE} (our layout) and no <split>/{META_FILE} "
                     f"(reference layout)")


# ---------------------------------------------------------------- writing


def write_dataset(uri: str | os.PathLike, splits: dict[str, dict[str, PuzzleArrays]],
                  metadata: dict[str, DatasetMetadata], identifiers: list[str] | None, *,
                  format: str = "parquet", extra_files: dict[str, object] | None = None,
                  summary: dict | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write a dataset in our Parquet layout (default) or the reference layout.

    Everything is checked before the first byte is written; every object is published
    atomically, dataset.json last (for Parquet the single top-level one, the commit point);
    if anything fails, what was published is removed again. `identifiers` None writes no
    identifiers.json. `extra_files` are top-level
    files (name -> JSON-able object, or bytes written as they are). `summary` goes into
    our dataset.json with `write_seconds` added. `shard_bytes` is the target uncompressed
    size of one Parquet part. The destination must not hold a dataset yet.
    """
    uri = os.fspath(uri)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    started = time.perf_counter()
    if set(splits) != set(metadata):
        raise ValueError(f"splits {sorted(splits)} and metadata {sorted(metadata)} name different splits")
    for split, sets in splits.items():
        meta = metadata[split]
        if list(sets) != list(meta.sets):
            raise InputError(f"split '{split}': metadata key 'sets' is {meta.sets} but the arrays hold "
                             f"sets {list(sets)}")
        for set_name, arrays in sets.items():
            name = _namer(split, set_name)
            _check_arrays(arrays, meta, set_name, name)
            if format == "parquet":
                _check_puzzles_not_empty(arrays, name("puzzle_indices"))
    files = {**({} if identifiers is None else {IDENTIFIERS_FILE: identifiers}), **(extra_files or {})}
    for file in files:
        if "/" in file or file == META_FILE:
            raise ValueError(f"extra file name {file!r} must be a plain name other than {META_FILE}")
    commits = [META_FILE] if format == "parquet" else [f"{split}/{META_FILE}" for split in splits]
    for name in commits:
        if storage.exists(storage.join(uri, name)):
            raise InputError(f"{storage.join(uri, name)}: a dataset already exists there; delete it "
                             f"or choose another output")

    published: list[str] = []
    try:
        if format == "parquet":
            split_infos = {split: _write_parquet_split(uri, split, sets, metadata[split], shard_bytes, published)
                           for split, sets in splits.items()}
        else:
            for split, sets in splits.items():
                _write_reference_split(uri, split, sets, published)
        for file, content in files.items():
            _publish(storage.join(uri, file), content, published)
        if format == "parquet":
            index = ParquetIndex(format=PARQUET_FORMAT, version=1, splits=split_infos, files=list(files),
                                 summary={**(summary or {}),
                                          "write_seconds": round(time.perf_counter() - started, 3)})
            storage.write_json_atomic(storage.join(uri, META_FILE), index.model_dump(mode="json"), indent=2)
        else:
            for split in splits:
                _publish(storage.join(uri, split, META_FILE), metadata[split].model_dump(mode="json"), published)
    except BaseException:
        for target in reversed(published):
            try:
                storage.delete(target)
            except InputError:
                pass  # keep the original error; the commit file was never written
        raise


def _namer(split: str, set_name: str) -> Namer:
    return lambda key: f"split '{split}' set '{set_name}' array '{key}'"


def _check_puzzles_not_empty(arrays: PuzzleArrays, name: str) -> None:
    # Our rows carry a puzzle only through its examples, so an empty puzzle would be lost.
    empty = np.flatnonzero(np.diff(arrays.puzzle_indices) == 0)
    if empty.size:
        raise InputError(f"{name}: puzzle {int(empty[0])} has no examples; the Parquet layout stores "
                         f"puzzles through their examples and cannot represent it")


def _publish(uri: str, content: object, published: list[str]) -> None:
    if isinstance(content, bytes):
        storage.write_bytes_atomic(uri, content)
    else:
        storage.write_json_atomic(uri, content)
    published.append(uri)


def _write_npy(uri: str, array: np.ndarray, published: list[str]) -> None:
    """Stream an array into an .npy object, header exactly as np.save writes it."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": tuple(array.shape)}
    rows = max(1, CHUNK_BYTES // max(1, array.dtype.itemsize * math.prod(array.shape[1:])))
    with storage.atomic_output(uri) as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        for start, stop in _ranges(array.shape[0], rows):
            stream.write(np.ascontiguousarray(array[start:stop]).tobytes())
    published.append(uri)


def _write_reference_split(uri: str, split: str, sets: dict[str, PuzzleArrays], published: list[str]) -> None:
    for set_name, arrays in sets.items():
        for key, array in {**{key: getattr(arrays, key) for key in ARRAY_FIELDS}, **arrays.columns}.items():
            _write_npy(storage.join(uri, split, f"{set_name}__{key}.npy"), array, published)


def _arrow_type(dtype: np.dtype) -> pa.DataType:
    return pa.from_numpy_dtype(dtype.newbyteorder("=") if dtype.kind in "iufb" else dtype)


def _part_schema(arrays: PuzzleArrays) -> pa.Schema:
    seq_len = arrays.inputs.shape[1]
    return pa.schema([
        ("example_id", pa.int64()), ("set", pa.string()), ("puzzle_index", pa.int64()),
        ("group_index", pa.int64()), ("puzzle_identifier", _arrow_type(arrays.puzzle_identifiers.dtype)),
        ("inputs", pa.list_(_arrow_type(arrays.inputs.dtype), seq_len)),
        ("labels", pa.list_(_arrow_type(arrays.labels.dtype), seq_len)),
        *((key, _arrow_type(column.dtype)) for key, column in arrays.columns.items())])


def _to_table(batch: ExampleBatch, schema: pa.Schema) -> pa.Table:
    def tokens(values: np.ndarray, kind: pa.DataType) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=kind.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, kind.list_size)

    columns = {
        "example_id": batch.example_id, "set": pa.array(np.full(len(batch), batch.set)),
        "puzzle_index": batch.puzzle_index, "group_index": batch.group_index,
        "puzzle_identifier": batch.puzzle_identifiers,
        "inputs": tokens(batch.inputs, schema.field("inputs").type),
        "labels": tokens(batch.labels, schema.field("labels").type), **batch.columns}
    return pa.Table.from_arrays([pa.array(columns[key], type=schema.field(key).type) for key in schema.names],
                                schema=schema)


def _write_parquet_split(uri: str, split: str, sets: dict[str, PuzzleArrays], meta: DatasetMetadata,
                         shard_bytes: int, published: list[str]) -> SplitInfo:
    parts: list[PartInfo] = []
    infos: dict[str, SetInfo] = {}
    for set_name, arrays in sets.items():
        infos[set_name] = SetInfo(
            examples=arrays.inputs.shape[0], puzzles=arrays.puzzle_identifiers.shape[0],
            groups=arrays.group_indices.shape[0] - 1, columns=list(arrays.columns),
            dtypes={**{key: getattr(arrays, key).dtype.str for key in ARRAY_FIELDS},
                    **{key: column.dtype.str for key, column in arrays.columns.items()}})
        schema = _part_schema(arrays)
        group_rows = _rows_per(ROW_GROUP_BYTES, arrays)
        for start, stop in _ranges(arrays.inputs.shape[0], _rows_per(shard_bytes, arrays)):
            part = PartInfo(file=f"part-{len(parts):05d}.parquet", set=set_name, start=start, stop=stop)
            target = storage.join(uri, split, part.file)
            storage.write_parquet_atomic(target, (_to_table(_slice(arrays, set_name, low, high), schema)
                                                  for low, high in _ranges(stop, group_rows, start=start)), schema)
            published.append(target)
            parts.append(part)
    return SplitInfo(metadata=meta, sets=infos, parts=parts)

