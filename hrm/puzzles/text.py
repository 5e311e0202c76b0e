"""Text: prompt/completion JSONL read and encoded as text puzzles, with an explicit tokenizer.

Input: one JSON object per line with string fields "prompt" and "completion" (names set by
--prompt-key/--completion-key), optionally "source" and a difficulty (--tier-key, default
"difficulty"); empty lines are skipped.

Tokenizer (--tokenizer, required):
  * bytes: lossless; UTF-8 byte b → token b + 2, pad 0, eos 1, vocab 258.
  * a keyword vocabulary FILE, one keyword per line (e.g. start, test, agent, data,
    security, performance, integration, automation, validation, deployment, monitoring,
    end): text is lower-cased and split into words ([a-z0-9_]+), keyword k of the file →
    token k + 2, pad 0, eos 1, vocab = keywords + 2. Every other word, and all case and
    punctuation, is lost, so it is refused unless --allow-lossy; the summary counts the
    words that had no token.

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

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.schema import PuzzleArrays
from hrm.decode import read_text, text_lines
from hrm.errors import InputError
from hrm.puzzles.publish import (
    Clock,
    Destination,
    Sources,
    check_readable,
    publish,
    single_example_puzzles,
    split_by_fraction,
)

PAD, EOS, FIRST_TOKEN = 0, 1, 2
WORD = re.compile(r"[a-z0-9_]+")


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


class ByteTokenizer:
    name = "bytes"
    vocab_size = 256 + FIRST_TOKEN

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(tokens, words without a token): bytes lose nothing."""
        return [b + FIRST_TOKEN for b in text.encode("utf-8")], []


class KeywordTokenizer:
    """Lower-cased words that are in the vocabulary file; everything else is dropped."""

    def __init__(self, path: Path):
        check_readable(path)
        self.name = f"keywords:{path.name}"
        self.ids: dict[str, int] = {}
        for number, line in enumerate(read_text(path).splitlines(), start=1):
            word = line.strip().lower()
            if not word:
                continue
            if not WORD.fullmatch(word):
                raise InputError(f"{path}:{number}: keyword {line.strip()!r} is not one word of [a-z0-9_]")
            if word in self.ids:
                raise InputError(f"{path}:{number}: keyword {word!r} is listed twice")
            self.ids[word] = len(self.ids) + FIRST_TOKEN
        if not self.ids:
            raise InputError(f"{path}: the keyword vocabulary is empty")
        self.vocab_size = len(self.ids) + FIRST_TOKEN

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        words = WORD.findall(text.lower())
        return [self.ids[w] for w in words if w in self.ids], [w for w in words if w not in self.ids]


def convert_jsonl(sources: Sources, destination: Destination, *, tokenizer: str, seed: int = 0,
                  allow_lossy: bool = False, seq_len: int | None = None, truncate: bool = False,
                  fields: TextFields = TextFields()) -> dict:
    """Read, tokenise, encode and publish; returns the summary. `tokenizer` is "bytes" or a
    keyword vocabulary file (refused unless `allow_lossy`); `seq_len` defaults to the longest
    sequence, and a longer record is refused unless `truncate`."""
    clock = Clock()
    encoder = make_tokenizer(tokenizer, allow_lossy)
    unknown: Counter[str] = Counter()
    records = {name: read_records(path, encoder, fields, unknown) for name, path in sources.files().items()}
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
                   details={"tokenizer": encoder.name,
                            "truncated_prompts": truncated_prompts,
                            "truncated_completions": truncated_completions,
                            "words_without_token": sum(unknown.values()),
                            "distinct_words_without_token": len(unknown),
                            "most_common_words_without_token": dict(unknown.most_common(10))})


def make_tokenizer(spec: str, allow_lossy: bool) -> ByteTokenizer | KeywordTokenizer:
    if spec == "bytes":
        return ByteTokenizer()
    check_readable(Path(spec))  # a mistyped name is a missing file, not a lossy vocabulary
    if not allow_lossy:
        raise InputError(f"--tokenizer {spec}: a keyword vocabulary drops every other word, case and "
                         "punctuation; pass --allow-lossy to accept that, or use --tokenizer bytes")
    return KeywordTokenizer(Path(spec))


def read_records(path: Path, tokenizer: ByteTokenizer | KeywordTokenizer, fields: TextFields,
                 unknown: Counter[str]) -> list[Record]:
    """Tokenised records of a JSONL file; words with no token are tallied in `unknown`."""
    check_readable(path)
    records = []
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON: {err.msg}") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object")
        texts = [_text(data, key, where) for key in (fields.prompt, fields.completion)]
        (prompt, lost_p), (completion, lost_c) = (tokenizer.encode(t) for t in texts)
        unknown.update(lost_p + lost_c)
        tier = data.get(fields.tier)
        records.append(Record(prompt, completion, str(data.get("source", path.name)),
                              "" if tier is None else str(tier), where))
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
    dtype = np.uint8 if vocab_size <= 256 else np.uint16
    inputs = np.full((len(records), seq_len), PAD, dtype=dtype)
    labels = np.full((len(records), seq_len), PAD, dtype=dtype)
    for row, record in enumerate(records):
        for target, tokens in ((inputs, record.prompt), (labels, record.completion)):
            sequence = (tokens + [EOS])[:seq_len]
            target[row, : len(sequence)] = sequence
    columns = {
        "source": np.array([r.source for r in records], dtype=str),
        "tier": np.array([r.tier for r in records], dtype=str),
        "prompt_tokens": np.array([len(r.prompt) for r in records], dtype=np.int32),
        "completion_tokens": np.array([len(r.completion) for r in records], dtype=np.int32),
    }
    return single_example_puzzles(inputs, labels, columns=columns)
