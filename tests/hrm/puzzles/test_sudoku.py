"""`hrm-eval convert sudoku-csv`: the reference encoding, augmentation, tiers, splits, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hrm.data.reader import open_dataset
from hrm.puzzles.sudoku import SudokuTransform
from hrm.puzzles.sudoku_generator import generate_sudokus, sudoku_solver

from jobs.cli import main

from tests.factories import CONFORMANCE, convert_cli, write_sudoku_csv

convert, refused = convert_cli("sudoku-csv")


@pytest.fixture(scope="module")
def puzzles():
    return list(generate_sudokus(20, 30, seed=11))


@pytest.fixture
def csv_file(tmp_path, puzzles) -> Path:
    path = tmp_path / "puzzles.csv"
    write_sudoku_csv(path, puzzles)
    return path


def write_rows(path: Path, rows: list[list[str]], header: str = "source,question,answer,rating") -> Path:
    with open(path, "w", newline="") as handle:
        handle.write(header + "\n")
        csv.writer(handle).writerows(rows)
    return path


def test_csv_converts_to_the_reference_sudoku_encoding(capsys, tmp_path, csv_file, puzzles):
    out = tmp_path / "out"
    summary = convert(capsys, "--test", csv_file, "--output", out)
    dataset = open_dataset(out)
    arrays = dataset.read_set("test", "all")
    np.testing.assert_array_equal(arrays.inputs, np.array([p.question for p in puzzles]) + 1)
    np.testing.assert_array_equal(arrays.labels, np.array([p.answer for p in puzzles]) + 1)
    np.testing.assert_array_equal(arrays.puzzle_identifiers, np.zeros(20))
    np.testing.assert_array_equal(arrays.group_indices, np.arange(21))
    meta = dataset.metadata("test")
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id) == (11, 81, 0, 0)
    assert dataset.identifiers == ["<blank>"]
    assert list(arrays.columns["rating"]) == [p.rating for p in puzzles]
    assert set(arrays.columns["source"]) == {"generated"}
    assert (summary["examples"], summary["puzzles"], summary["groups"], summary["truncations"]) == (20, 20, 20, 0)
    assert json.loads((out / "dataset.json").read_text())["summary"]["examples"] == 20


def test_reference_format_is_byte_identical_to_the_reference_builder(capsys, tmp_path):
    reference = CONFORMANCE / "hrm-sudoku-tiny" / "data" / "test"
    inputs, labels = np.load(reference / "all__inputs.npy"), np.load(reference / "all__labels.npy")
    rows = [["ref", "".join(str(d) for d in q - 1).replace("0", "."), "".join(str(d) for d in a - 1), "0"]
            for q, a in zip(inputs, labels)]
    out = tmp_path / "out"
    convert(capsys, "--test", write_rows(tmp_path / "ref.csv", rows), "--format", "reference", "--output", out)
    for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
        ours = (out / "test" / f"all__{name}.npy").read_bytes()
        assert ours == (reference / f"all__{name}.npy").read_bytes(), name
    ours_meta = json.loads((out / "test" / "dataset.json").read_text())
    reference_meta = json.loads((reference / "dataset.json").read_text())
    assert {key: ours_meta[key] for key in reference_meta} == reference_meta


def test_augmented_copies_are_valid_shuffles_in_the_group_of_their_original(capsys, tmp_path, csv_file):
    out = tmp_path / "out"
    summary = convert(capsys, "--train", csv_file, "--augment", 3, "--output", out)
    arrays = open_dataset(out).read_set("train", "all")
    assert summary["splits"]["train"] == {"examples": 80, "puzzles": 80, "groups": 20}
    np.testing.assert_array_equal(arrays.group_indices, np.arange(0, 81, 4))
    np.testing.assert_array_equal(arrays.columns["augmentation"], np.tile(np.arange(4), 20))
    solver = sudoku_solver(3)
    for question, answer in zip(arrays.inputs - 1, arrays.labels - 1):
        assert solver.solve(question.tolist(), limit=2)[:2] == (1, answer.tolist())
    for start in range(0, 80, 4):
        group = {arrays.inputs[i].tobytes() for i in range(start, start + 4)}
        assert len(group) == 4  # the copies differ from the original and each other
        assert {int((arrays.inputs[i] > 1).sum()) for i in range(start, start + 4)} == {30}


def test_augmentation_is_deterministic_for_a_seed(capsys, tmp_path, csv_file):
    def inputs(seed: int, name: str) -> np.ndarray:
        convert(capsys, "--train", csv_file, "--augment", 2, "--seed", seed, "--output", tmp_path / name)
        return open_dataset(tmp_path / name).read_set("train", "all").inputs

    first = inputs(5, "a")
    np.testing.assert_array_equal(first, inputs(5, "b"))
    assert not np.array_equal(first, inputs(6, "c"))


def test_tiers_bucket_ratings_by_the_given_edges(capsys, tmp_path, puzzles):
    rows = [["s", p.question_string(), p.answer_string(), str(rating)] for p, rating in zip(puzzles, [0, 3, 7, 50])]
    out = tmp_path / "out"
    summary = convert(capsys, "--test", write_rows(tmp_path / "t.csv", rows), "--tiers", "0,3,10", "--output", out)
    tiers = open_dataset(out).read_set("test", "all").columns["tier"]
    assert list(tiers) == ["[0,3)", "[3,10)", "[3,10)", "[10,inf)"]
    assert summary["tiers"] == {"test": {"[0,3)": 1, "[3,10)": 2, "[10,inf)": 1}}


def test_one_input_file_splits_by_test_fraction_and_subsamples(capsys, tmp_path, csv_file):
    summary = convert(capsys, "--input", csv_file, "--test-fraction", 0.25, "--output", tmp_path / "split")
    assert summary["splits"]["test"]["examples"] == 5 and summary["splits"]["train"]["examples"] == 15
    dataset = open_dataset(tmp_path / "split")
    boards = [dataset.read_set(split, "all").inputs for split in ("train", "test")]
    assert len({row.tobytes() for rows in boards for row in rows}) == 20
    summary = convert(capsys, "--test", csv_file, "--subsample", 7, "--output", tmp_path / "sub")
    assert summary["examples"] == 7


def test_four_by_four_boards_get_their_own_vocabulary(capsys, tmp_path):
    path = tmp_path / "small.csv"
    write_sudoku_csv(path, generate_sudokus(5, 6, box=2, seed=2))
    summary = convert(capsys, "--test", path, "--output", tmp_path / "out")
    assert (summary["vocab_size"], summary["seq_len"]) == (6, 16)
    assert open_dataset(tmp_path / "out").read_set("test", "all").inputs.max() <= 5


def test_help_explains_the_input_format_and_options(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "sudoku-csv", "--help"])
    text = capsys.readouterr().out
    for phrase in ("source,question,answer,rating", "--augment", "--tiers", "--subsample", "--format", "s3://"):
        assert phrase in text


GOOD_Q = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
GOOD_A = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


@pytest.mark.parametrize("row, message", [
    (["s", GOOD_Q, GOOD_A], "expected 4 columns"),
    (["s", GOOD_Q[:-1], GOOD_A, "1"], "question has 80 characters"),
    (["s", GOOD_Q, GOOD_A + "1", "1"], "answer has 82 characters"),
    (["s", "x" + GOOD_Q[1:], GOOD_A, "1"], "question character 1 is 'x'"),
    (["s", GOOD_Q, "." + GOOD_A[1:], "1"], "answer character 1 is '.'"),
    (["s", GOOD_Q, "4" + GOOD_A[1:], "1"], "answer changes a given digit"),
    (["s", "." * 81, "1" * 81, "1"], "answer is not a solved board"),
    (["s", GOOD_Q, GOOD_A, "hard"], "rating must be an integer"),
    (["s", GOOD_Q, GOOD_A, "-1"], "below the first --tiers edge"),
])
def test_malformed_row_is_refused_naming_file_and_line(capsys, tmp_path, row, message):
    good = ["s", GOOD_Q, GOOD_A, "1"]
    path = write_rows(tmp_path / "bad.csv", [good, row])
    err = refused(capsys, "--test", path, "--output", tmp_path / "out")
    assert f"{path}:3: " in err and message in err
    assert not (tmp_path / "out").exists()


def test_missing_header_and_missing_file_are_refused(capsys, tmp_path):
    path = write_rows(tmp_path / "noheader.csv", [], header=f"s,{GOOD_Q},{GOOD_A},1")
    assert f"{path}:1: expected the header" in refused(capsys, "--test", path, "--output", tmp_path / "o")
    assert f"{tmp_path / 'nope.csv'}: no such file" in refused(capsys, "--test", tmp_path / "nope.csv",
                                                                 "--output", tmp_path / "o")


def test_augmenting_four_by_four_boards_or_mixing_sizes_is_refused(capsys, tmp_path, csv_file):
    small = tmp_path / "small.csv"
    write_sudoku_csv(small, generate_sudokus(2, 6, box=2))
    assert "9x9 boards only" in refused(capsys, "--train", small, "--augment", 1, "--output", tmp_path / "o")
    assert "mix board sizes" in refused(capsys, "--train", small, "--test", csv_file, "--output", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.s3
def test_conversion_to_s3_reads_back_like_local(capsys, tmp_path, csv_file, s3_bucket):
    convert(capsys, "--train", csv_file, "--augment", 1, "--output", tmp_path / "local")
    convert(capsys, "--train", csv_file, "--augment", 1, "--output", f"{s3_bucket}/sudoku")
    a = open_dataset(tmp_path / "local").read_set("train", "all")
    b = open_dataset(f"{s3_bucket}/sudoku").read_set("train", "all")
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.group_indices, b.group_indices)
    np.testing.assert_array_equal(a.columns["tier"], b.columns["tier"])


def test_blank_lines_are_skipped(capsys, tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text(f"source,question,answer,rating\n\ns,{GOOD_Q},{GOOD_A},1\n\n")
    assert convert(capsys, "--test", path, "--output", tmp_path / "out")["examples"] == 1


def test_sudoku_transform_is_deterministic_from_its_random_state():
    assert SudokuTransform.random(np.random.RandomState(7)) == SudokuTransform.random(np.random.RandomState(7))
    assert SudokuTransform.random(np.random.RandomState(7)) != SudokuTransform.random(np.random.RandomState(8))


@pytest.mark.parametrize("seed", range(10))
def test_sudoku_transform_inverts_on_boards_and_flat_batches(seed):
    transform = SudokuTransform.random(np.random.RandomState(seed))
    boards = np.random.default_rng(seed).integers(1, 11, (4, 81))
    moved = transform.apply(boards)
    assert moved.shape == (4, 81)
    assert np.array_equal(transform.invert(moved), boards)
    assert np.array_equal(transform.invert(transform.apply(boards[0].reshape(9, 9))), boards[0].reshape(9, 9))


def test_sudoku_transform_follows_the_reference_position_and_digit_mapping():
    transform = SudokuTransform(
        digit_map=(0, 2, 3, 4, 5, 6, 7, 8, 9, 1),
        row_perm=(3, 4, 5, 0, 1, 2, 6, 7, 8),
        col_perm=(0, 1, 2, 3, 4, 5, 8, 7, 6),
        transpose=True,
    )
    digits = np.random.default_rng(0).integers(0, 10, (9, 9))
    expected = np.array(transform.digit_map)[digits.T[list(transform.row_perm)][:, list(transform.col_perm)]]
    assert np.array_equal(transform.apply(digits + 1), expected + 1)


def test_sudoku_transform_keeps_blank_and_pad_tokens():
    transform = SudokuTransform.random(np.random.RandomState(0))
    assert np.all(transform.apply(np.ones((9, 9), dtype=np.int64)) == 1)
    assert np.all(transform.apply(np.zeros(81, dtype=np.int64)) == 0)


def test_sudoku_transform_rejects_a_row_permutation_that_breaks_bands():
    with pytest.raises(ValueError, match="row_perm"):
        SudokuTransform(row_perm=(0, 1, 3, 2, 4, 5, 6, 7, 8))


def test_sudoku_transform_with_box_3_draws_the_same_shuffles_as_before_box_sizes_existed():
    # The draws of the 9x9 reference order, spelled out: box=3 must not change them.
    rng = np.random.RandomState(5)
    digit_map = (0, *(int(d) for d in rng.permutation(np.arange(1, 10))))
    transpose = bool(rng.rand() < 0.5)
    row_perm = tuple(int(b * 3 + r) for b in rng.permutation(3) for r in rng.permutation(3))
    col_perm = tuple(int(s * 3 + c) for s in rng.permutation(3) for c in rng.permutation(3))
    assert SudokuTransform.random(np.random.RandomState(5)) == SudokuTransform(digit_map, row_perm, col_perm, transpose)


@pytest.mark.parametrize("seed", range(6))
def test_4x4_sudoku_transform_inverts_and_keeps_a_solved_board_valid(seed):
    transform = SudokuTransform.random(np.random.RandomState(seed), box=2)
    solved = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    moved_tokens = transform.apply((solved + 1).reshape(16))
    assert np.array_equal(transform.invert(moved_tokens), (solved + 1).reshape(16))
    board = moved_tokens.reshape(4, 4) - 1
    groups = [*board, *board.T, *(board[r:r + 2, c:c + 2].reshape(-1) for r in (0, 2) for c in (0, 2))]
    assert all(sorted(g) == [1, 2, 3, 4] for g in groups)


def test_4x4_sudoku_transform_keeps_the_blank_token_and_rejects_9x9_permutations():
    assert np.all(SudokuTransform.random(np.random.RandomState(1), box=2).apply(np.ones(16, dtype=np.int64)) == 1)
    with pytest.raises(ValueError, match="row_perm"):
        SudokuTransform((0, 2, 1, 3, 4), (0, 2, 1, 3), (1, 0, 3, 2), box=2)
    with pytest.raises(ValueError, match="digit_map"):
        SudokuTransform(box=2)


def test_a_csv_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_bytes(b"source,question,answer,rating\n\xff,1,2,3\n")
    err = refused(capsys, "--test", source, "--output", tmp_path / "out")
    assert err.splitlines() == [f"hrm-eval convert: error: {source}:2: byte 30 is not valid UTF-8 "
                                "(0xff; the file must be UTF-8 text)"]
    assert not (tmp_path / "out").exists()
