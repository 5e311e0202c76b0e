import numpy as np
import pytest
import torch

import hrm.model.layers
from hrm.checkpoint.loading import build_checked_model, load_checkpoint
from hrm.eval.engine import Engine, EngineSettingError, compile_settings, cpu_compiler
from hrm.model.models import ReasoningModule

from tests.factories import TINY_SIZES, make_checkpoint, random_examples


def engine_for(run_dir, batch_size=8, dtype=None, engine_settings=None, **ckpt_kwargs):
    make_checkpoint(run_dir, **ckpt_kwargs)
    ckpt = load_checkpoint(run_dir)
    model = build_checked_model(ckpt, TINY_SIZES, forward_dtype=dtype)
    return Engine(model, ckpt.spec.loss_type, ignore_label_id=0, batch_size=batch_size, **(engine_settings or {}))


@pytest.mark.parametrize("family", ["hrm", "trm"])
def test_fixed_protocol_runs_every_example_for_halt_max_steps(tmp_path, family):
    engine = engine_for(tmp_path, family=family)
    inputs, labels, ids = random_examples(19)
    result = engine.run(inputs, labels, ids)
    assert result.pred.shape == (19, 16)
    assert (result.steps == 4).all()
    assert result.exact_per_step.shape == (19, 4)
    assert (result.valid_tokens == 14).all()
    assert result.forward_steps == 19 * 4
    assert np.isfinite(result.lm_loss).all() and (result.lm_loss > 0).all()


def test_results_do_not_depend_on_the_batch_size(tmp_path):
    inputs, labels, ids = random_examples(23)
    small = engine_for(tmp_path / "a", batch_size=5).run(inputs, labels, ids)
    large = engine_for(tmp_path / "b", batch_size=23).run(inputs, labels, ids)
    np.testing.assert_array_equal(small.pred, large.pred)
    np.testing.assert_allclose(small.q_halt_logit, large.q_halt_logit, atol=1e-5)


def test_exact_flags_per_step_end_with_the_final_exact_flag(tmp_path):
    engine = engine_for(tmp_path)
    inputs, _, ids = random_examples(12)
    # labels = the model's own prediction, so every example is exact at the last step
    labels = engine.run(inputs, np.ones_like(inputs), ids).pred
    result = engine.run(inputs, labels, ids)
    assert result.exact.all()
    np.testing.assert_array_equal(result.exact_per_step[:, -1], result.exact)


def test_bfloat16_on_cpu_runs_and_mostly_agrees_with_float32(tmp_path):
    inputs, labels, ids = random_examples(16)
    fp32 = engine_for(tmp_path / "a").run(inputs, labels, ids)
    bf16_engine = engine_for(tmp_path / "b", dtype="bfloat16")
    assert bf16_engine.model.lm_head.weight.dtype == torch.bfloat16
    bf16 = bf16_engine.run(inputs, labels, ids)
    assert bf16.q_halt_logit.dtype == np.float32
    # random weights leave many near-ties between logits, so agreement is high but not total
    assert (bf16.pred == fp32.pred).mean() > 0.75
    np.testing.assert_allclose(bf16.q_halt_logit, fp32.q_halt_logit, atol=0.1)


@pytest.mark.parametrize("family,q_halt_bias", [("hrm", 0.0), ("trm", -1.0)])
def test_adaptive_halting_spends_fewer_steps_and_matches_fixed_where_it_runs_to_the_end(tmp_path, family, q_halt_bias):
    engine = engine_for(tmp_path, family=family, batch_size=8, q_scale=0.3, q_halt_bias=q_halt_bias,
                        halt_max_steps=6)
    inputs, labels, ids = random_examples(40)
    fixed = engine.run(inputs, labels, ids, protocol="fixed")
    adaptive = engine.run(inputs, labels, ids, protocol="adaptive")
    assert adaptive.forward_steps < fixed.forward_steps
    assert adaptive.forward_steps == int(adaptive.steps.sum())
    early, full = adaptive.steps < 6, adaptive.steps == 6
    assert early.any() and full.any()
    np.testing.assert_array_equal(adaptive.pred[full], fixed.pred[full])
    np.testing.assert_allclose(adaptive.q_halt_logit[full], fixed.q_halt_logit[full], atol=1e-5)


def test_adaptive_halting_respects_the_minimum_step(tmp_path):
    engine = engine_for(tmp_path, q_scale=0.3, halt_max_steps=6)
    inputs, labels, ids = random_examples(30)
    result = engine.run(inputs, labels, ids, protocol="adaptive", min_steps=3)
    assert result.steps.min() >= 3


