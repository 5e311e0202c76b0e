"""Sudoku: the CSV the reference datasets come in, the reference encoding, and the
validity-preserving shuffles used for augmentation and test-time augmentation.

Input: a CSV whose first line is the header `source,question,answer,rating`, then one
puzzle per line: `question` is the board read row by row (81 characters for 9x9, 16 for
4x4), '.' or '0' for a blank, digits 1..9 (1..4) for givens; `answer` is the solved board
(no blanks, agreeing with the givens, every row/column/box a permutation); `rating` is an
integer difficulty (sudoku-extreme: backtracks of a reference solver; our generator: branch
points of its solver). All rows of a file must have the same board size.

Encoding (as HRM's build_sudoku_dataset.py): token = digit + 1 (blank 0 → 1), pad 0,
ignore_label_id 0, vocab 11 and seq_len 81 for 9x9 (vocab 6, seq_len 16 for 4x4). One set
"all" per split; every puzzle is one example; with --augment N, N shuffled copies of each
training puzzle (digit permutation, band/stack and row/column shuffles, transpose) follow it
as puzzles of their own in the same group, so a group is the original plus its N copies.
identifiers.json is ["<blank>"] and every puzzle identifier is 0, as in the reference.

Columns kept per example: source, rating, tier (the rating bucket from --tiers, e.g.
"[5,20)"), augmentation (0 for the original, k for the k-th shuffled copy).

Examples:
  hrm-eval convert sudoku-csv --train train.csv --test test.csv --output data/sudoku
  hrm-eval convert sudoku-csv --input all.csv --test-fraction 0.1 --augment 8 \\
      --tiers 0,1,5,20,50 --output s3://bucket/sudoku --format parquet
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.schema import PuzzleArrays
from hrm.errors import InputError
from hrm.puzzles.grids import as_square, restore
from hrm.puzzles.publish import (
    Clock,
    Destination,
    Sources,
    check_readable,
    csv_rows,
    publish,
    single_example_puzzles,
    split_by_fraction,
    subsample,
)

HEADER = ["source", "question", "answer", "rating"]
BOX_FOR_CELLS = {16: 2, 81: 3}  # board cells → box side (4x4 and 9x9 boards)
DEFAULT_TIERS = "0,1,5,20,50"


@dataclass
class SudokuRows:
    """The parsed CSV rows: digit boards (0 blank), ratings, sources and file line numbers."""

    path: Path
    questions: np.ndarray  # [n, cells] uint8
    answers: np.ndarray  # [n, cells] uint8
    ratings: np.ndarray  # [n] int64
    sources: list[str]
    lines: np.ndarray  # [n] line number of each row, for error messages

    def take(self, indices: np.ndarray) -> SudokuRows:
        return SudokuRows(self.path, self.questions[indices], self.answers[indices], self.ratings[indices],
                          [self.sources[i] for i in indices], self.lines[indices])


def convert_sudoku_csv(sources: Sources, destination: Destination, *, seed: int = 0, augment: int = 0,
                       tiers: str = DEFAULT_TIERS, keep: int | None = None) -> dict:
    """Read, validate, encode and publish; returns the summary. `augment` shuffled copies of
    every train puzzle; `tiers` the rating edges; `keep` a seeded random subsample per split."""
    clock = Clock()
    edges = parse_tiers(tiers)
    if augment < 0:
        raise InputError(f"--augment: must be >= 0, got {augment}")
    rows = {name: read_sudoku_csv(path) for name, path in sources.files().items()}
    if "input" in rows:
        table = rows.pop("input")
        rows = {name: table.take(idx) for name, idx in
                split_by_fraction(len(table.ratings), sources.test_fraction, seed).items()}
    if augment and "train" not in rows:
        raise InputError("--augment: augmentation applies to the train split, and there is none")
    cells = {table.questions.shape[1] for table in rows.values()}
    if len(cells) > 1:
        raise InputError(f"{', '.join(str(t.path) for t in rows.values())}: the splits mix board sizes")
    cells_per_board = cells.pop()

    splits: dict[str, PuzzleArrays] = {}
    for offset, (name, table) in enumerate(sorted(rows.items())):
        table = table.take(subsample(len(table.ratings), keep, seed + offset))
        splits[name] = encode_sudoku(table.questions, table.answers, table.ratings, table.sources,
                                     tiers=_tiers_of(table, edges),
                                     augment=augment if name == "train" else 0, seed=seed)
    tier_counts = {name: _tier_counts(arrays, tier_labels(edges)) for name, arrays in splits.items()}
    return publish(destination, "sudoku-csv", splits, seed=seed, vocab_size=_side(cells_per_board) + 2,
                   seq_len=cells_per_board, identifiers=["<blank>"], clock=clock,
                   details={"augment": augment, "tiers": tier_counts})


def parse_tiers(text: str) -> np.ndarray:
    try:
        edges = np.array([int(edge) for edge in text.split(",")], dtype=np.int64)
    except ValueError:
        raise InputError(f"--tiers: expected comma-separated integers like {DEFAULT_TIERS}, got {text!r}") from None
    if len(edges) == 0 or np.any(np.diff(edges) <= 0):
        raise InputError(f"--tiers: edges must be strictly increasing, got {text!r}")
    return edges


def rating_tiers(ratings: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Tier label per rating: "[low,high)" of the bucket it falls in ("[50,inf)" for the last).

    Ratings below the first edge have no tier: the caller must have rejected them.
    """
    return np.array(tier_labels(edges))[np.searchsorted(edges, ratings, side="right") - 1]


