import json
import zlib

import numpy as np
import pytest
import torch
import yaml

from hrm.checkpoint.loading import CONFIG_FILE, build_checked_model, load_checkpoint, read_arch_spec
from hrm.data.reader import open_dataset
from hrm.data.schema import DatasetSizes
from hrm.errors import InputError
from hrm.eval.engine import Engine
from hrm.eval.shard import build_engine, evaluate_examples
from hrm.model.models import ModelConfig
from hrm.puzzles.sudoku_generator import sudoku_solver, write_demo_sudoku
from hrm.train import LOG_FILE, SUMMARY_FILE, TrainConfig, all_config, should_halt, torch_threads, train

from tests.factories import SHARED

DEMO_SIZES = DatasetSizes(vocab_size=6, seq_len=16, num_puzzle_identifiers=1)  # tiny_config's model

REAL_CONFIGS = {
    "hrm": SHARED / "conformance/hrm-sudoku-tiny/checkpoints/small-fp32/all_config.yaml",
    "trm": SHARED / "conformance/trm-sudoku-mlpt/checkpoints/trm-mlpt-fp32/all_config.yaml",
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Evaluation here runs on one thread, as training does: on a small shared box two
    threads are several times slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_demo_sudoku(str(tmp_path_factory.mktemp("data") / "sudoku4"), train_size=512, test_size=64)


def tiny_config(family: str = "hrm", **overrides) -> TrainConfig:
    model = ModelConfig(
        family=family, vocab_size=6, seq_len=16, num_puzzle_identifiers=1, hidden_size=16, num_heads=2,
        expansion=2, H_layers=1 if family == "hrm" else 0, L_layers=1, H_cycles=2, L_cycles=1,
        halt_max_steps=3, halt_exploration_prob=0.1, forward_dtype="float32",
        **({"puzzle_emb_len": 0} if family == "trm" else {}),  # TRM needs it without puzzle embeddings
    )
    return TrainConfig(model=model, global_batch_size=32, lr=3e-3, lr_warmup_steps=5, **overrides)


@pytest.fixture(scope="module")
def hrm_run(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("runs") / "hrm"
    return out, train(tiny_config(), dataset, out, steps=40, checkpoint_every=10, log_every=10)


def test_a_few_dozen_steps_reduce_the_training_loss(hrm_run):
    out, _ = hrm_run
    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert records[-1]["lm_loss"] < 0.8 * records[0]["lm_loss"]


def test_checkpoints_are_written_every_n_steps_with_the_reference_key_prefix(hrm_run):
    out, paths = hrm_run
    assert [p.name for p in paths] == ["step_10", "step_20", "step_30", "step_40"]
    state = torch.load(paths[-1], weights_only=True)
    assert state and all(key.startswith("model.inner.") for key in state)
    assert "model.inner.H_level.layers.0.self_attn.qkv_proj.weight" in state
    assert "model.inner.H_init" in state and not any("rope" in key for key in state)


@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_checkpoints_load_and_evaluate_through_hrm_checkpoint(hrm_run, tmp_path, prefix, dataset):
    _, paths = hrm_run
    saved = torch.load(paths[-1], weights_only=True)
    (tmp_path / CONFIG_FILE).write_bytes((paths[-1].parent / CONFIG_FILE).read_bytes())
    torch.save({prefix + key: value for key, value in saved.items()}, tmp_path / "step_40")

    ckpt = load_checkpoint(tmp_path)
    model = build_checked_model(ckpt, DEMO_SIZES)
    assert ckpt.step == 40 and ckpt.spec.loss_type == "stablemax_cross_entropy"
    for key, value in model.state_dict().items():
        if key in ckpt.state:
            assert torch.equal(value, saved["model.inner." + key])
    test = dataset.read_set("test", "all")
    engine = Engine(model, ckpt.spec.loss_type, ignore_label_id=0)
    result = engine.run(test.inputs, test.labels, test.puzzle_identifiers)
    assert result.exact_per_step.shape == (64, 3) and np.isfinite(result.lm_loss).all()


@pytest.mark.parametrize("family", ["hrm", "trm"])
def test_all_config_yaml_round_trips_and_reads_as_the_reference_dump(tmp_path, family):
    config = tiny_config(family, seed=7, weight_decay=0.05)
    path = tmp_path / CONFIG_FILE
    path.write_text(yaml.safe_dump(all_config(config, "data/tiny-sudoku", {"steps": 10, "checkpoint_every": 5})))

    spec = read_arch_spec(path)  # what hrm-eval reads back: the model, the loss, the hyperparameters
    doc = yaml.safe_load(path.read_text())
    training = {key: doc[key] for key in TrainConfig.model_fields if key in doc}
    model = spec.model_config(DEMO_SIZES)
    assert TrainConfig(model=model, loss_type=spec.loss_type, **training) == config
    assert spec.family == family
    assert doc["arch"]["loss"] == {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}
    real = yaml.safe_load(REAL_CONFIGS[family].read_text())  # written by the reference trainer
    assert doc["arch"]["name"] == real["arch"]["name"] and set(real["arch"]) <= set(doc["arch"])
    assert {"global_batch_size", "lr", "lr_min_ratio", "lr_warmup_steps", "weight_decay", "beta1", "beta2",
            "seed"} <= set(real) & set(doc)
    data_key, data_value = ("data_path", "data/tiny-sudoku") if family == "hrm" else ("data_paths", ["data/tiny-sudoku"])
    assert data_key in real and doc[data_key] == data_value


def test_a_second_call_returns_the_finished_run_without_training(hrm_run, monkeypatch, dataset):
    out, paths = hrm_run
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    monkeypatch.setattr("hrm.train.train_loop", lambda *a, **k: pytest.fail("trained again"))
    assert train(tiny_config(), dataset, out, steps=40, checkpoint_every=10, log_every=10) == paths
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_run_directory_holding_a_different_run_is_refused(hrm_run, dataset):
    out, _ = hrm_run
    with pytest.raises(InputError, match="another training run"):
        train(tiny_config(seed=1), dataset, out, steps=40, checkpoint_every=10)


def test_an_unfinished_run_of_the_same_config_is_trained_again(tmp_path, dataset):
    config = tiny_config()
    first = train(config, dataset, tmp_path, steps=4, checkpoint_every=2)
    (tmp_path / SUMMARY_FILE).unlink()  # as if it had been killed before finishing
    first[0].write_bytes(b"half")
    again = train(config, dataset, tmp_path, steps=4, checkpoint_every=2)
    assert again == first and torch.load(again[0], weights_only=True)
    assert (tmp_path / SUMMARY_FILE).is_file()


def test_training_is_deterministic_for_a_seed(tmp_path, dataset):
    runs = [train(tiny_config(), dataset, tmp_path / str(i), steps=6, checkpoint_every=6)[0] for i in range(2)]
    other = train(tiny_config(seed=1), dataset, tmp_path / "other", steps=6, checkpoint_every=6)[0]
    first, second, third = (torch.load(p, weights_only=True) for p in (*runs, other))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_ema_checkpoints_average_the_weights_without_changing_the_training(tmp_path, dataset):
    runs = {ema: train(tiny_config(ema=ema), dataset, tmp_path / str(ema), steps=6, checkpoint_every=6)[0]
            for ema in (False, True)}
    raw, averaged = (torch.load(runs[ema], weights_only=True) for ema in (False, True))
    logs = [[json.loads(line) for line in (tmp_path / str(ema) / LOG_FILE).read_text().splitlines()]
            for ema in (False, True)]
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    weight = "model.inner.L_level.layers.0.mlp.down_proj.weight"
    assert not torch.equal(raw[weight], averaged[weight])


def test_trm_trains_with_the_same_loop_and_loads(tmp_path, dataset):
    paths = train(tiny_config("trm"), dataset, tmp_path, steps=8, checkpoint_every=4)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.path == paths[-1] and ckpt.spec.family == "trm"
    build_checked_model(ckpt, DEMO_SIZES)


def test_a_time_budget_stops_and_saves_the_last_step(tmp_path, dataset):
    paths = train(tiny_config(), dataset, tmp_path, minutes=0.02, checkpoint_every=0.01)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert paths[-1].name == f"step_{summary['steps']}" and summary["elapsed_s"] >= 1.2
    assert len(paths) <= 3


def test_training_halts_at_the_max_step_and_explores_no_earlier_than_step_two():
    cfg = tiny_config().model.model_copy(update={"halt_max_steps": 4, "halt_exploration_prob": 1.0})
    rng = torch.Generator().manual_seed(0)
    wants_to_halt = torch.full((64,), 5.0), torch.full((64,), -5.0)
    assert not should_halt(torch.ones(64, dtype=torch.int64), *wants_to_halt, cfg, rng).any()
    assert should_halt(torch.full((64,), 4), *reversed(wants_to_halt), cfg, rng).all()
    greedy = cfg.model_copy(update={"halt_exploration_prob": 0.0})
    assert should_halt(torch.ones(64, dtype=torch.int64), *wants_to_halt, greedy, rng).all()


def test_a_dataset_whose_sizes_differ_from_the_model_is_refused(dataset, tmp_path):
    config = tiny_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"vocab_size": 11})})
    with pytest.raises(InputError, match="vocab_size=6 but the model config says 11"):
        train(config, dataset, tmp_path, steps=1, checkpoint_every=1)


