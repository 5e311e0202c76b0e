"""Model FLOPs of one ACT step, counted from a ModelConfig.

Counted: the matrix multiplications, at 2 FLOPs per multiply-add — the QKV and output
projections, attention scores (QKᵀ) and values (PV), the SwiGLU projections (gate+up, down),
TRM's `mlp_t` (a SwiGLU over the sequence axis, per hidden channel), and the lm and q heads.
Not counted: RMSNorm, RoPE, softmax, SiLU, residual adds and embedding lookups — the
memory-bound work that a matmul roofline should see as overhead.

The matmuls are listed with the shapes the model runs them in (SwiGLU's gate and up are two
products, see `hrm.model.layers.SwiGLU`), so that a benchmark can time the model's own GEMM shapes
from the same description.
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm.model.layers import swiglu_width
from hrm.model.models import ModelConfig


@dataclass(frozen=True)
class Matmul:
    """`batch` independent [m, k] × [k, n] products, run `calls` times per ACT step."""

    component: str
    batch: int
    m: int
    k: int
    n: int
    calls: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n * self.calls


def block_evaluations(config: ModelConfig) -> int:
    """Transformer blocks run in one ACT step."""
    if config.family == "hrm":
        return config.H_cycles * (config.L_cycles * config.L_layers + config.H_layers)
    # TRM: per H cycle, L_cycles refinements of z_L and one of z_H, all by the same module
    return config.H_cycles * (config.L_cycles + 1) * config.L_layers


def step_matmuls(config: ModelConfig, batch_size: int) -> list[Matmul]:
    """Every matmul of one ACT step over `batch_size` examples."""
    tokens = config.seq_len + config.prefix_len
    rows = batch_size * tokens
    hidden, blocks = config.hidden_size, block_evaluations(config)
    width = swiglu_width(hidden, config.expansion)
    if config.mlp_t:
        width_t = swiglu_width(tokens, config.expansion)
        mixing = [
            Matmul("mlp_t", 1, batch_size * hidden, tokens, width_t, 2 * blocks),
            Matmul("mlp_t", 1, batch_size * hidden, width_t, tokens, blocks),
        ]
    else:
        heads, head_dim = config.num_heads, hidden // config.num_heads
        mixing = [
            Matmul("qkv", 1, rows, hidden, 3 * hidden, blocks),
            Matmul("attn_scores", batch_size * heads, tokens, head_dim, tokens, blocks),
            Matmul("attn_values", batch_size * heads, tokens, tokens, head_dim, blocks),
            Matmul("attn_out", 1, rows, hidden, hidden, blocks),
        ]
    return [
        *mixing,
        Matmul("swiglu", 1, rows, hidden, width, 2 * blocks),
        Matmul("swiglu", 1, rows, width, hidden, blocks),
        Matmul("lm_head", 1, batch_size * config.seq_len, hidden, config.vocab_size, 1),
        Matmul("q_head", 1, batch_size, hidden, 2, 1),
    ]


def flops_per_example_step(config: ModelConfig) -> dict[str, int]:
    """FLOPs of one example's ACT step, per component (the keys of `step_matmuls`)."""
    per_component: dict[str, int] = {}
    for matmul in step_matmuls(config, batch_size=1):
        per_component[matmul.component] = per_component.get(matmul.component, 0) + matmul.flops
    return per_component
