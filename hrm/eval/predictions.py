"""Per-example prediction tables: what an evaluation stores so that metrics, votes and
ensembles can be recomputed later without running a model.

One row per example: set, example_id (row index within its set), puzzle_index,
puzzle_identifier, pred (token ids), q_halt_logit, q_continue_logit, steps, valid/correct
token counts, exact, lm_loss and, in the fixed protocol, exact flags after every ACT step.
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
) -> pa.Table:
    """An Arrow table of one engine result; `columns` carries dataset extras such as tier."""
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
    if result.exact_per_step is not None:
        data["exact_per_step"] = fixed_size_list(result.exact_per_step)
    for name, values in (columns or {}).items():
        data[name] = pa.array(values)
    return pa.table(data)
