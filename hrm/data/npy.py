""".npy files read by row ranges and written by streaming, header exactly as `np.save` writes it.

A local file is memory-mapped; a remote one (s3://) is read with one byte-range request per
slice, so neither needs memory proportional to the array. numpy reads and writes .npy headers
itself; what it lacks is reading rows of a file that is not on local disk, which is all this
module adds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hrm import storage
from hrm.data.arrays import ranges
from hrm.data.schema import CHUNK_BYTES
from hrm.errors import InputError


class NpyFile:
    """An .npy file with its header parsed and checked; rows are read by byte ranges."""

    def __init__(self, uri: str):
        self.uri = uri
        self._file = storage.open_input_file(uri)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        try:
            version = np.lib.format.read_magic(self._file)
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = readers[version](self._file)
        except ValueError as err:
            raise InputError(f"{uri}: not a readable .npy file ({err})") from None
        if dtype.hasobject:
            raise InputError(f"{uri}: holds Python objects (a ragged array?); only plain arrays are supported")
        if fortran_order and len(shape) > 1:
            raise InputError(f"{uri}: Fortran-ordered array; save it in C order (as the reference builders do)")
        self.shape, self.dtype = shape, dtype
        self.offset = self._file.tell()
        self._row_bytes = dtype.itemsize * math.prod(shape[1:])
        expected = self.offset + self._row_bytes * (shape[0] if shape else 1)
        if self._file.size() != expected:
            raise InputError(f"{uri}: {self._file.size()} bytes but its header promises {expected} (truncated?)")

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        assert step == 1, "row ranges only"
        count = max(0, stop - start)
        data = self._file.read_at(self._row_bytes * count, self.offset + self._row_bytes * start)
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))


def open_npy(uri: str) -> Any:
    """A local .npy memory-mapped, a remote one as an `NpyFile`; both slice by rows."""
    npy = NpyFile(uri)
    if not storage.is_local(uri):
        return npy
    if math.prod(npy.shape) == 0:  # mmap cannot map zero bytes
        return np.zeros(npy.shape, npy.dtype)
    return np.memmap(storage.resolve(uri)[1], dtype=npy.dtype, mode="r", offset=npy.offset, shape=npy.shape)


def read_whole(array: Any) -> np.ndarray:
    """All rows of a mapped or remote array, in memory (for the small per-puzzle arrays)."""
    return np.array(array[0:array.shape[0]])


def write_npy(uri: str, array: np.ndarray) -> None:
    """Stream an array into an .npy object (published atomically), a chunk of rows at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": tuple(array.shape)}
    rows = max(1, CHUNK_BYTES // max(1, array.dtype.itemsize * math.prod(array.shape[1:])))
    with storage.atomic_output(uri) as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        for start, stop in ranges(array.shape[0], rows):
            stream.write(np.ascontiguousarray(array[start:stop]).tobytes())
