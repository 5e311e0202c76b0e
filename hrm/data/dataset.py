"""A puzzle dataset in either layout (see `hrm.data.schema`), read a range at a time.

`hrm.data.reader.open_dataset` tells the layouts apart and returns a `ReferenceDataset` or
a `ParquetDataset`; both answer the same questions (metadata, sets, example ranges, work
shards, content hash). Nothing here needs memory proportional to a set: local .npy files are
memory-mapped, remote .npy files are read by byte ranges, Parquet by row groups, and
`read_set` of anything else is spooled to a scratch .npy on local disk and memory-mapped.
"""

from __future__ import annotations

import abc
import hashlib
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable
from functools import cached_property

import numpy as np

from hrm import storage
from hrm.data.checks import check_identifiers, check_test_puzzles
from hrm.data.schema import IDENTIFIERS_FILE, TEST_PUZZLES_FILE, DatasetMetadata, ExampleBatch, PuzzleArrays, Shard
from hrm.errors import InputError


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

    def selected_sets(self, split: str, requested: list[str] | None, key: str) -> list[str]:
        """The sets of `split` an evaluation takes: `requested` (the user's `key`), or all. Each
        must exist and hold examples: an empty one would only give undefined figures."""
        self._check_split(split)
        available = self.sets(split)
        unknown = [name for name in requested or [] if name not in available]
        if unknown:
            raise InputError(f"{self.uri}: split {split!r} has no set(s) {', '.join(unknown)} "
                             f"({key} takes: {', '.join(available)})")
        chosen = list(requested or available)
        empty = [name for name in chosen if self.num_examples(split, name) == 0]
        if empty:
            rest = [name for name in chosen if name not in empty]
            advice = f"choose the others with {key}" if rest else "there is nothing to evaluate"
            raise InputError(f"{self.uri}: split {split!r} set(s) {', '.join(empty)} hold no examples; {advice}")
        return chosen

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
        return check_identifiers(storage.read_json(uri), uri)

    @cached_property
    def test_puzzles(self) -> dict | None:
        if TEST_PUZZLES_FILE not in self.files():
            return None
        uri = storage.join(self.uri, TEST_PUZZLES_FILE)
        return check_test_puzzles(storage.read_json(uri), uri)

    def content_hash(self) -> str:
        """sha256 over the sorted (file name, digest of its content) pairs; computed once. Runs
        resume under it, so converting the same data again must give the same hash."""
        if self._hash is None:
            digest = hashlib.sha256()
            for name in sorted(self.files()):
                digest.update(f"{name}\0{self._file_digest(name)}\n".encode())
            self._hash = digest.hexdigest()
        return self._hash

    def _file_digest(self, name: str) -> str:
        return storage.sha256(storage.join(self.uri, name))

    def _check_set(self, split: str, set: str) -> None:
        if set not in self.sets(split):
            raise InputError(f"{self.uri}: split '{split}' has no set '{set}' (sets: {self.sets(split)})")

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise InputError(f"{self.uri}: no split '{split}' (splits: {', '.join(self.splits)})")

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
