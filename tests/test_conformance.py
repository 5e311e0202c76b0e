"""The reference vectors in ../shared/conformance: hrm-eval must compute exactly what the
reference evaluator computed (identical predictions, q logits within 1e-4, metrics within
1e-5, lm_loss within 1e-4)."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from hrm.data.arrow import column_matrix
from hrm.eval.engine import cpu_compiler

from jobs.cli import main

from tests.factories import CONFORMANCE

pytestmark = pytest.mark.skipif(not CONFORMANCE.is_dir(), reason=f"conformance vectors not found at {CONFORMANCE}")

# (vector, checkpoint, the batch size the reference used)
VECTORS = [
    ("hrm-sudoku-tiny", "small-fp32", 64),
    ("hrm-sudoku-tiny", "small-fp32-compiled", 64),
    ("trm-arc-tiny", "trm-fp32", 16),
    ("trm-sudoku-mlpt", "trm-mlpt-fp32", 24),
]
# our metric name -> the reference's
METRIC_NAMES = {"token_accuracy": "accuracy", "exact_accuracy": "exact_accuracy",
                "q_halt_accuracy": "q_halt_accuracy", "mean_steps": "steps", "lm_loss": "lm_loss"}


def evaluate_json(capsys, tmp_path, vector, checkpoint, batch_size, extra=()):
    args = ["evaluate", "--checkpoint", str(CONFORMANCE / vector / "checkpoints" / checkpoint),
            "--data", str(CONFORMANCE / vector / "data"), "--protocol", "fixed", "--dtype", "float32",
            "--batch-size", str(batch_size), "--output", str(tmp_path), "--json", *extra]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("vector,checkpoint,batch_size", VECTORS)
def test_evaluate_reproduces_the_reference_evaluator(capsys, tmp_path, vector, checkpoint, batch_size):
    assert_reference_results(evaluate_json(capsys, tmp_path, vector, checkpoint, batch_size), vector, checkpoint)


NEEDS_COMPILER = pytest.mark.skipif(cpu_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++)")


@pytest.mark.parametrize("flags", [[], pytest.param(["--compile"], marks=NEEDS_COMPILER)], ids=["eager", "compiled"])
def test_two_streams_of_the_reference_batch_size_reproduce_the_reference_evaluator(capsys, tmp_path, flags):
    vector, checkpoint, batch_size = VECTORS[0]
    report = evaluate_json(capsys, tmp_path, vector, checkpoint, 2 * batch_size, ["--streams", "2", *flags])
    assert_reference_results(report, vector, checkpoint)


@NEEDS_COMPILER
@pytest.mark.parametrize("vector,checkpoint,batch_size", [VECTORS[0], VECTORS[2]])
def test_a_compiled_engine_reproduces_the_reference_evaluator(capsys, tmp_path, vector, checkpoint, batch_size):
    report = evaluate_json(capsys, tmp_path, vector, checkpoint, batch_size, ["--compile"])
    assert_reference_results(report, vector, checkpoint)


def assert_reference_results(report, vector, checkpoint):
    expected = np.load(CONFORMANCE / vector / "expected" / f"{checkpoint}.npz")
    reference = json.loads((CONFORMANCE / vector / "expected" / f"{checkpoint}.metrics.json").read_text())

    table = pq.read_table(report["job"]["predictions"]).sort_by([("set", "ascending"), ("example_id", "ascending")])
    assert table.num_rows == len(expected["pred"])
    np.testing.assert_array_equal(column_matrix(table, "pred"), expected["pred"])
    np.testing.assert_allclose(table["q_halt_logit"].to_numpy(), expected["q_halt_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(table["q_continue_logit"].to_numpy(), expected["q_continue_logits"], atol=1e-4, rtol=0)

    ours, theirs = figures(report)["all"], reference["metrics"]["all"]
    assert ours["count"] == len(expected["pred"])
    for name, ref_name in METRIC_NAMES.items():
        tolerance = 1e-4 if name == "lm_loss" else 1e-5
        assert ours[name] == pytest.approx(theirs[ref_name], abs=tolerance), name


def test_the_installed_console_script_prints_one_json_object(tmp_path):
    vector, checkpoint, batch_size = VECTORS[3]
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "hrm-eval"), "evaluate", "--checkpoint", str(CONFORMANCE / vector / "checkpoints" / checkpoint),
         "--data", str(CONFORMANCE / vector / "data"), "--batch-size", str(batch_size), "--output", str(tmp_path),
         "--json"],
        capture_output=True, text=True, check=True,
    )
    report = json.loads(done.stdout)
    assert set(figures(report)["all"]) >= {"count", "token_accuracy", "exact_accuracy", "q_halt_accuracy",
                                             "mean_steps", "lm_loss"}
    assert pq.read_table(report["job"]["predictions"]).column_names[:5] == ["set", "example_id", "puzzle_index",
                                                                   "puzzle_identifier", "pred"]


def figures(report):
    """The metrics of the one checkpoint of an evaluate report (metrics.json's shape)."""
    (entry,) = report["checkpoints"].values()
    return entry["metrics"]


def test_streams_below_one_are_refused_naming_the_flag(capsys, tmp_path):
    vector, checkpoint, batch_size = VECTORS[0]
    args = ["evaluate", "--checkpoint", str(CONFORMANCE / vector / "checkpoints" / checkpoint),
            "--data", str(CONFORMANCE / vector / "data"), "--output", str(tmp_path / "out"), "--streams", "0"]
    with pytest.raises(SystemExit) as exit_:  # refused by the flag's argparse type, before anything loads
        main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "hrm-eval evaluate: error: argument --streams: 0 is not positive (expected an integer >= 1)")
    assert not (tmp_path / "out").exists()


def test_compile_without_a_cpu_compiler_is_refused_naming_the_flag(capsys, tmp_path, monkeypatch):
    vector, checkpoint, _ = VECTORS[0]
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    args = ["evaluate", "--checkpoint", str(CONFORMANCE / vector / "checkpoints" / checkpoint),
            "--data", str(CONFORMANCE / vector / "data"), "--output", str(tmp_path / "out"), "--streams", "2",
            "--compile"]
    assert main(args) == 2
    assert "--compile: compile on CPU needs a C++ compiler" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
