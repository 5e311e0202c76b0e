from pathlib import Path

import pytest

from hrm.data.reader import open_dataset
from hrm.errors import InputError

from cluster.plan import prepare
from cluster.results.metrics import read_metrics

from jobs.bench_overlap import write_planted_sudoku

from tests.cluster_factories import make_dataset, run_config, run_in_process
from tests.factories import make_checkpoint


def test_a_run_with_the_overlap_audit_reports_every_planted_copy(tmp_path):
    planted = write_planted_sudoku(tmp_path / "data", examples=40, planted=3, seed=1)
    meta = open_dataset(tmp_path / "data").metadata("test")
    make_checkpoint(tmp_path / "sweep", vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                    num_puzzle_identifiers=meta.num_puzzle_identifiers)
    config = run_config([{"run": str(tmp_path / "sweep")}], str(tmp_path / "data"), str(tmp_path / "out"))
    run = run_in_process(config.model_copy(update={"audits": ["overlap"]})).run
    found = read_metrics(run)["audits"]["overlap"]
    assert sorted(found["exact_in_train"]["input_label"]["ids"]) == sorted(planted.exact)
    assert sorted(found["augmented_in_train"]["input_label"]["ids"]) == sorted(planted.augmented)
    report = (Path(run) / "report.md").read_text()
    audit = report.split("## Audits", 1)[1].split("\n## ", 1)[0]
    assert f"| exactly in train | input and label | {len(planted.exact)} |" in audit


def test_the_overlap_audit_needs_a_train_split(tmp_path):
    data = make_dataset(tmp_path / "data")  # a test split only
    make_checkpoint(tmp_path / "sweep", vocab_size=11, seq_len=16, num_puzzle_identifiers=3)
    config = run_config([{"run": str(tmp_path / "sweep")}], data, str(tmp_path / "out"))
    with pytest.raises(InputError, match=r"data: audits: overlap needs a 'train' split"):
        prepare(config.model_copy(update={"audits": ["overlap"]}))