def test_adaptive_batches_stay_full_while_examples_wait(tmp_path):
    engine = engine_for(tmp_path, q_scale=0.3, halt_max_steps=6, batch_size=8)
    inputs, labels, ids = random_examples(64)
    result = engine.run(inputs, labels, ids, protocol="adaptive")
    # continuous batching: forwards ≈ example-steps / batch size, plus a short drain at the end
    assert result.batch_forwards <= result.forward_steps / 8 + 6


@pytest.mark.parametrize("protocol", ["fixed", "adaptive"])
def test_a_bfloat16_model_runs_in_bfloat16_without_autocast_and_rope_in_float32(tmp_path, monkeypatch, protocol):
    engine = engine_for(tmp_path, dtype="bfloat16", q_scale=0.3)
    seen = {"modules": set(), "rope": set(), "autocast": set()}

    def record_module(module, args, output):
        seen["modules"].update(t.dtype for t in (*args[:2], output))  # state, injection, new state
        seen["autocast"].update(torch.is_autocast_enabled(kind) for kind in ("cpu", "cuda"))

    for module in engine.model.modules():
        if isinstance(module, ReasoningModule):
            module.register_forward_hook(record_module)
    apply_rope = hrm.model.layers.apply_rope

    def recording_rope(x, rope):
        seen["rope"].update((x.dtype, rope.cos.dtype, rope.sin.dtype))
        out = apply_rope(x, rope)
        seen["rope"].add(out.dtype)
        return out

    monkeypatch.setattr(hrm.model.layers, "apply_rope", recording_rope)
    result = engine.run(*random_examples(12), protocol=protocol)
    assert seen["modules"] == {torch.bfloat16}
    assert seen["autocast"] == {False}
    # the tables stay float32 (the reference's), the rotated activations come back in bfloat16
    assert seen["rope"] == {torch.bfloat16, torch.float32}
    assert engine.model.rope.cos.dtype == torch.float32
    assert result.q_halt_logit.dtype == np.float32 and result.lm_loss.dtype == np.float64


def test_a_compile_mode_without_compile_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(EngineSettingError, match="compile_mode 'max-autotune' is a mode of compile") as refused:
        engine_for(tmp_path, engine_settings={"compile_mode": "max-autotune"})
    assert refused.value.setting == "compile_mode"


@pytest.mark.skipif(cpu_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_cuda_graphs_are_refused_on_a_cpu_naming_the_setting(tmp_path):
    with pytest.raises(EngineSettingError, match="'reduce-overhead' runs CUDA graphs: CUDA only") as refused:
        engine_for(tmp_path, engine_settings={"compile": True, "compile_mode": "reduce-overhead"})
    assert refused.value.setting == "compile_mode"


def test_a_compile_mode_on_cpu_goes_in_as_its_options_beside_the_runtime_thread_count():
    assert compile_settings(None, torch.device("cpu")) == {"options": {"cpp.dynamic_threads": True}}
    cpu = compile_settings("max-autotune", torch.device("cpu"))["options"]
    assert cpu["max_autotune"] is True and cpu["cpp.dynamic_threads"] is True
    assert compile_settings("reduce-overhead", torch.device("cuda")) == {"mode": "reduce-overhead"}
    assert compile_settings(None, torch.device("cuda")) == {"mode": None}


def test_a_cuda_engine_without_cuda_is_refused_naming_the_torch_build(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_cuda = r"cuda, but torch sees no CUDA device on this machine \(torch "
    with pytest.raises(EngineSettingError, match=no_cuda) as refused:
        engine_for(tmp_path, engine_settings={"device": "cuda"})
    assert refused.value.setting == "device"
    assert torch.__version__ in str(refused.value)


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@NEEDS_CUDA
def test_a_cuda_engine_takes_its_inputs_from_pinned_memory(tmp_path, monkeypatch):
    engine = engine_for(tmp_path, engine_settings={"device": "cuda"})
    pinned = []
    pin_memory = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t.shape) or pin_memory(t, *a))
    on_device = engine._to_device(*random_examples(5))
    assert all(t.device.type == "cuda" for t in on_device)
    assert pinned == [(5, 16), (5, 16), (5,)]


@NEEDS_CUDA
@pytest.mark.parametrize("protocol", ["fixed", "adaptive"])
def test_a_cuda_engine_predicts_what_the_cpu_one_does_in_float32(tmp_path, protocol):
    data = random_examples(21)
    settings = dict(q_scale=0.3, halt_max_steps=5)
    cpu = engine_for(tmp_path / "a", **settings).run(*data, protocol=protocol)
    cuda = engine_for(tmp_path / "b", engine_settings={"device": "cuda"}, **settings).run(*data, protocol=protocol)
    np.testing.assert_array_equal(cuda.steps, cpu.steps)
    np.testing.assert_array_equal(cuda.pred, cpu.pred)
    np.testing.assert_allclose(cuda.q_halt_logit, cpu.q_halt_logit, atol=1e-3, rtol=0)
