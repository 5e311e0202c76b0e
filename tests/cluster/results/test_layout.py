"""Reading a run's stored predictions part by part (cluster.results.layout): the order of the
parts, what is refused, and reading only some columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from hrm.data.schema import Shard
from hrm.errors import InputError

from cluster.results.layout import (
    iter_predictions,
    prediction_key,
    prediction_parts,
    read_predictions,
    write_predictions,
)


def part(set_name: str, start: int, stop: int) -> pa.Table:
    """A stand-in for an actor's predictions of one shard: its keys and one value column."""
    ids = np.arange(start, stop)
    return pa.table({"set": pa.array([set_name] * len(ids), pa.string()), "example_id": pa.array(ids),
                     "pred_sum": pa.array(ids * 10)})


def store(run: str, checkpoint: str, shards: list[tuple[str, int, int]]) -> None:
    for set_name, start, stop in shards:
        write_predictions(run, prediction_key(checkpoint, Shard("test", set_name, start, stop)),
                          part(set_name, start, stop))


def test_parts_come_in_the_order_of_their_set_names_and_first_examples_not_of_their_file_names(tmp_path):
    run = str(tmp_path)
    # "a~" is stored as part-a--…, which sorts before part-a_-…, though "a_" < "a~".
    store(run, "ckpt", [("a~", 0, 3), ("a_", 4, 6), ("a_", 0, 4), ("b", 0, 2)])

    assert prediction_parts(run, "ckpt") == ["part-a_-000000000.parquet", "part-a_-000000004.parquet",
                                             "part-a--000000000.parquet", "part-b-000000000.parquet"]
    keys = [key for t in iter_predictions(run, "ckpt") for key in zip(t["set"].to_pylist(), t["example_id"].to_pylist())]
    assert keys == sorted(keys) and len(keys) == 11


def test_read_predictions_is_every_part_in_order_and_reads_only_the_columns_asked_for(tmp_path):
    run = str(tmp_path)
    store(run, "ckpt", [("s", 5, 9), ("s", 0, 5)])

    table = read_predictions(run, "ckpt", columns=["example_id", "pred_sum"])
    assert table.column_names == ["example_id", "pred_sum"]
    assert table["example_id"].to_pylist() == list(range(9))
    assert read_predictions(run, "ckpt").equals(part("s", 0, 9))


def test_two_parts_holding_the_same_examples_are_refused(tmp_path):
    run = str(tmp_path)
    store(run, "ckpt", [("s", 0, 5)])
    write_predictions(run, prediction_key("ckpt", Shard("test", "s", 3, 8)), part("s", 2, 8))
    with pytest.raises(InputError, match=r"parts part-s-000000000.parquet and part-s-000000003.parquet hold the "
                                         r"same examples of set 's'"):
        prediction_parts(run, "ckpt")


def test_a_part_holding_two_sets_is_refused(tmp_path):
    run = str(tmp_path)
    write_predictions(run, prediction_key("ckpt", Shard("test", "s", 0, 4)),
                      pa.concat_tables([part("s", 0, 2), part("t", 2, 4)]))
    with pytest.raises(InputError, match=r"part-s-000000000.parquet: holds examples of sets 's' to 't'"):
        prediction_parts(run, "ckpt")


def test_a_checkpoint_without_predictions_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match=r"no predictions stored for checkpoint 'ckpt' copy 2"):
        prediction_parts(str(tmp_path), "ckpt", copy=2)
