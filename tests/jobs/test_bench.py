import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm.eval.engine import Engine
from hrm.puzzles.arc_grids import ArcAugmentation, grid_to_tokens

from jobs.bench import bench_config, bench_model, concurrent_seconds
from jobs.bench_votes import augmented_canvases, distinct_augmentations

from tests.factories import REPO

TOY = ["hidden_size=16", "num_heads=2", "H_layers=1", "L_layers=1", "halt_max_steps=2", "puzzle_emb_ndim=16",
       "seq_len=9"]


def run_bench(out_dir: Path, subcommand: str, *args: str) -> tuple[dict, str]:
    """`python -m jobs.bench SUBCOMMAND ARGS --json OUT` in a process of its own: the figures it
    saved and what it printed."""
    out = out_dir / f"{subcommand}.json"
    run = subprocess.run([sys.executable, "-m", "jobs.bench", subcommand, *args, "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory) -> tuple[dict, str]:
    return run_bench(tmp_path_factory.mktemp("bench"), "engine", "--configs", "small", "--set", *TOY, "--batch-sizes",
                     "2", "--streams", "1", "2", "--compile", "off", "on", "--repeats", "2", "--square-sizes", "32",
                     "64", "--threads", "1", "--timing-window-s", "0.001")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_the_engine_bench_measures_every_protocol_and_dtype_it_was_asked_for(toy_report):
    report, _ = toy_report
    cells = [(c["config"], c["dtype"], c["protocol"], c["batch_size"], c["streams"], c["compile"])
             for c in report["cells"]]
    layouts = [(1, False), (1, True), (2, False), (2, True)]
    assert sorted(cells) == sorted(("small", dtype, protocol, 2, streams, compiled)
                                   for dtype in ("float32", "bfloat16") for protocol in ("fixed", "adaptive")
                                   for streams, compiled in layouts)
    assert report["configs"]["small"]["model"]["hidden_size"] == 16


def test_every_figure_of_the_engine_bench_is_a_positive_measured_number(toy_report):
    report, _ = toy_report
    for rate in report["matmul"].values():
        assert [(row["when"], row["layout"], row["n"]) for row in rate["square"]] == [
            (when, layout, n) for when in ("before", "after") for layout in ("nn", "nt", "tn") for n in (32, 64)]
        assert all(positive(row["seconds"]) and positive(row["flops_per_s"]) for row in rate["square"])
        assert positive(rate["best_flops_per_s"])
    assert all(positive(v) for v in report["configs"]["small"]["flops_per_example_step"].values())
    for cell in report["cells"]:
        assert len(cell["seconds"]) == 2 and all(positive(s) for s in cell["seconds"])
        for key in ("examples_per_s", "flops_per_example", "flops_per_s", "roofline_fraction", "mean_steps",
                    "matmul_fraction", "model_shape_fraction", "warm_up_s"):
            assert positive(cell[key]), key
        assert len(cell["roofline_flops_per_s"]) == 2 and all(positive(r) for r in cell["roofline_flops_per_s"])
        assert len(cell["model_shape_matmul"]) == 2
        for matmuls in cell["model_shape_matmul"]:
            assert positive(matmuls["flops_per_s"])
            assert all(positive(row["flops_per_s"]) for row in matmuls["shapes"])
            # the bare matmuls are timed laid out as the cell ran: one copy per stream
            assert {row["streams"] for row in matmuls["shapes"]} == {cell["streams"]}
        assert len(cell["load_average"]) == 2


def test_each_repeat_is_divided_by_the_roofline_measured_around_it_and_the_median_is_reported(toy_report):
    report, _ = toy_report
    for cell in report["cells"]:
        achieved = [cell["flops_per_example"] * cell["examples"] / s for s in cell["seconds"]]
        rooflines = cell["roofline_flops_per_s"]
        matmuls = [m["flops_per_s"] for m in cell["model_shape_matmul"]]
        assert cell["roofline_fraction"] == pytest.approx(statistics.median(a / r for a, r in zip(achieved, rooflines)))
        assert cell["matmul_fraction"] == pytest.approx(statistics.median(m / r for m, r in zip(matmuls, rooflines)))
        assert cell["model_shape_fraction"] == pytest.approx(statistics.median(a / m for a, m in zip(achieved, matmuls)))


def test_the_cells_re_measure_the_square_product_that_was_fastest_before_them(toy_report):
    report, _ = toy_report
    for dtype, rate in report["matmul"].items():
        assert rate["best_flops_per_s"] == max(row["flops_per_s"] for row in rate["square"])
        fastest_before = max((row for row in rate["square"] if row["when"] == "before"), key=lambda r: r["flops_per_s"])
        assert report["roofline_probe"][dtype] == {"layout": fastest_before["layout"], "n": fastest_before["n"]}


def test_the_adaptive_bench_model_halts_some_examples_early(toy_report):
    report, _ = toy_report
    adaptive = [c for c in report["cells"] if c["protocol"] == "adaptive"]
    assert all(1 <= c["mean_steps"] < c["max_steps"] for c in adaptive)


def test_the_engine_bench_prints_the_table_and_the_roofline(toy_report):
    _, stdout = toy_report
    assert "float32 square matmul GFLOP/s" in stdout and "bfloat16 square matmul GFLOP/s" in stdout
    # 4 layouts (1 and 2 streams, eager and compiled), once as measured, once in the final table
    assert stdout.count("small  float32   fixed") == 8


def test_a_bench_without_json_saves_its_figures_under_results_bench(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "jobs.bench", "engine", "--configs", "small", "--set", *TOY, "--dtypes", "float32",
         "--protocols", "fixed", "--batch-sizes", "2", "--repeats", "1", "--square-sizes", "32", "--threads", "1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (saved,) = (tmp_path / "results" / "bench").glob("engine-*.json")
    assert f"results: {saved.relative_to(tmp_path)}" in run.stdout
    assert positive(json.loads(saved.read_text())["cells"][0]["examples_per_s"])


def test_the_bare_matmuls_are_timed_with_one_product_per_stream_at_the_same_time():
    config = bench_config("small", "float32", TOY)
    engine = Engine(bench_model(config, seed=0), "softmax_cross_entropy", ignore_label_id=0, batch_size=2, streams=2)
    running, overlapped, threads = [0], [False], set()
    lock = threading.Lock()

    def product() -> torch.Tensor:
        with lock:
            running[0] += 1
            overlapped[0] |= running[0] == 2
            threads.add(threading.get_ident())
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return torch.zeros(1)

    seconds = concurrent_seconds(engine, [product, product], repeat=3)
    assert len(threads) == 2 and overlapped[0]
    assert seconds >= 0.002


def test_a_failing_product_on_one_stream_raises_instead_of_leaving_the_others_waiting():
    config = bench_config("small", "float32", TOY)
    engine = Engine(bench_model(config, seed=0), "softmax_cross_entropy", ignore_label_id=0, batch_size=2, streams=2)
    raised: list[BaseException] = []

    def failing() -> torch.Tensor:
        raise RuntimeError("out of memory")

    def measure() -> None:
        try:
            concurrent_seconds(engine, [lambda: torch.zeros(1), failing], repeat=1)
        except (RuntimeError, threading.BrokenBarrierError) as error:
            raised.append(error)

    caller = threading.Thread(target=measure, daemon=True)  # a hang fails the test instead of the suite
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive() and len(raised) == 1


@pytest.mark.ray
def test_the_scale_bench_measures_each_size_in_real_runs_and_their_resume(tmp_path):
    report, printed = run_bench(tmp_path, "scale", "--sizes", "600", "1200", "--checkpoints", "2",
                                "--workdir", str(tmp_path / "work"))
    sizes = report["sizes"]
    assert [(s["examples"], s["checkpoints"]) for s in sizes] == [(600, 2), (1200, 2)]
    for s in sizes:
        assert s["units"] == s["resumed_units"] > 0  # the second run found every unit committed
        assert s["driver_peak_rss_mib"] > 0 and s["resume_scan_s"] > 0 and s["preflight_and_planning_s"] > 0
        assert all(v > 0 for v in s["actor_s_per_unit"].values()) and 0 < s["model_share_of_actor_time"] < 1
        assert all(size > 0 for size in s["file_bytes"].values())
    assert "600 → 1,200 examples: driver peak RSS" in printed


def test_the_votes_bench_measures_arc_votes_and_an_ensemble_each_in_a_process_of_its_own(tmp_path):
    report, printed = run_bench(tmp_path, "votes", "--puzzles", "3", "--augment", "199", "--shard-size", "256",
                                "--tmp", str(tmp_path))
    # Shards of the run's plan: 256 examples (whole batches of the default 256), the last 88.
    assert report["dataset"]["examples"] == 600 and report["predictions"]["parts_per_member"] == 3
    arc, ensemble = report["votes"]["arc"], report["votes"]["ensemble"]
    assert (arc["result"]["puzzles"], arc["result"]["test_inputs"]) == (3, 3)
    assert [(e["level"], e["count"], e["members"]) for e in ensemble["result"]] == [
        ("sequence", 600, ["member0", "member1", "member2"]), ("token", 600, ["member0", "member1", "member2"])]
    for vote in (arc, ensemble):
        assert vote["peak_rss_bytes"] >= vote["peak_rss_before_vote_bytes"] > 0 and vote["seconds"] > 0
    assert report["peak_rss_within_limit"] is True
    assert "ARC votes of 1 checkpoint: 600 rows × 900 tokens in 3 parts" in printed


def test_the_votes_bench_draws_arc_canvases_as_the_converter_encodes_them():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, size=(3, 5), dtype=np.uint8)
    augmentations = distinct_augmentations(rng, 40)
    assert len(set(augmentations)) == 40 and augmentations[0] == ArcAugmentation()
    expected = np.stack([grid_to_tokens(aug.apply(grid)) for aug in augmentations])
    assert np.array_equal(augmented_canvases(grid, augmentations), expected)


@pytest.mark.s3
def test_the_preflight_bench_dry_runs_a_sweep_on_local_disk_and_on_s3_each_in_a_process_of_its_own(tmp_path):
    report, printed = run_bench(tmp_path, "preflight", "--checkpoints", "3", "--examples", "500", "--model", "small",
                                "--tmp", str(tmp_path))
    assert [d["storage"] for d in report["dry_runs"]] == ["local", "s3"]
    for dry in report["dry_runs"]:
        assert dry["seconds"] > 0 and 0 < dry["peak_rss_mib"] < report["checkpoint_bytes"] * 3 / 2**20 + 2048
        assert dry["plan_head"][2:] == ["  set all: 500 examples in 1 shard(s)", "3 checkpoint(s):"]
    assert "dry run, 3 checkpoints on s3 × 500 examples" in printed


def test_the_unit_bench_splits_a_default_size_units_overhead_and_times_the_paper_model(tmp_path):
    report, printed = run_bench(tmp_path, "unit", "--paper-examples", "1", "--threads", "1", "--tmp", str(tmp_path))
    first, cached = report["tiny_units"]
    assert first["model_loaded"] and not cached["model_loaded"] and cached["examples"] == report["shard_size"] == 4096
    assert all(v > 0 for v in report["overhead_per_unit"].values())
    assert report["paper"]["examples"] == 1 and report["paper"]["load_s"] > 0 and report["paper"]["eval_s"] > 0
    assert 0 < report["overhead_share"] < 1 and report["units_per_checkpoint"] == 104
    assert "the overhead passes 10% of a unit only for an engine faster than" in printed


@pytest.mark.ray
def test_the_faults_bench_kills_an_actor_and_a_driver_and_finds_nothing_lost_or_doubled(tmp_path):
    report, printed = run_bench(tmp_path, "faults", "--kinds", "actor", "driver", "--fractions", "0.5", "--repeats",
                                "1", "--examples", "400", "--tmp", str(tmp_path))
    assert [(t["kind"], t["killed"], t["reruns"]) for t in report["trials"]] == [("actor", 1, 0), ("driver", 1, 1)]
    assert report["summary"] == {"trials": 2, "lost": 0, "doubled": 0, "identical": 2, "completed": 2}
    assert "2 trials: 0 units lost, 0 doubled, metrics identical in 2, completed 2" in printed


def test_the_threads_bench_measures_every_layout_idle_and_busy_and_names_the_most_robust(tmp_path):
    report, printed = run_bench(tmp_path, "threads", "--examples", "64", "--batch-size", "32", "--repeats", "1",
                                "--neighbours", "1", "--tmp", str(tmp_path))
    from jobs.bench_threads import CANDIDATES

    assert set(report["candidates"]) == set(CANDIDATES)
    for condition in ("idle", "busy"):
        assert all(positive(cell["examples_per_second"]) for cell in report["conditions"][condition]["cells"].values())
    slowest = {name: row["slowest"] for name, row in report["candidates"].items()}
    assert slowest[report["most_robust"]] == max(slowest.values())
    assert f"most robust (fastest in its slower condition): {report['most_robust']}" in printed


def test_the_benches_checkpoints_are_of_the_family_their_arch_names(tmp_path):
    from hrm.checkpoint.loading import load_checkpoint

    from jobs.bench_cluster import make_checkpoints
    from jobs.bench_models import arch_section

    for model, family in (("trm", "trm"), ("small", "hrm")):
        (path,) = make_checkpoints(tmp_path / model, 1, arch_section(model))
        assert load_checkpoint(str(path)).spec.family == family
