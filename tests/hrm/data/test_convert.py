import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm import storage
from hrm.data.reader import open_dataset

from jobs.cli import main

from tests.factories import CONFORMANCE

CONFORMANCE_DATA = sorted(CONFORMANCE.glob("*/data"))
needs_conformance = pytest.mark.skipif(not CONFORMANCE_DATA, reason=f"no conformance datasets under {CONFORMANCE}")


def convert(*args: str) -> int:
    return main(["convert", "reference", *map(str, args)])


def same_files(left: str, right: str) -> None:
    """Both locations hold the same file names with the same bytes."""
    names = storage.list_files(left)
    assert names == storage.list_files(right)
    for name in names:
        assert storage.read_bytes(storage.join(left, name)) == storage.read_bytes(storage.join(right, name)), name


@needs_conformance
@pytest.mark.parametrize("source", CONFORMANCE_DATA, ids=lambda p: p.parent.name)
def test_conformance_datasets_go_to_parquet_and_back_byte_identical(source: Path, tmp_path):
    assert convert(source, tmp_path / "pq", "--shard-mb", "0.05") == 0
    assert open_dataset(tmp_path / "pq").format == "parquet"
    assert convert(tmp_path / "pq", tmp_path / "back") == 0
    same_files(str(source), str(tmp_path / "back"))


@needs_conformance
@pytest.mark.s3
@pytest.mark.parametrize("source", CONFORMANCE_DATA, ids=lambda p: p.parent.name)
def test_conformance_datasets_round_trip_through_the_loopback_s3_server(source: Path, s3_bucket, tmp_path):
    assert convert(source, f"{s3_bucket}/pq") == 0
    assert convert(f"{s3_bucket}/pq", f"{s3_bucket}/back", "--to", "reference") == 0
    same_files(str(source), f"{s3_bucket}/back")
    assert convert(f"{s3_bucket}/back", tmp_path / "pq") == 0  # reference layout read by byte ranges
    local, remote = open_dataset(tmp_path / "pq"), open_dataset(f"{s3_bucket}/pq")
    assert np.array_equal(local.examples("train", "all").inputs, remote.examples("train", "all").inputs)


