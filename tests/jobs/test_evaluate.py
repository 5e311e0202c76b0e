import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from hrm.data.arrow import column_matrix
from hrm.data.reader import open_dataset

from cluster.plan import Sample, prepare
from cluster.results.metrics import run_metrics

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, evaluate_in_process, make_dataset, run_config
from tests.factories import make_checkpoint


@pytest.fixture
def inputs(tmp_path):
    """(checkpoint run dir, dataset, output dir) of a tiny valid evaluation (halt_max_steps 4)."""
    make_checkpoint(tmp_path / "run", vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    return str(tmp_path / "run"), make_dataset(tmp_path / "data", {"all": 8}), tmp_path / "out"


def evaluate_args(inputs, *flags: str) -> list[str]:
    run, data, out = inputs
    return ["evaluate", "--checkpoint", run, "--data", data, "--output", str(out), *flags]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "argument --batch-size: 0 is not positive (expected an integer >= 1)"),
    (["--steps", "-3"], "argument --steps: -3 is not positive (expected an integer >= 1)"),
    (["--steps", "0"], "argument --steps: 0 is not positive (expected an integer >= 1)"),
    (["--threads", "-1"], "argument --threads: -1 is not positive (expected an integer >= 1)"),
    (["--min-steps", "0"], "argument --min-steps: 0 is not positive (expected an integer >= 1)"),
    (["--streams", "0"], "argument --streams: 0 is not positive (expected an integer >= 1)"),
    (["--batch-size", "many"], "argument --batch-size: 'many' is not an integer (expected a positive integer)"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from 'cpu', 'cuda')"),
])
def test_a_count_flag_that_is_not_a_positive_integer_is_refused_naming_the_flag(inputs, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(evaluate_args(inputs, *flags))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"hrm-eval evaluate: error: {message}"
    assert not inputs[2].exists()


@pytest.mark.parametrize("flags, message", [
    (["--steps", "2", "--min-steps", "3", "--protocol", "adaptive"],
     "--min-steps: 3 is more than the 2 steps an example runs at most (--steps, default halt_max_steps); "
     "give --min-steps <= 2"),
    (["--min-steps", "5"],
     "--min-steps: 5 is more than the 4 steps an example runs at most (--steps, default halt_max_steps); "
     "give --min-steps <= 4"),
])
def test_min_steps_above_the_steps_an_example_runs_is_refused_not_reinterpreted(inputs, capsys, flags, message):
    assert main(evaluate_args(inputs, *flags)) == 2
    assert capsys.readouterr().err.splitlines() == [f"hrm-eval evaluate: error: {message}"]
    assert not inputs[2].exists()


def test_cuda_on_a_machine_without_cuda_is_refused_in_one_line_not_a_torch_traceback(inputs, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(evaluate_args(inputs, "--device", "cuda")) == 2
    assert capsys.readouterr().err.splitlines() == [
        "hrm-eval evaluate: error: --device: cuda, but torch sees no CUDA device on this machine (use --device cpu)"]
    assert not inputs[2].exists()


def test_an_unknown_split_is_refused_naming_the_dataset_and_its_splits(inputs, capsys):
    assert main(evaluate_args(inputs, "--split", "validation")) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hrm-eval evaluate: error: {inputs[1]}: no split 'validation' (splits: test)"]
    assert not inputs[2].exists()


def test_a_checkpoint_whose_halt_max_steps_is_zero_is_refused_naming_its_config(inputs, capsys):
    config = inputs[0] + "/all_config.yaml"
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:
        handle.write(text.replace("halt_max_steps: 4", "halt_max_steps: 0"))
    assert main(evaluate_args(inputs)) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hrm-eval evaluate: error: {config}: arch.halt_max_steps: Input should be greater than or equal to 1"]
    assert not inputs[2].exists()


def test_set_without_a_run_config_is_refused_rather_than_ignored(inputs, capsys):
    assert main(evaluate_args(inputs, "--set", "eval.batch_size=2")) == 2
    assert capsys.readouterr().err.splitlines() == [
        "hrm-eval evaluate: error: --set overrides a run config: it goes with --config RUN.yaml and no --checkpoint"]
    assert not inputs[2].exists()


def test_set_overrides_the_run_config_of_the_distributed_job(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("checkpoints: [{run: ckpts}]\ndataset: {uri: data}\noutput: {uri: out}\n")
    assert main(["evaluate", "--config", str(config), "--set", "eval.batch_size=0"]) == 2
    assert "eval.batch_size" in capsys.readouterr().err


# --------------------------------------------------------------------------- what evaluate writes


def evaluated(inputs, capsys, *flags: str) -> dict:
    assert main(evaluate_args(inputs, "--device", "cpu", "--batch-size", "8", "--json", *flags)) == 0
    return json.loads(capsys.readouterr().out)


def test_metrics_json_is_what_a_run_of_the_one_checkpoint_writes_plus_the_job(inputs, capsys):
    run, data, out = inputs
    document = evaluated(inputs, capsys)
    assert json.loads((out / "metrics.json").read_text()) == document
    prepared = prepare(run_config([{"path": run}], data, str(out.parent / "runs"), eval={"device": "cpu"}))
    (reference,) = evaluate_in_process(prepared).values()
    expected = run_metrics(prepared, {prepared.checkpoints[0].name: reference[0]})
    assert document["job"]["examples"] == 8 and document["run_id"] == "out"
    same = lambda doc: {key: value for key, value in doc.items() if key not in ("run_id", "job")}  # noqa: E731
    assert same(json.loads(json.dumps(expected))) == same(document)
    assert list(document["checkpoints"]) == ["run-step_10"]  # named as the run names it


def test_predictions_are_laid_out_as_a_runs_and_read_with_a_checkpoint_column(inputs, capsys):
    document = evaluated(inputs, capsys)
    assert document["job"]["predictions"] == str(inputs[2] / "predictions")
    assert sorted(p.relative_to(inputs[2]).as_posix() for p in inputs[2].rglob("*.parquet")) == [
        "predictions/checkpoint=run-step_10/part-all-000000000.parquet"]
    table = pads.dataset(document["job"]["predictions"], format="parquet", partitioning="hive").to_table()
    assert table["checkpoint"].to_pylist() == ["run-step_10"] * 8 and table["example_id"].to_pylist() == list(range(8))


def test_log_samples_stores_each_examples_inputs_and_labels_and_only_then(inputs, capsys):
    plain = pq.read_table(evaluated(inputs, capsys)["job"]["predictions"])
    assert not {"inputs", "labels"} & set(plain.column_names)
    logged = evaluated(inputs, capsys, "--log-samples")
    table = pq.read_table(logged["job"]["predictions"]).sort_by("example_id")
    rows = open_dataset(inputs[1]).examples("test", "all")
    np.testing.assert_array_equal(column_matrix(table, "inputs"), rows.inputs)
    np.testing.assert_array_equal(column_matrix(table, "labels"), rows.labels)
    assert table["puzzle_identifier"].to_pylist() == rows.puzzle_identifiers.tolist()
    assert logged["job"]["log_samples"] and table.schema.field("inputs").type.value_type == pa.int32()


def test_an_output_holding_another_checkpoints_predictions_is_refused_before_evaluating(inputs, capsys):
    other = inputs[2] / "predictions" / "checkpoint=other-step_1" / "part-all-000000000.parquet"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"")
    assert main(evaluate_args(inputs, "--device", "cpu")) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"hrm-eval evaluate: error: {inputs[2]}: holds predictions this evaluation would not replace "
        "(predictions/checkpoint=other-step_1/part-all-000000000.parquet); give an --output of its own, or remove them"]
    assert not (inputs[2] / "metrics.json").exists()


def test_the_summary_prints_each_sets_figures_and_where_the_predictions_are(inputs, capsys):
    assert main(evaluate_args(inputs, "--device", "cpu")) == 0
    out = capsys.readouterr().out
    assert "run-step_10 on" in out and "│ all " in out
    assert re.search(r"^8 examples in [\d.]+ s \([\d.]+ examples/s, 32 example-steps\); predictions: .*/predictions$",
                     out, re.MULTILINE)


def test_limit_evaluates_the_first_n_examples_of_each_set_and_every_output_says_so(inputs, capsys):
    assert main(evaluate_args(inputs, "--limit", "5")) == 0
    out = capsys.readouterr().out
    assert "LIMITED to the first 5 examples of each set" in out
    document = json.loads((inputs[2] / "metrics.json").read_text())
    assert document["limit"] == 5 and document["job"]["examples"] == 5
    predictions = pq.read_table(inputs[2] / "predictions")
    assert sorted(predictions.column("example_id").to_pylist()) == [0, 1, 2, 3, 4]


def test_puzzle_ids_blank_gives_the_model_blank_identifiers_and_stores_the_datasets(inputs, capsys):
    assert main(evaluate_args(inputs, "--puzzle-ids", "blank", "--json")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["job"]["puzzle_ids"] == "blank"
    stored = pq.read_table(inputs[2] / "predictions").column("puzzle_identifier").to_pylist()
    dataset = open_dataset(inputs[1]).examples("test", "all")
    assert sorted(stored) == sorted(dataset.puzzle_identifiers.tolist()) and set(stored) != {0}


def test_a_text_datasets_predictions_are_stored_decoded_by_its_own_tokenizer(tmp_path, capsys):
    records = [{"prompt": f"say {word}", "completion": word} for word in ("hi", "yes", "no", "ok")]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["convert", "jsonl", "--test", str(tmp_path / "tasks.jsonl"), "--tokenizer", "bytes", "--seq-len", "8",
                 "--output", str(tmp_path / "data")]) == 0
    meta = open_dataset(tmp_path / "data").metadata("test")
    make_checkpoint(tmp_path / "run", vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                    num_puzzle_identifiers=meta.num_puzzle_identifiers)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
                 "--output", str(tmp_path / "out")]) == 0
    table = pq.read_table(tmp_path / "out" / "predictions")

    def by_hand(row) -> str:  # byte b is token b + 2; pad 0 skipped; eos 1 ends the text
        tokens = [int(t) for t in row]
        tokens = tokens[:tokens.index(1)] if 1 in tokens else tokens
        return bytes(t - 2 for t in tokens if t >= 2).decode("utf-8", "replace")

    assert table.column("decoded").to_pylist() == [by_hand(row) for row in column_matrix(table, "pred")]


