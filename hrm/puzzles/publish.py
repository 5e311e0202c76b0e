"""What the raw-data converters share: where the input splits come from, reading CSV, array
assembly, and publishing.

Every converter reads its raw files into puzzles, then calls `publish`, which fills in the
metadata and summary the same way for all of them and writes through
`hrm.data.writer.write_dataset` (atomic: nothing is published when a step fails).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.schema import DatasetMetadata, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.decode import text_lines
from hrm.errors import InputError

SET_NAME = "all"  # the reference builders put everything of a split in one set


# --------------------------------------------------------------------------- reading


def csv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a CSV whose first line is exactly `header` (any case); a row
    with another column count is an InputError naming the file and line."""
    reader = csv.reader(text_lines(path))
    first = next(reader, None)
    if first is None or [h.strip().lower() for h in first] != header:
        raise InputError(f"{path}:1: expected the header {','.join(header)}, got {first}")
    for row in reader:
        if not row:
            continue  # a blank line, e.g. at the end of the file
        if len(row) != len(header):
            raise InputError(f"{path}:{reader.line_num}: expected {len(header)} columns "
                             f"({','.join(header)}), got {len(row)}")
        yield reader.line_num, row


# --------------------------------------------------------------------------- sources and destination


@dataclass(frozen=True)
class Sources:
    """The input files of a converter: one per split, or one `input` file that is split into
    train and test by `test_fraction` (drawn with the converter's seed)."""

    train: Path | None = None
    test: Path | None = None
    input: Path | None = None
    test_fraction: float = 1.0

    def files(self) -> dict[str, Path]:
        """The split → file mapping ('input' when one file is to be split)."""
        if self.input is not None:
            if self.train is not None or self.test is not None:
                raise InputError("--input: give either --input or --train/--test, not both")
            if not 0.0 <= self.test_fraction <= 1.0:
                raise InputError(f"--test-fraction: must be between 0 and 1, got {self.test_fraction}")
            return {"input": self.input}
        files = {name: path for name, path in (("train", self.train), ("test", self.test)) if path is not None}
        if not files:
            raise InputError("no input: give --train and/or --test, or --input")
        return files


@dataclass(frozen=True)
class Destination:
    """Where a converter writes (a local directory, file://… or s3://…) and in which layout."""

    uri: str
    format: str = "parquet"


def check_readable(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such file")


def split_by_fraction(count: int, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Record indices per split: a seeded random `test_fraction` goes to test, in file order."""
    chosen = np.random.default_rng(seed).permutation(count)[: int(round(test_fraction * count))]
    is_test = np.zeros(count, dtype=bool)
    is_test[chosen] = True
    splits = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    return {name: indices for name, indices in splits.items() if len(indices)}


def child_seed(seed: int, index: int) -> int:
    """An independent seed for item `index` of the stream `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def subsample(count: int, keep: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of at most `keep` records, in file order."""
    if keep is None or keep >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=keep, replace=False))


# --------------------------------------------------------------------------- arrays


def single_example_puzzles(inputs: np.ndarray, labels: np.ndarray, group_size: int = 1,
                           columns: dict[str, np.ndarray] | None = None,
                           identifiers: np.ndarray | None = None) -> PuzzleArrays:
    """Arrays where every puzzle is one example and groups are runs of `group_size` puzzles.

    This is the Sudoku/maze/text shape of the reference builders: an augmented copy of a
    puzzle is a puzzle of its own, in the same group as the original.
    """
    count = len(inputs)
    if count % group_size:
        raise ValueError(f"{count} puzzles do not split into groups of {group_size}")
    return PuzzleArrays(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=(np.zeros(count, dtype=np.int32) if identifiers is None
                            else identifiers.astype(np.int32)),
        puzzle_indices=np.arange(count + 1, dtype=np.int32),
        group_indices=np.arange(0, count + 1, group_size, dtype=np.int32),
        columns=columns or {},
    )


# --------------------------------------------------------------------------- publishing


class Clock:
    """Seconds since the converter started, for the summary."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)


def publish(destination: Destination, kind: str, splits: dict[str, PuzzleArrays], *, seed: int,
            vocab_size: int, seq_len: int, identifiers: list[str], clock: Clock,
            pad_id: int = 0, ignore_label_id: int | None = 0, truncations: int = 0,
            details: dict | None = None, extra_files: dict[str, object] | None = None) -> dict:
    """Write the dataset (one set per split) and return the summary that also lands in dataset.json.

    `details` are converter-specific summary entries (tiers, augmentations, lossy words…).
    """
    metadata = {name: _metadata(arrays, pad_id=pad_id, ignore_label_id=ignore_label_id,
                                vocab_size=vocab_size, seq_len=seq_len,
                                num_identifiers=len(identifiers))
                for name, arrays in splits.items()}
    summary = {
        "kind": kind,
        "output": destination.uri,
        "format": destination.format,
        "examples": sum(len(a.inputs) for a in splits.values()),
        "puzzles": sum(len(a.puzzle_identifiers) for a in splits.values()),
        "groups": sum(len(a.group_indices) - 1 for a in splits.values()),
        "splits": {name: _counts(arrays) for name, arrays in splits.items()},
        "identifiers": len(identifiers),
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "truncations": truncations,
        "seed": seed,
        **(details or {}),
        "convert_seconds": clock.seconds(),
    }
    write_dataset(destination.uri, {name: {SET_NAME: arrays} for name, arrays in splits.items()},
                  metadata, identifiers, format=destination.format, extra_files=extra_files, summary=summary)
    return {**summary, "total_seconds": clock.seconds()}


def _counts(arrays: PuzzleArrays) -> dict[str, int]:
    return {"examples": len(arrays.inputs), "puzzles": len(arrays.puzzle_identifiers),
            "groups": len(arrays.group_indices) - 1}


def _metadata(arrays: PuzzleArrays, *, pad_id: int, ignore_label_id: int | None, vocab_size: int,
              seq_len: int, num_identifiers: int) -> DatasetMetadata:
    puzzles = len(arrays.puzzle_identifiers)
    return DatasetMetadata(
        pad_id=pad_id,
        ignore_label_id=ignore_label_id,
        blank_identifier_id=0,
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_puzzle_identifiers=num_identifiers,
        total_groups=len(arrays.group_indices) - 1,
        mean_puzzle_examples=len(arrays.inputs) / puzzles if puzzles else 0.0,
        sets=[SET_NAME],
        total_puzzles=puzzles,
    )
