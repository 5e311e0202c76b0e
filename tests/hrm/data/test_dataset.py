import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hrm import storage
from hrm.data import parquet
from hrm.data.arrays import slice_examples
from hrm.data.reader import open_dataset
from hrm.data.schema import ARRAY_FIELDS, DatasetMetadata, PuzzleArrays, Shard
from hrm.data.writer import write_dataset
from hrm.errors import InputError

from tests.cluster_factories import make_dataset
from tests.factories import CONFORMANCE

CONFORMANCE_DATA = sorted(CONFORMANCE.glob("*/data"))
needs_conformance = pytest.mark.skipif(not CONFORMANCE_DATA, reason=f"no conformance datasets under {CONFORMANCE}")


def make_set(puzzles_per_group: list[int], examples_per_puzzle: int = 3, seq_len: int = 6, vocab: int = 7,
             dtype: str = "uint8", seed: int = 0, **columns: np.ndarray) -> PuzzleArrays:
    """A valid random set: groups of puzzles, each puzzle with a varying number of examples."""
    rng = np.random.default_rng(seed)
    puzzles = sum(puzzles_per_group)
    sizes = rng.integers(1, examples_per_puzzle + 1, size=puzzles)
    examples = int(sizes.sum())
    return PuzzleArrays(
        inputs=rng.integers(0, vocab, size=(examples, seq_len)).astype(dtype),
        labels=rng.integers(0, vocab, size=(examples, seq_len)).astype(dtype),
        puzzle_identifiers=rng.integers(1, 5, size=puzzles).astype(np.int32),
        puzzle_indices=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
        group_indices=np.concatenate([[0], np.cumsum(puzzles_per_group)]).astype(np.int32),
        columns={key: value[:examples] for key, value in columns.items()})


def make_meta(arrays: dict[str, PuzzleArrays], seq_len: int = 6, vocab: int = 7) -> DatasetMetadata:
    return DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab, seq_len=seq_len,
                           num_puzzle_identifiers=5, total_groups=sum(len(a.group_indices) - 1 for a in arrays.values()),
                           mean_puzzle_examples=1.0, sets=list(arrays))


def write(uri, splits: dict[str, dict[str, PuzzleArrays]], **kwargs) -> None:
    write_dataset(uri, splits, {split: make_meta(sets) for split, sets in splits.items()}, ["<blank>", "a", "b", "c", "d"],
                  **kwargs)


def assert_same_arrays(got: PuzzleArrays, want: PuzzleArrays) -> None:
    for key in ARRAY_FIELDS:
        a, b = getattr(got, key), getattr(want, key)
        assert a.dtype == b.dtype and np.array_equal(a, b), key
    assert sorted(got.columns) == sorted(want.columns)
    for key in want.columns:
        assert got.columns[key].dtype == want.columns[key].dtype and np.array_equal(got.columns[key], want.columns[key])


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ------------------------------------------------------------ the reference layout


@needs_conformance
@pytest.mark.parametrize("root", CONFORMANCE_DATA, ids=lambda p: p.parent.name)
def test_reference_builder_output_reads_exactly_like_numpy(root: Path):
    dataset = open_dataset(root)
    assert dataset.format == "reference" and dataset.splits == ["test", "train"]
    for split in dataset.splits:
        meta = json.loads((root / split / "dataset.json").read_text())
        assert dataset.metadata(split).model_dump(mode="json") == meta
        files = {key: np.load(root / split / f"all__{key}.npy") for key in ARRAY_FIELDS}
        total = dataset.num_examples(split, "all")
        assert total == len(files["inputs"])
        batch = dataset.examples(split, "all", 3, total - 2)
        puzzle = np.searchsorted(files["puzzle_indices"], np.arange(3, total - 2), side="right") - 1
        assert np.array_equal(batch.example_id, np.arange(3, total - 2))
        assert np.array_equal(batch.inputs, files["inputs"][3:total - 2])
        assert np.array_equal(batch.labels, files["labels"][3:total - 2])
        assert np.array_equal(batch.puzzle_index, puzzle)
        assert np.array_equal(batch.puzzle_identifiers, files["puzzle_identifiers"][puzzle])
        assert np.all(files["group_indices"][batch.group_index] <= puzzle)
        assert np.all(puzzle < files["group_indices"][batch.group_index + 1])
    assert dataset.identifiers == json.loads((root / "identifiers.json").read_text())
    assert (dataset.test_puzzles is None) == (not (root / "test_puzzles.json").exists())


