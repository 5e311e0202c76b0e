"""Convert between the reference numpy layout and our Parquet layout, losslessly.

The reference layout is what the HRM / TRM dataset builders write:
<split>/dataset.json and <split>/<set>__{inputs,labels,puzzle_identifiers,
puzzle_indices,group_indices}.npy, plus identifiers.json (and test_puzzles.json for
TRM ARC). Our layout is a top-level dataset.json (published last: the commit point)
with <split>/part-NNNNN.parquet shards, one row per example.

Either direction keeps every array, its dtype and every extra file, so
reference -> parquet -> reference gives byte-identical .npy files. INPUT and OUTPUT
may be local paths, file:// or s3:// URIs (endpoint and credentials from the AWS
environment, e.g. AWS_ENDPOINT_URL). OUTPUT must not hold a dataset yet. Bad input
stops with an error naming the file and key, and nothing is published.

examples:
  hrm-eval convert reference data/sudoku-extreme-1k-aug-1000 s3://bucket/sudoku
  hrm-eval convert reference s3://bucket/sudoku restored/ --to reference
"""

from __future__ import annotations

import time

from hrm import storage
from hrm.data.reader import open_dataset
from hrm.data.schema import DEFAULT_SHARD_BYTES, IDENTIFIERS_FILE, META_FILE
from hrm.data.writer import write_dataset


def convert_layout(input: str, output: str, to: str | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> dict:
    """Copy the dataset at `input` to `output` in layout `to` (default: the other one); returns
    the summary, which our layout also keeps in its dataset.json."""
    started = time.perf_counter()
    source = open_dataset(input)
    target_format = to or ("reference" if source.format == "parquet" else "parquet")
    metadata = {split: source.metadata(split) for split in source.splits}
    splits = {split: {name: source.read_set(split, name) for name in source.sets(split)}
              for split in source.splits}
    summary = {
        "input": input, "input_format": source.format, "input_hash": source.content_hash(),
        "output": output, "output_format": target_format,
        "splits": {split: {name: arrays.inputs.shape[0] for name, arrays in sets.items()}
                   for split, sets in splits.items()},
        "examples": sum(a.inputs.shape[0] for sets in splits.values() for a in sets.values()),
        "puzzles": sum(a.puzzle_identifiers.shape[0] for sets in splits.values() for a in sets.values()),
        "groups": sum(a.group_indices.shape[0] - 1 for sets in splits.values() for a in sets.values()),
        "identifiers": len(source.identifiers or []),
        "vocab_size": _one_or_per_split({split: meta.vocab_size for split, meta in metadata.items()}),
        "seq_len": _one_or_per_split({split: meta.seq_len for split, meta in metadata.items()}),
    }
    # Other top-level files (test_puzzles.json) travel as raw bytes: carried over, not re-serialised.
    extra = {name: storage.read_bytes(storage.join(input, name)) for name in source.files()
             if "/" not in name and name not in (META_FILE, IDENTIFIERS_FILE)}
    write_dataset(output, splits, metadata, source.identifiers, format=target_format,
                  extra_files=extra, summary=summary, shard_bytes=shard_bytes)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _one_or_per_split(values: dict[str, int]) -> int | dict[str, int]:
    return next(iter(values.values())) if len(set(values.values())) == 1 else values
