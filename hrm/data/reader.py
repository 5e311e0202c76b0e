"""Opening a dataset: which layout a URI holds, told apart by its commit files."""

from __future__ import annotations

import os
import re

import pydantic

from hrm import storage
from hrm.data.dataset import Dataset
from hrm.data.parquet import ParquetDataset
from hrm.data.reference import ReferenceDataset
from hrm.data.schema import META_FILE, ParquetIndex
from hrm.errors import InputError, invalid_input


def open_dataset(uri: str | os.PathLike) -> Dataset:
    """Open a dataset in our layout (top-level dataset.json) or the reference layout
    (<split>/dataset.json), on local disk or object storage."""
    uri = os.fspath(uri)
    top = storage.join(uri, META_FILE)
    if storage.exists(top):
        data = storage.read_json(top)
        if isinstance(data, dict) and "seq_len" in data and "format" not in data:
            raise InputError(f"{top}: this is one split of a reference dataset; open its parent directory")
        try:
            index = ParquetIndex.model_validate(data)
        except pydantic.ValidationError as err:
            raise invalid_input(top, err) from None
        return ParquetDataset(uri, index)
    if storage.exists(uri):
        raise InputError(f"{uri}: a file, not a dataset: give the directory that holds {META_FILE} (our layout) "
                         f"or <split>/{META_FILE} (reference layout)")
    listing = storage.list_files(uri)
    if any(name.count("/") == 1 and name.endswith("/" + META_FILE) for name in listing):
        return ReferenceDataset(uri, listing)
    if any(re.fullmatch(r"[^/]+/part-\d{5}\.parquet", name) for name in listing):
        raise InputError(f"{top}: missing, so the dataset is incomplete (dataset.json is published last; "
                         f"a write did not finish)")
    raise InputError(f"{uri}: not a dataset: no {META_FILE} (our layout) and no <split>/{META_FILE} "
                     f"(reference layout)")
