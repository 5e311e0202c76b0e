"""`python -m jobs.bench gpu` on a machine without CUDA: the clean refusal, the plan its
--dry-run lists, and the budget that decides which cells run (the measurements themselves
need a GPU)."""

import itertools
import json

import pytest
import torch

from jobs.bench import build_parser, main
from jobs.bench_gpu import SHARES, Budget, within_budget

from tests.factories import CONFORMANCE


def test_without_cuda_the_gpu_bench_says_so_in_one_line_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)  # where the default results/bench/ would go
    out = tmp_path / "gpu.json"
    with pytest.raises(SystemExit) as exit_:
        main(["gpu", "--json", str(out)])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("python -m jobs.bench gpu: CUDA is not available (torch ")
    assert torch.__version__ in line and (torch.version.cuda or "built without CUDA") in line
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def fake_vectors(root, names):
    """A conformance directory laid out as the reference vectors are (the dry run reads only names)."""
    for vector, checkpoint in names:
        (root / vector / "expected").mkdir(parents=True, exist_ok=True)
        (root / vector / "expected" / f"{checkpoint}.npz").write_bytes(b"")
    return root


def dry_run(tmp_path, *flags):
    out = tmp_path / "plan.json"
    assert main(["gpu", "--dry-run", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_the_dry_run_lists_every_model_cell_each_conformance_vector_in_both_dtypes_and_the_two_runs(tmp_path):
    conformance = fake_vectors(tmp_path / "vectors", [("hrm-sudoku", "small-fp32"), ("trm-arc", "trm-fp32")])
    report = dry_run(tmp_path, "--conformance", str(conformance))
    by_section = {name: [c for c in report["plan"] if c["section"] == name] for name in SHARES}
    models = [(c["config"], c["batch_size"], c["dtype"], c["compile"], c["protocol"]) for c in by_section["models"]]
    assert sorted(models) == sorted(itertools.product(["paper", "trm"], [256, 768, 2048], ["bfloat16", "float32"],
                                                      [False, True], ["fixed", "adaptive"]))
    assert len(models) == 2 * 3 * 2 * 2 * 2
    assert sorted((c["vector"], c["checkpoint"], c["dtype"]) for c in by_section["conformance"]) == [
        ("hrm-sudoku", "small-fp32", "bfloat16"), ("hrm-sudoku", "small-fp32", "float32"),
        ("trm-arc", "trm-fp32", "bfloat16"), ("trm-arc", "trm-fp32", "float32")]
    assert [(c["actors"], c["gpus_per_actor"]) for c in by_section["actors"]] == [(1, 1.0), (2, 0.5)]
    assert by_section["matmul"] == []  # measured whole, not in cells
    assert len(report["plan"]) == 48 + 4 + 2


def test_the_dry_run_shares_the_budget_between_the_sections_and_puts_the_hrm_in_bfloat16_first(tmp_path):
    report = dry_run(tmp_path, "--budget-s", "200", "--conformance", str(tmp_path / "none"))
    assert list(report["shares_s"]) == ["matmul", "conformance", "actors", "models"]
    assert sum(report["shares_s"].values()) == pytest.approx(200)
    assert not any(c["section"] == "conformance" for c in report["plan"])  # no vectors there: nothing planned,
    assert report["missing"] == [  # and said so
        f"no reference vectors (<vector>/expected/<checkpoint>.npz) under {tmp_path / 'none'}: give --conformance DIR"]
    models = [c for c in report["plan"] if c["section"] == "models"]
    assert {(c["config"], c["dtype"]) for c in models[:12]} == {("paper", "bfloat16")}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_cell_is_refused_once_the_time_it_took_before_exceeds_what_its_section_has_left():
    clock = Clock()
    budget = Budget(100.0, now=clock)
    budget.start("matmul")
    clock.t += 2
    budget.start("conformance")  # its deadline: the matmul and conformance shares from the start
    assert budget.left_s() == pytest.approx(100 * (SHARES["matmul"] + SHARES["conformance"]) - 2)
    assert budget.refusal(None, "the last cell") is None  # nothing measured yet: it may start
    assert budget.refusal(1.0, "the last cell") is None
    refused = budget.refusal(50.0, "the last conformance cell")
    assert refused.startswith(f"{budget.left_s():.1f} s left of the conformance section's share of --budget-s")
    assert refused.endswith("the last conformance cell took 50.0 s in this run")
    clock.t = 1000.0 + 100 * (SHARES["matmul"] + SHARES["conformance"])
    assert budget.refusal(None, "the last cell") == "the conformance section's share of --budget-s is spent"


def test_a_sections_cells_run_until_the_last_ones_time_no_longer_fits_and_the_rest_are_listed_as_skipped():
    clock = Clock()
    budget = Budget(100.0, now=clock)
    budget.start("matmul")  # its share: 5 s from the start
    cells = [{"section": "matmul", "cell": f"c{i}"} for i in range(4)]
    report: dict = {"skipped": []}
    ran = []
    for cell in within_budget(cells, budget, report, "the last cell"):
        ran.append(cell["cell"])
        clock.t += 2.0  # each cell takes 2 s: after two, 1 s is left
    assert ran == ["c0", "c1"]
    assert [s["cell"] for s in report["skipped"]] == ["c2", "c3"]
    assert report["skipped"][0]["reason"] == ("1.0 s left of the matmul section's share of --budget-s; "
                                              "the last cell took 2.0 s in this run")


def test_time_a_section_leaves_unused_passes_to_the_next():
    clock = Clock()
    budget = Budget(100.0, now=clock)
    for section in ("matmul", "conformance", "actors"):
        budget.start(section)
    budget.start("models")  # the sections before took no time
    assert budget.left_s() == pytest.approx(100.0)
    assert budget.used == {"matmul": 0.0, "conformance": 0.0, "actors": 0.0}


def test_sections_left_out_are_not_planned(tmp_path):
    conformance = fake_vectors(tmp_path / "vectors", [("hrm-sudoku", "small-fp32")])
    report = dry_run(tmp_path, "--sections", "models", "--models", "paper", "--batch-sizes", "768",
                     "--conformance", str(conformance))
    assert {c["section"] for c in report["plan"]} == {"models"}
    assert len(report["plan"]) == 2 * 2 * 2  # dtypes × compile × protocols
    assert report["missing"] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_bench_measures_the_vectors_and_a_model_in_minutes(tmp_path):
    out = tmp_path / "gpu.json"
    assert main(["gpu", "--sections", "conformance", "models", "--models", "paper", "--batch-sizes", "8",
                 "--dtypes", "bfloat16", "--compile", "off", "--repeats", "1", "--budget-s", "120",
                 "--conformance", str(CONFORMANCE), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["matmul"]["bfloat16"]["best_flops_per_s"] > 0
    cells = report["models"]["cells"]
    assert [c["protocol"] for c in cells] == ["fixed", "adaptive"]
    assert all(c["examples_per_s"] > 0 and 0 < c["mfu"] < 1 and c["peak_gpu_bytes"] > 0 for c in cells)
    if CONFORMANCE.is_dir():
        fp32 = [c for c in report["conformance"]["cells"] if c["dtype"] == "float32"]
        assert fp32 and all("error" not in c and c["tokens"] > 0 for c in fp32)


def test_without_ray_the_two_actor_runs_are_listed_as_skipped_naming_what_is_missing(monkeypatch):
    import importlib.util

    from jobs import bench_gpu

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    args = build_parser("gpu").parse_args(["gpu", "--sections", "actors"])
    cells = bench_gpu.plan_cells(args)
    report = {"skipped": []}
    section = bench_gpu.actors_section(args, cells, Budget(100.0), report)
    assert len(cells) == 2 and section["runs"] == [] and section["identical_metrics"] is None
    assert [(s["cell"], s["reason"]) for s in report["skipped"]] == [
        (cell["cell"], "ray is not installed here, and hrm-eval run needs it") for cell in cells]
