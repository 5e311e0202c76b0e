"""The failure gallery: small runs of each family (Sudoku, maze, ARC, text, and one the
report does not know) evaluated in-process by random checkpoints, so that most examples
fail, then the gallery read back against the stored predictions and the data."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hrm.data.reader import open_dataset
from hrm.puzzles.arc_grids import grid_to_tokens
from hrm.puzzles.maze import MazeGrid, encode_mazes, generate_mazes
from hrm.puzzles.publish import Clock, Destination, publish, single_example_puzzles
from hrm.puzzles.sudoku_generator import generate_sudokus, sudoku_puzzle_arrays, write_demo_sudoku
from hrm.puzzles.text import ByteTokenizer, KeywordTokenizer, Record, encode_records

from cluster.report import gallery
from cluster.report.build import build_report
from cluster.report.document import Document, Figure, Section, Table, Text, render_html, render_markdown
from cluster.report.results import load_results
from cluster.results.layout import read_predictions

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint

SCRIPT = "<script>alert(1)</script>"


def publish_test(uri: Path, kind: str, arrays, *, vocab_size: int, seq_len: int, **details) -> str:
    publish(Destination(str(uri)), kind, {"test": arrays}, seed=0, vocab_size=vocab_size, seq_len=seq_len,
            identifiers=["<blank>"], clock=Clock(), details=details)
    return str(uri)


def sudoku_9x9(uri: Path) -> str:
    arrays = sudoku_puzzle_arrays(generate_sudokus(12, givens=40, box=3, seed=3))
    return publish_test(uri, "sudoku-csv", arrays, vocab_size=11, seq_len=81)


def mazes(uri: Path) -> str:
    grids = [MazeGrid(list(m.question), list(m.answer), "generated", f"maze {i}")
             for i, m in enumerate(generate_mazes(10, 9, seed=1))]
    return publish_test(uri, "maze", encode_mazes(grids), vocab_size=6, seq_len=81, grid="9x9")


def arc(uri: Path) -> str:
    rng = np.random.default_rng(5)
    inputs, labels = [], []
    for i in range(10):
        shape = (2 + i % 4, 3 + i % 3)
        inputs.append(grid_to_tokens(rng.integers(0, 10, shape)))
        labels.append(grid_to_tokens(rng.integers(0, 10, shape[::-1])))
    return publish_test(uri, "arc", single_example_puzzles(np.stack(inputs), np.stack(labels)), vocab_size=12,
                        seq_len=900)


def text(uri: Path) -> str:
    tokenizer = ByteTokenizer()
    pairs = [(f"say {i}", f"{SCRIPT} & {i}" if i % 2 else f"answer {i}\nline two") for i in range(10)]
    records = [Record(tokenizer.encode(p)[0], tokenizer.encode(c)[0], "made", "", f"test:{i}")
               for i, (p, c) in enumerate(pairs)]
    return publish_test(uri, "jsonl", encode_records(records, 40, tokenizer.vocab_size), vocab_size=258, seq_len=40,
                        tokenizer="bytes")


def evaluated(root: Path, name: str, data: str, vocab_size: int, seq_len: int, log_samples: bool = False,
              identifiers: int = 1) -> str:
    sweep = root / f"{name}-sweep"
    make_checkpoint(sweep, steps=(100, 200), vocab_size=vocab_size, seq_len=seq_len,
                    num_puzzle_identifiers=identifiers)
    config = run_config([{"run": str(sweep)}], data, str(root / f"{name}-out"))
    config = config.model_copy(update={"output": config.output.model_copy(update={"log_samples": log_samples})})
    return run_in_process(config).run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("gallery")
    demo = write_demo_sudoku(str(root / "demo"), train_size=10, test_size=20).uri
    return {
        "demo": evaluated(root, "demo", demo, 6, 16),
        "sudoku": evaluated(root, "sudoku", sudoku_9x9(root / "sudoku"), 11, 81, log_samples=True),
        "maze": evaluated(root, "maze", mazes(root / "maze"), 6, 81),
        "arc": evaluated(root, "arc", arc(root / "arc"), 12, 900),
        "text": evaluated(root, "text", text(root / "text"), 258, 40),
    }


def gallery_blocks(run: str) -> list:
    return gallery.failure_gallery(load_results(run))


def figures(run: str) -> list[Figure]:
    return [b for b in gallery_blocks(run) if isinstance(b, Figure)]


def shown(caption: str) -> list[tuple[str, int]]:
    return [(s, int(i)) for s, i in re.findall(r"set (\S+) example (\d+)", caption)]


def predictions(run: str, checkpoint: str):
    table = read_predictions(run, checkpoint)
    return {(s, e): row for s, e, row in zip(table.column("set").to_pylist(), table.column("example_id").to_pylist(),
                                              table.to_pylist())}


def checkpoint_of(figure: Figure) -> str:
    return figure.name.removeprefix("gallery-")


@pytest.mark.parametrize("family", ["demo", "sudoku", "maze", "arc"])
def test_each_figure_shows_failed_examples_named_in_its_caption_and_alt_text(runs, family):
    found = figures(runs[family])
    assert len(found) == 2  # both checkpoints: the leaderboard's top and the newest are the same two
    for figure in found:
        ids = shown(figure.caption)
        assert len(ids) == gallery.EXAMPLES and shown(figure.alt) == ids
        rows = predictions(runs[family], checkpoint_of(figure))
        assert all(not rows[key]["exact"] for key in ids)
        assert figure.png.startswith(b"\x89PNG")


def test_the_choice_is_the_hash_order_of_the_failures_not_the_first_rows(runs):
    run = runs["demo"]
    for figure in figures(run):
        rows = predictions(run, checkpoint_of(figure))
        failed = sorted((k for k, row in rows.items() if not row["exact"]), key=lambda k: gallery.example_order(*k))
        assert set(shown(figure.caption)) == set(failed[:gallery.EXAMPLES])
        assert shown(figure.caption) != sorted(failed)[:gallery.EXAMPLES]  # 20 rows: the hash reorders them


def test_two_builds_show_the_same_examples_and_the_same_pictures(runs):
    for run in runs.values():
        first, second = gallery_blocks(run), gallery_blocks(run)
        assert first == second


@pytest.mark.parametrize("family", ["demo", "sudoku", "maze"])
def test_the_wrong_cell_counts_in_the_alt_text_are_counted_from_the_tokens(runs, family):
    run = runs[family]
    dataset = open_dataset(load_results(run).manifest.dataset["uri"])
    for figure in figures(run):
        rows = predictions(run, checkpoint_of(figure))
        counts = dict(((s, int(i)), int(n)) for s, i, n in
                      re.findall(r"set (\S+) example (\d+): (\d+) of \d+ cells wrong", figure.alt))
        assert len(counts) == gallery.EXAMPLES
        for (set_name, example_id), wrong in counts.items():
            labels = dataset.examples("test", set_name, example_id, example_id + 1).labels[0]
            pred = np.array(rows[(set_name, example_id)]["pred"])
            assert wrong == int(((pred != labels) & (labels != 0)).sum()) > 0


def test_a_run_that_logged_its_samples_is_drawn_from_them(runs):
    run = runs["sudoku"]
    part = next((Path(run) / "predictions").rglob("*.parquet"))
    assert {"inputs", "labels"} <= set(pq.read_schema(part).names)
    assert "cells wrong" in figures(run)[0].alt


def test_arc_examples_say_how_their_predicted_grid_differs_from_the_answer(runs):
    for figure in figures(runs["arc"]):
        facts = re.findall(r"example \d+: (prediction \d+×\d+, answer \d+×\d+|\d+ of \d+ cells wrong \(\d+×\d+\))"
                           r"[;.]", figure.alt)
        assert len(facts) == gallery.EXAMPLES


def test_text_completions_are_decoded_and_escaped_in_both_files(runs):
    run = runs["text"]
    tables = [b for b in gallery_blocks(run) if isinstance(b, Table)]
    assert len(tables) == 2
    references = [row[4] for table in tables for row in table.rows]
    assert any(SCRIPT in ref for ref in references)  # decoded exactly from the bytes
    assert any("⏎line two" in ref for ref in references)
    doc = Document("gallery", [], [Section("Failure gallery", gallery_blocks(run))])
    page, markdown = render_html(doc), render_markdown(doc)
    assert SCRIPT not in page and html.escape(SCRIPT, quote=False) in page
    assert SCRIPT not in markdown and "&lt;script&gt;" in markdown


def test_a_keyword_vocabulary_is_shown_as_keyword_numbers_and_called_lossy(tmp_path):
    vocab = tmp_path / "keywords.txt"
    vocab.write_text("start\ntest\nend\n")
    tokenizer = KeywordTokenizer(vocab)
    records = [Record(tokenizer.encode("start test")[0], tokenizer.encode("test end end")[0], "made", "", f"t:{i}")
               for i in range(6)]
    data = publish_test(tmp_path / "data", "jsonl", encode_records(records, 8, tokenizer.vocab_size),
                        vocab_size=tokenizer.vocab_size, seq_len=8, tokenizer=tokenizer.name)
    blocks = gallery_blocks(evaluated(tmp_path, "keywords", data, tokenizer.vocab_size, 8))
    assert "keyword numbers" in blocks[0].text and "lost" in blocks[0].text
    rows = [row for b in blocks if isinstance(b, Table) for row in b.rows]
    assert rows and all(row[2] == "k1 k2" and row[4] == "k2 k3 k3" for row in rows)


def test_a_family_it_cannot_draw_is_shown_as_token_rows_and_says_so(tmp_path):
    data = make_dataset(tmp_path / "data", {"all": 12})
    run = evaluated(tmp_path, "plain", data, VOCAB, SEQ_LEN, identifiers=NUM_IDS)
    blocks = gallery_blocks(run)
    assert isinstance(blocks[0], Text) and "family is not known" in blocks[0].text
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables and all(t.columns[2] == "tokens wrong" for t in tables)
    assert all(shown(" ".join(f"set {r[0]} example {r[1]}" for r in t.rows)) for t in tables)


def test_a_run_whose_dataset_is_gone_says_so_in_one_line(runs, tmp_path):
    results = load_results(runs["maze"])
    results.manifest.dataset["uri"] = str(tmp_path / "moved")
    blocks = gallery.failure_gallery(results)
    assert len(blocks) == 1 and blocks[0].text.startswith("No failure gallery: the run's dataset cannot be read")


def test_a_partial_run_gets_a_gallery_of_its_stored_predictions_and_a_stopped_one_says_why_not(runs, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(runs["maze"], partial)
    (partial / "metrics.json").unlink()
    assert load_results(str(partial)).partial is not None
    assert [shown(f.caption) for f in figures(str(partial))] == [shown(f.caption) for f in figures(runs["maze"])]
    (partial / "manifest.json").unlink()
    blocks = gallery_blocks(str(partial))
    assert len(blocks) == 1 and "named in the run's manifest, which this run lacks" in blocks[0].text


def test_the_gallery_is_the_reports_last_section_in_both_files(runs):
    doc = build_report(load_results(runs["maze"]))
    assert doc.sections[-1].title == "Failure gallery"
    assert doc.sections[-1].blocks == gallery_blocks(runs["maze"])
    assert "## Failure gallery" in render_markdown(doc) and 'id="failure-gallery"' in render_html(doc)


def test_a_text_dataset_that_records_its_tokenizer_is_decoded_by_it_and_says_how_many_words_had_no_token(tmp_path):
    (tmp_path / "keywords.txt").write_text("start\ntest\nend\n")
    records = [{"prompt": f"Start the {i} test", "completion": "test and end"} for i in range(6)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["convert", "jsonl", "--test", str(tmp_path / "tasks.jsonl"), "--tokenizer",
                 str(tmp_path / "keywords.txt"), "--allow-lossy", "--seq-len", "8", "--output",
                 str(tmp_path / "data")]) == 0
    missing = open_dataset(tmp_path / "data").index.summary["words_without_token"]
    blocks = gallery_blocks(evaluated(tmp_path, "recorded", str(tmp_path / "data"), 5, 8))
    assert f"Its tokenizer is lossy (keywords): {missing} word(s) of the data had no token" in blocks[0].text
    rows = [row for b in blocks if isinstance(b, Table) for row in b.rows]
    assert rows and all(row[2] == "start test" and row[4] == "test end" for row in rows)
