"""Small datasets, run configs and the in-process reference evaluation for the cluster tests
(checkpoints come from tests.factories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cluster.config import RunConfig
from cluster.plan import local_files
from hrm.checkpoint import build_checked_model, load_checkpoint
from hrm.dataset import DatasetMetadata, PuzzleArrays, open_dataset, write_dataset
from hrm.engine import Engine
from hrm.metrics import StatsTable
from hrm.predictions import prediction_table
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


def evaluate_in_process(prepared) -> dict[str, tuple[StatsTable, pa.Table]]:
    """The reference for every distributed run: per checkpoint, one engine over each whole set
    in this process (no units, no Ray), with the run's eval settings."""
    config = prepared.config
    dataset = open_dataset(config.dataset.uri)
    meta = dataset.metadata(config.dataset.split)
    out = {}
    for ref in prepared.checkpoints:
        weights, arch_config = local_files(ref, config.cluster.checkpoint_cache_dir)
        ckpt = load_checkpoint(weights, arch_config)
        model = build_checked_model(ckpt, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers,
                                    forward_dtype=config.eval.dtype)
        engine = Engine(model, ckpt.spec.loss_type, ignore_label_id=meta.ignore_label_id,
                        batch_size=config.eval.batch_size, compile=config.eval.compile)
        stats, tables = StatsTable(), []
        for set_name in prepared.sets:
            batch = dataset.examples(config.dataset.split, set_name)
            result = engine.run(batch.inputs, batch.labels, batch.puzzle_identifiers, protocol=config.eval.protocol,
                                steps=config.eval.steps, min_steps=config.eval.min_steps)
            stats.update(set=set_name, tier=batch.columns.get("tier"), **result.per_example())
            tables.append(prediction_table(result, set_name=set_name, example_id=batch.example_id,
                                           puzzle_index=batch.puzzle_index,
                                           puzzle_identifier=batch.puzzle_identifiers, columns=batch.columns))
        out[ref.name] = stats, pa.concat_tables(tables)
    return out
