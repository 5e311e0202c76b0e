"""Small datasets and run configs for the cluster tests (checkpoints come from tests.factories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import RunConfig
from hrm.dataset import DatasetMetadata, PuzzleArrays, write_dataset
from tests.factories import random_examples

VOCAB, SEQ_LEN, NUM_IDS = 11, 16, 3


def make_dataset(uri: str | Path, sets: dict[str, int] | None = None, *, format: str = "parquet", seed: int = 0) -> str:
    """A test split with one example per puzzle, ignored label positions and a `tier` column
    (so metrics group by set × tier)."""
    sets = sets or {"easy": 40, "hard": 24}
    arrays = {}
    for i, (name, count) in enumerate(sets.items()):
        inputs, labels, ids = random_examples(count, vocab_size=VOCAB, seq_len=SEQ_LEN, num_ids=NUM_IDS, seed=seed + i)
        offsets = np.arange(count + 1, dtype=np.int32)
        arrays[name] = PuzzleArrays(inputs, labels, ids, offsets, offsets.copy(),
                                    columns={"tier": (np.arange(count) % 3).astype(np.int8)})
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB, seq_len=SEQ_LEN,
                           num_puzzle_identifiers=NUM_IDS, total_groups=sum(sets.values()),
                           mean_puzzle_examples=1.0, sets=list(sets))
    write_dataset(uri, {"test": arrays}, {"test": meta}, ["<blank>", "a", "b"], format=format)
    return str(uri)


def run_config(checkpoints: list[dict[str, Any]], data: str, output: str, **sections: Any) -> RunConfig:
    doc: dict[str, Any] = {
        "checkpoints": checkpoints,
        "dataset": {"uri": data},
        "eval": {"batch_size": 8},
        "cluster": {"shard_size": 16, "torch_threads": 1},
        "output": {"uri": output},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return RunConfig.model_validate(doc)
