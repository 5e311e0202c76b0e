"""Our Parquet layout, read and written: one top-level dataset.json (the commit point) and
`<split>/part-NNNNN.parquet` shards, each a contiguous example range of one set, one row per
example, tokens as fixed-size lists.

Reads decode only the row groups a range touches (ROW_GROUP_BYTES each), keeping the last
DECODED_ROW_GROUPS decoded so that reading in order decodes each row group once.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hrm import storage
from hrm.data.arrays import ranges, rows_per, slice_examples
from hrm.data.arrow import fixed_size_list, list_matrix
from hrm.data.checks import check_tokens
from hrm.data.dataset import Dataset
from hrm.data.schema import (
    ARRAY_FIELDS,
    META_FILE,
    ROW_COLUMNS,
    DatasetMetadata,
    ExampleBatch,
    ParquetIndex,
    PartInfo,
    PuzzleArrays,
    SetInfo,
    SplitInfo,
)
from hrm.errors import InputError

# Uncompressed bytes per Parquet row group: the smallest unit a range read decodes, so small
# enough that reading one engine batch decodes little more than the batch.
ROW_GROUP_BYTES = 1 << 20
# Decoded row groups kept per Parquet dataset: consecutive batches share the row group at their
# boundary, so keeping the last two decodes each row group once when reading in order.
DECODED_ROW_GROUPS = 2


class ParquetDataset(Dataset):
    format = "parquet"

    def __init__(self, uri: str, index: ParquetIndex):
        super().__init__(uri, list(index.splits))
        self.index = index
        present = set(storage.list_files(uri))  # one listing finds every missing part up front
        for name in self.files():
            if name not in present:
                raise InputError(f"{storage.join(uri, name)}: not found, but listed in {META_FILE}")
        self._parts: dict[tuple[str, str], tuple[pq.ParquetFile, np.ndarray]] = {}
        self._decoded: dict[tuple[str, str, int], pa.Table] = {}  # least recently used first

    def metadata(self, split: str) -> DatasetMetadata:
        self._check_split(split)
        return self.index.splits[split].metadata

    def _info(self, split: str, set: str) -> SetInfo:
        self._check_set(split, set)
        info = self.index.splits[split].sets.get(set)
        if info is None:
            raise InputError(f"{storage.join(self.uri, META_FILE)}: key 'splits.{split}.sets' has no '{set}'")
        return info

    def num_examples(self, split: str, set: str) -> int:
        return self._info(split, set).examples

    def _set_parts(self, split: str, set: str) -> list[PartInfo]:
        return [part for part in self.index.splits[split].parts if part.set == set]

    def _part(self, split: str, part: PartInfo) -> tuple[pq.ParquetFile, np.ndarray]:
        """The part's reader (footer read once, schema checked) and its row-group offsets."""
        if (split, part.file) not in self._parts:
            uri = storage.join(self.uri, split, part.file)
            try:
                reader = pq.ParquetFile(storage.open_input_file(uri))
            except pa.ArrowException as err:
                raise InputError(f"{uri}: not a readable Parquet file ({err})") from None
            info, seq_len = self._info(split, part.set), self.metadata(split).seq_len
            schema = reader.schema_arrow
            for column in (*ROW_COLUMNS, *info.columns):
                if column not in schema.names:
                    raise InputError(f"{uri}: column '{column}' is missing")
            for column in ("inputs", "labels"):
                kind = schema.field(column).type
                if not pa.types.is_fixed_size_list(kind) or kind.list_size != seq_len:
                    raise InputError(f"{uri}: column '{column}' is {kind}, expected a fixed-size list of "
                                     f"seq_len={seq_len} tokens (dataset.json)")
            if reader.metadata.num_rows != part.stop - part.start:
                raise InputError(f"{uri}: {reader.metadata.num_rows} rows but dataset.json key 'parts' "
                                 f"says examples [{part.start}, {part.stop})")
            sizes = [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)]
            self._parts[split, part.file] = reader, np.cumsum([0, *sizes])
        return self._parts[split, part.file]

    def examples(self, split: str, set: str, start: int = 0, stop: int | None = None) -> ExampleBatch:
        start, stop = self._bounds(split, set, start, stop)
        batches = []
        for part in self._set_parts(split, set):
            low, high = max(start, part.start) - part.start, min(stop, part.stop) - part.start
            if low < high:
                batches.append(self._read_part_rows(split, part, low, high))
        if not batches:
            return self._empty(split, set)
        if len(batches) == 1:
            return batches[0]
        return ExampleBatch(
            set=set, **{key: np.concatenate([getattr(b, key) for b in batches])
                        for key in ("example_id", "inputs", "labels", "puzzle_identifiers",
                                    "puzzle_index", "group_index")},
            columns={key: np.concatenate([b.columns[key] for b in batches]) for key in batches[0].columns})

    def _read_part_rows(self, split: str, part: PartInfo, low: int, high: int) -> ExampleBatch:
        """Rows [low, high) of one part, reading only the row groups that hold them."""
        offsets = self._part(split, part)[1]
        first = int(np.searchsorted(offsets, low, side="right")) - 1
        last = int(np.searchsorted(offsets, high, side="left"))
        table = pa.concat_tables([self._row_group(split, part, index) for index in range(first, last)])
        return self._to_batch(split, part, table.slice(low - offsets[first], high - low), part.start + low)

    def _row_group(self, split: str, part: PartInfo, index: int) -> pa.Table:
        key = (split, part.file, index)
        table = self._decoded.pop(key, None)
        if table is None:
            table = self._part(split, part)[0].read_row_group(index)
        self._decoded[key] = table
        while len(self._decoded) > DECODED_ROW_GROUPS:
            del self._decoded[next(iter(self._decoded))]
        return table

    def _to_batch(self, split: str, part: PartInfo, table: pa.Table, first_example: int) -> ExampleBatch:
        uri = storage.join(self.uri, split, part.file)
        meta, info = self.metadata(split), self._info(split, part.set)
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}

        def column(key: str) -> np.ndarray:
            values = table.column(key)
            if values.null_count:
                raise InputError(f"{uri}: column '{key}' has null values")
            values = values.combine_chunks()
            if pa.types.is_fixed_size_list(values.type):
                return list_matrix(values)
            return values.to_numpy(zero_copy_only=False)

        example_id = column("example_id")
        if not np.array_equal(example_id, np.arange(first_example, first_example + len(example_id))):
            raise InputError(f"{uri}: column 'example_id' does not hold examples {first_example}.."
                             f"{first_example + len(example_id) - 1} of set '{part.set}' in order")
        batch = ExampleBatch(
            set=part.set, example_id=example_id.astype(np.int64, copy=False),
            inputs=column("inputs").astype(dtypes["inputs"], copy=False),
            labels=column("labels").astype(dtypes["labels"], copy=False),
            puzzle_identifiers=column("puzzle_identifier").astype(dtypes["puzzle_identifiers"], copy=False),
            puzzle_index=column("puzzle_index").astype(np.int64, copy=False),
            group_index=column("group_index").astype(np.int64, copy=False),
            columns={key: column(key).astype(dtypes[key], copy=False) for key in info.columns})

        def name(key: str) -> str:
            return f"{uri} column '{'puzzle_identifier' if key == 'puzzle_identifiers' else key}'"

        check_tokens(batch, meta, name)
        for key, limit, limit_name in (("puzzle_index", info.puzzles, "puzzles"),
                                       ("group_index", info.groups, "groups"),
                                       ("puzzle_identifiers", meta.num_puzzle_identifiers,
                                        "num_puzzle_identifiers")):
            values = getattr(batch, key)
            if len(values) and (values.min() < 0 or values.max() >= limit):
                raise InputError(f"{name(key)}: values must lie in 0..{limit - 1} ({limit_name} in dataset.json)")
        return batch

    def _empty(self, split: str, set: str) -> ExampleBatch:
        info, seq_len = self._info(split, set), self.metadata(split).seq_len
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}
        index = np.zeros(0, np.int64)
        return ExampleBatch(set, index, np.zeros((0, seq_len), dtypes["inputs"]),
                            np.zeros((0, seq_len), dtypes["labels"]),
                            np.zeros(0, dtypes["puzzle_identifiers"]), index, index,
                            {key: np.zeros(0, dtypes[key]) for key in info.columns})

    def read_set(self, split: str, set: str) -> PuzzleArrays:
        info = self._info(split, set)
        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        spooled = self._spool(split, set, lambda b: rows.append((b.puzzle_index, b.group_index,
                                                                    b.puzzle_identifiers)))
        dtypes = {key: np.dtype(value) for key, value in info.dtypes.items()}
        if rows:
            puzzle_index, group_index, identifiers = (np.concatenate(column) for column in zip(*rows))
        else:
            puzzle_index = group_index = identifiers = np.zeros(0, np.int64)
        ids, puzzle_indices, group_indices = offsets_from_rows(
            puzzle_index, group_index, identifiers, info, storage.join(self.uri, split))
        return PuzzleArrays(spooled.pop("inputs"), spooled.pop("labels"),
                            ids.astype(dtypes["puzzle_identifiers"]),
                            puzzle_indices.astype(dtypes["puzzle_indices"]),
                            group_indices.astype(dtypes["group_indices"]), spooled)

    def _example_dtypes(self, split: str, set: str) -> dict[str, np.dtype]:
        info = self._info(split, set)
        return {key: np.dtype(info.dtypes[key]) for key in ("inputs", "labels", *info.columns)}

    def _read_ranges(self, split: str, set: str) -> list[tuple[int, int]]:
        ranges = []
        for part in self._set_parts(split, set):
            offsets = self._part(split, part)[1] + part.start
            ranges.extend(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        return ranges

    def _shard_ranges(self, split: str, set: str, target_examples: int | None) -> list[tuple[int, int]]:
        out = []
        for part in self._set_parts(split, set):
            step = target_examples or part.stop - part.start
            out.extend(ranges(part.stop, step, start=part.start))
        return out

    def _file_digest(self, name: str) -> str:
        if name != META_FILE:
            return super()._file_digest(name)
        # The index without its conversion summary, which records how long the conversion took
        # and so differs between two conversions of the same data.
        return hashlib.sha256(self.index.model_dump_json(exclude={"summary"}).encode()).hexdigest()

    def files(self) -> list[str]:
        return [META_FILE, *self.index.files,
                *(f"{split}/{part.file}" for split, info in self.index.splits.items() for part in info.parts)]


def offsets_from_rows(puzzle_index: np.ndarray, group_index: np.ndarray, identifiers: np.ndarray,
                       info: SetInfo, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild the reference per-puzzle arrays from per-example rows (every puzzle has ≥ 1 example,
    which the writer enforces)."""
    if np.any(np.diff(puzzle_index) < 0):
        raise InputError(f"{where}: column 'puzzle_index' decreases between examples")
    puzzle_indices = np.searchsorted(puzzle_index, np.arange(info.puzzles + 1), side="left")
    starts = puzzle_indices[:-1]
    if np.any(puzzle_indices[1:] == starts):
        missing = int(np.flatnonzero(puzzle_indices[1:] == starts)[0])
        raise InputError(f"{where}: column 'puzzle_index' never holds puzzle {missing} "
                         f"(dataset.json says {info.puzzles} puzzles)")
    ids, group_of_puzzle = identifiers[starts], group_index[starts]
    if not np.array_equal(ids[puzzle_index], identifiers):
        raise InputError(f"{where}: column 'puzzle_identifier' differs between examples of one puzzle")
    if not np.array_equal(group_of_puzzle[puzzle_index], group_index) or np.any(np.diff(group_of_puzzle) < 0):
        raise InputError(f"{where}: column 'group_index' is not constant per puzzle and non-decreasing")
    group_indices = np.searchsorted(group_of_puzzle, np.arange(info.groups + 1), side="left")
    return ids, puzzle_indices, group_indices


# ---------------------------------------------------------------- writing


def _arrow_type(dtype: np.dtype) -> pa.DataType:
    return pa.from_numpy_dtype(dtype.newbyteorder("=") if dtype.kind in "iufb" else dtype)


def _part_schema(arrays: PuzzleArrays) -> pa.Schema:
    seq_len = arrays.inputs.shape[1]
    return pa.schema([
        ("example_id", pa.int64()), ("set", pa.string()), ("puzzle_index", pa.int64()),
        ("group_index", pa.int64()), ("puzzle_identifier", _arrow_type(arrays.puzzle_identifiers.dtype)),
        ("inputs", pa.list_(_arrow_type(arrays.inputs.dtype), seq_len)),
        ("labels", pa.list_(_arrow_type(arrays.labels.dtype), seq_len)),
        *((key, _arrow_type(column.dtype)) for key, column in arrays.columns.items())])


def _to_table(batch: ExampleBatch, schema: pa.Schema) -> pa.Table:
    tokens = lambda values, kind: fixed_size_list(values, kind.value_type)
    columns = {
        "example_id": batch.example_id, "set": pa.array(np.full(len(batch), batch.set)),
        "puzzle_index": batch.puzzle_index, "group_index": batch.group_index,
        "puzzle_identifier": batch.puzzle_identifiers,
        "inputs": tokens(batch.inputs, schema.field("inputs").type),
        "labels": tokens(batch.labels, schema.field("labels").type), **batch.columns}
    return pa.Table.from_arrays([pa.array(columns[key], type=schema.field(key).type) for key in schema.names],
                                schema=schema)


def write_parquet_split(uri: str, split: str, sets: dict[str, PuzzleArrays], meta: DatasetMetadata,
                         shard_bytes: int, published: list[str]) -> SplitInfo:
    parts: list[PartInfo] = []
    infos: dict[str, SetInfo] = {}
    for set_name, arrays in sets.items():
        infos[set_name] = SetInfo(
            examples=arrays.inputs.shape[0], puzzles=arrays.puzzle_identifiers.shape[0],
            groups=arrays.group_indices.shape[0] - 1, columns=list(arrays.columns),
            dtypes={**{key: getattr(arrays, key).dtype.str for key in ARRAY_FIELDS},
                    **{key: column.dtype.str for key, column in arrays.columns.items()}})
        schema = _part_schema(arrays)
        group_rows = rows_per(ROW_GROUP_BYTES, arrays)
        for start, stop in ranges(arrays.inputs.shape[0], rows_per(shard_bytes, arrays)):
            part = PartInfo(file=f"part-{len(parts):05d}.parquet", set=set_name, start=start, stop=stop)
            target = storage.join(uri, split, part.file)
            storage.write_parquet_atomic(target, (_to_table(slice_examples(arrays, set_name, low, high), schema)
                                                  for low, high in ranges(stop, group_rows, start=start)), schema)
            published.append(target)
            parts.append(part)
    return SplitInfo(metadata=meta, sets=infos, parts=parts)
