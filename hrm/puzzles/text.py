"""Text: prompt/completion JSONL read and encoded as text puzzles, with an explicit tokenizer.

Input: one JSON object per line with string fields "prompt" and "completion" (names set by
--prompt-key/--completion-key), optionally "source" and a difficulty (--tier-key, default
"difficulty"); empty lines are skipped. A record with a "kind" is a task of `hrm-eval check`'s
task format (docs/tasks.md), validated as one: its "reference" is the completion when it has
no completion field, its "tier" the tier when it has no --tier-key field, and the task is kept
in the dataset (tasks.jsonl, with the schema files of its tools) under its task_id, so the
decoded predictions can be checked.

Tokenizer (--tokenizer, required; pad 0, eos 1, the tokenizer's id i → token i + 2):
  * bytes: lossless; UTF-8 byte b → token b + 2, vocab 258.
  * a Hugging Face tokenizers JSON FILE (told by its content: a "model" of type BPE,
    WordPiece, Unigram or WordLevel), encoded by the tokenizers library without its own
    special tokens; vocab = its vocabulary + 2. It loses text when a record does not come
    back from decode(encode(text)) (a lower-casing normaliser, an [UNK]): such records are
    counted, and refused unless --allow-lossy.
  * a keyword vocabulary FILE, one keyword per line (e.g. start, test, agent, data,
    security, performance, integration, automation, validation, deployment, monitoring,
    end): text is lower-cased and split into words ([a-z0-9_]+), keyword k of the file →
    token k + 2, vocab = keywords + 2. Every other word, and all case and
    punctuation, is lost, so it is refused unless --allow-lossy; the summary counts the
    words that had no token.
The tokenizer is written into the dataset (tokenizer.json), from which predictions are
decoded back to text.

Each record is one puzzle in a group of its own: the input is the prompt's tokens then eos,
padded with pad; the label is the completion's tokens then eos, padded with 0
(ignore_label_id 0), position by position like a grid puzzle. --seq-len defaults to the
longest sequence; a record longer than an explicit --seq-len is refused (naming the first
and counting all) unless --truncate, which cuts it and reports the counts.
Columns kept per example: source, tier (the difficulty as text, "" if absent),
prompt_tokens and completion_tokens (lengths before truncation, eos excluded).

Examples:
  hrm-eval convert jsonl --test tasks.jsonl --tokenizer bytes --output data/tasks
  hrm-eval convert jsonl --input tasks.jsonl --test-fraction 0.2 --tokenizer keywords.txt \\
      --allow-lossy --seq-len 64 --truncate --output s3://bucket/tasks
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
from pydantic import TypeAdapter

from hrm import storage
from hrm.checks.tasks import KINDS, Task, ToolChainTask, load_tasks
from hrm.checks.tool_chain import load_tool_set
from hrm.data.dataset import Dataset
from hrm.data.schema import PuzzleArrays
from hrm.decode import json_objects
from hrm.errors import InputError, invalid_input
from hrm.puzzles.publish import (
    Clock,
    Destination,
    Sources,
    check_readable,
    publish,
    single_example_puzzles,
    split_by_fraction,
)
from hrm.puzzles.tokenizers import (  # noqa: F401  (FIRST_TOKEN: text decoding elsewhere imports it from here)
    EOS,
    FIRST_TOKEN,
    PAD,
    TOKENIZER_FILE,
    ByteTokenizer,
    HuggingFaceTokenizer,
    KeywordTokenizer,
    Tokenizer,
    hugging_face_json,
)

TASKS_FILE = "tasks.jsonl"
TOOLS_PREFIX = "tools."  # a task's tool schema files are kept as top-level files tools.<name>
_TASK: TypeAdapter[Task] = TypeAdapter(Task)


@dataclass(frozen=True)
class TextFields:
    """The JSONL field names of prompt, completion and difficulty tier."""

    prompt: str = "prompt"
    completion: str = "completion"
    tier: str = "difficulty"


@dataclass
class Record:
    prompt: list[int]
    completion: list[int]
    source: str
    tier: str
    where: str  # file:line, for messages
    task_id: str = ""  # "" for a plain prompt/completion record
    lost: str = ""  # "prompt" or "completion": the first text that did not come back from decode(encode())


class CarriedTasks:
    """The tasks among the records, validated, in file order, for the dataset's tasks.jsonl; a
    tool_chain task's schema files are copied in as top-level files and its `tools` renamed to
    them, so tasks.jsonl in the dataset is a tasks file `hrm-eval check` reads as it is."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[Task, str]] = {}
        self.tool_files: dict[str, bytes] = {}
        self._tool_names: dict[Path, str] = {}

    def add(self, data: dict, where: str, base_dir: Path) -> Task:
        try:
            task = _TASK.validate_python(data)
        except pydantic.ValidationError as err:
            raise invalid_input(where, err, hidden=KINDS) from None
        if task.task_id in self.tasks:
            raise InputError(f"{where}: task_id {task.task_id!r} is already the task at {self.tasks[task.task_id][1]}")
        if isinstance(task, ToolChainTask) and task.tools != "builtin":
            try:
                load_tool_set(task.tools, base_dir)  # refused here, not after a whole evaluation
            except InputError as err:
                raise InputError(f"{where}: tools: {err}") from None
            task = task.model_copy(update={"tools": [self._tool_file(base_dir / name) for name in task.tools]})
        self.tasks[task.task_id] = (task, where)
        return task

    def _tool_file(self, path: Path) -> str:
        path = path.resolve()
        if path not in self._tool_names:
            name = f"{TOOLS_PREFIX}{path.name}"
            if name in self.tool_files:  # another file of the same name
                name = f"{TOOLS_PREFIX}{len(self.tool_files)}.{path.name}"
            self._tool_names[path] = name
            self.tool_files[name] = path.read_bytes()
        return self._tool_names[path]

    def files(self) -> dict[str, bytes]:
        if not self.tasks:
            return {}
        lines = (task.model_dump_json(exclude_none=True) + "\n" for task, _ in self.tasks.values())
        return {TASKS_FILE: "".join(lines).encode(), **self.tool_files}


