"""Small datasets, run configs and the in-process reference evaluation for the cluster tests
(checkpoints come from tests.factories)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hrm.checkpoint.loading import load_checkpoint
from hrm.data.reader import open_dataset
from hrm.data.schema import DatasetMetadata, PuzzleArrays
from hrm.data.writer import write_dataset
from hrm.eval.metrics import StatsTable
from hrm.eval.shard import build_engine, evaluate_examples

from cluster.actor import Evaluator
from cluster.config import RunConfig
from cluster.driver import execute
from cluster.plan import PreparedRun, prepare
from cluster.progress import RunProgress
from cluster.results.layout import commit_unit

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
        ckpt = load_checkpoint(ref.uri, ref.config_uri, config.cluster.checkpoint_cache_dir)
        engine = build_engine(ckpt, meta, config.dataset.uri, dtype=config.eval.dtype,
                              batch_size=config.eval.batch_size, compile=config.eval.compile)
        stats, tables = StatsTable(), []
        for set_name in prepared.sets:
            done = evaluate_examples(engine, dataset.examples(config.dataset.split, set_name),
                                     protocol=config.eval.protocol, steps=config.eval.steps,
                                     min_steps=config.eval.min_steps)
            stats.merge(done.stats)
            tables.append(done.predictions)
        out[ref.name] = stats, pa.concat_tables(tables)
    return out


def run_in_process(config: RunConfig) -> PreparedRun:
    """A completed run without Ray: every unit evaluated by the run's own Evaluator in this
    process and committed, then the real driver finds nothing left to schedule and aggregates
    metrics, leaderboard and manifest."""
    prepared = prepare(config)
    actor = Evaluator(config, prepared.run)
    refs = {ref.name: ref for ref in prepared.checkpoints}
    for unit in prepared.units:
        commit_unit(prepared.run, actor(unit, refs[unit.checkpoint]))
    execute(prepared, RunProgress(stream=io.StringIO()))
    return prepared
