"""HRM (ACT v1) and TRM, the two recursive reasoning models, in one file.

Both embed the puzzle (token embeddings, optionally prefixed by puzzle-identifier embedding
positions), refine two latent states z_H and z_L by recursion, and read out token logits
from z_H and two halting logits (q_halt, q_continue) from z_H's first position. One call of
`forward` is one ACT step; the carry (z_H, z_L) goes into the next step.

- HRM: separate H and L modules. Per step, H_cycles × L_cycles: L updates from
  (z_L, z_H + x) every L cycle, H updates from (z_H, z_L) once per H cycle.
- TRM: a single module (`L_level`) plays both roles; z_L is refined L_cycles times from
  (z_L, z_H + x), then z_H from (z_H, z_L), H_cycles times. Blocks may replace attention
  by an MLP over the sequence axis (`mlp_t`).

Only the last inner cycle gets gradients (the "1-step gradient" of both papers); that only
matters to the small trainer in `hrm.train`; evaluation runs under inference mode.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from hrm.model.layers import (
    Attention,
    CastedEmbedding,
    CastedLinear,
    PuzzleEmbedding,
    RotaryEmbedding,
    SwiGLU,
    rms_norm,
    trunc_normal_,
)

Family = Literal["hrm", "trm"]
Dtype = Literal["float32", "bfloat16", "float16"]  # activation dtypes the reference trains with


class ModelConfig(BaseModel):
    """The `arch` section of all_config.yaml plus the three sizes that come from the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family
    vocab_size: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    num_puzzle_identifiers: int = Field(ge=1)

    hidden_size: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    expansion: float = Field(gt=0)
    H_layers: int = Field(ge=0)  # TRM has no H level: 0
    L_layers: int = Field(ge=1)
    H_cycles: int = Field(ge=1)
    L_cycles: int = Field(ge=1)
    halt_max_steps: int = Field(ge=1)  # at least one ACT step, or there is no prediction to score
    halt_exploration_prob: float = Field(0.0, ge=0, le=1)
    puzzle_emb_ndim: int = Field(0, ge=0)
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    rms_norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    forward_dtype: Dtype = "bfloat16"
    # TRM only
    mlp_t: bool = False
    puzzle_emb_len: int = Field(16, ge=0)
    no_ACT_continue: bool = True

    @model_validator(mode="after")
    def _prefix_has_embeddings(self) -> ModelConfig:
        # TRM's puzzle_emb_len reserves prefix positions only puzzle embeddings can fill;
        # the reference fails on this combination too, with a shape error deep in the model
        if self.family == "trm" and self.puzzle_emb_ndim == 0 and self.puzzle_emb_len != 0:
            raise ValueError(f"a TRM without puzzle embeddings (puzzle_emb_ndim 0) needs puzzle_emb_len 0, "
                             f"not {self.puzzle_emb_len}")
        return self

    @property
    def prefix_len(self) -> int:
        """Number of puzzle-embedding positions prepended to the sequence."""
        if self.family == "trm" and self.puzzle_emb_len != 0:
            return self.puzzle_emb_len
        return math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.forward_dtype)


