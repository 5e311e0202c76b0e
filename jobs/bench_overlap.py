"""`python -m jobs.bench overlap`: the overlap audit (`hrm-eval overlap`) at full size, with
overlaps planted so that what it finds can be checked.

Under a fresh directory in `--tmp`, two synthetic datasets, each a train and a test split of
the same size, written by the project's dataset writer:
- Sudoku, `--sudoku-examples` a split (default 422,786, Sudoku-Extreme's test size), 9x9:
  solution grids drawn as random transforms of one grid, each with a random given pattern of
  17..35 cells;
- ARC, `--arc-examples` a split (default 400,000, ARC aug-1000's size) on the 30x30 canvas:
  random input and output grids of 5..30 a side (smaller ones would coincide by chance:
  there are only so many 2x2 grids), half the cells background (colour 0).
Into each test split go `--planted` exact copies of train examples and `--planted` augmented
copies (a random Sudoku shuffle of input and label together; a random dihedral transform,
permutation of colours 1..9 and translation of both grids), at random positions.

Each audit runs in a fresh Python process (`python -m jobs.bench_overlap DATA OUT [WORKERS]`),
so its seconds and peak RSS (`hrm.memory.peak_rss_bytes`) are its own: opening the dataset,
reading both splits, every key and every match; the audit's worker processes (`--workers`,
default the usable cores) report their own peaks, summed beside it. Reported per family: those
figures, and the planted overlaps found (exact at both levels, augmented at both levels) and
anything found that was not planted. `--sudoku-examples` and `--arc-examples` size the data
(a 40,000-example ARC slice: `--arc-examples 40000 --sudoku-examples 0 --generated 0`).

Sudoku has no canonical form, only buckets confirmed by an exact search, so the bench also
measures the buckets on realistic data: `--generated` puzzles from the project's generator
with `--copies` random shuffles each; the largest bucket, and how many buckets hold puzzles
that are not shuffles of one another (each such pair costs a failed confirmation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrm.audits.canonical import band_permutations, sudoku_invariants
from hrm.audits.overlap import audit_overlap
from hrm.data.schema import DatasetMetadata
from hrm.data.writer import write_dataset
from hrm.memory import peak_rss_bytes
from hrm.puzzles.arc_grids import ARC_SIDE, ArcAugmentation, grid_to_tokens
from hrm.puzzles.publish import single_example_puzzles
from hrm.puzzles.sudoku import SudokuTransform
from hrm.puzzles.sudoku_generator import generate_sudokus

SUDOKU_EXTREME_TEST = 422_786
ARC_AUG_1000 = 400_000
SET = "all"
MAKE_CHUNK = 16384  # examples made at a time


def configure_overlap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sudoku-examples", type=int, default=SUDOKU_EXTREME_TEST,
                        help="examples in each split of the Sudoku dataset (0 skips it)")
    parser.add_argument("--arc-examples", type=int, default=ARC_AUG_1000,
                        help="examples in each split of the ARC dataset (0 skips it)")
    parser.add_argument("--planted", type=int, default=1000,
                        help="exact copies and, as many again, augmented copies of train examples in each test split")
    parser.add_argument("--generated", type=int, default=2000,
                        help="generator puzzles whose Sudoku buckets are measured (0 skips it)")
    parser.add_argument("--copies", type=int, default=4, help="random shuffles of each generated puzzle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes the audit keys chunks with (default: the audit's, the usable cores)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the data is made")


def run_overlap(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hrm-bench-overlap-", dir=args.tmp))
    report: dict[str, Any] = {"command": getattr(args, "command", None), "workdir": str(work),
                              "load_before": list(os.getloadavg()), "families": {}}
    makers = {"sudoku": (args.sudoku_examples, write_planted_sudoku),
              "arc": (args.arc_examples, write_planted_arc)}
    for family, (examples, maker) in makers.items():
        if examples <= 0:
            continue
        started = time.perf_counter()
        planted = maker(work / family, examples, args.planted, args.seed)
        made_s = time.perf_counter() - started
        measured = measure_in_subprocess(work / family, work / f"{family}-audit.json", args.workers)
        report["families"][family] = {"examples_per_split": examples, "make_s": made_s,
                                      **measured, **planted.score(measured.pop("report"))}
    if args.generated > 0:
        report["sudoku_buckets"] = sudoku_buckets(args.generated, args.copies, args.seed)
    report["load_after"] = list(os.getloadavg())
    print(format_overlap_report(report))
    return report


# --------------------------------------------------------------------------- planted datasets


@dataclass
class Planted:
    """Test ids of the planted copies: exact ones (exact at both levels) and augmented ones
    (found only up to augmentation, at both levels)."""

    exact: list[str]
    augmented: list[str]

    def score(self, report: dict[str, Any]) -> dict[str, Any]:
        """Per reported list: planted ids it holds, planted ids it misses, ids it holds that were not planted."""
        expected = {"exact_in_train": set(self.exact), "augmented_in_train": set(self.augmented)}
        out: dict[str, Any] = {}
        for field, planted in expected.items():
            for level in ("input", "input_label"):
                found = set(report[field][level]["ids"])
                out[f"{field}.{level}"] = {"planted": len(planted), "found": len(found & planted),
                                           "missed": len(planted - found), "not_planted": len(found - planted)}
        dup = report["duplicates_within_test"]
        out["duplicates_within_test"] = {level: dup[level]["examples"] for level in ("input", "input_label")}
        out["all_found_nothing_else"] = all(v["missed"] == 0 and v["not_planted"] == 0
                                            for k, v in out.items() if "." in k)
        return out


def write_planted(uri: Path, kind: str, train: tuple[np.ndarray, np.ndarray], fresh: tuple[np.ndarray, np.ndarray],
                  augment, planted: int, seed: int, vocab_size: int) -> Planted:
    """A train split and a test split of the `fresh` examples with `planted` exact and
    `planted` augmented copies of distinct train examples (`augment(inputs, labels, rng)`)
    put in at random positions; its kind recorded as the converter records it."""
    rng = np.random.default_rng(seed + 1)
    sources = rng.choice(len(train[0]), size=2 * planted, replace=False)
    exact, augmented = sources[:planted], sources[planted:]
    aug_in, aug_label = augment(train[0][augmented], train[1][augmented], rng)
    inputs = np.concatenate([fresh[0], train[0][exact], aug_in])
    labels = np.concatenate([fresh[1], train[1][exact], aug_label])
    order = rng.permutation(len(inputs))  # position k of the test split holds example order[k]
    position = np.argsort(order)
    kinds = np.concatenate([np.zeros(len(fresh[0]), int), np.ones(planted, int), np.full(planted, 2)])
    seq_len = inputs.shape[1]
    splits = {"train": single_example_puzzles(*train), "test": single_example_puzzles(inputs[order], labels[order])}
    meta = {name: DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size,
                                  seq_len=seq_len, num_puzzle_identifiers=1, total_groups=len(arrays.inputs),
                                  mean_puzzle_examples=1.0, total_puzzles=len(arrays.inputs), sets=[SET])
            for name, arrays in splits.items()}
    write_dataset(uri, {name: {SET: arrays} for name, arrays in splits.items()}, meta, ["<blank>"],
                  summary={"kind": kind})
    ids = lambda which: [f"{SET}/{int(p)}" for p in np.sort(position[kinds == which])]  # test order
    return Planted(exact=ids(1), augmented=ids(2))


def sudoku_boards(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[count, 81] inputs and labels (tokens): random transforms of one solution grid, each with
    a random pattern of 17..35 givens."""
    row, col = np.divmod(np.arange(81), 9)
    base = (row * 3 + row // 3 + col) % 9 + 2  # a valid solution grid, as tokens
    solutions = shuffle_boards(np.broadcast_to(base, (count, 81)), rng)
    givens = rng.integers(17, 36, size=count)
    keep = np.argsort(rng.random((count, 81)), axis=1).argsort(axis=1) < givens[:, None]
    return np.where(keep, solutions, 1).astype(np.uint8), solutions.astype(np.uint8)


def shuffle_boards(boards: np.ndarray, rng: np.random.Generator, *more: np.ndarray) -> np.ndarray:
    """Each row of `boards` (and the same row of each of `more`) under its own random Sudoku
    shuffle (`SudokuTransform` semantics: transpose, rows and columns, digits), vectorised."""
    n = len(boards)
    perms = band_permutations(3)
    rows, cols = perms[rng.integers(len(perms), size=n)], perms[rng.integers(len(perms), size=n)]
    transpose = rng.random(n) < 0.5
    digits = np.concatenate([np.zeros((n, 2), int) + [0, 1], np.argsort(rng.random((n, 9)), axis=1) + 2], axis=1)
    out = []
    for board in (boards, *more):
        square = board.reshape(n, 9, 9)
        square = np.where(transpose[:, None, None], square.swapaxes(1, 2), square)
        square = square[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        out.append(np.take_along_axis(digits, square.reshape(n, 81).astype(np.intp), axis=1).astype(np.uint8))
    return out[0] if not more else out


def write_planted_sudoku(uri: Path, examples: int, planted: int, seed: int) -> Planted:
    rng = np.random.default_rng(seed)
    train = sudoku_boards(examples, rng)
    fresh = sudoku_boards(examples - 2 * planted, rng)

    def augment(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        moved_in, moved_label = shuffle_boards(inputs, rng, labels)
        if (moved_in == inputs).all(axis=1).any():  # a shuffle that fixes a board is no augmented copy
            raise RuntimeError("a random shuffle left a board unchanged; use another --seed")
        return moved_in, moved_label

    return write_planted(uri, "sudoku-csv", train, fresh, augment, planted, seed, vocab_size=11)


def arc_examples(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[count, 900] input and output canvases: grids of 5..30 a side, half the cells colour 0
    (made a chunk at a time: the random cells of 400,000 grids at once would take gigabytes)."""
    inputs = np.zeros((count, ARC_SIDE * ARC_SIDE), np.uint8)
    labels = np.zeros_like(inputs)
    for start in range(0, count, MAKE_CHUNK):
        stop = min(start + MAKE_CHUNK, count)
        for out in (inputs, labels):
            heights, widths = rng.integers(5, ARC_SIDE + 1, size=(2, stop - start))
            colours = np.where(rng.random((stop - start, ARC_SIDE, ARC_SIDE)) < 0.5, 0,
                               rng.integers(1, 10, size=(stop - start, ARC_SIDE, ARC_SIDE), dtype=np.uint8))
            out[start:stop] = canvases(colours, heights, widths)
    return inputs, labels


def canvases(colours: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    row, col = np.arange(ARC_SIDE)[None, :, None], np.arange(ARC_SIDE)[None, None, :]
    h, w = heights[:, None, None], widths[:, None, None]
    inside = (row < h) & (col < w)
    eos = ((row == h) & (col < w)) | ((col == w) & (row < h))
    return np.where(inside, colours + 2, np.where(eos, 1, 0)).reshape(len(colours), -1).astype(np.uint8)


def augment_arc(inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each (input, output) under its own random non-identity augmentation, both grids moved
    to one random offset (as the converter translates train pairs)."""
    legacy = np.random.RandomState(int(rng.integers(2**31)))
    out_in, out_label = np.zeros_like(inputs), np.zeros_like(labels)
    for k in range(len(inputs)):
        grids = [crop(inputs[k]), crop(labels[k])]
        while True:
            aug = ArcAugmentation.random(legacy)
            moved = [aug.apply(g) for g in grids]
            if not all(m.shape == g.shape and (m == g).all() for m, g in zip(moved, grids)):
                break
        room = min(ARC_SIDE - max(m.shape[0] for m in moved), ARC_SIDE - max(m.shape[1] for m in moved))
        offset = tuple(int(v) for v in rng.integers(0, room + 1, size=2)) if room > 0 else (0, 0)
        out_in[k], out_label[k] = (grid_to_tokens(m, offset) for m in moved)
    return out_in, out_label


def crop(tokens: np.ndarray) -> np.ndarray:
    """The colour grid of a canvas written at the top left."""
    canvas = tokens.reshape(ARC_SIDE, ARC_SIDE)
    colour = canvas >= 2
    height, width = int(colour.any(axis=1).sum()), int(colour.any(axis=0).sum())
    return (canvas[:height, :width] - 2).astype(np.uint8)


def write_planted_arc(uri: Path, examples: int, planted: int, seed: int) -> Planted:
    rng = np.random.default_rng(seed)
    train = arc_examples(examples, rng)
    fresh = arc_examples(examples - 2 * planted, rng)
    return write_planted(uri, "arc", train, fresh, augment_arc, planted, seed, vocab_size=12)


# --------------------------------------------------------------------------- measuring


def measure_in_subprocess(data: Path, out: Path, workers: int | None = None) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "jobs.bench_overlap", str(data), str(out),
                          *([] if workers is None else [str(workers)])], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the audit of {data} failed:\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure(data: str, out: str, workers: str | None = None) -> None:
    """One audit from this process: its seconds, this process's peak RSS, the sum of its worker
    processes' peaks, the report."""
    rss_before = peak_rss_bytes()
    started = time.perf_counter()
    report = audit_overlap(data, workers=None if workers is None else int(workers))
    seconds = time.perf_counter() - started
    Path(out).write_text(json.dumps({"audit_s": seconds, "peak_rss_bytes": peak_rss_bytes(),
                                     "peak_rss_before_bytes": rss_before, "workers": report.workers,
                                     "worker_peak_rss_bytes": report.worker_peak_rss_bytes,
                                     "report": report.model_dump()}))


def sudoku_buckets(generated: int, copies: int, seed: int) -> dict[str, Any]:
    """Buckets of generator puzzles and `copies` random shuffles of each: how large they get and
    how many mix puzzles that are not shuffles of one another."""
    started = time.perf_counter()
    puzzles = list(generate_sudokus(generated, 25, box=3, seed=seed))
    made_s = time.perf_counter() - started
    legacy = np.random.RandomState(seed)
    boards, origin = [], []
    for index, puzzle in enumerate(puzzles):
        board = np.array(puzzle.question, dtype=np.uint8) + 1
        boards.append(board)
        origin.append(index)
        for _ in range(copies):
            boards.append(SudokuTransform.random(legacy).apply(board))
            origin.append(index)
    keys = sudoku_invariants(np.stack(boards), 3)
    _, bucket, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    origins_per_bucket = np.array([len(set(np.asarray(origin)[bucket == b])) for b in range(len(sizes))])
    return {"puzzles": generated, "copies": copies, "generate_s": made_s, "boards": len(boards),
            "buckets": len(sizes), "largest_bucket": int(sizes.max()),
            "mixed_buckets": int((origins_per_bucket > 1).sum()),
            "largest_mix": int(origins_per_bucket.max())}


def format_overlap_report(report: dict[str, Any]) -> str:
    lines = []
    for family, r in report["families"].items():
        mib = lambda key: f"{r[key] / 2**20:,.0f} MiB"
        workers = (f" + {mib('worker_peak_rss_bytes')} in {r['workers']} worker processes (each one's peak, summed)"
                   if r.get("worker_peak_rss_bytes") else "")
        lines.append(f"{family}: {r['examples_per_split']:,} examples a split; audit {r['audit_s']:.1f} s, peak RSS "
                     f"{mib('peak_rss_bytes')}{workers} (before the audit {mib('peak_rss_before_bytes')}); data made "
                     f"in {r['make_s']:.1f} s")
        for key, v in r.items():
            if isinstance(v, dict) and "planted" in v:
                lines.append(f"  {key}: {v['found']} of {v['planted']} planted found, {v['not_planted']} not planted")
        lines.append(f"  every planted overlap found and nothing else: {r['all_found_nothing_else']}")
    if "sudoku_buckets" in report:
        b = report["sudoku_buckets"]
        lines.append(f"Sudoku buckets of {b['puzzles']} generated puzzles x {b['copies'] + 1} versions: {b['buckets']} "
                     f"buckets, largest {b['largest_bucket']}, {b['mixed_buckets']} mixing distinct puzzles "
                     f"(at most {b['largest_mix']} in one)")
    return "\n".join(lines)


if __name__ == "__main__":
    measure(*sys.argv[1:4])