def tier_labels(edges: np.ndarray) -> list[str]:
    """"[low,high)" per tier, in edge order."""
    bounds = [str(e) for e in edges] + ["inf"]
    return [f"[{low},{high})" for low, high in zip(bounds, bounds[1:])]


def _tiers_of(table: SudokuRows, edges: np.ndarray) -> np.ndarray:
    below = table.ratings < edges[0]
    if below.any():
        row = int(np.argmax(below))
        raise InputError(f"{table.path}:{table.lines[row]}: rating {int(table.ratings[row])} is below the "
                         f"first --tiers edge {int(edges[0])}")
    return rating_tiers(table.ratings, edges)


# --------------------------------------------------------------------------- reading


def read_sudoku_csv(path: Path) -> SudokuRows:
    """Parse and validate a Sudoku CSV; every problem is an InputError naming file and line."""
    check_readable(path)
    questions, answers, ratings, sources, lines = [], [], [], [], []
    cells = None
    for line, row in csv_rows(path, HEADER):
        where = f"{path}:{line}"
        source, question, answer, rating = row
        cells = cells or _board_cells(len(question), where)
        for column, text in (("question", question), ("answer", answer)):
            if len(text) != cells:
                raise InputError(f"{where}: {column} has {len(text)} characters, expected {cells}")
        try:
            ratings.append(int(rating))
        except ValueError:
            raise InputError(f"{where}: rating must be an integer, got {rating!r}") from None
        questions.append(question)
        answers.append(answer)
        sources.append(source)
        lines.append(line)
    if not questions:
        raise InputError(f"{path}: no puzzles after the header")
    lines_array = np.array(lines, dtype=np.int64)
    question_digits = _digits(path, "question", questions, lines_array, blanks=True)
    answer_digits = _digits(path, "answer", answers, lines_array, blanks=False)
    _check_solutions(path, question_digits, answer_digits, lines_array)
    return SudokuRows(path, question_digits, answer_digits, np.array(ratings, dtype=np.int64), sources, lines_array)


def _board_cells(length: int, where: str) -> int:
    if length not in BOX_FOR_CELLS:
        raise InputError(f"{where}: question has {length} characters; a board has 81 (9x9) or 16 (4x4)")
    return length


def _side(cells: int) -> int:
    return BOX_FOR_CELLS[cells] ** 2


def _digits(path: Path, column: str, boards: list[str], lines: np.ndarray, *, blanks: bool) -> np.ndarray:
    """Board strings → digit array [n, cells] (blank 0); reject characters out of range."""
    cells = len(boards[0])
    raw = np.frombuffer("".join(boards).encode("utf-8", errors="replace"), dtype=np.uint8)
    if len(raw) != len(boards) * cells:  # a multi-byte character somewhere
        bad = next(i for i, board in enumerate(boards) if not board.isascii())
        raise InputError(f"{path}:{lines[bad]}: {column} contains a non-ASCII character")
    raw = raw.reshape(len(boards), cells)
    digits = np.where(raw == ord("."), 0, raw.astype(np.int16) - ord("0"))
    low = 0 if blanks else 1
    bad_rows = np.flatnonzero(((digits < low) | (digits > _side(cells))).any(axis=1))
    if len(bad_rows):
        row = bad_rows[0]
        position = int(np.argmax((digits[row] < low) | (digits[row] > _side(cells))))
        allowed = f"'.', '0' or 1..{_side(cells)}" if blanks else f"1..{_side(cells)}"
        raise InputError(f"{path}:{lines[row]}: {column} character {position + 1} is "
                         f"{boards[row][position]!r}; allowed: {allowed}")
    return digits.astype(np.uint8)