@needs_conformance
def test_a_local_reference_set_is_memory_mapped_not_loaded():
    arrays = open_dataset(CONFORMANCE_DATA[0]).read_set("train", "all")
    assert isinstance(arrays.inputs, np.memmap) and isinstance(arrays.labels, np.memmap)


def test_examples_find_each_examples_puzzle_and_group_even_past_an_empty_puzzle(tmp_path):
    arrays = PuzzleArrays(
        inputs=np.arange(30, dtype=np.uint8).reshape(5, 6) % 7, labels=np.zeros((5, 6), np.uint8),
        puzzle_identifiers=np.array([1, 2, 3, 4], np.int32),
        puzzle_indices=np.array([0, 2, 2, 4, 5], np.int32),  # puzzle 1 is empty
        group_indices=np.array([0, 2, 4], np.int32))
    write(tmp_path / "ref", {"test": {"all": arrays}}, format="reference")
    batch = open_dataset(tmp_path / "ref").examples("test", "all")
    assert batch.puzzle_index.tolist() == [0, 0, 2, 2, 3]
    assert batch.puzzle_identifiers.tolist() == [1, 1, 3, 3, 4]
    assert batch.group_index.tolist() == [0, 0, 1, 1, 1]


# ------------------------------------------------------------ our Parquet layout


def test_parquet_round_trip_keeps_arrays_dtypes_and_extra_columns(tmp_path):
    names = np.array([f"p{i}" for i in range(100)])
    sets = {"hard": make_set([2, 3, 1], dtype="int64", seed=1, tier=np.arange(100) % 3, name=names),
            "easy": make_set([4], seed=2, tier=np.arange(100) % 3, name=names)}
    write(tmp_path / "pq", {"test": sets}, shard_bytes=200)
    dataset = open_dataset(tmp_path / "pq")
    assert dataset.format == "parquet" and dataset.sets("test") == ["hard", "easy"]
    for name, arrays in sets.items():
        got = dataset.read_set("test", name)
        assert isinstance(got.inputs, np.memmap)  # spooled to local disk, not held in memory
        assert_same_arrays(got, arrays)
    write_dataset(tmp_path / "ref", {"test": {name: dataset.read_set("test", name) for name in sets}},
                  {"test": dataset.metadata("test")}, dataset.identifiers, format="reference")
    for name, arrays in sets.items():
        for key in ARRAY_FIELDS:
            assert (tmp_path / "ref" / "test" / f"{name}__{key}.npy").read_bytes() == npy_bytes(getattr(arrays, key))
        assert np.array_equal(np.load(tmp_path / "ref" / "test" / f"{name}__name.npy"), arrays.columns["name"])


def test_parts_follow_the_target_size_and_default_shards_follow_parts(tmp_path):
    arrays = make_set([5] * 20, seed=3)  # rows of 12 bytes
    write(tmp_path / "pq", {"test": {"all": arrays}}, shard_bytes=12 * 40)
    dataset = open_dataset(tmp_path / "pq")
    parts = sorted((tmp_path / "pq" / "test").iterdir())
    total = len(arrays.inputs)
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(-(-total // 40))]
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [len(range(a, min(a + 40, total)))
                                                                    for a in range(0, total, 40)]
    assert dataset.shards("test") == [Shard("test", "all", a, min(a + 40, total)) for a in range(0, total, 40)]


def test_a_range_across_parts_reads_the_same_examples_as_the_source(tmp_path):
    arrays = make_set([3] * 30, seed=4, tier=np.arange(1000))
    write(tmp_path / "pq", {"test": {"all": arrays}}, shard_bytes=12 * 25)
    batch = open_dataset(tmp_path / "pq").examples("test", "all", 17, 83)
    want = slice_examples(arrays, "all", 17, 83)
    for key in ("example_id", "inputs", "labels", "puzzle_identifiers", "puzzle_index", "group_index"):
        assert np.array_equal(getattr(batch, key), getattr(want, key)), key
    assert np.array_equal(batch.columns["tier"], np.arange(17, 83))


def test_ranges_read_in_order_decode_only_their_row_groups_and_each_once(tmp_path, monkeypatch):
    arrays = make_set([50] * 40, seed=5)
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 12 * 100)  # row groups of 100 examples
    write(tmp_path / "pq", {"test": {"all": arrays}})
    decoded = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, index, *a, **k: decoded.append(index) or original(self, index, *a, **k))
    dataset = open_dataset(tmp_path / "pq")
    assert len(dataset.examples("test", "all", 250, 420)) == 170
    assert decoded == [2, 3, 4]
    assert np.array_equal(dataset.examples("test", "all", 420, 650).inputs, arrays.inputs[420:650])
    assert decoded == [2, 3, 4, 5, 6]


