"""Text tokenizers (bytes, a keyword vocabulary, a Hugging Face `tokenizers` JSON file): text to
token ids and back, and the record of a dataset's tokenizer that decoding reads.

Every tokenizer shares the special tokens of the text puzzles: pad 0, eos 1; the tokenizer's own
ids start at 2 (its id i is token i + 2; a Hugging Face tokenizer's id too, so its own special
tokens, [UNK] or <|endoftext|>, are ordinary tokens here and never collide with pad or eos).

Decoding (`Tokenizer.decode`) reads a sequence up to its first eos and skips pad, so a label
(completion + eos + pad) and a model's prediction decode alike. A prediction can hold any token
below the model's vocabulary size, so decoding never fails: a token the tokenizer has no entry
for becomes U+FFFD, and a byte sequence that is not UTF-8 is decoded with errors="replace"
(each bad byte a U+FFFD).

The converter writes the tokenizer into the dataset as `tokenizer.json` (`TokenizerFile`), so a
dataset alone is enough to decode its tokens: `load_tokenizer(dataset)`, or
`decode_predictions(dataset, rows)` for a batch.
"""

from __future__ import annotations

import abc
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import tokenizers
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from hrm import storage
from hrm.data.dataset import Dataset
from hrm.data.parquet import ParquetDataset
from hrm.decode import read_text
from hrm.errors import InputError, invalid_input

PAD, EOS, FIRST_TOKEN = 0, 1, 2
WORD = re.compile(r"[a-z0-9_]+")
TOKENIZER_FILE = "tokenizer.json"
UNKNOWN = "\ufffd"  # what a token the tokenizer has no entry for decodes to
HF_MODEL_TYPES = ("BPE", "WordPiece", "Unigram", "WordLevel")
TEXT_KINDS = ("jsonl", "text")  # the summary `kind` of a converted text dataset


# --------------------------------------------------------------------------- the tokenizer file


