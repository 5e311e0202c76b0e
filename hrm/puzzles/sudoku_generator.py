"""Puzzle generators for the demo, the tests and the benchmarks: Sudoku and mazes.

Sudoku: `generate_sudoku` draws a random solved board, then blanks cells in a random order,
keeping a blank only while the puzzle still has exactly one solution, until the requested
number of givens is reached. Uniqueness is proved by `SudokuSolver.count_solutions(limit=2)`,
a bitmask backtracking solver that always branches on the cell with the fewest candidates.
Boards are 4x4 (2x2 boxes, digits 1..4, what the demo trains on) or 9x9.

Mazes: `generate_maze` carves a random perfect maze (every open cell reachable by exactly one
path), optionally opens extra walls to make loops, places start and goal far apart, and
labels the unique shortest path found by breadth-first search.

Everything is deterministic for a seed: puzzle `i` of a batch uses its own generator seeded
with (seed, i), so a batch does not depend on how it is split into chunks.
"""

from __future__ import annotations

import csv
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from hrm.converters.sudoku import DEFAULT_TIERS, encode_sudoku, parse_tiers, rating_tiers
from hrm.dataset import PuzzleArrays

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
    seeds = (_child_seed(seed, index) for index in range(count))
    if workers <= 1:
        for child in seeds:
            yield generate_sudoku(givens, box, seed=child)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(partial(generate_sudoku, givens, box), seeds, chunksize=256)


def write_sudoku_csv(path: str | Path, puzzles: Iterable[SudokuPuzzle], source: str = "generated") -> int:
    """Write the `source,question,answer,rating` CSV the `sudoku-csv` converter reads."""
    written = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "question", "answer", "rating"])
        for puzzle in puzzles:
            writer.writerow([source, puzzle.question_string(), puzzle.answer_string(), puzzle.rating])
            written += 1
    return written


def sudoku_puzzle_arrays(puzzles: Iterable[SudokuPuzzle], source: str = "generated",
                         tiers: str = DEFAULT_TIERS) -> PuzzleArrays:
    """The puzzles as the `sudoku-csv` converter would encode them (no augmentation)."""
    puzzles = list(puzzles)
    questions = np.array([p.question for p in puzzles], dtype=np.uint8)
    answers = np.array([p.answer for p in puzzles], dtype=np.uint8)
    ratings = np.array([p.rating for p in puzzles], dtype=np.int64)
    return encode_sudoku(questions, answers, ratings, [source] * len(puzzles),
                         tiers=rating_tiers(ratings, parse_tiers(tiers)))


