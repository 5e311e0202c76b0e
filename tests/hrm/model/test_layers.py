import torch

from hrm.model.layers import Attention, RotaryEmbedding, SwiGLU, apply_rope


def reference_rope(x: torch.Tensor, positions: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """The reference's rotate-half RoPE: x·cos + (-x₂, x₁)·sin."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq).repeat(1, 2)
    half = head_dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * angles.cos().unsqueeze(-2) + rotated * angles.sin().unsqueeze(-2)


def test_rope_gives_the_reference_rotate_half_bits():
    torch.manual_seed(0)
    q = torch.randn(3, 10, 4, 16)  # [batch, seq, heads, head_dim]
    assert torch.equal(apply_rope(q, RotaryEmbedding(16, 10, 10000.0)), reference_rope(q, 10, 16))


def test_attention_and_swiglu_gradients_match_finite_differences():
    # the trainer backpropagates through the in-place RoPE and SwiGLU ops
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.double, requires_grad=True)
    attention, swiglu, rope = Attention(8, 2).double(), SwiGLU(8, 2).double(), RotaryEmbedding(4, 3, 10000.0).double()
    assert torch.autograd.gradcheck(lambda t: swiglu(attention(t, rope)), (x,))
