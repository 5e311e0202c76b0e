"""Finding checkpoint files in a training run's directory, on local disk or object storage.

The reference trainer writes `step_<N>` files (plus `all_config.yaml`) into one directory.
A checkpoint is named either by its file or by the run directory, which then means its newest
`step_<N>`. Sweeps select among the files that match a glob; a file's step is the number at
the end of its name (`step_1200`, `ema_step_1200`), and a file without one cannot be ordered.
Every listing goes through `hrm.storage`, so `s3://bucket/run` works wherever a path does.
"""

from __future__ import annotations

import fnmatch
import re

from hrm import storage
from hrm.errors import InputError

STEP_GLOB = "step_*"
STEP_NUMBER = re.compile(r"(\d+)$")


def step_number(file_name: str) -> int | None:
    match = STEP_NUMBER.search(file_name)
    return int(match.group(1)) if match else None


def step_files(run_uri: str, pattern: str = STEP_GLOB) -> dict[str, int | None]:
    """{file name: step number} of the files directly in `run_uri` that match `pattern`
    (temporary files of an unfinished atomic write left out)."""
    names = [p for p in storage.list_files(run_uri) if "/" not in p]
    return {n: step_number(n) for n in names if fnmatch.fnmatchcase(n, pattern) and ".tmp-" not in n}


def newest_step(run_uri: str) -> str:
    """The URI of the run directory's `step_<N>` with the largest N."""
    numbered = {f: s for f, s in step_files(run_uri).items() if s is not None}
    if not numbered:
        raise InputError(f"{run_uri}: no such checkpoint file, and no step_<N> files below it")
    return storage.join(run_uri, max(numbered, key=numbered.__getitem__))


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint file as given, or a run directory's newest step."""
    return uri if storage.exists(uri) else newest_step(uri)
