"""Every check a dataset passes before a byte of it is evaluated or written.

Layout checks read array headers only; the index arrays (per puzzle and per group) are small
and are scanned whole; tokens are checked range by range as they are read, so a bad token is
found without holding a set in memory. Every failure is an `InputError` naming the file (or
the array) and the position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hrm.data.arrays import ranges, rows_per, slice_examples
from hrm.data.schema import ARRAY_FIELDS, CHUNK_BYTES, INDEX_FIELDS, DatasetMetadata, ExampleBatch, PuzzleArrays
from hrm.errors import InputError

Namer = Callable[[str], str]  # array field -> where it lives, for error messages


def check_layout(arrays: PuzzleArrays, meta: DatasetMetadata, name: Namer) -> None:
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


def check_offsets(offsets: np.ndarray, total: int, counted: str, name: str) -> None:
    if offsets[0] != 0:
        raise InputError(f"{name}: first offset is {offsets[0]}, expected 0")
    if offsets[-1] != total:
        raise InputError(f"{name}: last offset is {offsets[-1]} but there are {total} {counted}")
    drops = np.flatnonzero(np.diff(offsets.astype(np.int64)) < 0)
    if drops.size:
        at = int(drops[0]) + 1
        raise InputError(f"{name}: offsets decrease at index {at} ({offsets[at - 1]} then {offsets[at]})")


def check_index_arrays(arrays: PuzzleArrays, meta: DatasetMetadata, name: Namer) -> None:
    """CSR offsets and identifier range; these arrays are per puzzle/group, small enough to scan whole."""
    check_offsets(arrays.puzzle_indices, arrays.inputs.shape[0], "examples", name("puzzle_indices"))
    check_offsets(arrays.group_indices, arrays.puzzle_identifiers.shape[0], "puzzles", name("group_indices"))
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


def check_tokens(batch: ExampleBatch, meta: DatasetMetadata, name: Namer) -> None:
    """Every input token in the vocabulary; labels too, except the ignored label."""
    first = int(batch.example_id[0]) if len(batch) else 0
    _check_token_range(batch.inputs, meta.vocab_size, None, first, name("inputs"))
    _check_token_range(batch.labels, meta.vocab_size, meta.ignore_label_id, first, name("labels"))


def check_arrays(arrays: PuzzleArrays, meta: DatasetMetadata, set_name: str, name: Namer) -> None:
    """Everything: layout, offsets, identifiers, and every token, chunk by chunk."""
    check_layout(arrays, meta, name)
    check_index_arrays(arrays, meta, name)
    for start, stop in ranges(arrays.inputs.shape[0], rows_per(CHUNK_BYTES, arrays)):
        check_tokens(slice_examples(arrays, set_name, start, stop), meta, name)


def check_puzzles_not_empty(arrays: PuzzleArrays, name: str) -> None:
    # Our rows carry a puzzle only through its examples, so an empty puzzle would be lost.
    empty = np.flatnonzero(np.diff(arrays.puzzle_indices) == 0)
    if empty.size:
        raise InputError(f"{name}: puzzle {int(empty[0])} has no examples; the Parquet layout stores "
                         f"puzzles through their examples and cannot represent it")


def check_identifiers(data: Any, uri: str) -> list[str]:
    """identifiers.json: the list id -> puzzle name."""
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise InputError(f"{uri}: expected a JSON list of identifier strings")
    return data


def check_test_puzzles(data: Any, uri: str) -> dict[str, Any]:
    """test_puzzles.json: {puzzle name: {"train": [...], "test": [{"input", "output"}, ...]}}; the
    grids themselves are checked where they are used (ARC voting)."""
    if not isinstance(data, dict):
        raise InputError(f"{uri}: expected a JSON object of puzzles")
    for name, puzzle in data.items():
        tests = puzzle.get("test") if isinstance(puzzle, dict) else None
        if not isinstance(tests, list) or not tests:
            raise InputError(f"{uri}: puzzle {name!r} has no 'test' list")
        for index, pair in enumerate(tests):
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise InputError(f"{uri}: puzzle {name!r} test[{index}] needs an 'input' and an 'output' grid")
    return data