@pytest.mark.parametrize("flags, streams", [
    ([], len(os.sched_getaffinity(0))),  # the measured robust default: one single-threaded stream per core
    (["--threads", "1"], 1),  # threads given: one stream of them
    (["--streams", "1"], 1),
])
def test_on_a_cpu_evaluate_runs_one_stream_per_core_unless_told_otherwise(inputs, capsys, flags, streams):
    assert main(evaluate_args(inputs, "--device", "cpu", "--json", *flags)) == 0
    assert json.loads(capsys.readouterr().out)["job"]["streams"] == streams


def test_limit_with_a_sample_seed_evaluates_a_seeded_sample_and_every_output_says_so(inputs, capsys):
    assert main(evaluate_args(inputs, "--limit", "5", "--sample-seed", "3")) == 0
    out = capsys.readouterr().out
    assert "LIMITED to a seeded sample of 5 (seed 3) of each set's examples" in out
    document = json.loads((inputs[2] / "metrics.json").read_text())
    assert document["limit"] == 5 and document["sample_seed"] == 3 and document["job"]["examples"] == 5
    predictions = pq.read_table(inputs[2] / "predictions")
    expected = Sample(seed=3, limit=5).rows(open_dataset(inputs[1]).num_examples("test", "all")).tolist()
    assert sorted(predictions.column("example_id").to_pylist()) == expected != [0, 1, 2, 3, 4]


def test_a_sample_seed_without_a_limit_is_one_error_line_and_exit_2(inputs, capsys):
    assert main(evaluate_args(inputs, "--sample-seed", "3")) == 2
    assert capsys.readouterr().err.splitlines() == [
        "hrm-eval evaluate: error: --sample-seed: 3 without --limit N: a seeded sample draws N examples of each set; "
        "give --limit too"]
    assert not (inputs[2] / "metrics.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--compile-mode", "max-autotune"], "compile_mode 'max-autotune' is a mode of compile, which is off"),
    (["--compile", "--compile-mode", "reduce-overhead", "--device", "cpu"],
     "compile_mode 'reduce-overhead' runs CUDA graphs: CUDA only, not cpu"),
])
def test_a_compile_mode_the_engine_cannot_run_is_one_error_line_naming_the_flag(inputs, capsys, flags, message):
    assert main(evaluate_args(inputs, *flags)) == 2
    assert capsys.readouterr().err.splitlines() == [f"hrm-eval evaluate: error: --compile-mode: {message}"]
    assert not inputs[2].exists()