class Block(nn.Module):
    """Post-norm block: token mixing (attention, or TRM's MLP over positions), then SwiGLU."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.eps = config.rms_norm_eps
        if config.mlp_t:
            self.mlp_t = SwiGLU(config.seq_len + config.prefix_len, config.expansion)
        else:
            self.self_attn = Attention(config.hidden_size, config.num_heads)
        self.mlp = SwiGLU(config.hidden_size, config.expansion)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        if hasattr(self, "mlp_t"):
            xt = x.transpose(1, 2)
            x = rms_norm(xt + self.mlp_t(xt), self.eps).transpose(1, 2)
        else:
            x = rms_norm(x + self.self_attn(x, rope), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to `state + injection`."""

    def __init__(self, config: ModelConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(num_layers))

    def forward(self, state: torch.Tensor, injection: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        x = state + injection
        for layer in self.layers:
            x = layer(x, rope)
        return x


class RecursiveReasoningModel(nn.Module):
    """What HRM and TRM share: input embedding, initial states, output heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dtype = config.dtype
        self.embed_scale = math.sqrt(config.hidden_size)
        self.embed_tokens = CastedEmbedding(config.vocab_size, config.hidden_size, 1 / self.embed_scale, dtype)
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim, dtype)
        total_len = config.seq_len + config.prefix_len
        self.rope = None
        if config.pos_encodings == "rope":
            self.rope = RotaryEmbedding(config.hidden_size // config.num_heads, total_len, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, config.hidden_size, 1 / self.embed_scale, dtype)
        self.H_init = nn.Buffer(trunc_normal_(torch.empty(config.hidden_size), std=1).to(dtype))
        self.L_init = nn.Buffer(trunc_normal_(torch.empty(config.hidden_size), std=1).to(dtype))
        with torch.no_grad():  # q-head starts near "never halt", as the reference trainer does
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """[batch, seq] tokens → [batch, prefix + seq, hidden] scaled input embeddings."""
        x = self.embed_tokens(inputs.to(torch.int32))
        cfg = self.config
        if cfg.puzzle_emb_ndim > 0:
            prefix = self.puzzle_emb(puzzle_identifiers)
            prefix = nn.functional.pad(prefix, (0, cfg.prefix_len * cfg.hidden_size - prefix.shape[-1]))
            x = torch.cat((prefix.view(-1, cfg.prefix_len, cfg.hidden_size), x), dim=-2)
        if cfg.pos_encodings == "learned":
            # 1/sqrt(2) keeps the variance of the sum of two unit-variance embeddings
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(cfg.dtype))
        return self.embed_scale * x

    def initial_state(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch_size, self.config.seq_len + self.config.prefix_len, self.config.hidden_size)
        return self.H_init.to(device).expand(shape).clone(), self.L_init.to(device).expand(shape).clone()

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One ACT step from embedded inputs `x`: (z_H, z_L, logits, q_logits[batch, 2] in float32)."""
        z_H, z_L = self.recurse(z_H, z_L, x)
        logits = self.lm_head(z_H[:, self.config.prefix_len :])
        q_logits = self.q_head(z_H[:, 0]).float()
        return z_H, z_L, logits, q_logits


class HRM(RecursiveReasoningModel):
    """Hierarchical Reasoning Model, ACT v1: a slow H module over a fast L module."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.H_level = ReasoningModule(config, config.H_layers)
        self.L_level = ReasoningModule(config, config.L_layers)

    def recurse(self, z_H, z_L, x):
        cfg, rope = self.config, self.rope
        with torch.no_grad():
            for h in range(cfg.H_cycles):
                injection = z_H + x  # z_H is fixed for the L cycles of one H cycle
                for l in range(cfg.L_cycles):
                    if (h, l) != (cfg.H_cycles - 1, cfg.L_cycles - 1):
                        z_L = self.L_level(z_L, injection, rope)
                if h != cfg.H_cycles - 1:
                    z_H = self.H_level(z_H, z_L, rope)
        z_L = self.L_level(z_L, z_H + x, rope)  # the same sum, now with gradients to x
        z_H = self.H_level(z_H, z_L, rope)
        return z_H, z_L


class TRM(RecursiveReasoningModel):
    """Tiny Recursive Model: one small network refines z_L (reasoning) then z_H (answer)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.L_level = ReasoningModule(config, config.L_layers)

    def recurse(self, z_H, z_L, x):
        cfg, net, rope = self.config, self.L_level, self.rope
        with torch.no_grad():
            for _ in range(cfg.H_cycles - 1):
                injection = z_H + x  # z_H is fixed while z_L is refined
                for _ in range(cfg.L_cycles):
                    z_L = net(z_L, injection, rope)
                z_H = net(z_H, z_L, rope)
        injection = z_H + x  # with gradients to x
        for _ in range(cfg.L_cycles):
            z_L = net(z_L, injection, rope)
        z_H = net(z_H, z_L, rope)
        return z_H, z_L


def build_model(config: ModelConfig) -> RecursiveReasoningModel:
    return HRM(config) if config.family == "hrm" else TRM(config)
