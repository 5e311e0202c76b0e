"""The task format and the completion format that `hrm-eval check` reads (docs/tasks.md).

Tasks: JSONL, one object per line: `task_id`, `kind` ("python", "tool_chain", "exact",
"normalized"), `prompt`, `reference`, optional `tier`, and the kind's own fields:
  * python: LiveCodeBench-style `tests: [{"input", "output", "testtype": "stdin"|"functional"}]`
    (with `func_name` for functional cases), or HumanEval-style `test` ("def check(candidate): …")
    with `entry_point`;
  * tool_chain: `tools`, "builtin" or a list of JSON-Schema files (relative to the tasks file);
    `reference` is the reference chain (docs/tool-chains.md).
Other keys are ignored, so records exported from existing benchmarks load as they are.

Completions: JSONL, one object per line: `task_id`, `completion`, optional `candidate` (the
sample's index for pass@k; default: its order among the completions of that task and source)
and optional `source` (who produced it, e.g. a model name; summaries are per source).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from hrm.decode import json_objects
from hrm.errors import InputError, invalid_input

KINDS = ("python", "tool_chain", "exact", "normalized")


class _Record(BaseModel):
    # Benchmarks' exports carry more keys (titles, dates, platforms): ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TestCase(_Record):
    """One LiveCodeBench-style case. stdin: `input` is the program's standard input, `output` its
    expected standard output. functional: `input` is one JSON value per line (the positional
    arguments), `output` the JSON of the expected return value."""

    input: str
    output: str
    testtype: Literal["stdin", "functional"]

    @field_validator("input", "output")
    @classmethod
    def _utf8(cls, text: str) -> str:
        try:
            text.encode("utf-8")  # JSON can carry a lone surrogate ("\ud800"); a program's stdin cannot
        except UnicodeEncodeError as err:
            raise ValueError(f"not UTF-8 text: a lone surrogate at character {err.start}") from None
        return text


class _TaskBase(_Record):
    task_id: Annotated[str, Field(min_length=1)]
    prompt: str
    reference: str
    tier: str | None = None


class PythonTask(_TaskBase):
    kind: Literal["python"]
    tests: list[TestCase] | None = None
    func_name: str | None = None
    test: str | None = None
    entry_point: str | None = None

    @model_validator(mode="after")
    def _one_form_of_tests(self) -> PythonTask:
        if (self.tests is None) == (self.test is None):
            raise ValueError("a python task has either 'tests' (LiveCodeBench-style cases) or 'test' with "
                             "'entry_point' (HumanEval-style), exactly one of them")
        if self.test is not None:
            if not self.entry_point:
                raise ValueError("'test' (HumanEval-style) needs 'entry_point', the function check() is given")
            try:
                compile(self.test, "test", "exec")  # compiling runs nothing
            except (SyntaxError, ValueError) as err:
                raise ValueError(f"'test' does not compile: {err}") from None
            return self
        if not self.tests:
            raise ValueError("'tests' is empty: a python task needs at least one case")
        kinds = {case.testtype for case in self.tests}
        if len(kinds) > 1:
            raise ValueError("'tests' mixes stdin and functional cases; a task's cases are of one testtype")
        if kinds == {"functional"}:
            if not self.func_name:
                raise ValueError("functional cases need 'func_name', the function (or class Solution method) to call")
            for number, case in enumerate(self.tests):
                _json_values(case.input, f"tests.{number}.input")
                _json_values(case.output, f"tests.{number}.output", one=True)
        return self

    @property
    def testtype(self) -> Literal["stdin", "functional", "humaneval"]:
        return "humaneval" if self.tests is None else self.tests[0].testtype


def _json_values(text: str, field: str, one: bool = False) -> None:
    """A functional case's input (one JSON value per line) or output (one JSON value) parses."""
    lines = [line for line in text.splitlines() if line.strip()]
    if one and len(lines) != 1:
        lines = [text]
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{field}: not a JSON value ({err.msg}): {line[:60]!r}") from None


class ToolChainTask(_TaskBase):
    kind: Literal["tool_chain"]
    tools: Literal["builtin"] | Annotated[list[str], Field(min_length=1)] = "builtin"


class StringTask(_TaskBase):
    kind: Literal["exact", "normalized"]


Task = Annotated[PythonTask | ToolChainTask | StringTask, Field(discriminator="kind")]
_TASK = TypeAdapter(Task)


class Completion(_Record):
    task_id: Annotated[str, Field(min_length=1)]
    completion: str
    candidate: Annotated[int, Field(ge=0)] | None = None
    source: str | None = None


def _json_lines(path: Path) -> list[tuple[str, dict]]:
    """(file:line, object) for every non-empty line; a line that is not a JSON object is refused."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a JSONL file")
    records = list(json_objects(path))
    if not records:
        raise InputError(f"{path}: no records in it")
    return records


def load_tasks(path: str | Path) -> list[Task]:
    """Every task of a JSONL file; a bad record is an InputError naming file:line and the field,
    a task_id given twice is refused."""
    path = Path(path)
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for where, data in _json_lines(path):
        try:
            task = _TASK.validate_python(data)
        except ValidationError as err:
            raise invalid_input(where, err, hidden=KINDS) from None
        if task.task_id in seen:
            raise InputError(f"{where}: task_id {task.task_id!r} is already the task at {seen[task.task_id]}")
        seen[task.task_id] = where
        tasks.append(task)
    return tasks


def load_completions(path: str | Path, tasks: list[Task]) -> list[Completion]:
    """Every completion of a JSONL file, each with its `candidate` index filled in (its order among
    its task's completions from the same source, unless given). A completion for a task not in
    `tasks`, or a candidate index given twice for one task and source, is refused naming the line."""
    path = Path(path)
    known = {task.task_id for task in tasks}
    completions: list[Completion] = []
    taken: dict[tuple[str | None, str, int], str] = {}
    next_index: dict[tuple[str | None, str], int] = {}
    for where, data in _json_lines(path):
        try:
            completion = Completion.model_validate(data)
        except ValidationError as err:
            raise invalid_input(where, err) from None
        if completion.task_id not in known:
            raise InputError(f"{where}: task_id: {completion.task_id!r} is not a task of the tasks file")
        group = (completion.source, completion.task_id)
        if completion.candidate is None:
            index = next_index.get(group, 0)
            while (*group, index) in taken:
                index += 1
            completion = completion.model_copy(update={"candidate": index})
        key = (*group, completion.candidate)
        if key in taken:
            raise InputError(f"{where}: candidate: {completion.candidate} of task {completion.task_id!r} "
                             f"is already the completion at {taken[key]}")
        taken[key] = where
        next_index[group] = completion.candidate + 1
        completions.append(completion)
    return completions