@needs_conformance
def test_the_summary_is_printed_and_written_into_dataset_json(tmp_path, capsys):
    source = CONFORMANCE / "trm-arc-tiny" / "data"
    assert main(["convert", "reference", str(source), str(tmp_path / "pq"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 45 + 351 and printed["puzzles"] == 36 + 90 and printed["groups"] == 14
    assert printed["identifiers"] == 91 and printed["vocab_size"] == 12 and printed["seq_len"] == 900
    assert printed["input_hash"] == open_dataset(source).content_hash() and printed["seconds"] > 0
    stored = json.loads((tmp_path / "pq" / "dataset.json").read_text())["summary"]
    assert {k: v for k, v in stored.items() if k != "write_seconds"} == {
        k: v for k, v in printed.items() if k != "seconds"}


def test_help_explains_layouts_and_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "reference", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "byte-identical" in text and "--to {parquet,reference}" in text and "s3://" in text


# ------------------------------------------------------------ bad input: error names file and key, exit 2,
# nothing published


@pytest.fixture
def reference(tmp_path) -> Path:
    """A small valid reference dataset to damage (test split, one set 'all', 6 puzzles, vocab 5)."""
    root = tmp_path / "ref"
    (root / "test").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.integers(0, 5, (12, 4)).astype(np.uint8),
              "labels": rng.integers(0, 5, (12, 4)).astype(np.uint8),
              "puzzle_identifiers": np.arange(6, dtype=np.int32) % 3,
              "puzzle_indices": np.arange(0, 13, 2, dtype=np.int32),
              "group_indices": np.array([0, 3, 6], np.int32)}
    for key, value in arrays.items():
        np.save(root / "test" / f"all__{key}.npy", value)
    meta = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=5, seq_len=4,
                num_puzzle_identifiers=3, total_groups=2, mean_puzzle_examples=2.0, sets=["all"])
    (root / "test" / "dataset.json").write_text(json.dumps(meta))
    (root / "identifiers.json").write_text(json.dumps(["<blank>", "a", "b"]))
    return root


def resave(root: Path, key: str, change) -> None:
    path = root / "test" / f"all__{key}.npy"
    np.save(path, change(np.load(path)))


def edit_meta(root: Path, change) -> None:
    meta = json.loads((root / "test" / "dataset.json").read_text())
    change(meta)
    (root / "test" / "dataset.json").write_text(json.dumps(meta))


def set_item(index, value):
    def change(array):
        array[index] = value
        return array
    return change


BAD_INPUTS = {
    "missing file": (lambda r: (r / "test" / "all__labels.npy").unlink(),
                     r"test/all__labels.npy: not found \(set 'all' is listed under 'sets'"),
    "ragged labels": (lambda r: resave(r, "labels", lambda a: a[:, :3]),
                      r"test/all__labels.npy: shape \(12, 3\) differs from inputs \(12, 4\)"),
    "object array": (lambda r: np.save(r / "test" / "all__inputs.npy", np.array([[1], [1, 2]], dtype=object)),
                     r"test/all__inputs.npy: holds Python objects \(a ragged array\?\)"),
    "seq_len disagrees": (lambda r: edit_meta(r, lambda m: m.update(seq_len=5)),
                          r"test/all__inputs.npy: rows hold 4 tokens but seq_len is 5 in dataset.json"),
    "token out of vocab": (lambda r: resave(r, "inputs", set_item((7, 1), 5)),
                           r"test/all__inputs.npy: example 7 position 1 holds token 5, outside 0..4 \(vocab_size"),
    "vocab disagrees": (lambda r: edit_meta(r, lambda m: m.update(vocab_size=3)),
                        r"test/all__inputs.npy: example \d+ position \d+ holds token \d, outside 0..2 \(vocab_size"),
    "label out of vocab": (lambda r: resave(r, "labels", set_item((11, 3), 9)),
                           r"test/all__labels.npy: example 11 position 3 holds token 9"),
    "identifier out of range": (lambda r: resave(r, "puzzle_identifiers", set_item(4, 3)),
                                r"test/all__puzzle_identifiers.npy: puzzle 4 has identifier 3, outside 0..2 "
                                r"\(num_puzzle_identifiers"),
    "offsets decrease": (lambda r: resave(r, "puzzle_indices", set_item(3, 1)),
                         r"test/all__puzzle_indices.npy: offsets decrease at index 3 \(4 then 1\)"),
    "offsets end wrong": (lambda r: resave(r, "group_indices", set_item(2, 5)),
                          r"test/all__group_indices.npy: last offset is 5 but there are 6 puzzles"),
    "offsets count wrong": (lambda r: resave(r, "puzzle_indices", lambda a: a[:-1]),
                            r"test/all__puzzle_indices.npy: 6 offsets for 6 puzzles"),
    "truncated file": (lambda r: (r / "test" / "all__inputs.npy").write_bytes(
        (r / "test" / "all__inputs.npy").read_bytes()[:-5]), r"test/all__inputs.npy: 171 bytes but its header promises 176"),
    "missing metadata key": (lambda r: edit_meta(r, lambda m: m.pop("vocab_size")),
                             r"test/dataset.json: vocab_size: Field required"),
    "metadata not json": (lambda r: (r / "test" / "dataset.json").write_text("{'pad_id': 0}"),
                          r"test/dataset.json: not valid JSON: line 1"),
    "set without files": (lambda r: edit_meta(r, lambda m: m.update(sets=["all", "extra"])),
                          r"test/extra__inputs.npy: not found"),
    "identifiers not a list": (lambda r: (r / "identifiers.json").write_text('{"0": "a"}'),
                               r"identifiers.json: expected a JSON list of identifier strings"),
}


@pytest.mark.parametrize("damage, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_reference_input_names_file_and_key_and_publishes_nothing(reference, tmp_path, capsys, damage, message):
    assert convert(reference, tmp_path / "ok") == 0  # the undamaged fixture converts
    damage(reference)
    assert convert(reference, tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("hrm-eval convert: error: ") and "\n" not in error
    assert re.search(message, error), error
    assert storage.list_files(str(tmp_path / "out")) == []


def test_a_bad_token_in_the_last_part_stops_the_conversion_before_any_part_is_written(reference, tmp_path):
    resave(reference, "inputs", set_item((11, 0), 7))
    assert convert(reference, tmp_path / "out", "--shard-mb", "0.00001") == 2
    assert storage.list_files(str(tmp_path / "out")) == []


def test_an_unfinished_parquet_dataset_is_refused(reference, tmp_path, capsys):
    assert convert(reference, tmp_path / "pq") == 0
    (tmp_path / "pq" / "dataset.json").unlink()
    assert convert(tmp_path / "pq", tmp_path / "out") == 2
    assert "pq/dataset.json: missing, so the dataset is incomplete" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_not_overwritten(reference, tmp_path, capsys):
    shutil.copytree(reference, tmp_path / "copy")
    assert convert(tmp_path / "copy", tmp_path / "pq") == 0
    before = (tmp_path / "pq" / "dataset.json").read_bytes()
    assert convert(tmp_path / "copy", tmp_path / "pq") == 2
    assert "pq/dataset.json: a dataset already exists there" in capsys.readouterr().err
    assert (tmp_path / "pq" / "dataset.json").read_bytes() == before


@pytest.mark.s3
def test_a_missing_bucket_is_named(s3_endpoint, tmp_path, capsys):
    assert convert("s3://no-such-bucket/data", tmp_path / "out") == 2
    assert "s3://no-such-bucket/data: bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.s3
def test_bad_input_on_s3_names_the_object_and_publishes_nothing(reference, s3_bucket, capsys):
    resave(reference, "inputs", set_item((2, 2), 6))
    for path in sorted(p for p in reference.rglob("*") if p.is_file()):
        storage.write_bytes_atomic(storage.join(s3_bucket, "ref", str(path.relative_to(reference))), path.read_bytes())
    assert convert(f"{s3_bucket}/ref", f"{s3_bucket}/out") == 2
    assert (f"{s3_bucket}/ref/test/all__inputs.npy: example 2 position 2 holds token 6"
            in capsys.readouterr().err)
    assert storage.list_files(f"{s3_bucket}/out") == []