def _child_seed(seed: int, index: int) -> int:
    """An independent seed for item `index` of the stream `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# --------------------------------------------------------------------------- mazes

MAZE_WALL, MAZE_OPEN, MAZE_START, MAZE_GOAL, MAZE_PATH = "#", " ", "S", "G", "o"
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True)
class Maze:
    """A maze as text rows: `question` without the path, `answer` with the path marked 'o'."""

    question: tuple[str, ...]
    answer: tuple[str, ...]

    @property
    def path_length(self) -> int:
        return sum(row.count(MAZE_PATH) for row in self.answer) + 1  # steps from S to G

    def text(self, solved: bool = False) -> str:
        return "\n".join(self.answer if solved else self.question)


def shortest_paths(grid: list[str], start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """BFS from `start` over non-wall cells: (distance, number of shortest paths) per cell.

    Distance is -1 where unreachable; path counts saturate at 2 (we only need "unique or not").
    """
    height, width = len(grid), len(grid[0])
    distance = np.full((height, width), -1, dtype=np.int32)
    paths = np.zeros((height, width), dtype=np.int8)
    distance[start], paths[start] = 0, 1
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in _STEPS:
            nr, nc = r + dr, c + dc
            if not (0 <= nr < height and 0 <= nc < width) or grid[nr][nc] == MAZE_WALL:
                continue
            if distance[nr, nc] < 0:
                distance[nr, nc] = distance[r, c] + 1
                queue.append((nr, nc))
            if distance[nr, nc] == distance[r, c] + 1:
                paths[nr, nc] = min(2, paths[nr, nc] + paths[r, c])
    return distance, paths


def solve_maze(grid: list[str]) -> tuple[list[str], bool]:
    """Mark a shortest S→G path with 'o'; also say whether that shortest path is unique.

    Raises ValueError if the grid lacks exactly one S and one G, or G is unreachable.
    """
    start, goal = _find_one(grid, MAZE_START), _find_one(grid, MAZE_GOAL)
    distance, paths = shortest_paths(grid, start)
    if distance[goal] < 0:
        raise ValueError("the goal G cannot be reached from the start S")
    # Walk back from G, always to a neighbour one step closer to S.
    rows = [list(row) for row in grid]
    cell = goal
    while distance[cell] > 1:
        r, c = cell
        cell = next((r + dr, c + dc) for dr, dc in _STEPS
                    if 0 <= r + dr < len(grid) and 0 <= c + dc < len(grid[0])
                    and distance[r + dr, c + dc] == distance[cell] - 1)
        rows[cell[0]][cell[1]] = MAZE_PATH
    return ["".join(row) for row in rows], bool(paths[goal] == 1)


def _find_one(grid: list[str], char: str) -> tuple[int, int]:
    found = [(r, c) for r, row in enumerate(grid) for c, ch in enumerate(row) if ch == char]
    if len(found) != 1:
        raise ValueError(f"a maze needs exactly one {char!r}, found {len(found)}")
    return found[0]


def generate_maze(size: int, seed: int = 0, loops: float = 0.0, max_attempts: int = 100) -> Maze:
    """A size×size maze (5 ≤ size ≤ 30) with a unique shortest S→G path, deterministic for `seed`.

    Passages are carved by a randomised depth-first search on a lattice of odd cells (for an
    even size the last row/column stays wall). `loops` is the fraction of remaining inner
    walls between two passages that is knocked out; loops are what make "shortest" matter,
    and a draw whose shortest path is not unique is redrawn.
    """
    if not 5 <= size <= 30:
        raise ValueError(f"maze size must be 5..30, got {size}")
    rng = np.random.default_rng(seed)
    for _ in range(max_attempts):
        grid = _carve(size, rng)
        _knock_out_walls(grid, loops, rng)
        _place_start_and_goal(grid, rng)
        text = ["".join(row) for row in grid]
        answer, unique = solve_maze(text)
        if unique:
            return Maze(tuple(text), tuple(answer))
    raise ValueError(f"no maze with a unique shortest path in {max_attempts} attempts; lower `loops`")


def generate_mazes(count: int, size: int, seed: int = 0, loops: float = 0.0) -> Iterator[Maze]:
    """Mazes 0..count-1 of the stream for `seed` (each seeded by (seed, i))."""
    for index in range(count):
        yield generate_maze(size, seed=_child_seed(seed, index), loops=loops)


def _carve(size: int, rng: np.random.Generator) -> list[list[str]]:
    """Randomised DFS over cells (odd, odd): a perfect maze of passages between walls."""
    grid = [[MAZE_WALL] * size for _ in range(size)]
    last = size - 2 if size % 2 == 0 else size - 1  # highest odd index with a wall beyond it
    start = (1, 1)
    grid[1][1] = MAZE_OPEN
    stack = [start]
    while stack:
        r, c = stack[-1]
        options = [(r + 2 * dr, c + 2 * dc, r + dr, c + dc) for dr, dc in _STEPS
                   if 1 <= r + 2 * dr <= last and 1 <= c + 2 * dc <= last
                   and grid[r + 2 * dr][c + 2 * dc] == MAZE_WALL]
        if not options:
            stack.pop()
            continue
        nr, nc, wr, wc = options[rng.integers(len(options))]
        grid[wr][wc] = grid[nr][nc] = MAZE_OPEN
        stack.append((nr, nc))
    return grid


def _knock_out_walls(grid: list[list[str]], fraction: float, rng: np.random.Generator) -> None:
    """Open `fraction` of the inner walls that separate two passages (creates loops)."""
    if fraction <= 0:
        return
    size = len(grid)
    candidates = [(r, c) for r in range(1, size - 1) for c in range(1, size - 1)
                  if grid[r][c] == MAZE_WALL and (
                      (grid[r - 1][c] == MAZE_OPEN and grid[r + 1][c] == MAZE_OPEN)
                      or (grid[r][c - 1] == MAZE_OPEN and grid[r][c + 1] == MAZE_OPEN))]
    for index in rng.permutation(len(candidates))[: int(round(fraction * len(candidates)))]:
        r, c = candidates[index]
        grid[r][c] = MAZE_OPEN


def _place_start_and_goal(grid: list[list[str]], rng: np.random.Generator) -> None:
    """S at a random open cell, G at a random cell among the farthest from S (hard mazes)."""
    text = ["".join(row) for row in grid]
    open_cells = [(r, c) for r, row in enumerate(text) for c, ch in enumerate(row) if ch == MAZE_OPEN]
    start = open_cells[rng.integers(len(open_cells))]
    distance, _ = shortest_paths(text, start)
    far = np.argwhere(distance >= max(1, int(distance.max() * 0.9)))
    goal = tuple(int(x) for x in far[rng.integers(len(far))])
    grid[start[0]][start[1]] = MAZE_START
    grid[goal[0]][goal[1]] = MAZE_GOAL