def test_training_reads_a_dataset_in_the_reference_layout(tmp_path):
    reference = open_dataset(SHARED / "conformance/hrm-sudoku-tiny/data")
    config = tiny_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"vocab_size": 11, "seq_len": 81})})
    paths = train(config, reference, tmp_path, steps=2, checkpoint_every=2)
    engine = build_engine(load_checkpoint(str(paths[-1])), reference.metadata("test"), "reference")
    done = evaluate_examples(engine, reference.examples("test", "all"))
    assert len(done.result) == reference.num_examples("test", "all") == 64


def test_demo_puzzles_have_4_to_8_blanks_one_solution_and_held_out_grids(dataset):
    meta = dataset.metadata("train")
    assert (meta.vocab_size, meta.seq_len, meta.ignore_label_id, meta.pad_id) == (6, 16, 0, 0)
    grids = {}
    for split in ("train", "test"):
        arrays = dataset.read_set(split, "all")
        questions, answers = np.asarray(arrays.inputs) - 1, np.asarray(arrays.labels) - 1  # token = digit + 1
        assert set(np.unique((questions == 0).sum(1))) == set(range(4, 9))
        assert ((questions == 0) | (questions == answers)).all()
        solver = sudoku_solver(2)
        assert all(solver.count_solutions(q.tolist()) == 1 for q in questions[:100])
        grids[split] = {bytes(a.astype(np.uint8)) for a in answers}
    assert not grids["train"] & grids["test"]
    assert all(zlib.crc32(grid) % 5 == 0 for grid in grids["test"])
