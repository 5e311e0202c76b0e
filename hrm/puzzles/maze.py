"""Mazes: text grids read and encoded as puzzles whose labels mark the shortest start-to-goal
path, and random mazes generated for the tests and benchmarks.

Input files, either form (chosen by the file extension):
  * text (any extension but .csv): grids separated by one empty line, one text row per
    grid row, characters '#' wall, ' ' open, 'S' start, 'G' goal (rows keep their
    trailing spaces). A grid may already mark its path with 'o': that path must be a
    shortest one and becomes the label. Otherwise the label is computed by breadth-first
    search, and a grid with more than one shortest path is refused (mark the intended one).
  * .csv, as the reference maze datasets: header `source,question,answer,rating`, then
    square grids flattened row by row (question without the path, answer with it).
Every grid needs exactly one S and one G, at most 30x30 cells, and all grids must have the
same shape.

Encoding (as HRM's build_maze_dataset.py): characters "# SGo" → tokens 1..5, pad 0,
ignore_label_id 0, vocab 6, seq_len = rows x columns; the input is the grid without the
path, the label the grid with it. One puzzle and one group per maze; --augment adds the 7
other dihedral transforms of each train maze (square grids only) to its group.
Columns kept per example: source, path_length (steps from S to G), augmentation (dihedral
id, 0 for the original).

Generated mazes (`generate_maze`): a random perfect maze (every open cell reachable by
exactly one path), optionally with extra walls opened to make loops, start and goal placed far
apart, labelled with the unique shortest path found by breadth-first search.

Examples:
  hrm-eval convert maze --test mazes.txt --output data/mazes
  hrm-eval convert maze --train train.csv --test test.csv --augment --output s3://bucket/maze
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.schema import PuzzleArrays
from hrm.decode import read_text
from hrm.errors import InputError
from hrm.puzzles.grids import DihedralTransform, board_side
from hrm.puzzles.publish import (
    Clock,
    Destination,
    Sources,
    check_readable,
    child_seed,
    csv_rows,
    publish,
    single_example_puzzles,
    split_by_fraction,
)

MAZE_WALL, MAZE_OPEN, MAZE_START, MAZE_GOAL, MAZE_PATH = "#", " ", "S", "G", "o"
CHARSET = MAZE_WALL + MAZE_OPEN + MAZE_START + MAZE_GOAL + MAZE_PATH  # token = position + 1; pad is 0
MAX_SIDE = 30
CSV_HEADER = ["source", "question", "answer", "rating"]


@dataclass
class MazeGrid:
    question: list[str]
    answer: list[str]
    source: str
    where: str  # file:line of the grid, for messages


def convert_mazes(sources: Sources, destination: Destination, *, seed: int = 0, augment: bool = False) -> dict:
    """Read, validate, label, encode and publish; returns the summary. With `augment`, each
    train maze's group also holds its 7 other dihedral transforms."""
    clock = Clock()
    mazes = {name: read_mazes(path) for name, path in sources.files().items()}
    if "input" in mazes:
        table = mazes.pop("input")
        mazes = {name: [table[i] for i in idx]
                 for name, idx in split_by_fraction(len(table), sources.test_fraction, seed).items()}
    shape = _common_shape(mazes)
    if augment and shape[0] != shape[1]:
        raise InputError(f"{next(iter(mazes.values()))[0].where}: --augment needs square grids, "
                         f"these are {shape[0]}x{shape[1]}")
    splits = {name: encode_mazes(grids, augment=augment and name == "train")
              for name, grids in mazes.items()}
    return publish(destination, "maze", splits, seed=seed, vocab_size=len(CHARSET) + 1,
                   seq_len=shape[0] * shape[1], identifiers=["<blank>"], clock=clock,
                   details={"grid": f"{shape[0]}x{shape[1]}", "augment": bool(augment)})


def encode_mazes(mazes: list[MazeGrid], augment: bool = False) -> PuzzleArrays:
    """Mazes → PuzzleArrays; with `augment`, each maze's group holds its 8 dihedral versions."""
    height, width = len(mazes[0].question), len(mazes[0].question[0])
    inputs = np.stack([_tokens(m.question) for m in mazes])
    labels = np.stack([_tokens(m.answer) for m in mazes])
    lengths = np.array([sum(row.count(MAZE_PATH) for row in m.answer) + 1 for m in mazes], dtype=np.int32)
    copies = 8 if augment else 1
    if augment:
        transforms = [DihedralTransform(tid, height) for tid in range(8)]
        inputs = np.stack([t.apply(inputs) for t in transforms], axis=1).reshape(-1, height * width)
        labels = np.stack([t.apply(labels) for t in transforms], axis=1).reshape(-1, height * width)
    columns = {
        "source": np.repeat(np.array([m.source for m in mazes], dtype=str), copies),
        "path_length": np.repeat(lengths, copies),
        "augmentation": np.tile(np.arange(copies, dtype=np.int32), len(mazes)),
    }
    return single_example_puzzles(inputs, labels, group_size=copies, columns=columns)