class _Spec(BaseModel):
    """What every tokenizer record holds: the shared special tokens (fixed, written down so the
    file says how to read the tokens) and whether the tokenizer loses text."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    pad_id: Literal[0] = PAD
    eos_id: Literal[1] = EOS
    first_id: Literal[2] = FIRST_TOKEN  # the tokenizer's id i is token i + first_id
    lossy: bool


class BytesSpec(_Spec):
    kind: Literal["bytes"] = "bytes"
    lossy: Literal[False] = False


class KeywordsSpec(_Spec):
    kind: Literal["keywords"] = "keywords"
    lossy: Literal[True] = True
    source: str  # the vocabulary file's name, for messages
    vocabulary: Annotated[list[Annotated[str, Field(pattern=f"^{WORD.pattern}$")]], Field(min_length=1)]

    @field_validator("vocabulary")
    @classmethod
    def _once_each(cls, vocabulary: list[str]) -> list[str]:
        twice = [word for word, count in Counter(vocabulary).items() if count > 1]
        if twice:
            raise ValueError(f"keyword {twice[0]!r} is listed twice")
        return vocabulary


class HuggingFaceSpec(_Spec):
    kind: Literal["huggingface"] = "huggingface"
    source: str
    # Measured by the converter: some record's text did not come back from decode(encode(text)).
    lossy: bool
    tokenizer: dict[str, Any]  # the Hugging Face tokenizers JSON itself


TokenizerFile = Annotated[BytesSpec | KeywordsSpec | HuggingFaceSpec, Field(discriminator="kind")]
_TOKENIZER_FILE = TypeAdapter(TokenizerFile)


# --------------------------------------------------------------------------- tokenizers


class Tokenizer(abc.ABC):
    """Text ↔ token ids (pad, eos and the first_id offset included)."""

    name: str  # for the summary: "bytes", "keywords:<file>", "huggingface:<file>"
    vocab_size: int  # token ids, the two special ones included
    lossy: bool  # decode(encode(text)) may differ from text

    @abc.abstractmethod
    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(tokens, the words or pieces of text that had no token), without eos."""

    @abc.abstractmethod
    def spec(self) -> _Spec:
        """The record written into the dataset, from which `from_spec` rebuilds this tokenizer."""

    @abc.abstractmethod
    def _decode(self, ids: np.ndarray) -> str:
        """Text of the tokenizer's own ids (token - first_id), any of which may be unknown."""

    def decode(self, tokens: Iterable[int] | np.ndarray) -> str:
        """Text of a sequence up to its first eos, pad skipped (a label, or a prediction)."""
        row = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens), dtype=np.int64)
        ends = np.flatnonzero(row == EOS)
        if ends.size:
            row = row[: ends[0]]
        return self._decode(row[row != PAD] - FIRST_TOKEN)

    def decode_rows(self, rows: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(row) for row in rows]


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: byte b is token b + 2; lossless."""

    name = "bytes"
    vocab_size = 256 + FIRST_TOKEN
    lossy = False

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        return [b + FIRST_TOKEN for b in text.encode("utf-8")], []

    def _decode(self, ids: np.ndarray) -> str:
        if ids.size and (ids.min() < 0 or ids.max() > 255):  # tokens past the bytes, from a wider model
            data = b"".join(bytes([i]) if 0 <= i < 256 else UNKNOWN.encode() for i in ids.tolist())
        else:
            data = ids.astype(np.uint8).tobytes()
        # A model can predict any byte sequence; what is not UTF-8 becomes U+FFFD, byte by byte.
        return data.decode("utf-8", errors="replace")

    def spec(self) -> BytesSpec:
        return BytesSpec()


class KeywordTokenizer(Tokenizer):
    """Lower-cased words ([a-z0-9_]+) that are keywords; every other word, and all case and
    punctuation, is dropped, so decoding gives the keyword sequence, joined by spaces: lossy."""

    lossy = True

    def __init__(self, vocabulary: Path | Sequence[str], source: str = ""):
        """From a vocabulary file, or from its keywords (`source` naming where they came from)."""
        if isinstance(vocabulary, Path):
            source, vocabulary = vocabulary.name, read_keywords(vocabulary)
        self.source = source
        self.keywords = list(vocabulary)
        self.ids = {word: index + FIRST_TOKEN for index, word in enumerate(self.keywords)}
        self.name = f"keywords:{source}"
        self.vocab_size = len(self.keywords) + FIRST_TOKEN

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        words = WORD.findall(text.lower())
        return [self.ids[w] for w in words if w in self.ids], [w for w in words if w not in self.ids]

    def _decode(self, ids: np.ndarray) -> str:
        return " ".join(self.keywords[i] if 0 <= i < len(self.keywords) else UNKNOWN for i in ids.tolist())

    def spec(self) -> KeywordsSpec:
        return KeywordsSpec(source=self.source, vocabulary=self.keywords)


class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` JSON file (BPE, WordPiece, Unigram, WordLevel), encoded and
    decoded by that library: its id i is token i + 2. Encoding adds none of the tokenizer's own
    special tokens (eos is ours); decoding skips the special tokens a prediction holds. Whether
    it loses text (a lower-casing normaliser, an [UNK]) depends on the tokenizer and the text, so
    the converter measures it on every record and records the answer (`lossy`)."""

    def __init__(self, data: dict[str, Any], source: str, lossy: bool = False, where: str = ""):
        """`data`: the tokenizers JSON; `source`: its file's name, recorded; `where`: the file
        for messages (default `source`)."""
        self.data = data
        self.source = source
        self.lossy = lossy
        self.name = f"huggingface:{source}"
        try:
            self.library = tokenizers.Tokenizer.from_str(json.dumps(data))
        except Exception as err:  # the library raises plain Exception for every bad file
            raise InputError(f"{where or source}: not a Hugging Face tokenizer the tokenizers library can load: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        self.size = self.library.get_vocab_size(with_added_tokens=True)
        self.vocab_size = self.size + FIRST_TOKEN
        model = data["model"]
        unknown = model.get("unk_token")
        self.unknown_id = (self.library.token_to_id(unknown) if isinstance(unknown, str)
                           else model.get("unk_id") if isinstance(model.get("unk_id"), int) else None)

    @classmethod
    def from_file(cls, path: Path) -> HuggingFaceTokenizer:
        data = hugging_face_json(path)
        if data is None:
            raise InputError(f"{path}: not a Hugging Face tokenizers JSON file (not a JSON object)")
        return cls(data, path.name, where=str(path))

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        encoding = self.library.encode(text, add_special_tokens=False)
        unknown = [text[start:end] for token, (start, end) in zip(encoding.ids, encoding.offsets)
                   if token == self.unknown_id]
        return [token + FIRST_TOKEN for token in encoding.ids], unknown

    def _decode(self, ids: np.ndarray) -> str:
        # Runs of known ids go to the library; an id past its vocabulary becomes U+FFFD.
        parts: list[str] = []
        run: list[int] = []
        for i in ids.tolist():
            if 0 <= i < self.size:
                run.append(i)
                continue
            parts += [self.library.decode(run), UNKNOWN] if run else [UNKNOWN]
            run = []
        if run:
            parts.append(self.library.decode(run))
        return "".join(parts)

    def spec(self) -> HuggingFaceSpec:
        return HuggingFaceSpec(source=self.source, lossy=self.lossy, tokenizer=self.data)


def hugging_face_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON if it is a Hugging Face tokenizers file, told by its content (a 'model'
    object with a known 'type'); None when it is not a JSON object (a keyword list is not). A JSON
    object of another kind is refused: it is neither tokenizer."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") not in HF_MODEL_TYPES:
        raise InputError(f"{path}: not a Hugging Face tokenizers JSON file (no 'model' with a 'type' of "
                         f"{', '.join(HF_MODEL_TYPES)}), nor a keyword vocabulary")
    return data


