"""Square token boards and their dihedral transforms, each with its exact inverse.

Dihedral ids 0..7 are the reference's (`dataset/common.py` of HRM and TRM): identity, rot90,
rot180, rot270 (numpy `rot90`, counter-clockwise), flip left-right, flip up-down, transpose,
anti-transpose (`fliplr(rot90(x))`); the inverse of 1 is 3 and vice versa, every other id is
its own inverse. Every function works on a single board or a batch: the last two axes are the
board, or the last axis a flattened one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


class GridTransform(Protocol):
    """What test-time-augmentation voting needs: a transform and its exact inverse."""

    def apply(self, grid: np.ndarray) -> np.ndarray: ...

    def invert(self, grid: np.ndarray) -> np.ndarray: ...


def dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """The reference's dihedral transform `tid` applied to the last two axes."""
    axes = (-2, -1)
    if tid == 0:
        return grid
    if tid in (1, 2, 3):
        return np.rot90(grid, k=tid, axes=axes)
    if tid == 4:
        return np.flip(grid, axis=-1)
    if tid == 5:
        return np.flip(grid, axis=-2)
    if tid == 6:
        return np.swapaxes(grid, -2, -1)
    if tid == 7:
        return np.flip(np.rot90(grid, k=1, axes=axes), axis=-1)
    # The reference silently returns the grid for an unknown id; we refuse instead.
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


def inverse_dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    return dihedral_transform(grid, DIHEDRAL_INVERSE[tid])


def as_square(seq: np.ndarray, side: int) -> tuple[np.ndarray, bool]:
    """View flat sequences (..., side*side) as grids; report whether we reshaped."""
    if seq.shape[-2:] == (side, side):
        return seq, False
    if seq.shape[-1:] == (side * side,):
        return seq.reshape(*seq.shape[:-1], side, side), True
    raise ValueError(f"expected trailing shape ({side}, {side}) or ({side * side},), got {seq.shape}")


def restore(grid: np.ndarray, flat: bool) -> np.ndarray:
    return grid.reshape(*grid.shape[:-2], -1) if flat else np.ascontiguousarray(grid)


@dataclass(frozen=True)
class DihedralTransform:
    """A dihedral transform of square token grids (mazes, or any square board)."""

    tid: int
    side: int

    def __post_init__(self) -> None:
        if not 0 <= self.tid < 8:
            raise ValueError(f"dihedral transform id must be 0..7, got {self.tid}")

    def apply(self, grid: np.ndarray) -> np.ndarray:
        square, flat = as_square(np.asarray(grid), self.side)
        return restore(dihedral_transform(square, self.tid), flat)

    def invert(self, grid: np.ndarray) -> np.ndarray:
        square, flat = as_square(np.asarray(grid), self.side)
        return restore(inverse_dihedral_transform(square, self.tid), flat)


def board_side(seq_len: int) -> int | None:
    """The side of a square board flattened to seq_len tokens, or None if it is not one."""
    side = math.isqrt(seq_len)
    return side if side * side == seq_len else None
