"""Maze text grids → maze puzzles whose labels mark the shortest start-to-goal path.

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

Examples:
  hrm-eval convert maze --test mazes.txt --output data/mazes
  hrm-eval convert maze --train train.csv --test test.csv --augment --output s3://bucket/maze
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.augment import DihedralTransform, board_side
from hrm.converters.common import (Clock, csv_rows, add_output_options, add_split_options, check_readable,
                                   publish, single_example_puzzles, split_by_fraction, split_sources)
from hrm.dataset import PuzzleArrays
from hrm.errors import InputError
from hrm.generators import MAZE_GOAL, MAZE_PATH, MAZE_START, shortest_paths, solve_maze

CHARSET = "# SGo"  # token = position + 1; pad is 0
MAX_SIDE = 30
CSV_HEADER = ["source", "question", "answer", "rating"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_split_options(parser, "maze text or CSV file")
    parser.add_argument("--augment", action="store_true",
                        help="add the 7 other dihedral transforms of every train maze to its group")
    add_output_options(parser)


@dataclass
class MazeGrid:
    question: list[str]
    answer: list[str]
    source: str
    where: str  # file:line of the grid, for messages


def convert(args: argparse.Namespace) -> dict:
    clock = Clock()
    mazes = {name: read_mazes(path) for name, path in split_sources(args).items()}
    if "input" in mazes:
        table = mazes.pop("input")
        mazes = {name: [table[i] for i in idx]
                 for name, idx in split_by_fraction(len(table), args.test_fraction, args.seed).items()}
    shape = _common_shape(mazes)
    if args.augment and shape[0] != shape[1]:
        raise InputError(f"{next(iter(mazes.values()))[0].where}: --augment needs square grids, "
                         f"these are {shape[0]}x{shape[1]}")
    splits = {name: encode_mazes(grids, augment=args.augment and name == "train")
              for name, grids in mazes.items()}
    return publish(args, "maze", splits, vocab_size=len(CHARSET) + 1, seq_len=shape[0] * shape[1],
                   identifiers=["<blank>"], clock=clock,
                   details={"grid": f"{shape[0]}x{shape[1]}", "augment": bool(args.augment)})


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
    with open(path) as handle:
        lines = handle.read().split("\n")
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