def read_keywords(path: Path) -> list[str]:
    """A keyword vocabulary file: one keyword per line (blank lines skipped), each one word of
    [a-z0-9_], case ignored, none twice."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    keywords: dict[str, int] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        word = line.strip().lower()
        if not word:
            continue
        if not WORD.fullmatch(word):
            raise InputError(f"{path}:{number}: keyword {line.strip()!r} is not one word of [a-z0-9_]")
        if word in keywords:
            raise InputError(f"{path}:{number}: keyword {word!r} is listed twice")
        keywords[word] = number
    if not keywords:
        raise InputError(f"{path}: the keyword vocabulary is empty")
    return list(keywords)


def from_spec(spec: _Spec) -> Tokenizer:
    if isinstance(spec, BytesSpec):
        return ByteTokenizer()
    if isinstance(spec, KeywordsSpec):
        return KeywordTokenizer(spec.vocabulary, spec.source)
    assert isinstance(spec, HuggingFaceSpec)
    return HuggingFaceTokenizer(spec.tokenizer, spec.source, spec.lossy)


# --------------------------------------------------------------------------- a dataset's tokenizer


def load_tokenizer(dataset: Dataset) -> Tokenizer:
    """The tokenizer a text dataset was converted with, from its tokenizer.json. A text dataset
    converted before the tokenizer was recorded decodes only if its summary says bytes (which
    need no record); anything else is refused, naming the missing file."""
    tokenizer = text_tokenizer(dataset)
    if tokenizer is not None:
        return tokenizer
    summary = dataset.index.summary if isinstance(dataset, ParquetDataset) else {}
    what = (f"its tokenizer {summary['tokenizer']!r} was not recorded (converted before tokenizers were); "
            "convert it again" if summary.get("kind") in TEXT_KINDS and "tokenizer" in summary
            else "no tokenizer is recorded (not a text dataset of `hrm-eval convert jsonl`, or one converted "
                 "before tokenizers were recorded)")
    raise InputError(f"{storage.join(dataset.uri, TOKENIZER_FILE)}: missing, so the dataset's tokens cannot be "
                     f"decoded to text: {what}")


def text_tokenizer(dataset: Dataset) -> Tokenizer | None:
    """The dataset's tokenizer as `load_tokenizer` finds it, or None where it records none (a
    grid dataset, an old keyword one): for a caller that decodes when it can. A tokenizer.json
    that is there but malformed is still refused."""
    uri = storage.join(dataset.uri, TOKENIZER_FILE)
    if storage.exists(uri):
        data = storage.read_json(uri)  # names the file when it is not JSON
        try:
            spec = _TOKENIZER_FILE.validate_python(data)
        except pydantic.ValidationError as err:
            raise invalid_input(uri, err, hidden=("bytes", "keywords", "huggingface")) from None
        try:
            return from_spec(spec)
        except InputError as err:
            raise InputError(f"{uri}: {err}") from None
    summary = dataset.index.summary if isinstance(dataset, ParquetDataset) else {}
    if summary.get("kind") in TEXT_KINDS and summary.get("tokenizer") == "bytes":
        return ByteTokenizer()
    return None


def decode_predictions(dataset: Dataset, predictions: np.ndarray | Iterable[Iterable[int]]) -> list[str]:
    """The text of each predicted token row (examples × positions), by the dataset's tokenizer."""
    return load_tokenizer(dataset).decode_rows(predictions)
