"""Invertible puzzle augmentations: ARC, Sudoku and maze, each with its exact inverse.

The ARC and maze transforms follow the reference code (`dataset/common.py`,
`dataset/build_arc_dataset.py` and `evaluators/arc.py` of TRM; the same functions in HRM):

* dihedral ids 0..7: identity, rot90, rot180, rot270 (numpy `rot90`, counter-clockwise),
  flip left-right, flip up-down, transpose, anti-transpose (`fliplr(rot90(x))`);
  the inverse of 1 is 3 and vice versa, every other id is its own inverse.
* a colour permutation string such as "0124365987" is the forward map: augmented colour =
  perm[original colour]; the reference inverts it with `argsort(perm)`.
* a grid is stored in a 30x30 token canvas at the top-left (translation only in the
  training split), colours as tokens 2..11, pad 0, and eos 1 on the row below the grid
  and the column right of it.

All grid functions work on a single grid or a batch: the last two axes are the grid.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hrm.errors import InputError

ARC_SIDE = 30
ARC_PAD = 0
ARC_EOS = 1
ARC_COLOUR_OFFSET = 2  # colour c is token c + 2
ARC_NUM_COLOURS = 10

TRM_SEPARATOR = "|||"
# HRM names an augmented puzzle `<name>_t<k>_<perm>`. The reference notebook splits on the
# first "_", which assumes underscore-free names; anchoring on the suffix gives the same
# answer for those and stays right for names that contain "_".
_HRM_SUFFIX = re.compile(r"^(?P<name>.+)_t(?P<tid>\d+)_(?P<perm>\d{10})$")

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


class GridTransform(Protocol):
    """What test-time-augmentation voting needs: a transform and its exact inverse."""

    def apply(self, grid: np.ndarray) -> np.ndarray: ...

    def invert(self, grid: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- dihedral


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


def _as_square(seq: np.ndarray, side: int) -> tuple[np.ndarray, bool]:
    """View flat sequences (..., side*side) as grids; report whether we reshaped."""
    if seq.shape[-2:] == (side, side):
        return seq, False
    if seq.shape[-1:] == (side * side,):
        return seq.reshape(*seq.shape[:-1], side, side), True
    raise ValueError(f"expected trailing shape ({side}, {side}) or ({side * side},), got {seq.shape}")


def _restore(grid: np.ndarray, flat: bool) -> np.ndarray:
    return grid.reshape(*grid.shape[:-2], -1) if flat else np.ascontiguousarray(grid)


@dataclass(frozen=True)
class DihedralTransform:
    """A dihedral transform of square token grids (mazes, or any square board)."""

    tid: int
    side: int = ARC_SIDE

    def __post_init__(self) -> None:
        if not 0 <= self.tid < 8:
            raise ValueError(f"dihedral transform id must be 0..7, got {self.tid}")

    def apply(self, grid: np.ndarray) -> np.ndarray:
        square, flat = _as_square(np.asarray(grid), self.side)
        return _restore(dihedral_transform(square, self.tid), flat)

    def invert(self, grid: np.ndarray) -> np.ndarray:
        square, flat = _as_square(np.asarray(grid), self.side)
        return _restore(inverse_dihedral_transform(square, self.tid), flat)


def maze_transforms(side: int = ARC_SIDE) -> list[DihedralTransform]:
    """All 8 dihedral transforms of a side x side maze, id order."""
    return [DihedralTransform(tid, side) for tid in range(8)]


# --------------------------------------------------------------------------- ARC colours


def parse_colour_permutation(text: str) -> np.ndarray:
    """'0124365987' -> array mapping original colour -> augmented colour."""
    if len(text) != ARC_NUM_COLOURS or sorted(text) != [str(c) for c in range(ARC_NUM_COLOURS)]:
        raise ValueError(f"colour permutation must be the 10 digits 0-9 in some order, got {text!r}")
    return np.array([int(ch) for ch in text], dtype=np.uint8)


def invert_permutation(perm: np.ndarray) -> np.ndarray:
    """The reference's `argsort(perm)`: inv[perm[c]] == c."""
    return np.argsort(perm).astype(np.uint8)


@dataclass(frozen=True)
class ArcAugmentation:
    """One ARC augmentation: augmented = dihedral(perm[original], tid)."""

    tid: int = 0
    perm: tuple[int, ...] = tuple(range(ARC_NUM_COLOURS))

    def __post_init__(self) -> None:
        if not 0 <= self.tid < 8:
            raise ValueError(f"dihedral transform id must be 0..7, got {self.tid}")
        if sorted(self.perm) != list(range(ARC_NUM_COLOURS)):
            raise ValueError(f"colour permutation must permute 0..9, got {self.perm}")

    @property
    def is_identity(self) -> bool:
        return self == ArcAugmentation()

    @property
    def perm_string(self) -> str:
        return "".join(str(c) for c in self.perm)

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Colour grid (values 0..9) -> augmented colour grid."""
        perm = np.array(self.perm, dtype=np.uint8)
        return np.ascontiguousarray(dihedral_transform(perm[np.asarray(grid)], self.tid))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Augmented colour grid -> original colour grid."""
        inverse = invert_permutation(np.array(self.perm, dtype=np.uint8))
        return np.ascontiguousarray(inverse[inverse_dihedral_transform(np.asarray(grid), self.tid)])

    @classmethod
    def random(cls, rng: np.random.RandomState) -> ArcAugmentation:
        """Draw like the reference builder: a dihedral id, then a permutation of 1..9 (0 stays).

        Takes a legacy RandomState so a converter can replay the reference's random stream.
        """
        tid = int(rng.randint(0, 8))
        perm = (0, *(int(c) for c in rng.permutation(np.arange(1, 10))))
        return cls(tid, perm)


