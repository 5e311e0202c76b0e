import json

import torch

from jobs.cli import main

from tests.factories import make_checkpoint


def inspect_json(capsys, *paths):
    assert main(["inspect", *map(str, paths), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_counts_parameters_and_bytes_per_component(tmp_path, capsys):
    make_checkpoint(tmp_path)
    (info,) = inspect_json(capsys, tmp_path)["checkpoints"]
    rows = {row["component"]: row for row in info["components"]}
    # tiny arch: hidden 32, vocab 11, 3 puzzle identifiers × 32, SwiGLU width 256
    assert rows["puzzle embeddings"]["parameters"] == 3 * 32
    assert rows["token embeddings"]["parameters"] == 11 * 32
    assert rows["lm head"]["parameters"] == 11 * 32
    assert rows["q head"]["parameters"] == 2 * 32 + 2
    layer = 3 * 32 * 32 + 32 * 32 + 2 * 256 * 32 + 256 * 32
    assert rows["H level"]["parameters"] == layer and rows["L level"]["parameters"] == layer
    assert rows["total"]["parameters"] == sum(r["parameters"] for n, r in rows.items() if n != "total")
    assert rows["total"]["bytes"] == 4 * rows["total"]["parameters"]
    assert info["inferred"] == {"vocab_size": 11, "hidden_size": 32, "num_puzzle_identifiers": 3}


def test_inspect_counts_nan_and_inf_without_refusing_the_checkpoint(tmp_path, capsys):
    (path,) = make_checkpoint(tmp_path)
    state = torch.load(path)
    state["model.inner.L_level.layers.0.mlp.down_proj.weight"][0, :3] = float("nan")
    state["model.inner.q_head.weight"][1, 0] = float("inf")
    torch.save(state, path)
    rows = {r["component"]: r for r in inspect_json(capsys, tmp_path)["checkpoints"][0]["components"]}
    assert (rows["L level"]["nan"], rows["q head"]["inf"], rows["total"]["nan"], rows["total"]["inf"]) == (3, 1, 3, 1)


def test_inspect_two_checkpoints_reports_relative_change_per_component(tmp_path, capsys):
    first, second = make_checkpoint(tmp_path, steps=(1, 2))
    state = torch.load(first)
    state["model.inner.lm_head.weight"] *= 1.5  # ‖1.5w − w‖/‖w‖ = 0.5
    torch.save(state, second)
    change = inspect_json(capsys, first, second)["relative_change"]
    assert abs(change["lm head"] - 0.5) < 1e-6  # float32 rounding of 1.5·w
    assert change["H level"] == 0.0
    assert 0 < change["total"] < 0.5


def test_inspect_shows_the_tensors_sizes_and_warns_when_the_config_says_otherwise(tmp_path, capsys):
    make_checkpoint(tmp_path)
    config = tmp_path / "all_config.yaml"
    config.write_text(config.read_text().replace("hidden_size: 32", "hidden_size: 48"))
    (info,) = inspect_json(capsys, tmp_path)["checkpoints"]
    assert info["disagreements"] == {"hidden_size": {"tensors": 32, "config": 48}}
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "hidden_size=32" in out and "hidden_size=48" not in out
    assert "warning: hidden_size=32 in the tensors, but all_config.yaml says 48" in out


def test_inspect_refuses_to_compare_checkpoints_of_different_architectures(tmp_path, capsys):
    (small,) = make_checkpoint(tmp_path / "small")
    (wide,) = make_checkpoint(tmp_path / "wide", hidden_size=64)
    assert main(["inspect", str(small), str(wide)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"hrm-eval inspect: error: {wide}: not the same architecture as {small} (tensor ")
    assert error.rstrip().endswith("weight change is measured between checkpoints of one model")
    assert error.count("\n") == 1
