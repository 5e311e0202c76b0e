"""`hrm-eval report` on a run whose driver was killed part-way: a real `hrm-eval run` (embedded
Ray, in its own process group) stopped by SIGKILL once it has committed units, then reported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hrm.eval.metrics import StatsTable

from cluster.results.layout import prediction_key, read_unit_records

from jobs.bench_cluster import RAY_ENV
from jobs.cli import main

from tests.cluster_factories import NUM_IDS, SEQ_LEN, VOCAB, make_dataset
from tests.factories import REPO, make_checkpoint

PLANNED_UNITS = 2 * 40  # two checkpoints × (400 + 240 examples in shards of 16)


def kill_run_part_way(config: Path, units: Path) -> None:
    """Start `hrm-eval run CONFIG` and SIGKILL it, Ray's processes with it, at its first commit."""
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(config)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and not list(units.glob("*.json")):
            time.sleep(0.01)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # its own session: the driver and the Ray it started
        driver.wait()


@pytest.mark.ray
def test_a_run_killed_part_way_is_reported_partial_with_the_figures_of_its_committed_units(tmp_path):
    data = make_dataset(tmp_path / "data", {"easy": 400, "hard": 240})
    make_checkpoint(tmp_path / "ckpt", steps=(1, 2), vocab_size=VOCAB, seq_len=SEQ_LEN,
                    num_puzzle_identifiers=NUM_IDS, q_scale=0.3, halt_max_steps=16)
    doc = {"checkpoints": [{"run": str(tmp_path / "ckpt")}], "dataset": {"uri": data}, "eval": {"batch_size": 8},
           "cluster": {"actors": 1, "units_in_flight": 1, "shard_size": 16, "torch_threads": 1},
           "output": {"uri": str(tmp_path / "out"), "run_id": "killed"}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(doc))
    run = tmp_path / "out" / "killed"
    kill_run_part_way(config, run / "units")
    records = list(read_unit_records(str(run), {p.stem for p in (run / "units").glob("*.json")}))
    assert 1 <= len(records) < PLANNED_UNITS, f"the driver was killed after {len(records)} of {PLANNED_UNITS} units"
    assert not (run / "manifest.json").exists()

    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert md.splitlines()[0] == "# hrm-eval report — run killed (partial)"
    assert md.splitlines()[2].startswith(f"> **PARTIAL** — the run stopped before it finished: it has no "
                                         f"manifest.json (the driver writes it last). These are the figures of what "
                                         f"it committed: {len(records)} unit(s) committed")
    assert '<strong>PARTIAL</strong>' in (run / "report.html").read_text()
    assert not (run / "manifest.json").exists() and not (run / "metrics.json").exists()
    leaderboard = md.split("## Leaderboard", 1)[1].split("## ", 1)[0]
    for name in {r.checkpoint for r in records}:
        merged = StatsTable()
        for record in records:
            if record.checkpoint == name and record.predictions == prediction_key(name, record.shard):
                merged.merge(StatsTable.from_dict(record.stats))
        fig = merged.finalize()["all"]
        row = rf"\| \d+ \| ★? *\| {re.escape(name)} \|"
        (cells,) = [[c.strip() for c in line.strip("|").split("|")] for line in leaderboard.splitlines()
                    if re.match(row, line)]
        examples = sum(r.examples for r in records if r.checkpoint == name)
        assert int(cells[4].replace(",", "")) == fig["count"] == examples
        assert cells[5].startswith(f"{100 * fig['exact_accuracy']:.2f} (")
        assert cells[6].startswith(f"{100 * fig['token_accuracy']:.2f} (")  # and its interval