def test_shards_with_a_target_cover_every_example_once_and_are_json_able(tmp_path):
    sets = {"a": make_set([4] * 10, seed=6), "b": make_set([2] * 7, seed=7)}
    write(tmp_path / "pq", {"test": sets}, shard_bytes=12 * 30)
    dataset = open_dataset(tmp_path / "pq")
    shards = dataset.shards("test", target_examples=7)
    for name, arrays in sets.items():
        covered = np.concatenate([np.arange(s.start, s.stop) for s in shards if s.set == name])
        assert np.array_equal(covered, np.arange(len(arrays.inputs)))
    assert all(0 < s.stop - s.start <= 7 for s in shards)
    assert [Shard(**json.loads(json.dumps(dataclasses.asdict(s)))) for s in shards] == shards
    assert len(set(shards)) == len(shards)
    assert dataset.shards("test", sets=["b"]) == [s for s in dataset.shards("test") if s.set == "b"]


def test_a_reference_dataset_shards_where_its_parquet_conversion_has_parts(tmp_path):
    arrays = make_set([5] * 30, seed=8)
    splits = {"test": {"all": arrays}}
    write(tmp_path / "ref", splits, format="reference")
    write(tmp_path / "pq", splits)
    assert open_dataset(tmp_path / "ref").shards("test") == open_dataset(tmp_path / "pq").shards("test")


def test_dataset_json_is_published_last(tmp_path, monkeypatch):
    published = []
    original = storage.atomic_output

    def recording(uri):
        published.append(uri)
        return original(uri)

    monkeypatch.setattr(storage, "atomic_output", recording)
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}, "train": {"all": make_set([3] * 5)}},
          extra_files={"test_puzzles.json": {"x": 1}})
    assert published[-1] == str(tmp_path / "pq" / "dataset.json")
    assert len(published) == 5  # two parts, identifiers.json, test_puzzles.json, then dataset.json


def test_a_failed_write_removes_everything_it_published(tmp_path, monkeypatch):
    original = storage.atomic_output

    def failing(uri):
        if uri.endswith("identifiers.json"):
            raise OSError("disk full")
        return original(uri)

    monkeypatch.setattr(storage, "atomic_output", failing)
    with pytest.raises(InputError, match="disk full"):  # a storage failure that no retry can help names the URI
        write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}})
    assert storage.list_files(str(tmp_path / "pq")) == []


def test_a_dataset_without_its_dataset_json_reads_as_incomplete(tmp_path):
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}})
    (tmp_path / "pq" / "dataset.json").unlink()
    with pytest.raises(InputError, match=r"pq/dataset.json: missing, so the dataset is incomplete"):
        open_dataset(tmp_path / "pq")


def test_the_writer_refuses_a_destination_that_holds_a_dataset(tmp_path):
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}})
    with pytest.raises(InputError, match=r"pq/dataset.json: a dataset already exists there"):
        write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}})


def test_content_hash_is_stable_and_changes_with_any_byte(tmp_path):
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 5)}})
    first = open_dataset(tmp_path / "pq").content_hash()
    assert open_dataset(tmp_path / "pq").content_hash() == first
    identifiers = tmp_path / "pq" / "identifiers.json"
    identifiers.write_text(identifiers.read_text().replace('"a"', '"A"'))
    assert open_dataset(tmp_path / "pq").content_hash() != first


