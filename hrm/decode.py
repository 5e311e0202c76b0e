"""Every decode of user bytes into text, JSON lines or YAML, so that a bad byte or a repeated key is an
`InputError` naming the file and the line (docs/errors.md), never a UnicodeDecodeError
traceback or a silently dropped value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode

from hrm.errors import InputError


def decode_utf8(data: bytes, source: str, first_line: int = 1, first_byte: int = 0) -> str:
    """`data` as UTF-8 text; a bad byte is refused naming its line and its offset in the file
    (`first_line` and `first_byte` place `data` within it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise InputError(f"{source}:{line}: byte {first_byte + err.start} is not valid UTF-8 "
                         f"(0x{data[err.start]:02x}; the file must be UTF-8 text)") from None


def read_text(path: str | os.PathLike) -> str:
    """A whole local file as UTF-8 text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read it: {err.strerror}") from None
    return decode_utf8(data, str(path))


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """A local file's lines as UTF-8 text (line endings kept), decoded one line at a time, so a
    large file is never held whole and a bad byte names its own line."""
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield decode_utf8(raw, str(path), first_line=number, first_byte=offset)
            offset += len(raw)


def json_objects(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """("file:line", object) for every non-empty line of a JSONL file, one line at a time; a line
    that is not a JSON object is an InputError naming its file and line."""
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON: {err.msg}") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        yield where, data


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated within one mapping. YAML says keys are
    unique, but PyYAML keeps the last value of a repeated key without a word and has no option
    to refuse it, so the check is written here, in the one place mappings are built."""

    source = "<yaml>"

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it below, with its own message
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(f"{self.source}:{line}: key {key!r} appears twice in one mapping "
                                 f"(first at line {seen[key]}); keys must be unique")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(data: str | bytes, source: str) -> Any:
    """One YAML document, parsed safely (plain data only) with unique keys; every problem is an
    InputError of one line naming `source` and the line."""
    text = decode_utf8(data, source) if isinstance(data, bytes) else data
    loader = UniqueKeyLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise InputError(f"{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None
    finally:
        loader.dispose()
