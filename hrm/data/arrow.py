"""Token matrices in Arrow: a [rows, width] numpy matrix is a fixed-size-list column of
`width` values per row, and back. Every Parquet file we write (datasets, predictions, votes)
stores its token sequences this way."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def fixed_size_list(matrix: np.ndarray, value_type: pa.DataType | None = None) -> pa.FixedSizeListArray:
    """[rows, width] → a fixed-size-list array; `value_type` defaults to the matrix's dtype."""
    matrix = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=value_type), matrix.shape[1])


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size-list column (pred, inputs, exact_per_step) back as a [rows, width] matrix."""
    return list_matrix(table.column(name).combine_chunks())


def list_matrix(values: pa.FixedSizeListArray) -> np.ndarray:
    return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, values.type.list_size)
