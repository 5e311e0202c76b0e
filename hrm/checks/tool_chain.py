"""Tool-chain checking: is every call of a completion well formed for the tool set
(`tool_chain_valid`), and does the chain, replayed on the mock environment, end where the
reference chain ends (`execution_success`)? docs/tool-chains.md has the format and the rules.

A chain is text, one call per line, each a JSON object {"tool": NAME, "args": {...}}; blank lines
are ignored, and calls are numbered from 0 in order. A tool set is either "builtin" (the mock
tools of hrm.checks.mock_tools: schemas and semantics) or JSON-Schema files, one per tool, which
give schemas only: with them execution cannot be replayed, so `execution_success` is None (not
measured), never guessed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator, SchemaError, ValidationError
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from hrm.checks.mock_tools import BUILTIN_TOOLS, Environment, ToolError
from hrm.errors import InputError, invalid_input

Status = Literal["passed", "invalid_call", "execution_failed", "wrong_end_state"]


@dataclass(frozen=True)
class ToolChainResult:
    tool_chain_valid: bool
    execution_success: bool | None   # None: the tool set has no semantics (schema files), so not measured
    status: Status
    first_failing_call: int | None   # 0-based index into the completion's calls
    message: str                     # what was wrong with that call (or the end-state difference), one line


@dataclass(frozen=True)
class ToolSet:
    """Tools by name with the JSON Schema of their args; `executable` when the calls have mock
    semantics (the built-in set) and so can be replayed."""

    source: str
    schemas: Mapping[str, Mapping[str, Any]]
    executable: bool
    _validators: Mapping[str, Draft202012Validator] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validators", {name: Draft202012Validator(schema)
                                                 for name, schema in self.schemas.items()})

    def validator(self, tool: str) -> Draft202012Validator | None:
        return self._validators.get(tool)


BUILTIN = ToolSet("builtin", {name: spec.schema for name, spec in BUILTIN_TOOLS.items()}, executable=True)


class ToolFile(BaseModel):
    """One user tool: the function-calling shape most tool definitions already have."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    description: str = ""
    parameters: dict[str, Any]


def load_tool_set(spec: str | list[str], base_dir: Path) -> ToolSet:
    """"builtin" (the mock tool set) or a list of JSON-Schema files, one per tool, relative to base_dir."""
    if spec == "builtin":
        return BUILTIN
    if isinstance(spec, str) or not spec:
        raise InputError(f"tools: {spec!r} is neither \"builtin\" nor a non-empty list of tool files")
    schemas: dict[str, dict[str, Any]] = {}
    for name in spec:
        path = base_dir / name
        tool = _read_tool_file(path)
        if tool.name in schemas:
            raise InputError(f"{path}: name: tool {tool.name!r} is defined twice in the tool set")
        schemas[tool.name] = tool.parameters
    return ToolSet(", ".join(spec), schemas, executable=False)


def _read_tool_file(path: Path) -> ToolFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: tool file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON: {err}") from None
    try:
        tool = ToolFile.model_validate(data)
    except PydanticValidationError as err:
        raise invalid_input(str(path), err) from None
    try:
        Draft202012Validator.check_schema(tool.parameters)
    except SchemaError as err:
        raise InputError(f"{path}: parameters: not a valid JSON Schema: {err.message}") from None
    if tool.parameters.get("type") != "object":
        raise InputError(f'{path}: parameters.type: must be "object" (a call\'s args are an object)')
    # "no unknown arguments" holds for every tool: a schema that says nothing about extra keys refuses them
    tool.parameters.setdefault("additionalProperties", False)
    return tool


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]


class InvalidCall(Exception):
    """A call that does not parse or does not fit its tool's schema; the message says why, one line."""