@dataclass(frozen=True)
class ArcIdentifier:
    """A parsed puzzle identifier: the original puzzle name and its augmentation."""

    name: str
    augmentation: ArcAugmentation = ArcAugmentation()

    def format(self, convention: str = "trm") -> str:
        """The identifier string as the TRM (`|||`) or HRM (`_`) builder writes it."""
        if convention not in ("trm", "hrm"):
            raise ValueError(f"identifier convention must be 'trm' or 'hrm', got {convention!r}")
        aug = self.augmentation
        if aug.is_identity:
            return self.name  # both builders keep the original puzzle under its plain name
        if convention == "trm":
            return TRM_SEPARATOR.join((self.name, f"t{aug.tid}", aug.perm_string))
        return f"{self.name}_t{aug.tid}_{aug.perm_string}"


def parse_arc_identifier(identifier: str) -> ArcIdentifier:
    """Parse `name|||t<k>|||<perm>` (TRM), `name_t<k>_<perm>` (HRM) or a plain `name`."""
    try:
        if TRM_SEPARATOR in identifier:
            parts = identifier.split(TRM_SEPARATOR)
            if len(parts) < 3 or not parts[-2].startswith("t"):
                raise ValueError("expected name|||t<k>|||<perm>")
            name, tid, perm = parts[0], int(parts[-2][1:]), parse_colour_permutation(parts[-1])
            return ArcIdentifier(name, ArcAugmentation(tid, tuple(int(c) for c in perm)))
        match = _HRM_SUFFIX.match(identifier)
        if match:
            perm = parse_colour_permutation(match["perm"])
            return ArcIdentifier(match["name"], ArcAugmentation(int(match["tid"]), tuple(int(c) for c in perm)))
    except ValueError as err:
        raise InputError(f"identifiers.json: puzzle identifier {identifier!r} is malformed: {err}") from err
    return ArcIdentifier(identifier)


# --------------------------------------------------------------------------- ARC tokens


def grid_to_tokens(grid: np.ndarray, offset: tuple[int, int] = (0, 0), side: int = ARC_SIDE) -> np.ndarray:
    """Colour grid -> flat side*side token canvas, eos on the row below and column right.

    `offset` is the top-left translation (the reference uses it only for training examples,
    with the same offset for an input and its output).
    """
    grid = np.asarray(grid)
    nrow, ncol = grid.shape
    pad_r, pad_c = offset
    if nrow + pad_r > side or ncol + pad_c > side or min(pad_r, pad_c) < 0:
        raise ValueError(f"grid {grid.shape} at offset {offset} does not fit a {side}x{side} canvas")
    if grid.size and (grid.min() < 0 or grid.max() >= ARC_NUM_COLOURS):
        raise ValueError("grid colours must be 0..9")

    canvas = np.full((side, side), ARC_PAD, dtype=np.uint8)
    canvas[pad_r : pad_r + nrow, pad_c : pad_c + ncol] = grid + ARC_COLOUR_OFFSET
    eos_row, eos_col = pad_r + nrow, pad_c + ncol
    if eos_row < side:
        canvas[eos_row, pad_c:eos_col] = ARC_EOS
    if eos_col < side:
        canvas[pad_r:eos_row, eos_col] = ARC_EOS
    return canvas.reshape(-1)


def crop_tokens(tokens: np.ndarray, side: int = ARC_SIDE) -> np.ndarray:
    """Flat token canvas -> colour grid: the reference's `_crop`.

    The reference walks rows top-down keeping a running width (the colour-token prefix of
    each row, never growing again) and keeps the first (rows, width) of largest area. Any
    token outside 2..11 ends a row's prefix. No colour at the top-left gives a 0x0 grid.
    """
    canvas = np.asarray(tokens).reshape(side, side)
    is_colour = (canvas >= ARC_COLOUR_OFFSET) & (canvas < ARC_COLOUR_OFFSET + ARC_NUM_COLOURS)
    # Length of each row's colour prefix: index of its first non-colour token (or side).
    prefix = np.where(is_colour.all(axis=1), side, np.argmin(is_colour, axis=1))
    width = np.minimum.accumulate(prefix)
    area = width * np.arange(1, side + 1)
    best = int(np.argmax(area))  # first maximum, like the reference's strict ">"
    nrow, ncol = (best + 1, int(width[best])) if area[best] > 0 else (0, 0)
    return (canvas[:nrow, :ncol] - ARC_COLOUR_OFFSET).astype(np.uint8)