def convert_jsonl(sources: Sources, destination: Destination, *, tokenizer: str, seed: int = 0,
                  allow_lossy: bool = False, seq_len: int | None = None, truncate: bool = False,
                  fields: TextFields = TextFields()) -> dict:
    """Read, tokenise, encode and publish; returns the summary. `tokenizer` is "bytes", a Hugging
    Face tokenizers JSON file or a keyword vocabulary file (refused unless `allow_lossy`); a
    record that does not round trip through the tokenizer is refused unless `allow_lossy`;
    `seq_len` defaults to the longest sequence, and a longer record is refused unless `truncate`."""
    clock = Clock()
    encoder = make_tokenizer(tokenizer, allow_lossy)
    unknown: Counter[str] = Counter()
    tasks = CarriedTasks()
    records = {name: read_records(path, encoder, fields, unknown, tasks) for name, path in sources.files().items()}
    lost = [r for recs in records.values() for r in recs if r.lost]
    if isinstance(encoder, HuggingFaceTokenizer):
        if lost and not allow_lossy:
            raise InputError(f"{lost[0].where}: --tokenizer {tokenizer} does not give this record's {lost[0].lost} "
                             f"back (decode(encode(text)) differs; {len(lost)} of "
                             f"{sum(map(len, records.values()))} records do not round trip); pass --allow-lossy "
                             "to accept that, or use --tokenizer bytes")
        encoder.lossy = bool(lost)
    if "input" in records:
        table = records.pop("input")
        records = {name: [table[i] for i in idx]
                   for name, idx in split_by_fraction(len(table), sources.test_fraction, seed).items()}
    seq_len = _seq_len(records, seq_len, truncate)
    splits = {name: encode_records(recs, seq_len, encoder.vocab_size) for name, recs in records.items()}
    truncated_prompts = sum(len(r.prompt) + 1 > seq_len for recs in records.values() for r in recs)
    truncated_completions = sum(len(r.completion) + 1 > seq_len for recs in records.values() for r in recs)
    truncated = sum(max(len(r.prompt), len(r.completion)) + 1 > seq_len for recs in records.values() for r in recs)
    return publish(destination, "jsonl", splits, seed=seed, vocab_size=encoder.vocab_size, seq_len=seq_len,
                   identifiers=["<blank>"], clock=clock, truncations=truncated,
                   extra_files={TOKENIZER_FILE: encoder.spec().model_dump(mode="json"), **tasks.files()},
                   details={"tokenizer": encoder.name,
                            "tokenizer_file": TOKENIZER_FILE,
                            "lossy": encoder.lossy,
                            "records_not_round_tripping": len(lost),
                            "tasks": len(tasks.tasks),
                            "truncated_prompts": truncated_prompts,
                            "truncated_completions": truncated_completions,
                            "words_without_token": sum(unknown.values()),
                            "distinct_words_without_token": len(unknown),
                            "most_common_words_without_token": dict(unknown.most_common(10))})


def make_tokenizer(spec: str, allow_lossy: bool) -> Tokenizer:
    """"bytes", a Hugging Face tokenizers JSON file (told by content), or a keyword vocabulary."""
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec)
    check_readable(path)  # a mistyped name is a missing file, not a lossy vocabulary
    data = hugging_face_json(path)
    if data is not None:
        return HuggingFaceTokenizer(data, path.name, where=str(path))
    if not allow_lossy:
        raise InputError(f"--tokenizer {spec}: a keyword vocabulary drops every other word, case and "
                         "punctuation; pass --allow-lossy to accept that, or use --tokenizer bytes")
    return KeywordTokenizer(path)


