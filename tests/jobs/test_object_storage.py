"""Every entry point reads checkpoints and datasets from s3:// as it reads local paths: the
same discovery, the same figures."""

import json

import pytest

from hrm import storage

from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset
from tests.factories import make_checkpoint


@pytest.fixture
def copies(tmp_path, s3_bucket) -> dict[str, dict[str, str]]:
    """A dataset and a run directory of two steps, on local disk and the same bytes on S3."""
    data = make_dataset(tmp_path / "data")
    make_checkpoint(tmp_path / "run", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=NUM_IDS)
    for local, prefix in ((tmp_path / "data", f"{s3_bucket}/data"), (tmp_path / "run", f"{s3_bucket}/run")):
        for file in local.rglob("*"):
            if file.is_file():
                storage.write_bytes_atomic(f"{prefix}/{file.relative_to(local)}", file.read_bytes())
    return {"local": {"data": data, "run": str(tmp_path / "run")},
            "s3": {"data": f"{s3_bucket}/data", "run": f"{s3_bucket}/run"}}


def printed_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.s3
def test_inspect_of_an_s3_checkpoint_reports_what_it_reports_for_its_local_copy(copies, capsys):
    local, remote = (printed_json(capsys, ["inspect", f"{c['run']}/step_2", "--json"]) for c in copies.values())
    for report in (local, remote):
        report["checkpoints"][0].pop("checkpoint")  # the path itself
    assert remote == local and local["checkpoints"][0]["step"] == 2


@pytest.mark.s3
def test_evaluate_on_an_s3_run_directory_and_dataset_gives_the_local_figures(copies, capsys):
    local, remote = (printed_json(capsys, ["evaluate", "--checkpoint", c["run"], "--data", c["data"], "--threads", "1",
                                           "--json"]) for c in copies.values())
    ((name, entry),), ((remote_name, remote_entry),) = local["checkpoints"].items(), remote["checkpoints"].items()
    assert remote_name == name == "run-step_2" and remote_entry["step"] == entry["step"] == 2
    assert remote_entry["metrics"] == entry["metrics"] and remote_entry["stats"] == entry["stats"]
    assert remote["job"]["dataset_hash"] == local["job"]["dataset_hash"]
    # the storage version names the bytes where they are: an ETag on S3, size and mtime on disk
    assert remote_entry["version"].startswith("etag=") and entry["version"].startswith("size=")