def grid_hash(grid: np.ndarray) -> str:
    """The reference's grid hash: sha256 of the shape (a byte per dimension) and uint8 cells."""
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    if grid.ndim != 2:
        raise ValueError(f"grid must be 2-D, got shape {grid.shape}")
    header = bytes(grid.shape)
    return hashlib.sha256(header + grid.tobytes()).hexdigest()


# --------------------------------------------------------------------------- Sudoku

SUDOKU_BOX = 3  # a 9x9 board has 3x3 boxes; the 4x4 demo board has 2x2


@dataclass(frozen=True)
class SudokuTransform:
    """A validity-preserving Sudoku shuffle, as the reference's `shuffle_sudoku`, for any box
    size (side = box * box: 9x9 boards by default, 4x4 with box=2).

    On a digit board: optionally transpose, then new[i, j] = old[row_perm[i], col_perm[j]],
    then relabel digits with digit_map (blank 0 stays 0). Boards here are token boards
    (token = digit + 1, pad 0 untouched), shape (..., side, side) or (..., side * side).
    """

    digit_map: tuple[int, ...] = tuple(range(10))
    row_perm: tuple[int, ...] = tuple(range(9))
    col_perm: tuple[int, ...] = tuple(range(9))
    transpose: bool = False
    box: int = SUDOKU_BOX

    def __post_init__(self) -> None:
        side = self.side
        if self.box < 1 or self.digit_map[:1] != (0,) or sorted(self.digit_map) != list(range(side + 1)):
            raise ValueError(f"digit_map must permute 1..{side} and keep 0, got {self.digit_map}")
        for label, perm in (("row_perm", self.row_perm), ("col_perm", self.col_perm)):
            if not _is_band_preserving(perm, self.box):
                raise ValueError(f"{label} must permute bands and rows within bands, got {perm}")

    @property
    def side(self) -> int:
        return self.box * self.box

    @classmethod
    def identity(cls, box: int = SUDOKU_BOX) -> SudokuTransform:
        side = box * box
        return cls(tuple(range(side + 1)), tuple(range(side)), tuple(range(side)), False, box)

    @classmethod
    def random(cls, rng: np.random.RandomState, box: int = SUDOKU_BOX) -> SudokuTransform:
        """Draw in the reference's order: digits, transpose, bands+rows, stacks+columns."""
        side = box * box
        digit_map = (0, *(int(d) for d in rng.permutation(np.arange(1, side + 1))))
        transpose = bool(rng.rand() < 0.5)
        row_perm = [int(b * box + r) for b in rng.permutation(box) for r in rng.permutation(box)]
        col_perm = [int(s * box + c) for s in rng.permutation(box) for c in rng.permutation(box)]
        return cls(digit_map, tuple(row_perm), tuple(col_perm), transpose, box)

    @classmethod
    def from_seed(cls, seed: int, box: int = SUDOKU_BOX) -> SudokuTransform:
        return cls.random(np.random.RandomState(seed), box)

    def _token_map(self) -> np.ndarray:
        return np.array([0, *(d + 1 for d in self.digit_map)], dtype=np.int64)

    def apply(self, board: np.ndarray) -> np.ndarray:
        square, flat = _as_square(np.asarray(board), self.side)
        if self.transpose:
            square = np.swapaxes(square, -2, -1)
        moved = square[..., list(self.row_perm), :][..., list(self.col_perm)]
        return _restore(self._token_map()[moved].astype(square.dtype), flat)

    def invert(self, board: np.ndarray) -> np.ndarray:
        square, flat = _as_square(np.asarray(board), self.side)
        relabelled = np.argsort(self._token_map())[square].astype(square.dtype)
        rows, cols = np.argsort(self.row_perm), np.argsort(self.col_perm)
        moved = relabelled[..., rows, :][..., cols]
        if self.transpose:
            moved = np.swapaxes(moved, -2, -1)
        return _restore(moved, flat)


def _is_band_preserving(perm: tuple[int, ...], box: int) -> bool:
    """A permutation of 0..box²-1 that moves whole bands of `box` rows and shuffles rows inside them."""
    side = box * box
    if sorted(perm) != list(range(side)):
        return False
    bands = [{p // box for p in perm[i : i + box]} for i in range(0, side, box)]
    return all(len(band) == 1 for band in bands)


# --------------------------------------------------------------------------- test-time augmentation

TTA_FAMILIES = ("sudoku", "maze")


def board_side(seq_len: int) -> int | None:
    """The side of a square board flattened to seq_len tokens, or None if it is not one."""
    side = math.isqrt(seq_len)
    return side if side * side == seq_len else None


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
