"""`hrm-eval convert jsonl`: lossless bytes, lossy keywords only when allowed, Hugging Face tokenizers,
the tokenizer and the task fields carried into the dataset, seq_len, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm.checks.tasks import load_tasks
from hrm.checks.tool_chain import load_tool_set
from hrm.data.reader import open_dataset
from hrm.puzzles.text import TASKS_FILE, dataset_tasks, tasks_file
from hrm.puzzles.tokenizers import TOKENIZER_FILE, decode_predictions, load_tokenizer

from jobs.cli import main

from tests.factories import convert_cli
from tests.hrm.puzzles.test_tokenizers import trained_bpe, trained_wordpiece

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
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"type": "Transformer"}}))
    for lossy in (["--allow-lossy"], []):  # a JSON object is never read as a keyword list
        assert f"{other}: not a Hugging Face tokenizers JSON file" in refused(
            capsys, "--test", records_file, "--tokenizer", other, *lossy, "--output", tmp_path / "o")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model": {"type": "BPE", "vocab": "not a vocabulary"}}))
    assert f"{broken}: not a Hugging Face tokenizer the tokenizers library can load" in refused(
        capsys, "--test", records_file, "--tokenizer", broken, "--output", tmp_path / "o")
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


@pytest.mark.s3
def test_a_dataset_on_s3_decodes_and_gives_its_tasks_with_their_tool_files(capsys, tmp_path, s3_bucket):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "weather.json").write_text(json.dumps(WEATHER_TOOL))
    source = write_jsonl(tmp_path / "tasks.jsonl", TASKS)
    convert(capsys, "--test", source, "--tokenizer", trained_bpe(tmp_path / "bpe.json"), "--output", f"{s3_bucket}/t")
    dataset = open_dataset(f"{s3_bucket}/t")
    labels = dataset.read_set("test", "all").labels
    assert decode_predictions(dataset, labels)[2:] == ["HI", TASKS[3]["reference"], "record"]
    tasks = dataset_tasks(dataset, tmp_path / "copy")
    assert [task.task_id for task in tasks.values()] == ["add", "he", "shout", "weather"]
    assert "get_weather" in load_tool_set(tasks["weather"].tools, tmp_path / "copy").schemas


def test_a_jsonl_line_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n')
    err = refused(capsys, "--test", source, "--tokenizer", "bytes", "--output", tmp_path / "out")
    assert err.splitlines() == [f"hrm-eval convert: error: {source}:2: byte 50 is not valid UTF-8 "
                                "(0xe9; the file must be UTF-8 text)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe", "keywords"])
def test_a_converted_dataset_decodes_its_labels_back_to_the_completions_with_its_own_tokenizer(
        capsys, tmp_path, records_file, vocab_file, tokenizer):
    spec = {"bytes": ["bytes"], "bpe": [trained_bpe(tmp_path / "bpe.json")],
            "keywords": [vocab_file, "--allow-lossy"]}[tokenizer]
    summary = convert(capsys, "--test", records_file, "--tokenizer", *spec, "--output", tmp_path / "out")
    dataset = open_dataset(tmp_path / "out")
    assert TOKENIZER_FILE in dataset.files()
    arrays = dataset.read_set("test", "all")
    decoded = decode_predictions(dataset, arrays.labels)
    if tokenizer == "keywords":  # the keyword sequence only
        assert decoded == ["validation end", "deployment monitoring end", "performance end"]
        assert load_tokenizer(dataset).lossy and summary["lossy"]
        assert dataset.index.summary["words_without_token"] == 5  # readable from the dataset, for the report
    else:
        assert decoded == [r["completion"] for r in RECORDS]
        assert load_tokenizer(dataset).decode_rows(arrays.inputs) == [r["prompt"] for r in RECORDS]
        assert not summary["lossy"] and summary["records_not_round_tripping"] == 0
    assert load_tokenizer(dataset).vocab_size == summary["vocab_size"]


def test_a_hugging_face_tokenizer_that_loses_text_is_refused_unless_allowed_and_counted(capsys, tmp_path, records_file):
    wordpiece = trained_wordpiece(tmp_path / "wp.json")
    err = refused(capsys, "--test", records_file, "--tokenizer", wordpiece, "--output", tmp_path / "out")
    assert f"{records_file}:1: --tokenizer {wordpiece} does not give this record's prompt back" in err
    assert "3 of 3 records do not round trip" in err and "--allow-lossy" in err
    assert not (tmp_path / "out").exists()
    summary = convert(capsys, "--test", records_file, "--tokenizer", wordpiece, "--allow-lossy",
                      "--output", tmp_path / "out")
    assert (summary["lossy"], summary["records_not_round_tripping"]) == (True, 3)
    assert summary["tokenizer"] == "huggingface:wp.json" and summary["words_without_token"] > 0
    assert load_tokenizer(open_dataset(tmp_path / "out")).lossy


WEATHER_TOOL = {"name": "get_weather", "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TASKS = [
    {"task_id": "add", "kind": "python", "tier": "easy", "prompt": "Write add(a, b).",
     "reference": "def add(a, b):\n    return a + b\n", "func_name": "add",
     "tests": [{"input": "1\n2", "output": "3", "testtype": "functional"}], "title": "ignored"},
    {"task_id": "he", "kind": "python", "prompt": "Write inc(x).", "reference": "def inc(x):\n    return x + 1\n",
     "test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "inc",
     "completion": "def inc(x): return x + 1"},
    {"task_id": "shout", "kind": "exact", "prompt": "Say HI.", "reference": "HI", "difficulty": "hard"},
    {"task_id": "weather", "kind": "tool_chain", "prompt": "Weather in Oslo?",
     "reference": '{"tool": "get_weather", "args": {"city": "Oslo"}}', "tools": ["schemas/weather.json"]},
    {"prompt": "plain", "completion": "record"},
]


def test_task_fields_survive_conversion_and_read_back_equal(capsys, tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "weather.json").write_text(json.dumps(WEATHER_TOOL))
    source = write_jsonl(tmp_path / "tasks.jsonl", TASKS)
    summary = convert(capsys, "--test", source, "--tokenizer", "bytes", "--output", tmp_path / "out")
    assert summary["tasks"] == 4
    dataset = open_dataset(tmp_path / "out")
    arrays = dataset.read_set("test", "all")
    assert list(arrays.columns["task_id"]) == ["add", "he", "shout", "weather", ""]
    assert list(arrays.columns["tier"]) == ["easy", "", "hard", "", ""]  # --tier-key first, then the task's tier
    # the completion is the record's own when it has one, else the task's reference
    assert decode_predictions(dataset, arrays.labels) == [
        TASKS[0]["reference"], "def inc(x): return x + 1", "HI", TASKS[3]["reference"], "record"]
    carried = dataset_tasks(dataset)
    original = {task.task_id: task for task in load_tasks(write_jsonl(tmp_path / "only.jsonl", TASKS[:4]))}
    assert carried.keys() == original.keys()
    for task_id in ("add", "he", "shout"):
        assert carried[task_id] == original[task_id]
    # the tool schema travels with the dataset, and the tasks file `hrm-eval check` reads finds it there
    assert carried["weather"].tools == ["tools.weather.json"]
    assert carried["weather"].model_copy(update={"tools": original["weather"].tools}) == original["weather"]
    path = tasks_file(dataset)
    assert path == tmp_path / "out" / TASKS_FILE
    assert "get_weather" in load_tool_set(carried["weather"].tools, path.parent).schemas


@pytest.mark.parametrize("record, message", [
    ({"task_id": "t", "kind": "python", "prompt": "p", "reference": "r"}, "(top level): a python task has either"),
    ({"task_id": "t", "kind": "exact", "prompt": "p"}, "reference: Field required"),
    ({"task_id": "add", "kind": "exact", "prompt": "p", "reference": "r"}, "task_id 'add' is already the task at"),
    ({"task_id": "t", "kind": "tool_chain", "prompt": "p", "reference": "r", "tools": ["none.json"]},
     "tools: "),
])
def test_a_bad_task_is_refused_naming_its_line(capsys, tmp_path, record, message):
    source = write_jsonl(tmp_path / "tasks.jsonl", [TASKS[0], record])
    err = refused(capsys, "--test", source, "--tokenizer", "bytes", "--output", tmp_path / "out")
    assert f"{source}:2: {message}" in err
    assert not (tmp_path / "out").exists()