def read_records(path: Path, tokenizer: Tokenizer, fields: TextFields, unknown: Counter[str],
                 tasks: CarriedTasks | None = None) -> list[Record]:
    """Tokenised records of a JSONL file; words with no token are tallied in `unknown`, tasks
    (records with a "kind") validated and kept in `tasks`."""
    check_readable(path)
    tasks = CarriedTasks() if tasks is None else tasks
    records = []
    for where, data in json_objects(path):
        task = tasks.add(data, where, path.parent) if "kind" in data else None
        prompt = _text(data, fields.prompt, where)
        # A task's reference is its expected completion unless the record names one itself.
        completion = (task.reference if task is not None and fields.completion not in data
                      else _text(data, fields.completion, where))
        lost = ""
        tokens = []
        for part, text in (("prompt", prompt), ("completion", completion)):
            encoded, dropped = tokenizer.encode(text)
            unknown.update(dropped)
            tokens.append(encoded)
            if not lost and tokenizer.decode(encoded) != text:
                lost = part
        tier = data.get(fields.tier, None if task is None else task.tier)
        records.append(Record(tokens[0], tokens[1], str(data.get("source", path.name)),
                              "" if tier is None else str(tier), where,
                              task_id="" if task is None else task.task_id, lost=lost))
    if not records:
        raise InputError(f"{path}: no records in it")
    return records


def _text(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _seq_len(records: dict[str, list[Record]], seq_len: int | None, truncate: bool) -> int:
    """--seq-len, or the longest sequence; an overflow without --truncate is refused."""
    everything = [r for recs in records.values() for r in recs]
    longest = max(max(len(r.prompt), len(r.completion)) + 1 for r in everything)
    if seq_len is None:
        return longest
    if seq_len < 1:
        raise InputError(f"--seq-len: must be positive, got {seq_len}")
    overflowing = [r for r in everything if max(len(r.prompt), len(r.completion)) + 1 > seq_len]
    if overflowing and not truncate:
        first = overflowing[0]
        raise InputError(f"{first.where}: {max(len(first.prompt), len(first.completion)) + 1} tokens exceed "
                         f"--seq-len {seq_len} ({len(overflowing)} records overflow); "
                         "raise --seq-len or pass --truncate")
    return seq_len


def encode_records(records: list[Record], seq_len: int, vocab_size: int) -> PuzzleArrays:
    """Records → arrays: tokens + eos, cut to seq_len, padded (labels padded with ignore 0)."""
    dtype = np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32
    inputs = np.full((len(records), seq_len), PAD, dtype=dtype)
    labels = np.full((len(records), seq_len), PAD, dtype=dtype)
    for row, record in enumerate(records):
        for target, tokens in ((inputs, record.prompt), (labels, record.completion)):
            sequence = (tokens + [EOS])[:seq_len]
            target[row, : len(sequence)] = sequence
    columns = {
        "source": np.array([r.source for r in records], dtype=str),
        "tier": np.array([r.tier for r in records], dtype=str),
        "task_id": np.array([r.task_id for r in records], dtype=str),
        "prompt_tokens": np.array([len(r.prompt) for r in records], dtype=np.int32),
        "completion_tokens": np.array([len(r.completion) for r in records], dtype=np.int32),
    }
    return single_example_puzzles(inputs, labels, columns=columns)


# --------------------------------------------------------------------------- reading back


def tasks_file(dataset: Dataset, directory: Path | None = None) -> Path | None:
    """A local tasks file of the dataset's tasks, with its tool files beside it, for
    `hrm-eval check --tasks` (or `hrm.checks.tasks.load_tasks`); None when the dataset holds no
    tasks. A local dataset's own tasks.jsonl is returned as it is; a remote one's is copied
    with its tool files into `directory` (required then)."""
    uri = storage.join(dataset.uri, TASKS_FILE)
    if not storage.exists(uri):
        return None
    if storage.is_local(dataset.uri):
        return Path(storage.resolve(uri)[1])
    if directory is None:
        raise ValueError(f"{dataset.uri} is remote: give a local directory to copy its tasks into")
    directory.mkdir(parents=True, exist_ok=True)
    tools = [name for name in storage.list_files(dataset.uri) if name.startswith(TOOLS_PREFIX) and "/" not in name]
    for name in [TASKS_FILE, *tools]:
        (directory / name).write_bytes(storage.read_bytes(storage.join(dataset.uri, name)))
    return directory / TASKS_FILE


def dataset_tasks(dataset: Dataset, directory: Path | None = None) -> dict[str, Task]:
    """The dataset's tasks by task_id (an example's `task_id` column names its task; "" none)."""
    path = tasks_file(dataset, directory)
    return {} if path is None else {task.task_id: task for task in load_tasks(path)}
