"""`hrm-eval convert jsonl`: lossless bytes, lossy keywords only when allowed, seq_len, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm.data.reader import open_dataset

from jobs.cli import main

from tests.factories import convert_cli

KEYWORDS = ["start", "test", "agent", "data", "security", "performance", "integration",
            "automation", "validation", "deployment", "monitoring", "end"]
RECORDS = [
    {"prompt": "Start: test the agent's data!", "completion": "validation end", "source": "ops", "difficulty": 2},
    {"prompt": "Déploiement ✓", "completion": "deployment monitoring end", "difficulty": "hard"},
    {"prompt": "start security audit", "completion": "performance end"},
]


convert, refused = convert_cli("jsonl")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def records_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "tasks.jsonl", RECORDS)


@pytest.fixture
def vocab_file(tmp_path) -> Path:
    path = tmp_path / "keywords.txt"
    path.write_text("\n".join(KEYWORDS) + "\n")
    return path


def decode_bytes(row: np.ndarray) -> str:
    """Tokens up to eos (1) back to text: byte b is token b + 2."""
    end = int(np.argmax(row == 1))
    return bytes((row[:end] - 2).astype(np.uint8)).decode("utf-8")


def test_byte_tokenizer_is_lossless(capsys, tmp_path, records_file):
    summary = convert(capsys, "--test", records_file, "--tokenizer", "bytes", "--output", tmp_path / "out")
    dataset = open_dataset(tmp_path / "out")
    arrays = dataset.read_set("test", "all")
    assert [decode_bytes(row) for row in arrays.inputs] == [r["prompt"] for r in RECORDS]
    assert [decode_bytes(row) for row in arrays.labels] == [r["completion"] for r in RECORDS]
    longest = max(len(r[k].encode()) for r in RECORDS for k in ("prompt", "completion")) + 1
    meta = dataset.metadata("test")
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id) == (258, longest, 0, 0)
    assert (summary["truncations"], summary["words_without_token"]) == (0, 0)
    assert list(arrays.columns["source"]) == ["ops", "tasks.jsonl", "tasks.jsonl"]
    assert list(arrays.columns["tier"]) == ["2", "hard", ""]
    assert list(arrays.columns["prompt_tokens"]) == [len(r["prompt"].encode()) for r in RECORDS]
    np.testing.assert_array_equal(arrays.group_indices, [0, 1, 2, 3])


def test_keyword_vocabulary_is_refused_unless_loss_is_allowed(capsys, tmp_path, records_file, vocab_file):
    err = refused(capsys, "--test", records_file, "--tokenizer", vocab_file, "--output", tmp_path / "out")
    assert "--allow-lossy" in err and not (tmp_path / "out").exists()


def test_keyword_vocabulary_counts_the_words_it_drops(capsys, tmp_path, records_file, vocab_file):
    summary = convert(capsys, "--test", records_file, "--tokenizer", vocab_file, "--allow-lossy",
                      "--output", tmp_path / "out")
    arrays = open_dataset(tmp_path / "out").read_set("test", "all")
    token = {word: index + 2 for index, word in enumerate(KEYWORDS)}
    assert list(arrays.inputs[0][:5]) == [token["start"], token["test"], token["agent"], token["data"], 1]
    assert list(arrays.labels[1][:4]) == [token["deployment"], token["monitoring"], token["end"], 1]
    # dropped: the, agent's "s", "déploiement" splits into d/ploiement, audit
    assert summary["words_without_token"] == 5
    assert summary["most_common_words_without_token"] == {"the": 1, "s": 1, "d": 1, "ploiement": 1, "audit": 1}
    assert summary["vocab_size"] == 14


def test_overflowing_seq_len_is_refused_with_counts_unless_truncating(capsys, tmp_path, records_file):
    err = refused(capsys, "--test", records_file, "--tokenizer", "bytes", "--seq-len", 16, "--output", tmp_path / "o")
    assert f"{records_file}:1: 30 tokens exceed --seq-len 16 (3 records overflow)" in err
    assert not (tmp_path / "o").exists()
    summary = convert(capsys, "--test", records_file, "--tokenizer", "bytes", "--seq-len", 16, "--truncate",
                      "--output", tmp_path / "out")
    assert (summary["truncations"], summary["truncated_prompts"], summary["truncated_completions"]) == (3, 3, 1)
    arrays = open_dataset(tmp_path / "out").read_set("test", "all")
    assert arrays.inputs.shape == (3, 16)
    assert bytes((arrays.inputs[0] - 2).astype(np.uint8)).decode() == RECORDS[0]["prompt"][:16]
    assert list(arrays.columns["prompt_tokens"])[:1] == [29]  # the length before truncation


def test_input_file_splits_by_test_fraction(capsys, tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [{"prompt": str(i), "completion": str(i)} for i in range(10)])
    summary = convert(capsys, "--input", path, "--test-fraction", 0.3, "--tokenizer", "bytes", "--output", tmp_path / "o")
    assert summary["splits"]["test"]["examples"] == 3 and summary["splits"]["train"]["examples"] == 7


def test_help_explains_the_tokenizers(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "jsonl", "--help"])
    text = capsys.readouterr().out
    for phrase in ("prompt", "completion", "bytes", "--allow-lossy", "--seq-len", "--truncate"):
        assert phrase in text


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", ', "not valid JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"prompt": "a"}', "field 'completion' must be a string, got NoneType"),
    ('{"prompt": 3, "completion": "b"}', "field 'prompt' must be a string, got int"),
])
def test_malformed_lines_are_refused_naming_file_and_line(capsys, tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], line])
    err = refused(capsys, "--test", path, "--tokenizer", "bytes", "--output", tmp_path / "out")
    assert f"{path}:2: {message}" in err
    assert not (tmp_path / "out").exists()


def test_bad_vocabulary_files_and_missing_inputs_are_refused(capsys, tmp_path, records_file):
    vocab = tmp_path / "v.txt"
    vocab.write_text("start\nend\nstart\n")
    assert f"{vocab}:3: keyword 'start' is listed twice" in refused(
        capsys, "--test", records_file, "--tokenizer", vocab, "--allow-lossy", "--output", tmp_path / "o")
    vocab.write_text("two words\n")
    assert f"{vocab}:1: keyword 'two words' is not one word" in refused(
        capsys, "--test", records_file, "--tokenizer", vocab, "--allow-lossy", "--output", tmp_path / "o")
    for lossy in (["--allow-lossy"], []):  # a missing file is named as missing, whether loss is allowed or not
        assert f"{tmp_path / 'none.txt'}: no such file" in refused(
            capsys, "--test", records_file, "--tokenizer", tmp_path / "none.txt", *lossy, "--output", tmp_path / "o")
    assert f"{tmp_path / 'none.jsonl'}: no such file" in refused(
        capsys, "--test", tmp_path / "none.jsonl", "--tokenizer", "bytes", "--output", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.s3
def test_conversion_to_s3_reads_back_like_local(capsys, tmp_path, records_file, s3_bucket):
    convert(capsys, "--test", records_file, "--tokenizer", "bytes", "--output", tmp_path / "local")
    convert(capsys, "--test", records_file, "--tokenizer", "bytes", "--output", f"{s3_bucket}/text")
    a = open_dataset(tmp_path / "local").read_set("test", "all")
    b = open_dataset(f"{s3_bucket}/text").read_set("test", "all")
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.columns["tier"], b.columns["tier"])


def test_a_jsonl_line_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n')
    err = refused(capsys, "--test", source, "--tokenizer", "bytes", "--output", tmp_path / "out")
    assert err.splitlines() == [f"hrm-eval convert: error: {source}:2: byte 50 is not valid UTF-8 "
                                "(0xe9; the file must be UTF-8 text)"]
    assert not (tmp_path / "out").exists()
