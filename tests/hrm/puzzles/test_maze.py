"""`hrm-eval convert maze`: text and CSV grids, shortest-path labels, augmentation, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hrm.data.reader import open_dataset
from hrm.puzzles.grids import DihedralTransform
from hrm.puzzles.maze import CHARSET, generate_mazes

from jobs.cli import main

from tests.factories import convert_cli

# S at the left, G at the right; the only shortest path runs along the middle row.
OPEN = ["#######",
        "#S   G#",
        "#######"]
LABELLED = ["#######",
            "#SoooG#",
            "#######"]


convert, refused = convert_cli("maze")


def write_grids(path: Path, grids: list[list[str]]) -> Path:
    path.write_text("\n\n".join("\n".join(rows) for rows in grids) + "\n")
    return path


def tokens(rows: list[str]) -> np.ndarray:
    return np.array([CHARSET.index(ch) + 1 for ch in "".join(rows)])


def test_text_grids_get_their_shortest_path_as_the_label(capsys, tmp_path):
    mazes = list(generate_mazes(4, 15, seed=3, loops=0.2))
    path = write_grids(tmp_path / "mazes.txt", [list(m.question) for m in mazes])
    summary = convert(capsys, "--test", path, "--output", tmp_path / "out")
    dataset = open_dataset(tmp_path / "out")
    arrays = dataset.read_set("test", "all")
    for row, maze in enumerate(mazes):
        np.testing.assert_array_equal(arrays.inputs[row], tokens(list(maze.question)))
        np.testing.assert_array_equal(arrays.labels[row], tokens(list(maze.answer)))
    assert list(arrays.columns["path_length"]) == [m.path_length for m in mazes]
    meta = dataset.metadata("test")
    assert (meta.vocab_size, meta.seq_len, meta.ignore_label_id) == (6, 225, 0)
    assert (summary["examples"], summary["groups"], summary["grid"]) == (4, 4, "15x15")


def test_a_marked_shortest_path_is_kept_as_the_label(capsys, tmp_path):
    path = write_grids(tmp_path / "m.txt", [LABELLED, OPEN])
    convert(capsys, "--test", path, "--output", tmp_path / "out")
    arrays = open_dataset(tmp_path / "out").read_set("test", "all")
    np.testing.assert_array_equal(arrays.inputs, [tokens(OPEN)] * 2)
    np.testing.assert_array_equal(arrays.labels, [tokens(LABELLED)] * 2)


def test_reference_style_csv_converts_like_the_text_form(capsys, tmp_path):
    mazes = list(generate_mazes(3, 9, seed=4))
    with open(tmp_path / "mazes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(["gen", "".join(m.question), "".join(m.answer), 0] for m in mazes)
    write_grids(tmp_path / "mazes.txt", [list(m.answer) for m in mazes])
    convert(capsys, "--test", tmp_path / "mazes.csv", "--output", tmp_path / "csv")
    convert(capsys, "--test", tmp_path / "mazes.txt", "--output", tmp_path / "txt")
    a, b = (open_dataset(tmp_path / name).read_set("test", "all") for name in ("csv", "txt"))
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_augmentation_puts_the_eight_dihedral_versions_of_a_train_maze_in_its_group(capsys, tmp_path):
    mazes = list(generate_mazes(2, 11, seed=5))
    path = write_grids(tmp_path / "m.txt", [list(m.question) for m in mazes])
    summary = convert(capsys, "--train", path, "--test", path, "--augment", "--output", tmp_path / "out")
    assert summary["splits"] == {"train": {"examples": 16, "puzzles": 16, "groups": 2},
                                 "test": {"examples": 2, "puzzles": 2, "groups": 2}}
    train = open_dataset(tmp_path / "out").read_set("train", "all")
    np.testing.assert_array_equal(train.group_indices, [0, 8, 16])
    for row in range(16):
        maze, tid = divmod(row, 8)
        transform = DihedralTransform(tid, 11)
        np.testing.assert_array_equal(transform.invert(train.labels[row]), tokens(list(mazes[maze].answer)))


def test_help_explains_the_charset_and_both_input_forms(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "maze", "--help"])
    text = capsys.readouterr().out
    for phrase in ("'#' wall", "'S' start", "'G' goal", "source,question,answer,rating", "--augment"):
        assert phrase in text


@pytest.mark.parametrize("grid, message", [
    (["#####", "#S G#", "###"], "ragged grid"),
    (["#####", "#S*G#", "#####"], "characters ['*'] are not in"),
    (["#####", "#S  #", "#####"], "exactly one 'G', found 0"),
    (["#####", "#S#G#", "#####"], "cannot be reached"),
    (["#####", "#S  #", "#  G#", "#####"], "more than one shortest path"),
    (["######", "#So  #", "#oooG#", "######"], "not a shortest path"),
    (["#" * 31, "#S" + " " * 27 + "G#", "#" * 31], "grid is 3x31; at most 30x30"),
])
def test_bad_grids_are_refused_naming_file_and_line(capsys, tmp_path, grid, message):
    path = write_grids(tmp_path / "bad.txt", [OPEN, grid])
    err = refused(capsys, "--test", path, "--output", tmp_path / "out")
    assert f"{path}:5: " in err and message in err
    assert not (tmp_path / "out").exists()


def test_grids_of_another_size_and_bad_files_are_refused(capsys, tmp_path):
    path = write_grids(tmp_path / "sizes.txt", [OPEN, ["#####", "#S G#", "#####"]])
    assert f"{path}:5: grid is 3x5, but {path}:1 is 3x7" in refused(capsys, "--test", path, "--output", tmp_path / "o")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("source,question,answer,rating\ngen,#S G,#SoG\n")
    assert f"{bad_csv}:2: expected 4 columns" in refused(capsys, "--test", bad_csv, "--output", tmp_path / "o")
    assert "no such file" in refused(capsys, "--test", tmp_path / "nope.txt", "--output", tmp_path / "o")
    assert "--augment needs square grids" in refused(capsys, "--train", write_grids(tmp_path / "ok.txt", [OPEN]),
                                                     "--augment", "--output", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.s3
def test_conversion_to_s3_reads_back_like_local(capsys, tmp_path, s3_bucket):
    path = write_grids(tmp_path / "m.txt", [list(m.question) for m in generate_mazes(3, 9, seed=6)])
    convert(capsys, "--test", path, "--output", tmp_path / "local")
    convert(capsys, "--test", path, "--output", f"{s3_bucket}/maze")
    a, b = open_dataset(tmp_path / "local").read_set("test", "all"), open_dataset(f"{s3_bucket}/maze").read_set("test", "all")
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)
