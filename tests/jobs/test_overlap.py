"""`hrm-eval overlap` as a user runs it, and its bench at a small size."""

from __future__ import annotations

import argparse
import json

import pytest

from jobs.bench_overlap import configure_overlap, run_overlap, write_planted_arc, write_planted_sudoku
from jobs.cli import main

JSON_FIELDS = {"test_examples", "exact_in_train", "augmented_in_train", "duplicates_within_test"}


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory):
    uri = tmp_path_factory.mktemp("overlap") / "sudoku"
    planted = write_planted_sudoku(uri, examples=400, planted=20, seed=3)
    return str(uri), planted


def test_overlap_json_holds_the_issue_fields_with_every_planted_id(sudoku, capsys):
    uri, planted = sudoku
    assert main(["overlap", uri, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert JSON_FIELDS <= set(report) and report["test_examples"] == 400
    assert report["family"] == "sudoku" and "digit relabelling" in report["canonicalisation"]
    for level in ("input", "input_label"):
        assert report["exact_in_train"][level]["ids"] == planted.exact
        assert report["augmented_in_train"][level]["ids"] == planted.augmented
        assert report["augmented_in_train"][level]["count"] == 20
    assert report["duplicates_within_test"]["input"] == {"groups": 0, "examples": 0, "ids": []}


def test_overlap_prints_a_table_with_the_counts_and_the_canonicalisation_used(sudoku, capsys):
    uri, planted = sudoku
    assert main(["overlap", uri]) == 0
    out = capsys.readouterr().out
    assert "400 test examples against split 'train'" in out
    assert "input up to augmentation only" in out and "5.00%" in out
    assert planted.augmented[0] in out
    assert "canonicalisation: Sudoku" in out and "from the dataset's recorded kind 'sudoku-csv'" in out


def test_overlap_with_family_exact_finds_only_the_exact_copies(sudoku, capsys):
    uri, planted = sudoku
    assert main(["overlap", uri, "--family", "exact", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact_in_train"]["input"]["ids"] == planted.exact
    assert report["augmented_in_train"]["input"]["count"] == 0


def test_overlap_of_a_missing_dataset_is_one_error_line_and_exit_2(tmp_path, capsys):
    assert main(["overlap", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hrm-eval overlap: error: ") and "nothing" in err[-1]


def test_overlap_workers_must_be_positive_and_a_small_dataset_is_keyed_in_the_calling_process(sudoku, capsys):
    uri, _ = sudoku
    with pytest.raises(SystemExit) as exit:
        main(["overlap", uri, "--workers", "0"])
    assert exit.value.code == 2
    assert "argument --workers: 0 is not positive" in capsys.readouterr().err
    assert main(["overlap", uri, "--workers", "8", "--json"]) == 0  # one chunk a side: no worker is worth starting
    report = json.loads(capsys.readouterr().out)
    assert (report["workers"], report["worker_peak_rss_bytes"]) == (1, 0)


def test_the_overlap_bench_finds_every_planted_overlap_and_nothing_else_at_a_small_size(tmp_path):
    parser = argparse.ArgumentParser()
    configure_overlap(parser)
    report = run_overlap(parser.parse_args(["--sudoku-examples", "600", "--arc-examples", "300", "--planted", "20",
                                            "--generated", "30", "--copies", "2", "--tmp", str(tmp_path)]))
    for family in ("sudoku", "arc"):
        figures = report["families"][family]
        assert figures["all_found_nothing_else"], figures
        assert figures["augmented_in_train.input_label"]["found"] == 20
        assert figures["audit_s"] > 0 and figures["peak_rss_bytes"] > figures["peak_rss_before_bytes"] > 0
    buckets = report["sudoku_buckets"]
    assert buckets["boards"] == 90 and buckets["largest_bucket"] >= 3


def test_planted_arc_copies_are_at_distinct_test_positions(tmp_path):
    planted = write_planted_arc(tmp_path / "arc", examples=60, planted=5, seed=1)
    assert len(set(planted.exact) | set(planted.augmented)) == 10
