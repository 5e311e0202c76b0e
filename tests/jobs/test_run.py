import pytest
import yaml

from hrm import storage

from cluster.actor import Evaluator
from cluster.config import load_run_config
from cluster.plan import prepare
from cluster.results.layout import commit_unit

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset
from tests.factories import make_checkpoint


def test_a_dry_run_prints_the_plan_and_what_a_rerun_resumes_and_writes_nothing(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")  # 40 easy + 24 hard examples: 5 shards of 16
    make_checkpoint(tmp_path / "run", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    out = tmp_path / "out"
    doc = {"checkpoints": [{"run": str(tmp_path / "run")}], "dataset": {"uri": data}, "eval": {"batch_size": 8},
           "cluster": {"shard_size": 16, "torch_threads": 1}, "output": {"uri": str(out), "run_id": "r"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))

    assert main(["run", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "set easy: 40 examples in 3 shard(s)" in printed and "set hard: 24 examples in 2 shard(s)" in printed
    assert "run-step_2 (step 2, hrm): 5 units, 64 examples" in printed
    assert "10 units, 128 example evaluations; already committed (a rerun resumes them): 0 units" in printed
    assert not out.exists()

    prepared = prepare(load_run_config(path))
    unit = prepared.units[0]
    commit_unit(prepared.run, Evaluator(prepared.config, prepared.run)(unit, prepared.checkpoints[0]))
    assert main(["run", str(path), "--dry-run"]) == 0
    assert f"resumes them): 1 units, {unit.examples} examples; to evaluate: 9 units" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.s3
def test_credentials_given_in_the_output_uri_are_used_and_written_nowhere(tmp_path, s3_bucket, ray_runtime, capsys):
    secret = "TOPSECRETVALUE"
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "run", steps=(1,), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    output = f"s3://AKIAEXAMPLE:{secret}@{s3_bucket.removeprefix('s3://')}/out"
    doc = {"checkpoints": [{"run": str(tmp_path / "run")}], "dataset": {"uri": data}, "eval": {"batch_size": 8},
           "cluster": {"shard_size": 32, "torch_threads": 1, "actors": 1}, "output": {"uri": output, "run_id": "r"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))

    assert main(["run", str(path)]) == 0
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    assert f"results: s3://***@{s3_bucket.removeprefix('s3://')}/out/r" in printed.err
    run = f"{s3_bucket}/out/r"
    files = storage.list_files(run)
    assert {"manifest.json", "metrics.json", "health.json", "report.html", "report.md"} <= set(files)
    assert not [f for f in files if secret.encode() in storage.read_bytes(storage.join(run, f))]


def test_an_error_naming_a_uri_with_credentials_prints_it_without_them(s3_endpoint, capsys):
    assert main(["inspect", "s3://AKIAEXAMPLE:TOPSECRETVALUE@no-such-bucket/run/step_1"]) == 2
    err = capsys.readouterr().err
    assert "TOPSECRETVALUE" not in err and "s3://***@no-such-bucket/run/step_1" in err


# --------------------------------------------------------------------------- inside a Ray job

# What Ray's job supervisor puts in a submitted entrypoint's environment (Ray 2.60), with and
# without --working-dir.
UPLOADED = '{"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip", "env_vars": {}}, "metadata": {}}'
NOT_UPLOADED = '{"runtime_env": {"env_vars": {}}, "metadata": {}}'


def small_run_config(tmp_path, output: str, data: str = "data", run: str = "run") -> str:
    """A run config in tmp_path (the data and checkpoint made once, in tmp_path/data and run)."""
    if not (tmp_path / "data").exists():
        make_dataset(tmp_path / "data")
        make_checkpoint(tmp_path / "run", steps=(1,), vocab_size=VOCAB, seq_len=SEQ_LEN,
                        num_puzzle_identifiers=NUM_IDS)
    doc = {"checkpoints": [{"run": run}], "dataset": {"uri": data}, "eval": {"batch_size": 8},
           "cluster": {"shard_size": 32, "torch_threads": 1}, "output": {"uri": output, "run_id": "r"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("job_config", [UPLOADED, NOT_UPLOADED], ids=["working-dir", "no-working-dir"])
def test_a_relative_output_uri_in_a_ray_job_is_refused_naming_the_field_and_an_absolute_alternative(
        tmp_path, monkeypatch, capsys, job_config):
    monkeypatch.chdir(tmp_path)
    config = small_run_config(tmp_path, output="results")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", job_config)

    assert main(["run", config]) == 2
    err = capsys.readouterr().err
    assert "output.uri: 'results' is relative" in err and "--set output.uri=$PWD/results" in err and "s3://" in err
    assert ("--working-dir upload" in err) == (job_config == UPLOADED)
    assert not (tmp_path / "results").exists()


def test_a_relative_output_uri_outside_a_ray_job_and_an_absolute_one_inside_are_accepted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert main(["run", small_run_config(tmp_path, output="results"), "--dry-run"]) == 0

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", UPLOADED)
    assert main(["run", small_run_config(tmp_path, output=str(tmp_path / "results")), "--dry-run"]) == 0
    assert "run r: results " + str(tmp_path / "results" / "r") in capsys.readouterr().out


def test_relative_inputs_missing_from_a_ray_jobs_upload_are_refused_saying_gitignored_files_are_left_out(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = small_run_config(tmp_path, output=str(tmp_path / "results"), data="demo-work/data", run="demo-work/hrm")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", UPLOADED)

    assert main(["run", config, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "2 inputs not found in the Ray job" in err and ".gitignore" in err
    assert "dataset.uri: 'demo-work/data' is not in the job's copy" in err
    assert "--set checkpoints.0.run=$PWD/demo-work/hrm" in err
