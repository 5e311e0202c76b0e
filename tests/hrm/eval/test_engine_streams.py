import threading

import numpy as np
import pytest
import torch

from hrm.checkpoint.loading import build_checked_model, load_checkpoint
from hrm.eval.engine import Engine, EngineResult

from tests.factories import TINY_SIZES, make_checkpoint, random_examples

ARRAYS = ("pred", "q_halt_logit", "q_continue_logit", "steps", "valid_tokens", "correct_tokens", "exact", "lm_loss")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    make_checkpoint(run_dir, q_scale=0.3, halt_max_steps=6)
    return load_checkpoint(run_dir)


def engine(checkpoint, **kwargs) -> Engine:
    model = build_checked_model(checkpoint, TINY_SIZES)
    return Engine(model, checkpoint.spec.loss_type, ignore_label_id=0, **kwargs)


def assert_same_results(a: EngineResult, b: EngineResult) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.forward_steps == b.forward_steps


def test_two_streams_give_the_results_of_half_the_batch_size_on_one_stream(checkpoint):
    inputs, labels, ids = random_examples(37)
    one = engine(checkpoint, batch_size=4).run(inputs, labels, ids)
    two = engine(checkpoint, batch_size=8, streams=2).run(inputs, labels, ids)
    assert_same_results(one, two)
    np.testing.assert_array_equal(one.exact_per_step, two.exact_per_step)


def test_adaptive_streams_halt_every_example_where_one_stream_does(checkpoint):
    inputs, labels, ids = random_examples(37)
    one = engine(checkpoint, batch_size=8).run(inputs, labels, ids, protocol="adaptive")
    two = engine(checkpoint, batch_size=8, streams=2).run(inputs, labels, ids, protocol="adaptive")
    assert (two.steps < 6).any() and (two.steps == 6).any()  # halting really varies
    assert two.forward_steps == two.steps.sum()
    # other slot-mates change float rounding, which can move a halt sitting on the threshold
    same = one.steps == two.steps
    assert same.mean() > 0.9
    np.testing.assert_array_equal(one.pred[same], two.pred[same])
    np.testing.assert_allclose(one.q_halt_logit[same], two.q_halt_logit[same], atol=1e-5)


def test_streams_run_on_as_many_threads_and_restore_the_thread_count(checkpoint):
    eng = engine(checkpoint, batch_size=8, streams=2)
    threads, forward = set(), eng.model.forward

    def recording_forward(*args):
        threads.add(threading.get_ident())
        return forward(*args)

    eng.model.forward = recording_forward
    before = torch.get_num_threads()
    eng.run(*random_examples(32))
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert torch.get_num_threads() == before


def test_more_than_one_stream_is_refused_off_cpu(checkpoint):
    with pytest.raises(ValueError, match="streams"):
        engine(checkpoint, device="cuda", streams=2)
