"""Tokenizers: bytes decode exactly, keywords to their keyword sequence (lossy), a Hugging Face
tokenizer through its library; a dataset's tokenizer.json is read back, or refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as LibraryTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.puzzles.publish import Clock, Destination, publish, single_example_puzzles
from hrm.puzzles.tokenizers import (
    TOKENIZER_FILE,
    ByteTokenizer,
    HuggingFaceTokenizer,
    KeywordTokenizer,
    decode_predictions,
    load_tokenizer,
    text_tokenizer,
)

TEXTS = ["Déploiement ✓ — naïve café", "def add(a, b):\n    return a + b\n", "hello world", ""]


def trained_bpe(path: Path, texts: list[str] = TEXTS) -> Path:
    """A tiny byte-level BPE trained here on `texts` (no download): lossless on any text."""
    library = LibraryTokenizer(models.BPE())
    library.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    library.decoder = decoders.ByteLevel()
    library.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, show_progress=False, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path.write_text(library.to_str())
    return path


def trained_wordpiece(path: Path) -> Path:
    """A lower-casing WordPiece with [UNK]: loses case and every character it never saw."""
    library = LibraryTokenizer(models.WordPiece(unk_token="[UNK]"))
    library.normalizer = normalizers.BertNormalizer(lowercase=True)
    library.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    library.decoder = decoders.WordPiece()
    library.train_from_iterator(["hello world", "start the test"], trainers.WordPieceTrainer(
        vocab_size=100, show_progress=False, special_tokens=["[UNK]"]))
    path.write_text(library.to_str())
    return path


def test_bytes_decode_what_they_encode_exactly_and_stop_at_eos_skipping_pad():
    tokenizer = ByteTokenizer()
    for text in TEXTS:
        tokens, lost = tokenizer.encode(text)
        assert tokenizer.decode(tokens) == text and lost == []
        assert tokenizer.decode([0, *tokens, 0, 1, *tokens]) == text  # pad skipped, nothing after eos
    assert not tokenizer.lossy


def test_bytes_that_are_not_utf8_or_tokens_past_the_vocabulary_decode_as_replacement_characters():
    tokenizer = ByteTokenizer()
    assert tokenizer.decode([ord("a") + 2, 0xFF + 2, ord("b") + 2]) == "a\ufffdb"
    assert tokenizer.decode([0xC3 + 2]) == "\ufffd"  # a cut-off two-byte sequence
    assert tokenizer.decode([ord("a") + 2, 258, 900]) == "a\ufffd\ufffd"


def test_keywords_decode_to_the_keyword_sequence_and_say_they_are_lossy():
    tokenizer = KeywordTokenizer(["start", "test", "end"], "kw.txt")
    tokens, lost = tokenizer.encode("Start: the TEST, then end!")
    assert tokens == [2, 3, 4] and lost == ["the", "then"]
    assert tokenizer.decode([*tokens, 1]) == "start test end"
    assert tokenizer.decode([2, 99]) == "start \ufffd"
    assert tokenizer.lossy and tokenizer.vocab_size == 5


def test_a_trained_bpe_round_trips_with_its_ids_offset_past_pad_and_eos(tmp_path):
    path = trained_bpe(tmp_path / "bpe.json")
    tokenizer = HuggingFaceTokenizer.from_file(path)
    library = LibraryTokenizer.from_file(str(path))
    assert tokenizer.vocab_size == library.get_vocab_size() + 2
    for text in [*TEXTS, "unseen words ✗ also 🙂"]:
        tokens, lost = tokenizer.encode(text)
        assert tokens == [i + 2 for i in library.encode(text).ids] and lost == []
        assert tokenizer.decode([*tokens, 1, 5, 6]) == text
    assert tokenizer.decode([2 + library.token_to_id("h"), 1_000_000]) == "h\ufffd"


def test_a_lower_casing_wordpiece_loses_text_and_names_the_pieces_it_had_no_token_for(tmp_path):
    tokenizer = HuggingFaceTokenizer.from_file(trained_wordpiece(tmp_path / "wp.json"))
    tokens, lost = tokenizer.encode("Hello zq world")
    assert lost == ["zq"]
    assert tokenizer.decode(tokens) == "hello world"  # [UNK] is a special token: decoding skips it


def test_a_json_file_that_is_not_a_hugging_face_tokenizer_is_refused_by_name(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"model": {"type": "Transformer"}}))
    with pytest.raises(InputError, match=f"{path}: not a Hugging Face tokenizers JSON file"):
        HuggingFaceTokenizer.from_file(path)


def text_dataset(uri: Path, *, tokenizer: object | None, summary: dict | None = None):
    """A one-example text dataset whose tokenizer.json holds `tokenizer` (None: no such file)."""
    rows = np.array([ByteTokenizer().encode("hi")[0] + [1]], dtype=np.uint16)
    publish(Destination(str(uri)), "jsonl", {"test": single_example_puzzles(rows, rows)}, seed=0, vocab_size=258,
            seq_len=3, identifiers=["<blank>"], clock=Clock(), details=summary or {},
            extra_files={} if tokenizer is None else {TOKENIZER_FILE: tokenizer})
    return open_dataset(uri)


@pytest.mark.parametrize("content, message", [
    ({"kind": "letters"}, "Input tag 'letters' found using 'kind'"),
    ({"kind": "keywords", "source": "kw.txt", "vocabulary": ["two words"]}, "vocabulary.0: String should match"),
    ({"kind": "keywords", "source": "kw.txt", "vocabulary": ["end", "end"]}, "vocabulary: keyword 'end' is listed twice"),
    ({"kind": "bytes", "eos_id": 7}, "eos_id: Input should be 1"),
    ({"kind": "huggingface", "source": "t.json", "lossy": False, "tokenizer": {"model": {"type": "BPE"}}},
     "t.json: not a Hugging Face tokenizer the tokenizers library can load"),
])
def test_a_malformed_tokenizer_file_is_refused_naming_the_file_and_field(tmp_path, content, message):
    dataset = text_dataset(tmp_path / "d", tokenizer=content)
    with pytest.raises(InputError) as err:
        load_tokenizer(dataset)
    assert str(err.value).startswith(str(tmp_path / "d" / TOKENIZER_FILE)) and message in str(err.value)


def test_a_text_dataset_from_before_tokenizer_files_decodes_only_when_it_was_bytes(tmp_path):
    old_bytes = text_dataset(tmp_path / "b", tokenizer=None, summary={"tokenizer": "bytes"})
    assert decode_predictions(old_bytes, np.array([[ord("o") + 2, ord("k") + 2, 1]])) == ["ok"]
    old_keywords = text_dataset(tmp_path / "k", tokenizer=None, summary={"tokenizer": "keywords:kw.txt"})
    with pytest.raises(InputError, match=r"tokenizer.json: missing.*'keywords:kw.txt' was not recorded"):
        load_tokenizer(old_keywords)
    assert text_tokenizer(old_keywords) is None  # for a caller that decodes only when it can
    assert isinstance(text_tokenizer(old_bytes), ByteTokenizer)
    grids = text_dataset(tmp_path / "g", tokenizer=None, summary={"kind": "sudoku-csv"})
    assert text_tokenizer(grids) is None
    with pytest.raises(InputError, match="no tokenizer is recorded"):
        load_tokenizer(grids)
