"""Puzzle-identifier ablation: how much of a model's accuracy rests on the per-puzzle
embedding it learned in training rather than on the puzzle in front of it.

HRM and TRM give every training puzzle (and, on ARC, every augmented version) an identifier
whose learned embedding is prepended to the input. At evaluation the same identifier is looked
up again, so a model can recall a puzzle instead of solving it. Two ablations answer how much:

- `blank`: every example gets the blank identifier (`blank_identifier_id`, the one the
  reference gives to no puzzle), so the embedding carries nothing puzzle-specific;
- `shuffled`: every identifier is replaced by another puzzle's, through a fixed derangement of
  the identifiers (blank excluded), so the embedding is a real one, of the wrong puzzle.

Both are functions of the identifier alone, so an example's ablated identifier is the same
whatever shard or batch it is evaluated in. A model trained with one identifier for every
puzzle (Sudoku and mazes in the reference; no puzzle embedding at all in the demo models)
cannot be affected: its predictions stay the same, which the ablation then shows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PuzzleIds = Literal["as-is", "blank", "shuffled"]
ABLATIONS: dict[str, PuzzleIds] = {"blank_puzzle_ids": "blank", "shuffled_puzzle_ids": "shuffled"}
SHUFFLE_SEED = 0


def ablate_identifiers(identifiers: np.ndarray, how: PuzzleIds, num_identifiers: int,
                       blank_identifier_id: int) -> np.ndarray:
    """The identifiers the model is given instead of `identifiers` (as-is: unchanged)."""
    if how == "as-is":
        return identifiers
    if how == "blank":
        return np.full_like(identifiers, blank_identifier_id)
    return shuffled_identifiers(num_identifiers, blank_identifier_id)[identifiers]


def shuffled_identifiers(num_identifiers: int, blank_identifier_id: int) -> np.ndarray:
    """A lookup table: identifier -> another identifier. The non-blank identifiers in a seeded
    random order, each mapped to the next (a cycle, so none keeps its own); blank stays blank."""
    others = np.array([i for i in range(num_identifiers) if i != blank_identifier_id], dtype=np.int64)
    table = np.arange(num_identifiers, dtype=np.int64)
    if len(others) > 1:
        order = np.random.default_rng(SHUFFLE_SEED).permutation(others)
        table[order] = np.roll(order, -1)
    return table
