"""The reference numpy layout (what the HRM / TRM dataset builders write), read and written.

    <split>/dataset.json, <split>/<set>__<array>.npy, identifiers.json, test_puzzles.json

Big arrays are memory-mapped (local) or read by byte ranges (remote); the per-puzzle index
arrays are read whole. Extra per-example columns are `<set>__<column>.npy`.
"""

from __future__ import annotations

import re

import numpy as np
import pydantic

from hrm import storage
from hrm.data.arrays import ranges, rows_per, slice_examples
from hrm.data.checks import check_index_arrays, check_layout, check_tokens
from hrm.data.dataset import Dataset
from hrm.data.npy import open_npy, read_whole, write_npy
from hrm.data.schema import (
    ARRAY_FIELDS,
    CHUNK_BYTES,
    DEFAULT_SHARD_BYTES,
    INDEX_FIELDS,
    META_FILE,
    DatasetMetadata,
    ExampleBatch,
    PuzzleArrays,
)
from hrm.errors import InputError, invalid_input


class ReferenceDataset(Dataset):
    format = "reference"

    def __init__(self, uri: str, listing: list[str]):
        split_names = sorted(name.split("/")[0] for name in listing
                             if name.count("/") == 1 and name.endswith("/" + META_FILE))
        super().__init__(uri, split_names)
        self._listing = set(listing)
        self._metadata = {split: read_metadata(storage.join(uri, split, META_FILE)) for split in split_names}
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
            opened = {key: open_npy(uri) for key, uri in uris.items()}
            arrays = PuzzleArrays(**{key: opened.pop(key) for key in ARRAY_FIELDS}, columns=opened)
            check_layout(arrays, meta, uris.__getitem__)
            for key in INDEX_FIELDS:
                setattr(arrays, key, read_whole(getattr(arrays, key)))
            check_index_arrays(arrays, meta, uris.__getitem__)
            self._arrays[split, set] = arrays, uris
        return self._arrays[split, set]

    def num_examples(self, split: str, set: str) -> int:
        return self._set(split, set)[0].inputs.shape[0]

    def examples(self, split: str, set: str, start: int = 0, stop: int | None = None) -> ExampleBatch:
        start, stop = self._bounds(split, set, start, stop)
        arrays, uris = self._set(split, set)
        batch = slice_examples(arrays, set, start, stop)
        check_tokens(batch, self.metadata(split), uris.__getitem__)
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
        return ranges(arrays.inputs.shape[0], rows_per(CHUNK_BYTES, arrays))

    def _shard_ranges(self, split: str, set: str, target_examples: int | None) -> list[tuple[int, int]]:
        arrays, _ = self._set(split, set)
        # By default the ranges our writer would make parts of, so both layouts give the same work units.
        return ranges(arrays.inputs.shape[0], target_examples or rows_per(DEFAULT_SHARD_BYTES, arrays))

    def files(self) -> list[str]:
        # Every top-level file: identifiers.json and test_puzzles.json, and a text dataset's
        # tokenizer and tasks, which its predictions are decoded and checked with.
        known = {name for name in self._listing if "/" not in name}
        for split in self.splits:
            known.add(f"{split}/{META_FILE}")
            known.update(name for set in self.sets(split) for name in self._set_files(split, set).values())
        return sorted(known & self._listing)


def read_metadata(uri: str) -> DatasetMetadata:
    try:
        return DatasetMetadata.model_validate(storage.read_json(uri))
    except pydantic.ValidationError as err:
        raise invalid_input(uri, err) from None


def write_reference_split(uri: str, split: str, sets: dict[str, PuzzleArrays], published: list[str]) -> None:
    """Every array of every set as `<split>/<set>__<array>.npy`, each URI added to `published`."""
    for set_name, arrays in sets.items():
        for key, array in {**{key: getattr(arrays, key) for key in ARRAY_FIELDS}, **arrays.columns}.items():
            target = storage.join(uri, split, f"{set_name}__{key}.npy")
            write_npy(target, array)
            published.append(target)