def test_converting_the_same_data_again_gives_the_same_content_hash_so_runs_resume(tmp_path):
    sets = {"all": make_set([2] * 5, seed=3)}
    # two conversions take different times, which dataset.json's summary records
    write(tmp_path / "first", {"test": sets}, summary={"seconds": 1.25})
    write(tmp_path / "second", {"test": sets}, summary={"seconds": 2.5})
    first, second = open_dataset(tmp_path / "first"), open_dataset(tmp_path / "second")
    assert first.index.summary != second.index.summary
    assert first.content_hash() == second.content_hash()
    write(tmp_path / "other", {"test": {"all": make_set([2] * 5, seed=4)}})
    assert open_dataset(tmp_path / "other").content_hash() != first.content_hash()


def test_an_empty_set_beside_others_is_refused_saying_how_to_leave_it_out(tmp_path):
    dataset = open_dataset(make_dataset(tmp_path / "data", {"easy": 3, "empty": 0}))
    assert dataset.selected_sets("test", ["easy"], "dataset.sets") == ["easy"]
    with pytest.raises(InputError, match=r"set\(s\) empty hold no examples; choose the others with dataset.sets$"):
        dataset.selected_sets("test", None, "dataset.sets")


# ------------------------------------------------------------ on the loopback S3 server


@pytest.mark.s3
def test_both_layouts_round_trip_through_s3(tmp_path, s3_bucket):
    sets = {"all": make_set([3] * 12, dtype="int64", seed=9, tier=np.arange(1000) % 4)}
    write(f"{s3_bucket}/pq", {"test": sets}, shard_bytes=96 * 10)
    remote = open_dataset(f"{s3_bucket}/pq")
    assert len(remote.shards("test")) > 1
    got = remote.read_set("test", "all")
    assert_same_arrays(got, sets["all"])
    write_dataset(f"{s3_bucket}/ref", {"test": {"all": got}}, {"test": remote.metadata("test")},
                  remote.identifiers, format="reference")
    reference = open_dataset(f"{s3_bucket}/ref")
    assert reference.format == "reference"
    assert_same_arrays(reference.read_set("test", "all"), sets["all"])
    batch = reference.examples("test", "all", 5, 17)  # byte-range reads of the remote .npy
    assert np.array_equal(batch.inputs, sets["all"].inputs[5:17])
    write(tmp_path / "ref", {"test": sets}, format="reference")  # the same bytes locally hash the same
    assert reference.content_hash() == open_dataset(tmp_path / "ref").content_hash()


# ------------------------------------------------------------ bad input


def corrupt_parquet_index(root: Path, change) -> None:
    index = json.loads((root / "dataset.json").read_text())
    change(index)
    (root / "dataset.json").write_text(json.dumps(index))


@pytest.mark.parametrize("change, message", [
    (lambda i: i["splits"]["test"]["metadata"].update(seq_len=5),
     r"test/part-00000.parquet: column 'inputs' is fixed_size_list<.*>\[6\], expected .* seq_len=5 tokens"),
    (lambda i: i["splits"]["test"]["metadata"].update(vocab_size=2),
     r"test/part-00000.parquet column 'inputs': example \d+ position \d+ holds token \d, outside 0..1 \(vocab_size"),
    (lambda i: i["splits"]["test"]["metadata"].update(num_puzzle_identifiers=2),
     r"test/part-00000.parquet column 'puzzle_identifier': values must lie in 0..1 \(num_puzzle_identifiers"),
    (lambda i: i["splits"]["test"]["parts"][0].update(stop=3),
     r"dataset.json: splits.test: set 'all' has \d+ examples but its parts hold 3$"),
    (lambda i: i["splits"]["test"]["sets"]["all"].update(examples=4),
     r"dataset.json: splits.test: set 'all' has 4 examples but its parts hold \d+$"),
    (lambda i: i["splits"]["test"]["parts"][0].update(start=1),
     r"dataset.json: splits.test: part part-00000.parquet holds examples \[1, \d+\) of set 'all', but the set's "
     r"parts up to it end at 0: parts must cover each set in order, without gaps or overlaps"),
    (lambda i: i["splits"]["test"]["parts"][0].update(set="extra"),
     r"dataset.json: splits.test: part part-00000.parquet belongs to set 'extra', which 'sets' does not hold"),
    (lambda i: i["splits"]["test"]["metadata"].update(sets=["all", "extra"]),
     r"dataset.json: splits.test: 'sets' holds \['all'\] but 'metadata.sets' lists \['all', 'extra'\]"),
    (lambda i: i["splits"]["test"]["parts"][0].update(file="part-00009.parquet"),
     r"test/part-00009.parquet: not found, but listed in dataset.json"),
    (lambda i: i["splits"]["test"]["sets"]["all"].pop("examples"),
     r"dataset.json: splits.test.sets.all.examples: Field required"),
], ids=["seq_len", "vocab_size", "num_puzzle_identifiers", "parts short of the set", "set short of its parts",
        "gap before a part", "part of an unknown set", "set listed but not described", "missing part", "missing key"])
