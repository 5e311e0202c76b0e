"""ARC grids as the reference encodes them: the token canvas, cropping, hashing, augmentations
and the identifiers that name them.

These follow the reference code (`dataset/build_arc_dataset.py` and `evaluators/arc.py` of
TRM; the same functions in HRM):

* an augmentation is a dihedral transform (`hrm.puzzles.grids`) after a colour permutation;
* a colour permutation string such as "0124365987" is the forward map: augmented colour =
  perm[original colour]; the reference inverts it with `argsort(perm)`.
* a grid is stored in a 30x30 token canvas at the top-left (translation only in the
  training split), colours as tokens 2..11, pad 0, and eos 1 on the row below the grid
  and the column right of it.

All grid functions work on a single grid or a batch: the last two axes are the grid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from hrm.errors import InputError
from hrm.puzzles.grids import dihedral_transform, inverse_dihedral_transform

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


def parse_grid(value: object, where: str) -> np.ndarray:
    """A JSON grid → uint8 array; rows must be equally long lists of ints 0..9, 1..30 a side."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise InputError(f"{where}: a grid must be a non-empty list of rows")
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise InputError(f"{where}: ragged grid, row lengths {sorted(widths)}")
    height, width = len(value), widths.pop()
    if not (1 <= height <= ARC_SIDE and 1 <= width <= ARC_SIDE):
        raise InputError(f"{where}: grid is {height}x{width}; ARC grids are 1..{ARC_SIDE} a side")
    for r, row in enumerate(value):
        for c, cell in enumerate(row):
            if not isinstance(cell, int) or isinstance(cell, bool) or not 0 <= cell <= 9:
                raise InputError(f"{where}[{r}][{c}]: colour {cell!r} is not an integer 0..9")
    return np.array(value, dtype=np.uint8)
