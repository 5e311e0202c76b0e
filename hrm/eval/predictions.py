"""Per-example prediction tables: what an evaluation stores so that metrics, votes and
ensembles can be recomputed later without running a model.

One row per example: set, example_id (row index within its set), puzzle_index,
puzzle_identifier, pred (token ids), q_halt_logit, q_continue_logit, steps, valid/correct
token counts, exact, lm_loss and, in the fixed protocol, exact flags after every ACT step.
With samples logged (`hrm-eval evaluate --log-samples`, a run's `output.log_samples`), also the
example itself: its `inputs` and `labels` token ids as the dataset stores them, so a
prediction can be read against its puzzle without opening the dataset.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hrm.data.arrow import fixed_size_list
from hrm.eval.engine import EngineResult


def prediction_table(
    result: EngineResult,
    *,
    set_name: str,
    example_id: np.ndarray,
    puzzle_index: np.ndarray,
    puzzle_identifier: np.ndarray,
    columns: dict[str, np.ndarray] | None = None,
    samples: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    """An Arrow table of one engine result; `columns` carries dataset extras such as tier, and
    `samples` the examples' (inputs, labels), stored as int32 token lists like `pred` whatever
    the dataset's integer width, so every part of every run has the same schema."""
    n = len(result)
    data: dict[str, pa.Array] = {
        "set": pa.array([set_name] * n, pa.string()),
        "example_id": pa.array(np.asarray(example_id, np.int64)),
        "puzzle_index": pa.array(np.asarray(puzzle_index, np.int64)),
        "puzzle_identifier": pa.array(np.asarray(puzzle_identifier, np.int32)),
        "pred": fixed_size_list(result.pred.astype(np.int32)),
        "q_halt_logit": pa.array(result.q_halt_logit),
        "q_continue_logit": pa.array(result.q_continue_logit),
        "steps": pa.array(result.steps),
        "valid_tokens": pa.array(result.valid_tokens),
        "correct_tokens": pa.array(result.correct_tokens),
        "exact": pa.array(result.exact),
        "lm_loss": pa.array(result.lm_loss),
    }
    if samples is not None:
        inputs, labels = samples
        data["inputs"] = fixed_size_list(np.asarray(inputs).astype(np.int32, copy=False))
        data["labels"] = fixed_size_list(np.asarray(labels).astype(np.int32, copy=False))
    if result.exact_per_step is not None:
        data["exact_per_step"] = fixed_size_list(result.exact_per_step)
    for name, values in (columns or {}).items():
        data[name] = pa.array(values)
    return pa.table(data)
