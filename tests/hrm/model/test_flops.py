import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hrm.model.flops import block_evaluations, flops_per_example_step, step_matmuls
from hrm.model.models import ModelConfig, build_model

TINY = dict(vocab_size=11, seq_len=16, num_puzzle_identifiers=3, hidden_size=32, num_heads=2, expansion=2,
            L_layers=2, H_cycles=2, L_cycles=3, halt_max_steps=4, puzzle_emb_ndim=32, forward_dtype="float32")


@pytest.mark.parametrize("arch", [
    dict(family="hrm", H_layers=1),
    dict(family="trm", H_layers=0, puzzle_emb_len=4),
    dict(family="trm", H_layers=0, mlp_t=True, pos_encodings="none"),
])
def test_counted_flops_equal_torchs_count_of_one_act_step(arch):
    config = ModelConfig(**TINY, **arch)
    model = build_model(config)
    batch = 3
    x = model.embed(torch.randint(1, 11, (batch, config.seq_len)), torch.zeros(batch, dtype=torch.long))
    z_H, z_L = model.initial_state(batch, torch.device("cpu"))
    # the math SDPA backend runs attention as bmm, which the flop counter sees
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(z_H, z_L, x)
    assert counter.get_total_flops() == batch * sum(flops_per_example_step(config).values())


def test_hrm_runs_its_l_level_every_l_cycle_and_its_h_level_every_h_cycle():
    config = ModelConfig(family="hrm", **{**TINY, "H_cycles": 3, "L_cycles": 5}, H_layers=7)
    assert block_evaluations(config) == 3 * 5 * 2 + 3 * 7


def test_matmul_rows_scale_with_the_batch_and_flops_per_example_do_not():
    config = ModelConfig(family="hrm", **TINY, H_layers=1)
    one, eight = step_matmuls(config, 1), step_matmuls(config, 8)
    assert [m.flops * 8 for m in one] == [m.flops for m in eight]
    assert {m.component for m in one} == {"qkv", "attn_scores", "attn_values", "attn_out", "swiglu", "lm_head", "q_head"}
