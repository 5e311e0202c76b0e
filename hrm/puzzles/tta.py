"""Test-time augmentation: the transformed copies of a board that a run evaluates besides the
plain one, per puzzle family. Each copy's transform is an exact bijection of positions and of
label tokens, so predictions map back to the original frame and are scored unchanged."""

from __future__ import annotations

import numpy as np

from hrm.puzzles.grids import DihedralTransform, GridTransform, board_side
from hrm.puzzles.sudoku import SudokuTransform

TTA_FAMILIES = ("sudoku", "maze")


def tta_transform(family: str, side: int, copy: int, seed: int) -> GridTransform:
    """Copy `copy` (1, 2, …) of a test-time augmentation; copy 0 is the plain data.

    sudoku: a random shuffle drawn from RandomState([seed, copy]), so each copy's transform
    depends only on its own index (a run with more copies keeps the first ones).
    maze: dihedral transform number `copy` (1..7); there are no more distinct ones.
    """
    if copy < 1:
        raise ValueError(f"copy 0 is the untransformed data; transformed copies count from 1, got {copy}")
    if family == "sudoku":
        box = board_side(side)
        if box is None:
            raise ValueError(f"a Sudoku board side must be a square (4, 9, 16, …), got {side}")
        return SudokuTransform.random(np.random.RandomState([seed, copy]), box)
    if family == "maze":
        if copy >= 8:
            raise ValueError(f"a maze has 7 non-identity dihedral transforms, copy {copy} does not exist")
        return DihedralTransform(copy, side)
    raise ValueError(f"test-time augmentation family must be one of {', '.join(TTA_FAMILIES)}, got {family!r}")
