"""Building blocks shared by HRM and TRM: post-norm transformer pieces in plain PyTorch.

Parameter names (`qkv_proj`, `gate_up_proj`, `embedding_weight`, …) match the reference
checkpoints so a state dict loads without renaming. Numerics follow the reference too:
weights are cast to the activation dtype at use, RMSNorm and RoPE run in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a learned scale, computed in float32 and cast back."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return x.to(dtype)


def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Truncated normal with the *requested* std after truncation (JAX/flax convention).

    Only used to initialise models we train ourselves (the demo); evaluation loads weights.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        lo, hi = math.erf(-bound / math.sqrt(2)), math.erf(bound / math.sqrt(2))
        pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
        z = (hi - lo) / 2
        # variance of a standard normal truncated to [-bound, bound]
        truncated_var = 1 - 2 * bound * pdf / z
        comp_std = std / math.sqrt(truncated_var)
        tensor.uniform_(lo, hi).erfinv_().mul_(math.sqrt(2) * comp_std)
        return tensor.clamp_(-bound * comp_std, bound * comp_std)


class CastedLinear(nn.Module):
    """Linear layer whose float32 master weight is cast to the input's dtype at use."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


class PuzzleEmbedding(nn.Module):
    """Per-puzzle-identifier embedding; a buffer in the reference (trained by a sparse SignSGD)."""

    def __init__(self, num_identifiers: int, dim: int, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(torch.zeros(num_identifiers, dim), persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weights[ids].to(self.cast_to)


class RotaryEmbedding(nn.Module):
    """RoPE tables for `max_positions` positions, in float32, not saved in checkpoints.

    Rotate-half RoPE is x·cos + (-x₂, x₁)·sin for the halves x₁, x₂ of each head; `sin` is
    stored with its first half negated, so the rotation needs only the swapped halves
    (x₂, x₁) — a flip instead of a negation and a concatenation, with identical results.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        self.cos = nn.Buffer(torch.cat((freqs, freqs), dim=-1).cos(), persistent=False)
        self.sin = nn.Buffer(torch.cat((-freqs.sin(), freqs.sin()), dim=-1), persistent=False)


def apply_rope(x: torch.Tensor, rope: RotaryEmbedding) -> torch.Tensor:
    """x: [batch, seq, ..., head_dim]; the tables broadcast over the dimensions between."""
    dtype, head_dim = x.dtype, x.shape[-1]
    x = x.to(rope.cos.dtype)
    swapped = x.unflatten(-1, (2, head_dim // 2)).flip(-2).flatten(-2)  # a fresh copy
    table_shape = (x.shape[1],) + (1,) * (x.dim() - 3) + (head_dim,)
    # in place where the operand is a temporary: fewer fresh buffers stay hotter in cache
    return (x * rope.cos.view(table_shape)).add_(swapped.mul_(rope.sin.view(table_shape))).to(dtype)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with fused QKV and optional RoPE."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * num_heads * self.head_dim, bias=False)
        self.o_proj = CastedLinear(num_heads * self.head_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        batch, seq, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, seq, 3, self.num_heads, self.head_dim)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]
        if rope is not None:
            qk = apply_rope(qk, rope)  # q and k together: one pass instead of two
        q, k = qk.unbind(dim=2)
        # SDPA takes [batch, heads, seq, head_dim] as strided views of the fused projection,
        # and its output's memory is [batch, seq, heads, head_dim]: no copies either side
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


def swiglu_width(hidden_size: int, expansion: float) -> int:
    """The reference's intermediate width: 2/3 of expansion×hidden, rounded up to 256."""
    return math.ceil(round(expansion * hidden_size * 2 / 3) / 256) * 256


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        width = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * width, bias=False)
        self.down_proj = CastedLinear(width, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gate and up as two products with the halves of the fused weight (same bits as one
        # product split in two): contiguous outputs make SiLU and the product ~1.5× faster
        # than strided halves do, and both can then run in place.
        w_gate, w_up = self.gate_up_proj.weight.to(x.dtype).chunk(2, dim=0)
        gate = F.silu(F.linear(x, w_gate), inplace=True)
        return self.down_proj(gate.mul_(F.linear(x, w_up)))