def test_a_damaged_parquet_dataset_names_the_file_and_key(tmp_path, change, message):
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 5, seed=11)}})
    corrupt_parquet_index(tmp_path / "pq", change)
    with pytest.raises(InputError, match=message):
        open_dataset(tmp_path / "pq").read_set("test", "all")


@pytest.mark.parametrize("damage, message", [
    (lambda a: setattr(a, "labels", a.labels[:, :5]), r"array 'labels': shape \(\d+, 5\) differs from inputs"),
    (lambda a: setattr(a, "inputs", a.inputs[:, :5]), r"array 'inputs': rows hold 5 tokens but seq_len is 6"),
    (lambda a: a.inputs.__setitem__((4, 2), 7), r"array 'inputs': example 4 position 2 holds token 7, outside 0..6"),
    (lambda a: a.puzzle_indices.__setitem__(2, 0), r"array 'puzzle_indices': offsets decrease at index 2"),
    (lambda a: a.group_indices.__setitem__(-1, 3), r"array 'group_indices': last offset is 3 but there are 10 puzzles"),
    (lambda a: a.puzzle_identifiers.__setitem__(1, 9), r"array 'puzzle_identifiers': puzzle 1 has identifier 9"),
    (lambda a: a.puzzle_indices.__setitem__(1, 0), r"array 'puzzle_indices': puzzle 0 has no examples"),
    (lambda a: a.columns.update(tier=np.arange(3)), r"array 'tier': column must be one plain value per example"),
], ids=["ragged labels", "seq_len", "token", "offsets order", "offsets end", "identifier", "empty puzzle", "column"])
def test_bad_arrays_are_refused_before_anything_is_written(tmp_path, damage, message):
    arrays = make_set([2] * 5, seed=12)
    damage(arrays)
    with pytest.raises(InputError, match=r"split 'test' set 'all' " + message):
        write(tmp_path / "out", {"test": {"all": arrays}})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("test_puzzles, problem", [
    ({"p": {"train": []}}, "puzzle 'p' has no 'test' list"),
    ({"p": {"test": [{"input": [[1]]}]}}, r"puzzle 'p' test\[0\] needs an 'input' and an 'output'"),
    ([1, 2], "expected a JSON object of puzzles"),
])
def test_a_malformed_test_puzzles_json_is_refused_naming_the_file_and_the_puzzle(tmp_path, test_puzzles, problem):
    write(tmp_path / "pq", {"test": {"all": make_set([2] * 3)}}, extra_files={"test_puzzles.json": test_puzzles})
    with pytest.raises(InputError, match=f"test_puzzles.json: {problem}"):
        _ = open_dataset(tmp_path / "pq").test_puzzles


def test_a_file_given_as_a_dataset_is_refused_saying_a_directory_is_expected(tmp_path):
    (tmp_path / "data.csv").write_text("source,question,answer,rating\n")
    with pytest.raises(InputError) as err:
        open_dataset(tmp_path / "data.csv")
    assert str(err.value) == (f"{tmp_path / 'data.csv'}: a file, not a dataset: give the directory that holds "
                              f"dataset.json (our layout) or <split>/dataset.json (reference layout)")


def test_a_reference_dataset_counts_every_top_level_file_it_holds(tmp_path):
    write(tmp_path / "ref", {"test": {"all": make_set([2] * 5)}}, format="reference")
    before = open_dataset(tmp_path / "ref").content_hash()
    (tmp_path / "ref" / "tokenizer.json").write_text('{"kind": "bytes"}')  # e.g. a text dataset's tokenizer
    dataset = open_dataset(tmp_path / "ref")
    assert "tokenizer.json" in dataset.files() and dataset.content_hash() != before
