"""The one recipe for evaluating a checkpoint on a range of examples: the checkpoint's model
built for the dataset and held by an engine (`build_engine`, once per checkpoint), then per
range of examples the engine's outputs, their exact statistics and their prediction table
(`evaluate_examples`).

`hrm-eval evaluate` runs it over chunks of a split in one process; the Ray actor runs it
over the units the driver sends; the tests' in-process reference and the trainer's
held-out check run it too, so all of them evaluate in exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from hrm.checkpoint.loading import Checkpoint, build_checked_model
from hrm.data.schema import DatasetMetadata, ExampleBatch
from hrm.eval.engine import CompileMode, Engine, EngineResult, Protocol
from hrm.eval.metrics import StatsTable
from hrm.eval.predictions import prediction_table
from hrm.puzzles.grids import GridTransform
from hrm.puzzles.tokenizers import Tokenizer


@dataclass
class Evaluated:
    """One range of examples, evaluated: what a unit commits and what a report reads."""

    result: EngineResult
    stats: StatsTable  # exact and mergeable, grouped by (set, tier)
    predictions: pa.Table  # one row per example (hrm.eval.predictions)


def build_engine(ckpt: Checkpoint, meta: DatasetMetadata, dataset: str, *, dtype: str | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 256, streams: int = 1,
                 compile: bool = False, compile_mode: CompileMode | None = None) -> Engine:
    """The checkpoint's model, checked against and built for the dataset split `meta` (of the
    dataset named `dataset`, for messages), on an engine with these settings."""
    model = build_checked_model(ckpt, meta.sizes, dataset, forward_dtype=dtype)
    return Engine(model, ckpt.spec.loss_type, ignore_label_id=meta.ignore_label_id, device=device,
                  batch_size=batch_size, streams=streams, compile=compile, compile_mode=compile_mode)


def evaluate_examples(engine: Engine, batch: ExampleBatch, *, protocol: Protocol = "fixed", steps: int | None = None,
                      min_steps: int = 1, transform: GridTransform | None = None,
                      log_samples: bool = False, identifiers: np.ndarray | None = None,
                      tokenizer: Tokenizer | None = None) -> Evaluated:
    """Run the engine over `batch`. With a test-time-augmentation `transform`, the model sees
    the transformed inputs and labels and the predictions are stored mapped back to the
    original frame (votes then compare copies position by position); the scores need no
    change, since the transform is a bijection of positions and of label tokens.
    `log_samples`: the prediction table also holds each example's inputs and labels, as the
    dataset stores them (the original frame, like the stored predictions). `identifiers`: the
    puzzle identifiers the model is given instead of the batch's (an ablation,
    hrm.eval.ablation); the stored rows keep the dataset's, so they line up with the plain ones.
    `tokenizer`: a text dataset's (hrm.puzzles.tokenizers.text_tokenizer); each row then also
    stores its prediction decoded to text, `decoded`, for the checkers and the report."""
    inputs, labels = batch.inputs, batch.labels
    if transform is not None:
        inputs, labels = transform.apply(inputs), transform.apply(labels)
    given = batch.puzzle_identifiers if identifiers is None else identifiers
    result = engine.run(inputs, labels, given, protocol=protocol, steps=steps, min_steps=min_steps)
    if transform is not None:
        result.pred = transform.invert(result.pred)
    stats = StatsTable().update(set=batch.set, tier=batch.columns.get("tier"), **result.per_example())
    table = prediction_table(result, set_name=batch.set, example_id=batch.example_id,
                             puzzle_index=batch.puzzle_index, puzzle_identifier=batch.puzzle_identifiers,
                             columns={**batch.columns, **({"decoded": tokenizer.decode_rows(result.pred)}
                                                          if tokenizer is not None else {})},
                             samples=(batch.inputs, batch.labels) if log_samples else None)
    return Evaluated(result, stats, table)
