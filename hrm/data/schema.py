"""What a puzzle dataset is: the metadata files of both layouts and the in-memory shapes.

Reference layout (what the HRM / TRM builders write)::

    <split>/dataset.json                      DatasetMetadata
    <split>/<set>__inputs.npy                 [examples, seq_len] tokens
    <split>/<set>__labels.npy                 [examples, seq_len] tokens (raw ignore_label_id)
    <split>/<set>__puzzle_identifiers.npy     [puzzles]
    <split>/<set>__puzzle_indices.npy         [puzzles + 1] example offsets (CSR)
    <split>/<set>__group_indices.npy          [groups + 1] puzzle offsets (CSR)
    identifiers.json, test_puzzles.json (TRM ARC)

Per-example extras (tier, name, …) are kept there as `<set>__<column>.npy`; the reference
code ignores files it does not know.

Our layout (object-storage friendly)::

    dataset.json                   ParquetIndex: per split the metadata, counts, dtypes and
                                   parts; the commit point, published last
    <split>/part-NNNNN.parquet     a contiguous example range of one set, one row per example
    identifiers.json, extra files
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pydantic

INDEX_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")  # per puzzle / group: small
ARRAY_FIELDS = ("inputs", "labels", *INDEX_FIELDS)
ROW_COLUMNS = ("example_id", "set", "puzzle_index", "group_index", "puzzle_identifier", "inputs", "labels")
META_FILE = "dataset.json"
IDENTIFIERS_FILE = "identifiers.json"
TEST_PUZZLES_FILE = "test_puzzles.json"
PARQUET_FORMAT = "hrm-eval/parquet"
FORMATS = ("parquet", "reference")
DEFAULT_SHARD_BYTES = 64 << 20
# The unit of every streamed check and copy.
CHUNK_BYTES = 8 << 20


# ---------------------------------------------------------------- file formats


class DatasetSizes(pydantic.BaseModel):
    """The three sizes a model takes from the dataset it evaluates (the reference's training
    config does not hold them; the checkpoint's tensors must agree with them)."""

    model_config = pydantic.ConfigDict(frozen=True)

    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int


class DatasetMetadata(pydantic.BaseModel):
    """`<split>/dataset.json` of the reference layout (field order as TRM writes it)."""

    model_config = pydantic.ConfigDict(extra="allow")

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int | None = None
    sets: list[str]

    @pydantic.model_serializer(mode="wrap")
    def _omit_missing_total_puzzles(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        # HRM files have no total_puzzles; writing `null` would make the round trip differ.
        data = handler(self)
        if data.get("total_puzzles") is None:
            data.pop("total_puzzles", None)
        return data

    @property
    def sizes(self) -> DatasetSizes:
        return DatasetSizes(vocab_size=self.vocab_size, seq_len=self.seq_len,
                            num_puzzle_identifiers=self.num_puzzle_identifiers)


class SetInfo(pydantic.BaseModel):
    examples: int
    puzzles: int
    groups: int
    # numpy dtype.str of every reference array and extra column: what makes the round trip
    # back to .npy byte-identical (e.g. HRM writes uint8 test but int64 train inputs).
    dtypes: dict[str, str]
    columns: list[str] = []


class PartInfo(pydantic.BaseModel):
    file: str
    set: str
    start: int
    stop: int


class SplitInfo(pydantic.BaseModel):
    metadata: DatasetMetadata
    sets: dict[str, SetInfo]
    parts: list[PartInfo]

    @pydantic.model_validator(mode="after")
    def _parts_cover_every_set(self) -> SplitInfo:
        """The index must describe the shards exactly: readers trust `sets[*].examples` for a
        set's size, so parts that cover more or less than it would be evaluated silently
        short or with a gap."""
        if sorted(self.sets) != sorted(self.metadata.sets):
            raise ValueError(f"'sets' holds {sorted(self.sets)} but 'metadata.sets' lists {sorted(self.metadata.sets)}")
        covered = dict.fromkeys(self.sets, 0)
        for part in self.parts:
            if part.set not in covered:
                raise ValueError(f"part {part.file} belongs to set '{part.set}', which 'sets' does not hold")
            if part.start != covered[part.set] or part.stop <= part.start:
                raise ValueError(f"part {part.file} holds examples [{part.start}, {part.stop}) of set '{part.set}', "
                                 f"but the set's parts up to it end at {covered[part.set]}: parts must cover "
                                 f"each set in order, without gaps or overlaps")
            covered[part.set] = part.stop
        for name, info in self.sets.items():
            if covered[name] != info.examples:
                raise ValueError(f"set '{name}' has {info.examples} examples but its parts hold {covered[name]}")
        return self


class ParquetIndex(pydantic.BaseModel):
    """Top-level `dataset.json` of our layout."""

    model_config = pydantic.ConfigDict(extra="allow")

    format: Literal["hrm-eval/parquet"]
    version: Literal[1]
    splits: dict[str, SplitInfo]
    files: list[str]  # top-level files besides dataset.json (identifiers.json, test_puzzles.json, …)
    summary: dict[str, Any] = {}


# ---------------------------------------------------------------- in-memory shapes


@dataclass
class PuzzleArrays:
    """One set of one split in the reference layout. `inputs`, `labels` and `columns` may be
    read-only memory maps; the three index arrays are small and in memory."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ExampleBatch:
    """A contiguous range of examples of one set; per-puzzle data expanded per example.
    Arrays are read-only views where the storage allows it."""

    set: str
    example_id: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_index: np.ndarray
    group_index: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.example_id)


@dataclass(frozen=True)
class Shard:
    """A range of examples of one set: the data half of a work unit (`dataclasses.asdict` /
    `Shard(**d)` make it JSON)."""

    split: str
    set: str
    start: int
    stop: int

    @property
    def examples(self) -> int:
        return self.stop - self.start
