"""The one evaluation recipe (hrm.eval.shard): what its prediction tables hold."""

import numpy as np
import pytest

from hrm.checkpoint.loading import load_checkpoint
from hrm.data.arrow import column_matrix
from hrm.data.reader import open_dataset
from hrm.eval.shard import build_engine, evaluate_examples
from hrm.puzzles.tta import tta_transform

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset
from tests.factories import make_checkpoint


@pytest.fixture(scope="module")
def engine_and_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    data = make_dataset(root / "data", {"all": 12})
    make_checkpoint(root / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    dataset = open_dataset(data)
    engine = build_engine(load_checkpoint(root / "run"), dataset.metadata("test"), data, batch_size=4)
    return engine, dataset.examples("test", "all")


def test_predictions_hold_no_inputs_or_labels_unless_samples_are_logged(engine_and_batch):
    engine, batch = engine_and_batch
    assert not {"inputs", "labels"} & set(evaluate_examples(engine, batch).predictions.column_names)


def test_logged_samples_are_the_datasets_rows_even_when_the_model_saw_a_transformed_copy(engine_and_batch):
    engine, batch = engine_and_batch
    transform = tta_transform("maze", 4, 1, 0)  # a 4x4 board: seq_len 16
    assert not np.array_equal(transform.apply(batch.inputs), batch.inputs)
    table = evaluate_examples(engine, batch, transform=transform, log_samples=True).predictions
    np.testing.assert_array_equal(column_matrix(table, "inputs"), batch.inputs)
    np.testing.assert_array_equal(column_matrix(table, "labels"), batch.labels)
    assert table["puzzle_identifier"].to_pylist() == batch.puzzle_identifiers.tolist()
