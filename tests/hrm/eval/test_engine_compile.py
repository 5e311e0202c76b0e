"""`Engine(compile=True)`: the reasoning modules go through torch.compile; the results must be
the eager ones up to float rounding."""

import numpy as np
import pytest

from hrm.checkpoint.loading import build_checked_model, load_checkpoint
from hrm.eval.engine import Engine, cpu_compiler

from tests.factories import TINY_SIZES, make_checkpoint, random_examples

pytestmark = pytest.mark.skipif(cpu_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++)")


def engines(tmp_path, family: str, streams: int = 1, **arch) -> tuple[Engine, Engine]:
    make_checkpoint(tmp_path, family, q_scale=0.3, halt_max_steps=5, **arch)
    ckpt = load_checkpoint(tmp_path)
    build = lambda compile: Engine(build_checked_model(ckpt, TINY_SIZES), ckpt.spec.loss_type, ignore_label_id=0,
                                   batch_size=8, streams=streams, compile=compile)
    return build(False), build(True)


def assert_same_results(got, want):
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_array_equal(got.pred, want.pred)
    # fused kernels sum in another order, and dozens of recursive block applications with
    # random weights grow that rounding to ~1e-4 here (the trained conformance checkpoints stay
    # within the reference tolerance compiled: tests/test_conformance.py)
    np.testing.assert_allclose(got.q_halt_logit, want.q_halt_logit, atol=1e-3, rtol=0)
    np.testing.assert_allclose(got.lm_loss, want.lm_loss, atol=1e-3, rtol=0)
    assert got.forward_steps == want.forward_steps


@pytest.mark.parametrize("family,arch", [("hrm", {}), ("trm", {"mlp_t": True})])
@pytest.mark.parametrize("protocol", ["fixed", "adaptive"])
def test_a_compiled_engine_predicts_what_the_eager_one_does(tmp_path, family, arch, protocol):
    eager, compiled = engines(tmp_path, family, **arch)
    data = random_examples(21)  # the last batch is short: a second shape
    want, got = eager.run(*data, protocol=protocol), compiled.run(*data, protocol=protocol)
    assert_same_results(got, want)


@pytest.mark.parametrize("protocol", ["fixed", "adaptive"])
def test_a_compiled_engine_with_two_streams_predicts_what_the_eager_one_does(tmp_path, protocol):
    eager, compiled = engines(tmp_path, "hrm", streams=2)
    data = random_examples(21)
    compiled.run(*(column[:3] for column in data), steps=1)  # one batch: compiled outside the streams
    assert_same_results(compiled.run(*data, protocol=protocol), eager.run(*data, protocol=protocol))
