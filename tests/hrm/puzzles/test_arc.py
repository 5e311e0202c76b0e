"""`hrm-eval convert arc`: layout, exact inverse decoding, determinism, sources, bad input."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from hrm.data.reader import open_dataset
from hrm.puzzles.arc_grids import crop_tokens, parse_arc_identifier

from jobs.cli import main

from tests.factories import SHARED, convert_cli

ARC = SHARED / "data" / "arc"
CONFORMANCE_ARC = SHARED / "conformance" / "trm-arc-tiny" / "data"
TRAINING = ["007bbfb7", "00d62c1b", "025d127b"]
# The conformance puzzles: 12997ef3 has two test inputs, 05a7bcf2 30x30 grids.
EVALUATION = ["00576224", "0692e18c", "12997ef3", "05a7bcf2"]


convert, refused = convert_cli("arc")


@functools.cache
def arc_file(subset: str, kind: str) -> dict:
    """One of the real ARC files, parsed once per test session (callers only read it)."""
    return json.loads((ARC / f"arc-agi_{subset}_{kind}.json").read_text())


def real_puzzles(subset: str, names: list[str]) -> tuple[dict, dict]:
    challenges, solutions = arc_file(subset, "challenges"), arc_file(subset, "solutions")
    return {n: challenges[n] for n in names}, {n: solutions[n] for n in names}


def write_subset(prefix: Path, subset: str, challenges: dict, solutions: dict) -> None:
    Path(f"{prefix}_{subset}_challenges.json").write_text(json.dumps(challenges))
    Path(f"{prefix}_{subset}_solutions.json").write_text(json.dumps(solutions))


@pytest.fixture
def prefix(tmp_path) -> Path:
    """A kaggle-combined prefix with 3 training and 4 evaluation puzzles of the real files."""
    prefix = tmp_path / "arc"
    write_subset(prefix, "training", *real_puzzles("training", TRAINING))
    write_subset(prefix, "evaluation", *real_puzzles("evaluation", EVALUATION))
    return prefix


def originals() -> dict[str, dict]:
    """name -> {"train": [(in, out)…], "test": [(in, out)…]} as numpy grids, solutions included."""
    result = {}
    for subset, names in (("training", TRAINING), ("evaluation", EVALUATION)):
        challenges, solutions = real_puzzles(subset, names)
        for name in names:
            result[name] = {
                "train": [(np.array(p["input"]), np.array(p["output"])) for p in challenges[name]["train"]],
                "test": [(np.array(p["input"]), np.array(s)) for p, s in zip(challenges[name]["test"], solutions[name])],
            }
    return result


def decoded(dataset, split: str, crop) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """Every example as (puzzle name, test index, input grid, output grid), augmentation undone."""
    arrays = dataset.read_set(split, "all")
    rows = []
    for puzzle, identifier in enumerate(arrays.puzzle_identifiers):
        parsed = parse_arc_identifier(dataset.identifiers[identifier])
        for example in range(arrays.puzzle_indices[puzzle], arrays.puzzle_indices[puzzle + 1]):
            grid_in = parsed.augmentation.invert(crop(arrays.inputs[example]))
            grid_out = parsed.augmentation.invert(crop(arrays.labels[example]))
            assert arrays.columns["name"][example] == parsed.name
            rows.append((parsed.name, int(arrays.columns["test_index"][example]), grid_in, grid_out))
    return rows


def colour_box(tokens: np.ndarray) -> np.ndarray:
    """The colour cells of a canvas wherever the grid was translated to."""
    canvas = tokens.reshape(30, 30)
    rows, cols = np.nonzero(canvas >= 2)
    return canvas[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1] - 2


def test_test_split_decodes_to_the_original_grids_with_the_inverse_augmentation(capsys, tmp_path, prefix):
    out = tmp_path / "out"
    summary = convert(capsys, prefix, "--augment", 8, "--output", out)
    dataset = open_dataset(out)
    truth = originals()
    rows = decoded(dataset, "test", crop_tokens)
    assert len(rows) == 9 * sum(len(truth[name]["test"]) for name in EVALUATION)
    for name, test_index, grid_in, grid_out in rows:
        expected_in, expected_out = truth[name]["test"][test_index]
        np.testing.assert_array_equal(grid_in, expected_in)
        np.testing.assert_array_equal(grid_out, expected_out)
    assert summary["splits"]["test"] == {"examples": 45, "puzzles": 36, "groups": 4}
    assert summary["splits"]["train"]["groups"] == 7 and summary["splits"]["train"]["puzzles"] == 63
    assert summary["identifiers"] == 64 and dataset.identifiers[0] == "<blank>"


def test_train_split_decodes_to_the_original_pairs_translated_or_not(capsys, tmp_path, prefix):
    truth = originals()
    for flag, name in ((), "translated"), (("--no-translate",), "top-left"):
        convert(capsys, prefix, "--augment", 8, *flag, "--output", tmp_path / name)
        crop = colour_box if flag == () else crop_tokens
        rows = decoded(open_dataset(tmp_path / name), "train", crop)
        for puzzle, test_index, grid_in, grid_out in rows:
            # training puzzles also contribute their test pairs to the train split
            pairs = truth[puzzle]["test"] if test_index >= 0 else truth[puzzle]["train"]
            assert any(np.array_equal(grid_in, i) and np.array_equal(grid_out, o) for i, o in pairs)
        expected = sum(9 * (len(truth[n]["train"]) + len(truth[n]["test"])) for n in TRAINING) + \
            sum(9 * len(truth[n]["train"]) for n in EVALUATION)
        assert len(rows) == expected


def test_identity_versions_match_the_reference_builder_token_for_token(capsys, tmp_path):
    prefix = tmp_path / "arc"
    write_subset(prefix, "evaluation", *real_puzzles("evaluation", EVALUATION))
    convert(capsys, prefix, "--augment", 8, "--output", tmp_path / "out")

    def identity_rows(dataset) -> dict[str, np.ndarray]:
        arrays = dataset.read_set("test", "all")
        rows = {}
        for puzzle, identifier in enumerate(arrays.puzzle_identifiers):
            name = dataset.identifiers[identifier]
            if "|||" not in name:
                span = slice(arrays.puzzle_indices[puzzle], arrays.puzzle_indices[puzzle + 1])
                rows[name] = np.concatenate([arrays.inputs[span], arrays.labels[span]], axis=1)
        return rows

    ours, reference = identity_rows(open_dataset(tmp_path / "out")), identity_rows(open_dataset(CONFORMANCE_ARC))
    assert sorted(ours) == sorted(EVALUATION) == sorted(reference)
    for name in EVALUATION:
        np.testing.assert_array_equal(ours[name], reference[name])
    assert open_dataset(tmp_path / "out").test_puzzles == open_dataset(CONFORMANCE_ARC).test_puzzles


def test_hrm_identifiers_name_the_same_augmentations_as_trm_ones(capsys, tmp_path, prefix):
    convert(capsys, prefix, "--augment", 4, "--output", tmp_path / "trm")
    convert(capsys, prefix, "--augment", 4, "--id-style", "hrm", "--output", tmp_path / "hrm")
    trm, hrm = open_dataset(tmp_path / "trm").identifiers, open_dataset(tmp_path / "hrm").identifiers
    assert any("|||" in name for name in trm) and not any("|||" in name for name in hrm)
    assert [parse_arc_identifier(n) for n in trm] == [parse_arc_identifier(n) for n in hrm]


def test_a_puzzles_augmentations_depend_on_the_seed_not_on_the_other_puzzles(capsys, tmp_path, prefix):
    alone = tmp_path / "alone"
    write_subset(alone, "training", *real_puzzles("training", TRAINING[:1]))
    ids = {}
    for name, source, seed in (("all", prefix, 1), ("again", prefix, 1), ("alone", alone, 1), ("other", prefix, 2)):
        convert(capsys, source, "--augment", 8, "--seed", seed, "--output", tmp_path / name)
        ids[name] = [n for n in open_dataset(tmp_path / name).identifiers if n.startswith(TRAINING[0])]
    assert ids["all"] == ids["again"] == ids["alone"]
    assert ids["all"] != ids["other"]


def test_a_directory_of_puzzle_files_converts_like_the_combined_files(capsys, tmp_path, prefix):
    root = tmp_path / "data"
    for subset, names in (("training", TRAINING), ("evaluation", EVALUATION)):
        (root / subset).mkdir(parents=True)
        challenges, solutions = real_puzzles(subset, names)
        for name in names:
            pairs = {"train": challenges[name]["train"],
                     "test": [{**p, "output": s} for p, s in zip(challenges[name]["test"], solutions[name])]}
            (root / subset / f"{name}.json").write_text(json.dumps(pairs))
    from_dir = convert(capsys, root, "--augment", 2, "--output", tmp_path / "dir")
    from_prefix = convert(capsys, prefix, "--augment", 2, "--output", tmp_path / "prefix")
    assert from_dir["splits"] == from_prefix["splits"] and from_dir["subsets"] == {"evaluation": 4, "training": 3}
    assert sorted(open_dataset(tmp_path / "dir").identifiers) == sorted(open_dataset(tmp_path / "prefix").identifiers)
    only = convert(capsys, root, "--subsets", "evaluation", "--output", tmp_path / "only")
    assert only["subsets"] == {"evaluation": 4}  # --subsets chooses among a directory's subsets too
    assert refused(capsys, root, "--subsets", "evaluation,validation", "--output", tmp_path / "none").strip() == (
        f"hrm-eval convert: error: --subsets: no subset validation in {root} (found: evaluation, training)")
    assert not (tmp_path / "none").exists()


def test_symmetric_puzzles_report_how_many_augmentations_were_possible(capsys, tmp_path):
    blank = {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[0]]}]}
    write_subset(tmp_path / "arc", "evaluation", {"blank": blank}, {"blank": [[[0]]]})
    summary = convert(capsys, tmp_path / "arc", "--augment", 8, "--output", tmp_path / "out")
    assert summary["augmentation_shortfalls"] == {"blank": 0}
    assert summary["puzzles"] == 2  # the original, once in each split


def test_help_explains_the_sources_options_and_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "arc", "--help"])
    text = capsys.readouterr().out
    for phrase in ("_challenges.json", "_solutions.json", "--augment", "--id-style", "test_puzzles.json"):
        assert phrase in text


def puzzle_with(grid) -> dict:
    return {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]]}]}


@pytest.mark.parametrize("grid, message", [
    ([[0, 10]], "train[0].input[0][1]: colour 10 is not an integer 0..9"),
    ([[0, -1]], "train[0].input[0][1]: colour -1"),
    ([[0] * 31], "train[0].input: grid is 1x31"),
    ([[0]] * 31, "train[0].input: grid is 31x1"),
    ([[0, 1], [2]], "train[0].input: ragged grid"),
    ([], "train[0].input: a grid must be a non-empty list of rows"),
])
def test_bad_grids_are_refused_naming_file_puzzle_and_key(capsys, tmp_path, grid, message):
    write_subset(tmp_path / "arc", "training", {"p1": puzzle_with(grid)}, {"p1": [[[1]]]})
    err = refused(capsys, tmp_path / "arc", "--output", tmp_path / "out")
    assert f"{tmp_path / 'arc'}_training_challenges.json: p1: {message}" in err
    assert not (tmp_path / "out").exists()


def test_bad_files_are_refused_naming_them(capsys, tmp_path, prefix):
    good = puzzle_with([[1]])
    out = tmp_path / "out"
    assert "no such directory" in refused(capsys, tmp_path / "nothing", "--output", out)
    assert "arc_validation_challenges.json: no such file" in refused(
        capsys, prefix, "--subsets", "validation", "--output", out)
    write_subset(tmp_path / "a", "training", {"p1": good}, {})
    assert "a_training_solutions.json: no solutions for puzzle 'p1'" in refused(capsys, tmp_path / "a", "--output", out)
    write_subset(tmp_path / "b", "training", {"p1": good}, {"p1": [[[1]], [[2]]]})
    assert "b_training_solutions.json: p1: expected 1 solution grids, got 2" in refused(
        capsys, tmp_path / "b", "--output", out)
    Path(f"{tmp_path / 'c'}_training_challenges.json").write_text('{"p1": ')
    Path(f"{tmp_path / 'c'}_training_solutions.json").write_text("{}")
    assert "c_training_challenges.json:1: not valid JSON" in refused(capsys, tmp_path / "c", "--output", out)
    write_subset(tmp_path / "d", "training", {"p1": good}, {"p1": [[[1]]]})
    write_subset(tmp_path / "d", "evaluation", {"p1": good}, {"p1": [[[1]]]})
    assert "puzzle 'p1' also appears in" in refused(capsys, tmp_path / "d", "--output", out)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "p1.json").write_text(json.dumps({"train": [], "test": []}))
    assert "p1.json: p1: needs at least one train and one test pair" in refused(capsys, tmp_path / "e", "--output", out)
    assert not out.exists()


@pytest.mark.s3
def test_conversion_to_s3_reads_back_like_local(capsys, tmp_path, prefix, s3_bucket):
    convert(capsys, prefix, "--augment", 2, "--output", tmp_path / "local")
    convert(capsys, prefix, "--augment", 2, "--output", f"{s3_bucket}/arc")
    local, remote = open_dataset(tmp_path / "local"), open_dataset(f"{s3_bucket}/arc")
    for split in ("train", "test"):
        a, b = local.read_set(split, "all"), remote.read_set(split, "all")
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.columns["name"], b.columns["name"])
    assert local.identifiers == remote.identifiers and local.test_puzzles == remote.test_puzzles
