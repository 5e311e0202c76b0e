"""Sudoku and maze generators: uniqueness, exact givens, shortest-path labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from hrm.puzzles.maze import (
    MAZE_GOAL,
    MAZE_PATH,
    MAZE_START,
    MAZE_WALL,
    generate_maze,
    generate_mazes,
    shortest_paths,
    solve_maze,
)
from hrm.puzzles.sudoku_generator import (
    SudokuSolver,
    generate_sudoku,
    generate_sudokus,
    sudoku_puzzle_arrays,
    sudoku_solver,
)

# A well-known 9x9 puzzle with a unique solution (17 givens would be slow to generate).
KNOWN = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
KNOWN_SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def board(text: str) -> list[int]:
    return [0 if ch == "." else int(ch) for ch in text]


def is_solved(cells: tuple[int, ...] | list[int], box: int) -> bool:
    side = box * box
    grid = np.array(cells).reshape(side, side)
    boxes = grid.reshape(box, box, box, box).transpose(0, 2, 1, 3).reshape(side, side)
    return all((np.sort(units, axis=1) == np.arange(1, side + 1)).all() for units in (grid, grid.T, boxes))


def test_solver_solves_a_known_puzzle_and_proves_it_unique():
    solver = SudokuSolver(3)
    count, solution, _ = solver.solve(board(KNOWN), limit=2)
    assert count == 1
    assert solution == board(KNOWN_SOLUTION)


@pytest.mark.parametrize("box", [2, 3])
def test_solver_stops_counting_at_the_limit_on_an_empty_board(box):
    solver = SudokuSolver(box)
    assert solver.count_solutions([0] * solver.cells) == 2
    assert solver.count_solutions([0] * solver.cells, limit=5) == 5


def test_solver_finds_no_solution_for_clashing_givens():
    clash = board(KNOWN)
    clash[2] = 5  # row 0 already has a 5
    assert SudokuSolver(3).count_solutions(clash) == 0


@pytest.mark.parametrize("box, givens", [(2, 6), (3, 30)])
def test_generated_sudoku_has_the_requested_givens_and_one_solution(box, givens):
    solver = sudoku_solver(box)
    for seed in range(5):
        puzzle = generate_sudoku(givens, box=box, seed=seed)
        assert sum(1 for d in puzzle.question if d) == givens
        assert is_solved(puzzle.answer, box)
        assert all(q in (0, a) for q, a in zip(puzzle.question, puzzle.answer))
        count, solution, _ = solver.solve(list(puzzle.question), limit=2)
        assert count == 1 and tuple(solution) == puzzle.answer


def test_sudoku_generation_is_deterministic_for_a_seed():
    assert generate_sudoku(28, seed=7) == generate_sudoku(28, seed=7)
    assert generate_sudoku(28, seed=7) != generate_sudoku(28, seed=8)


def test_sudoku_stream_is_the_same_on_two_worker_processes():
    assert list(generate_sudokus(6, 6, box=2, seed=3, workers=2)) == list(generate_sudokus(6, 6, box=2, seed=3))


def test_impossible_number_of_givens_is_refused():
    with pytest.raises(ValueError, match="givens"):
        generate_sudoku(2, box=2, max_attempts=3)  # a 4x4 Sudoku needs at least 4 givens


def test_sudoku_puzzle_arrays_use_the_reference_encoding():
    puzzles = list(generate_sudokus(3, 30, seed=1))
    arrays = sudoku_puzzle_arrays(puzzles)
    assert arrays.inputs.shape == (3, 81)
    np.testing.assert_array_equal(arrays.inputs, np.array([p.question for p in puzzles]) + 1)
    np.testing.assert_array_equal(arrays.labels, np.array([p.answer for p in puzzles]) + 1)
    np.testing.assert_array_equal(arrays.puzzle_indices, [0, 1, 2, 3])
    np.testing.assert_array_equal(arrays.group_indices, [0, 1, 2, 3])
    assert list(arrays.columns["rating"]) == [p.rating for p in puzzles]


@pytest.mark.parametrize("size, loops", [(9, 0.0), (15, 0.3), (30, 0.1)])
def test_generated_maze_labels_its_unique_shortest_path(size, loops):
    maze = generate_maze(size, seed=size, loops=loops)
    question, answer = list(maze.question), list(maze.answer)
    assert len(question) == size and all(len(row) == size for row in question)
    text = "".join(question)
    assert text.count(MAZE_START) == 1 and text.count(MAZE_GOAL) == 1 and MAZE_PATH not in text
    assert all(ch == MAZE_WALL for ch in question[0] + question[-1])
    start = divmod(text.index(MAZE_START), size)
    goal = divmod(text.index(MAZE_GOAL), size)
    distance, paths = shortest_paths(question, start)
    assert paths[goal] == 1
    assert maze.path_length == distance[goal] > 1
    assert [row.replace(MAZE_PATH, " ") for row in answer] == question


def test_maze_generation_is_deterministic_for_a_seed():
    assert list(generate_mazes(3, 11, seed=5)) == list(generate_mazes(3, 11, seed=5))
    assert generate_maze(11, seed=5) != generate_maze(11, seed=6)


def test_solving_a_maze_whose_goal_is_walled_off_fails():
    with pytest.raises(ValueError, match="cannot be reached"):
        solve_maze(["#####", "#S#G#", "#####"])
