"""Working with `PuzzleArrays` a piece at a time: example ranges sized in bytes, and one
range expanded to an `ExampleBatch` through the CSR offsets. Nothing here needs memory
proportional to a set."""

from __future__ import annotations

import numpy as np

from hrm.data.schema import ExampleBatch, PuzzleArrays


def row_bytes(arrays: PuzzleArrays) -> int:
    return arrays.inputs.shape[1] * (arrays.inputs.dtype.itemsize + arrays.labels.dtype.itemsize)


def rows_per(budget_bytes: int, arrays: PuzzleArrays) -> int:
    """Examples (inputs and labels) that fit in `budget_bytes`, at least one."""
    return max(1, budget_bytes // max(1, row_bytes(arrays)))


def ranges(total: int, step: int, start: int = 0) -> list[tuple[int, int]]:
    """[start, total) cut into consecutive (low, high) ranges of `step` (the last may be shorter)."""
    return [(a, min(total, a + step)) for a in range(start, total, step)]


def slice_examples(arrays: PuzzleArrays, set_name: str, start: int, stop: int) -> ExampleBatch:
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