def _tokens(rows: list[str]) -> np.ndarray:
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[[ord(ch) for ch in CHARSET]] = np.arange(1, len(CHARSET) + 1)
    return lookup[np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8)]


def _common_shape(mazes: dict[str, list[MazeGrid]]) -> tuple[int, int]:
    """The one grid shape all mazes share (the dataset has one seq_len)."""
    first = next(iter(mazes.values()))[0]
    shape = (len(first.question), len(first.question[0]))
    for grids in mazes.values():
        for grid in grids:
            found = (len(grid.question), len(grid.question[0]))
            if found != shape:
                raise InputError(f"{grid.where}: grid is {found[0]}x{found[1]}, but {first.where} "
                                 f"is {shape[0]}x{shape[1]}; all grids must have one shape")
    return shape


# --------------------------------------------------------------------------- reading


def read_mazes(path: Path) -> list[MazeGrid]:
    check_readable(path)
    mazes = _read_csv(path) if path.suffix.lower() == ".csv" else _read_text(path)
    if not mazes:
        raise InputError(f"{path}: no mazes in it")
    return mazes


def _read_text(path: Path) -> list[MazeGrid]:
    """Grids separated by empty lines; each becomes a question and its labelled answer."""
    mazes, rows, first_line = [], [], 0
    lines = read_text(path).split("\n")
    for number, line in enumerate(lines + [""], start=1):
        if line:
            first_line = first_line or number
            rows.append(line)
        elif rows:
            mazes.append(_labelled(rows, path.name, f"{path}:{first_line}"))
            rows, first_line = [], 0
    return mazes


def _read_csv(path: Path) -> list[MazeGrid]:
    mazes = []
    for line, row in csv_rows(path, CSV_HEADER):
        where = f"{path}:{line}"
        source, question, answer, _rating = row
        side = board_side(len(question))
        if side is None or len(answer) != len(question):
            raise InputError(f"{where}: question ({len(question)}) and answer ({len(answer)}) must be "
                             "the same square number of characters")
        question_rows = [question[r * side:(r + 1) * side] for r in range(side)]
        answer_rows = [answer[r * side:(r + 1) * side] for r in range(side)]
        maze = _labelled(answer_rows, source, where)
        if maze.question != question_rows:
            raise InputError(f"{where}: answer differs from question outside the 'o' path cells")
        mazes.append(maze)
    return mazes


def _labelled(rows: list[str], source: str, where: str) -> MazeGrid:
    """Validate a grid; its 'o' cells (if any) must be a shortest path, else compute one."""
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise InputError(f"{where}: ragged grid, row lengths {sorted({len(r) for r in rows})}")
    if len(rows) > MAX_SIDE or width > MAX_SIDE:
        raise InputError(f"{where}: grid is {len(rows)}x{width}; at most {MAX_SIDE}x{MAX_SIDE}")
    bad = {ch for row in rows for ch in row} - set(CHARSET)
    if bad:
        raise InputError(f"{where}: characters {sorted(bad)} are not in {CHARSET!r} (wall, open, S, G, path o)")
    question = [row.replace(MAZE_PATH, " ") for row in rows]
    try:
        answer, unique = solve_maze(question)
    except ValueError as err:
        raise InputError(f"{where}: {err}") from None
    if any(MAZE_PATH in row for row in rows):
        if not _is_shortest_path(question, rows):
            raise InputError(f"{where}: the 'o' cells are not a shortest path from S to G")
        return MazeGrid(question, list(rows), source, where)
    if not unique:
        raise InputError(f"{where}: more than one shortest path from S to G; mark the intended one with 'o'")
    return MazeGrid(question, answer, source, where)


def _is_shortest_path(question: list[str], answer: list[str]) -> bool:
    """Are the 'o' cells of `answer`, with S and G, one shortest S→G walk?"""
    cells = {(r, c): ch for r, row in enumerate(answer) for c, ch in enumerate(row)}
    start = next(p for p, ch in cells.items() if ch == MAZE_START)
    goal = next(p for p, ch in cells.items() if ch == MAZE_GOAL)
    from_start, _ = shortest_paths(question, start)
    path = sorted((p for p, ch in cells.items() if ch == MAZE_PATH), key=lambda p: from_start[p])
    walk = [start, *path, goal]
    if len(walk) - 1 != from_start[goal]:
        return False
    return all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(walk, walk[1:]))


# --------------------------------------------------------------------------- solving and generating

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
        yield generate_maze(size, seed=child_seed(seed, index), loops=loops)


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