def _check_solutions(path: Path, questions: np.ndarray, answers: np.ndarray, lines: np.ndarray) -> None:
    """Every answer keeps the givens and has each digit once per row, column and box."""
    disagree = ((questions != 0) & (questions != answers)).any(axis=1)
    if disagree.any():
        raise InputError(f"{path}:{lines[np.argmax(disagree)]}: answer changes a given digit of the question")
    box = BOX_FOR_CELLS[questions.shape[1]]
    side = box * box
    boards = answers.reshape(-1, side, side)
    boxes = boards.reshape(-1, box, box, box, box).transpose(0, 1, 3, 2, 4).reshape(-1, side, side)
    expected = np.arange(1, side + 1)
    invalid = np.zeros(len(boards), dtype=bool)
    for units in (boards, boards.transpose(0, 2, 1), boxes):
        invalid |= (np.sort(units, axis=2) != expected).any(axis=(1, 2))
    if invalid.any():
        raise InputError(f"{path}:{lines[np.argmax(invalid)]}: answer is not a solved board "
                         "(a row, column or box repeats a digit)")


# --------------------------------------------------------------------------- encoding


def encode_sudoku(questions: np.ndarray, answers: np.ndarray, ratings: np.ndarray, sources: list[str], *,
                  tiers: np.ndarray, augment: int = 0, seed: int = 0) -> PuzzleArrays:
    """Digit boards [n, cells] → PuzzleArrays: token = digit + 1, each original then `augment` copies."""
    tokens_q = questions.astype(np.uint8) + 1
    tokens_a = answers.astype(np.uint8) + 1
    copies = augment + 1
    if augment:
        if questions.shape[1] != 81:
            raise InputError("--augment: supports 9x9 boards only")
        tokens_q, tokens_a = _augmented(tokens_q, tokens_a, augment, seed)
    columns = {
        "source": np.repeat(np.array(sources, dtype=str), copies),
        "rating": np.repeat(ratings.astype(np.int32), copies),
        "tier": np.repeat(np.asarray(tiers, dtype=str), copies),
        "augmentation": np.tile(np.arange(copies, dtype=np.int32), len(ratings)),
    }
    return single_example_puzzles(tokens_q, tokens_a, group_size=copies, columns=columns)


def _augmented(questions: np.ndarray, answers: np.ndarray, augment: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Interleave each board with `augment` random shuffles of it (question and answer alike)."""
    rng = np.random.RandomState(seed)
    copies = augment + 1
    out_q = np.repeat(questions, copies, axis=0)
    out_a = np.repeat(answers, copies, axis=0)
    for index in range(len(questions)):
        pair = np.stack([questions[index], answers[index]])
        for k in range(1, copies):
            out_q[index * copies + k], out_a[index * copies + k] = SudokuTransform.random(rng).apply(pair)
    return out_q, out_a


def _tier_counts(arrays: PuzzleArrays, labels: list[str]) -> dict[str, int]:
    """Examples per tier, tiers in edge order, empty tiers left out."""
    counts = {label: int(np.count_nonzero(arrays.columns["tier"] == label)) for label in labels}
    return {label: count for label, count in counts.items() if count}


# --------------------------------------------------------------------------- shuffles

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

    def _token_map(self) -> np.ndarray:
        return np.array([0, *(d + 1 for d in self.digit_map)], dtype=np.int64)

    def apply(self, board: np.ndarray) -> np.ndarray:
        square, flat = as_square(np.asarray(board), self.side)
        if self.transpose:
            square = np.swapaxes(square, -2, -1)
        moved = square[..., list(self.row_perm), :][..., list(self.col_perm)]
        return restore(self._token_map()[moved].astype(square.dtype), flat)

    def invert(self, board: np.ndarray) -> np.ndarray:
        square, flat = as_square(np.asarray(board), self.side)
        relabelled = np.argsort(self._token_map())[square].astype(square.dtype)
        rows, cols = np.argsort(self.row_perm), np.argsort(self.col_perm)
        moved = relabelled[..., rows, :][..., cols]
        if self.transpose:
            moved = np.swapaxes(moved, -2, -1)
        return restore(moved, flat)


def _is_band_preserving(perm: tuple[int, ...], box: int) -> bool:
    """A permutation of 0..box²-1 that moves whole bands of `box` rows and shuffles rows inside them."""
    side = box * box
    if sorted(perm) != list(range(side)):
        return False
    bands = [{p // box for p in perm[i : i + box]} for i in range(0, side, box)]
    return all(len(band) == 1 for band in bands)
