"""The exception types users see, and the one place pydantic's errors become one.

Anything raised as `InputError` is bad input (a file, a field, a config key): the CLI prints
its message on one line and exits 2. `StorageUnavailable` is a transient storage fault that
outlasted the retries (exit 3). Everything else is a bug (docs/errors.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError


class InputError(Exception):
    """Bad user input. The message must name the file (or URI) and the key/field/line."""


class StorageUnavailable(Exception):
    """A transient storage fault that outlasted the retries: not bad input, and nothing a run
    committed is lost; the same command later resumes."""


def invalid_input(source: str, err: ValidationError, *, within: str = "", hidden: Iterable[str] = ()) -> InputError:
    """Every problem pydantic found in `source`, each named by its key path: one line for one
    problem, an indented list for several. `within` prefixes the keys (the section a model
    was read from, e.g. "arch"); `hidden` are location parts that are not keys the user wrote
    (the tags of a discriminated union)."""
    hidden = set(hidden)
    problems = [f"{_key(within, error['loc'], hidden)}: {_message(error)}" for error in err.errors()]
    if len(problems) == 1:
        return InputError(f"{source}: {problems[0]}")
    return InputError(f"{source}: {len(problems)} problems:\n  " + "\n  ".join(problems))


def _key(within: str, loc: tuple[Any, ...], hidden: set[str]) -> str:
    parts = [within] if within else []
    parts += [str(part) for part in loc if part not in hidden]
    return ".".join(parts) or "(top level)"  # no location: a check across fields of the whole


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return error["msg"].removeprefix("Value error, ")
