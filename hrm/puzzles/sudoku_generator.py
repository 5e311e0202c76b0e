"""Sudoku puzzles made here, for the demo, the tests and the benchmarks.

`generate_sudoku` draws a random solved board, then blanks cells in a random order,
keeping a blank only while the puzzle still has exactly one solution, until the requested
number of givens is reached. Uniqueness is proved by `SudokuSolver.count_solutions(limit=2)`,
a bitmask backtracking solver that always branches on the cell with the fewest candidates.
Boards are 4x4 (2x2 boxes, digits 1..4, what the demo trains on) or 9x9.

The demo's data (`demo_sudoku_puzzles`) is 4x4 puzzles whose test split holds solution
grids no training puzzle has.

Everything is deterministic for a seed: puzzle `i` of a batch uses its own generator seeded
with (seed, i), so a batch does not depend on how it is split into chunks.
"""

from __future__ import annotations

import itertools
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Iterator

import numpy as np

from hrm import storage
from hrm.data.dataset import Dataset
from hrm.data.reader import open_dataset
from hrm.data.schema import META_FILE, PuzzleArrays
from hrm.puzzles.publish import Clock, Destination, child_seed, publish
from hrm.puzzles.sudoku import DEFAULT_TIERS, encode_sudoku, parse_tiers, rating_tiers

# --------------------------------------------------------------------------- Sudoku solver


