"""Writing a dataset in either layout, all or nothing.

Everything is checked before the first byte is written; every object is published atomically
and the commit file (dataset.json) last; when anything fails, what was published is removed
again, so a reader never finds half a dataset.
"""

from __future__ import annotations

import os
import time

from hrm import storage
from hrm.data.checks import Namer, check_arrays, check_puzzles_not_empty
from hrm.data.parquet import write_parquet_split
from hrm.data.reference import write_reference_split
from hrm.data.schema import (
    DEFAULT_SHARD_BYTES,
    FORMATS,
    IDENTIFIERS_FILE,
    META_FILE,
    PARQUET_FORMAT,
    DatasetMetadata,
    ParquetIndex,
    PuzzleArrays,
)
from hrm.errors import InputError


def write_dataset(uri: str | os.PathLike, splits: dict[str, dict[str, PuzzleArrays]],
                  metadata: dict[str, DatasetMetadata], identifiers: list[str] | None, *,
                  format: str = "parquet", extra_files: dict[str, object] | None = None,
                  summary: dict | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write a dataset in our Parquet layout (default) or the reference layout.

    Everything is checked before the first byte is written; every object is published
    atomically, dataset.json last (for Parquet the single top-level one, the commit point);
    if anything fails, what was published is removed again. `identifiers` None writes no
    identifiers.json. `extra_files` are top-level
    files (name -> JSON-able object, or bytes written as they are). `summary` goes into
    our dataset.json with `write_seconds` added. `shard_bytes` is the target uncompressed
    size of one Parquet part. The destination must not hold a dataset yet.
    """
    uri = os.fspath(uri)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    started = time.perf_counter()
    if set(splits) != set(metadata):
        raise ValueError(f"splits {sorted(splits)} and metadata {sorted(metadata)} name different splits")
    for split, sets in splits.items():
        meta = metadata[split]
        if list(sets) != list(meta.sets):
            raise InputError(f"split '{split}': metadata key 'sets' is {meta.sets} but the arrays hold "
                             f"sets {list(sets)}")
        for set_name, arrays in sets.items():
            name = _namer(split, set_name)
            check_arrays(arrays, meta, set_name, name)
            if format == "parquet":
                check_puzzles_not_empty(arrays, name("puzzle_indices"))
    files = {**({} if identifiers is None else {IDENTIFIERS_FILE: identifiers}), **(extra_files or {})}
    for file in files:
        if "/" in file or file == META_FILE:
            raise ValueError(f"extra file name {file!r} must be a plain name other than {META_FILE}")
    commits = [META_FILE] if format == "parquet" else [f"{split}/{META_FILE}" for split in splits]
    for name in commits:
        if storage.exists(storage.join(uri, name)):
            raise InputError(f"{storage.join(uri, name)}: a dataset already exists there; delete it "
                             f"or choose another output")

    published: list[str] = []
    try:
        if format == "parquet":
            split_infos = {split: write_parquet_split(uri, split, sets, metadata[split], shard_bytes, published)
                           for split, sets in splits.items()}
        else:
            for split, sets in splits.items():
                write_reference_split(uri, split, sets, published)
        for file, content in files.items():
            _publish(storage.join(uri, file), content, published)
        if format == "parquet":
            index = ParquetIndex(format=PARQUET_FORMAT, version=1, splits=split_infos, files=list(files),
                                 summary={**(summary or {}),
                                          "write_seconds": round(time.perf_counter() - started, 3)})
            storage.write_json_atomic(storage.join(uri, META_FILE), index.model_dump(mode="json"), indent=2)
        else:
            for split in splits:
                _publish(storage.join(uri, split, META_FILE), metadata[split].model_dump(mode="json"), published)
    except BaseException:
        for target in reversed(published):
            try:
                storage.delete(target)
            except InputError:
                pass  # keep the original error; the commit file was never written
        raise


def _namer(split: str, set_name: str) -> Namer:
    return lambda key: f"split '{split}' set '{set_name}' array '{key}'"


def _publish(uri: str, content: object, published: list[str]) -> None:
    if isinstance(content, bytes):
        storage.write_bytes_atomic(uri, content)
    else:
        storage.write_json_atomic(uri, content)
    published.append(uri)