def parse_call(line: str, tools: ToolSet) -> Call:
    """One line of a chain as a call of `tools`, or InvalidCall."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidCall(f"not JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:  # garbage output can nest brackets deeper than the parser recurses
        raise InvalidCall("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidCall(f"not a JSON object but {_json_type(data)}")
    missing = [key for key in ("tool", "args") if key not in data]
    if missing:
        raise InvalidCall(f"the call has no {' and no '.join(repr(k) for k in missing)} key")
    extra = sorted(set(data) - {"tool", "args"})
    if extra:
        raise InvalidCall(f"unknown key {extra[0]!r} (a call holds only \"tool\" and \"args\")")
    name, args = data["tool"], data["args"]
    if not isinstance(name, str):
        raise InvalidCall(f"\"tool\" must be a string, got {_json_type(name)}")
    validator = tools.validator(name)
    if validator is None:
        close = difflib.get_close_matches(name, list(tools.schemas), n=1)
        raise InvalidCall(f"unknown tool {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not isinstance(args, dict):
        raise InvalidCall(f"{name}: \"args\" must be an object, got {_json_type(args)}")
    error = best_match(validator.iter_errors(args))
    if error is not None:
        raise InvalidCall(f"{name}: {_describe(error)}")
    return Call(name, args)


def _json_type(value: Any) -> str:
    for python, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                         (list, "array"), (dict, "object")):
        if isinstance(value, python):
            return name
    return "null"


def _describe(error: ValidationError) -> str:
    """A schema violation in the words of a call: which argument, and what is wrong with it."""
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                    for i, p in enumerate(error.absolute_path))
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return f"missing required argument {missing!r}" + (f" in {where}" if where else "")
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        return f"unknown argument {unknown[0]!r}" + (f" in {where}" if where else "")
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"argument {where} must be {expected}, got {_json_type(error.instance)}"
    return f"argument {where or '(args)'}: {error.message}"


def _calls(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _replay(lines: list[str], tools: ToolSet) -> tuple[Environment, int | None, str]:
    """Run already-valid calls from the start state: the state, and the first failing call with why."""
    env = Environment()
    for index, line in enumerate(lines):
        call = parse_call(line, tools)
        try:
            env.apply(call.tool, call.args)
        except ToolError as err:
            return env, index, f"{call.tool}: {err}"
    return env, None, ""


def check_reference(reference: str, tools: ToolSet) -> None:
    """A task's reference chain must be valid and, with the built-in tools, run to its end:
    InputError naming the call and what is wrong (the caller adds the file and task)."""
    lines = _calls(reference)
    if not lines:
        raise InputError("reference: the chain holds no calls")
    for index, line in enumerate(lines):
        try:
            parse_call(line, tools)
        except InvalidCall as err:
            raise InputError(f"reference: call {index}: {err}") from None
    if tools.executable:
        _, failed, why = _replay(lines, tools)
        if failed is not None:
            raise InputError(f"reference: call {failed}: {why}")


def check_tool_chain(completion: str, reference: str, tools: ToolSet) -> ToolChainResult:
    """Check a completion's chain against the reference chain (which must itself pass:
    InputError otherwise, see check_reference)."""
    check_reference(reference, tools)
    lines = _calls(completion)
    unmeasured = None if not tools.executable else False
    if not lines:
        return ToolChainResult(False, unmeasured, "invalid_call", None, "the completion holds no tool calls")
    for index, line in enumerate(lines):
        try:
            parse_call(line, tools)
        except InvalidCall as err:
            return ToolChainResult(False, unmeasured, "invalid_call", index, str(err))
    if not tools.executable:
        return ToolChainResult(True, None, "passed", None, "")
    ours, failed, why = _replay(lines, tools)
    if failed is not None:
        return ToolChainResult(True, False, "execution_failed", failed, why)
    theirs, _, _ = _replay(_calls(reference), tools)
    difference = first_difference(ours.canonical(), theirs.canonical())
    if difference is not None:
        return ToolChainResult(True, False, "wrong_end_state", None, f"end state differs at {difference}")
    return ToolChainResult(True, True, "passed", None, "")


_ABSENT = object()


def first_difference(ours: Any, theirs: Any, path: str = "") -> str | None:
    """The first place (keys in sorted order) where two canonical states differ, as
    "PATH: VALUE (completion) vs VALUE (reference)", or None if they are equal."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted({*ours, *theirs}):
            step = f"{path}[{key!r}]" if path else str(key)
            found = first_difference(ours.get(key, _ABSENT), theirs.get(key, _ABSENT), step)
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list):
        for index in range(max(len(ours), len(theirs))):
            found = first_difference(ours[index] if index < len(ours) else _ABSENT,
                                     theirs[index] if index < len(theirs) else _ABSENT, f"{path}[{index}]")
            if found:
                return found
        return None
    if ours == theirs:
        return None
    return f"{path}: {_show(ours)} (completion) vs {_show(theirs)} (reference)"


def _show(value: Any, limit: int = 60) -> str:
    text = "absent" if value is _ABSENT else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."