class SudokuSolver:
    """Bitmask backtracking solver for n²×n² Sudoku (box side n).

    A board is a flat list of side² ints, 0 for blank. Digit d is bit 1 << (d - 1) in the
    row/column/box masks; candidates of a cell = digits in none of its three masks.
    """

    def __init__(self, box: int):
        self.box = box
        self.side = box * box
        self.cells = self.side * self.side
        self.full = (1 << self.side) - 1
        side = self.side
        self.row_of = [i // side for i in range(self.cells)]
        self.col_of = [i % side for i in range(self.cells)]
        self.box_of = [(i // side) // box * box + (i % side) // box for i in range(self.cells)]
        # per-mask candidate counts and digit lists keep bit tricks out of the inner loop
        self.popcount = [bin(m).count("1") for m in range(1 << side)]
        self.digits_of = [[d + 1 for d in range(side) if m >> d & 1] for m in range(1 << side)]

    def masks(self, board: list[int]) -> tuple[list[int], list[int], list[int]] | None:
        """Row/column/box masks of the givens, or None if two givens clash."""
        rows, cols, boxes = [0] * self.side, [0] * self.side, [0] * self.side
        for i, digit in enumerate(board):
            if digit:
                bit = 1 << (digit - 1)
                r, c, b = self.row_of[i], self.col_of[i], self.box_of[i]
                if (rows[r] | cols[c] | boxes[b]) & bit:
                    return None
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
        return rows, cols, boxes

    def _search(self, board: list[int], rows: list[int], cols: list[int], boxes: list[int],
                empty: list[int], limit: int, order: np.random.Generator | None,
                state: _SearchState) -> int:
        """Count solutions of `board` up to `limit`; the first one found is kept in `state`.

        With `order`, candidates are tried in random order (used to draw random solved boards).
        """
        if not empty:
            if state.first is None:
                state.first = list(board)
            return 1
        # Pick the empty cell with the fewest candidates (minimum remaining values).
        best_pos, best_count, best_mask = -1, self.side + 1, 0
        row_of, col_of, box_of, full, popcount = self.row_of, self.col_of, self.box_of, self.full, self.popcount
        for pos, cell in enumerate(empty):
            mask = full & ~(rows[row_of[cell]] | cols[col_of[cell]] | boxes[box_of[cell]])
            count = popcount[mask]
            if count < best_count:
                best_pos, best_count, best_mask = pos, count, mask
                if count <= 1:
                    break
        if best_count == 0:
            return 0
        if best_count > 1:
            state.branches += 1
        cell = empty[best_pos]
        empty[best_pos] = empty[-1]
        empty.pop()
        r, c, b = row_of[cell], col_of[cell], box_of[cell]
        digits = self.digits_of[best_mask]
        if order is not None:
            digits = [digits[k] for k in order.permutation(len(digits))]
        found = 0
        for digit in digits:
            bit = 1 << (digit - 1)
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            board[cell] = digit
            found += self._search(board, rows, cols, boxes, empty, limit - found, order, state)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            if found >= limit:
                break
        board[cell] = 0
        empty.append(cell)
        empty[best_pos], empty[-1] = empty[-1], empty[best_pos]
        return found

    def count_solutions(self, board: list[int], limit: int = 2) -> int:
        """Number of solutions of `board`, counted up to `limit` (2 proves uniqueness)."""
        return self.solve(board, limit)[0]

    def solve(self, board: list[int], limit: int = 1,
              rng: np.random.Generator | None = None) -> tuple[int, list[int] | None, int]:
        """(solutions counted up to `limit`, the first solution or None, branch points).

        Branch points (cells searched with more than one candidate) rate the difficulty.
        """
        masks = self.masks(board)
        if masks is None:
            return 0, None, 0
        empty = [i for i, digit in enumerate(board) if not digit]
        state = _SearchState()
        found = self._search(list(board), *masks, empty, limit, rng, state)
        return found, state.first, state.branches


    def blank_if_unique(self, board: list[int], masks: tuple[list[int], list[int], list[int]], cell: int) -> bool:
        """Blank `cell` of a uniquely solvable `board` if it stays unique; say whether it was blanked.

        `masks` (from `masks(board)`) are kept in step with `board`. The original solution
        still solves the blanked puzzle, so uniqueness fails exactly when another digit at
        `cell` also leads to a solution. If the givens already rule out every other digit
        there (a naked single) that cannot happen, which settles most early blanks for free.
        """
        rows, cols, boxes = masks
        r, c, b = self.row_of[cell], self.col_of[cell], self.box_of[cell]
        digit = board[cell]
        bit = 1 << (digit - 1)
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        board[cell] = 0
        others = self.full & ~(rows[r] | cols[c] | boxes[b]) & ~bit
        empty = [i for i, d in enumerate(board) if not d and i != cell]
        for other in self.digits_of[others]:
            other_bit = 1 << (other - 1)
            rows[r] |= other_bit
            cols[c] |= other_bit
            boxes[b] |= other_bit
            solvable = self._search(board, rows, cols, boxes, empty, 1, None, _SearchState())
            rows[r] ^= other_bit
            cols[c] ^= other_bit
            boxes[b] ^= other_bit
            if solvable:
                board[cell] = digit
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                return False
        return True


@dataclass
class _SearchState:
    branches: int = 0
    first: list[int] | None = None


# --------------------------------------------------------------------------- Sudoku generator


@dataclass(frozen=True)
class SudokuPuzzle:
    """One generated puzzle: flat digit boards (0 = blank) and the solver's rating."""

    question: tuple[int, ...]
    answer: tuple[int, ...]
    rating: int  # branch points the solver needed to solve the question

    def question_string(self) -> str:
        return "".join(str(d) if d else "." for d in self.question)

    def answer_string(self) -> str:
        return "".join(str(d) for d in self.answer)


_SOLVERS: dict[int, SudokuSolver] = {}


def sudoku_solver(box: int) -> SudokuSolver:
    """The shared solver for a box size (its lookup tables are built once)."""
    if box not in _SOLVERS:
        _SOLVERS[box] = SudokuSolver(box)
    return _SOLVERS[box]


def generate_sudoku(givens: int, box: int = 3, seed: int = 0, max_attempts: int = 100) -> SudokuPuzzle:
    """A puzzle with exactly `givens` givens and a unique solution, deterministic for `seed`.

    Greedy blanking in random order usually stops at 22–26 givens on 9×9 (4–6 on 4×4);
    fewer givens need more attempts and may fail with ValueError after `max_attempts`.
    """
    solver = sudoku_solver(box)
    if not 0 <= givens <= solver.cells:
        raise ValueError(f"givens must be in 0..{solver.cells}, got {givens}")
    rng = np.random.default_rng(seed)
    for _ in range(max_attempts):
        _, solution, _ = solver.solve([0] * solver.cells, rng=rng)
        board = list(solution)
        masks = solver.masks(board)
        remaining = solver.cells
        for cell in rng.permutation(solver.cells):
            if remaining == givens:
                break
            remaining -= solver.blank_if_unique(board, masks, int(cell))
        if remaining == givens:
            _, _, rating = solver.solve(board)
            return SudokuPuzzle(tuple(board), tuple(solution), rating)
    raise ValueError(f"no unique {solver.side}x{solver.side} puzzle with {givens} givens "
                     f"in {max_attempts} attempts (seed {seed}); ask for more givens")


def generate_sudokus(count: int, givens: int, box: int = 3, seed: int = 0,
                     workers: int = 1) -> Iterator[SudokuPuzzle]:
    """Puzzles 0..count-1 of the stream for `seed`, in order, on `workers` processes.

    Puzzle i is seeded by (seed, i), so the stream is the same for any number of workers.
    """
    seeds = (child_seed(seed, index) for index in range(count))
    if workers <= 1:
        for child in seeds:
            yield generate_sudoku(givens, box, seed=child)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(partial(generate_sudoku, givens, box), seeds, chunksize=256)


def sudoku_puzzle_arrays(puzzles: Iterable[SudokuPuzzle], source: str = "generated",
                         tiers: str = DEFAULT_TIERS) -> PuzzleArrays:
    """The puzzles as the `sudoku-csv` converter would encode them (no augmentation)."""
    puzzles = list(puzzles)
    questions = np.array([p.question for p in puzzles], dtype=np.uint8)
    answers = np.array([p.answer for p in puzzles], dtype=np.uint8)
    ratings = np.array([p.rating for p in puzzles], dtype=np.int64)
    return encode_sudoku(questions, answers, ratings, [source] * len(puzzles),
                         tiers=rating_tiers(ratings, parse_tiers(tiers)))


# --------------------------------------------------------------------------- the demo's data

DEMO_BLANKS = range(4, 9)  # blanks per demo puzzle: 4..8 of the 16 cells


def demo_sudoku_puzzles(train_size: int, test_size: int, seed: int = 0) -> dict[str, list[SudokuPuzzle]]:
    """4×4 Sudoku puzzles with 4–8 blanks (equally many of each) and a unique solution.

    A 4×4 board has only 288 solution grids, so a model could memorise them; the test split
    uses grids that no training puzzle has (a grid is held out when its CRC-32 is 0 mod 5,
    about a fifth of them), so test accuracy measures solving, not recall.
    """
    streams = [generate_sudokus(10**9, givens=16 - blanks, box=2, seed=seed * 16 + blanks) for blanks in DEMO_BLANKS]
    splits: dict[str, list[SudokuPuzzle]] = {"train": [], "test": []}
    wanted = {"train": train_size, "test": test_size}
    for puzzle in itertools.chain.from_iterable(zip(*streams)):
        split = "test" if zlib.crc32(bytes(puzzle.answer)) % 5 == 0 else "train"
        if len(splits[split]) < wanted[split]:
            splits[split].append(puzzle)
        if all(len(splits[name]) == wanted[name] for name in splits):
            return splits
    raise AssertionError("unreachable: the streams are endless")


def write_demo_sudoku(uri: str, train_size: int = 20000, test_size: int = 1000, seed: int = 0) -> Dataset:
    """The demo dataset at `uri` (our Parquet layout, encoded as the reference encodes Sudoku:
    pad 0, token = digit + 1 with blank 1, vocab 6, seq_len 16, one set "all" per split);
    a dataset already there is opened as it is."""
    if not storage.exists(storage.join(uri, META_FILE)):
        splits = {name: sudoku_puzzle_arrays(puzzles, source="demo-4x4")
                  for name, puzzles in demo_sudoku_puzzles(train_size, test_size, seed).items()}
        publish(Destination(uri), "demo-sudoku-4x4", splits, seed=seed,
                vocab_size=6, seq_len=16, identifiers=["<blank>"], clock=Clock(),
                details={"blanks": list(DEMO_BLANKS), "held_out": "solution grids with crc32 % 5 == 0"})
    return open_dataset(uri)
