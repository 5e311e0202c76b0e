"""Per-token losses of the two reference loss types, as the reference computes them.

stablemax replaces exp by s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 and runs in
float64; softmax cross-entropy runs in float32. Ignored positions get loss 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["stablemax_cross_entropy", "softmax_cross_entropy"]


def _stablemax_log_probs(logits: torch.Tensor) -> torch.Tensor:
    s = torch.where(logits < 0, 1 / (1 - logits + 1e-30), logits + 1)
    return torch.log(s / s.sum(dim=-1, keepdim=True))


def token_losses(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, loss_type: LossType) -> torch.Tensor:
    """logits [batch, seq, vocab], labels [batch, seq] (any value where not valid) → [batch, seq]."""
    safe_labels = torch.where(valid, labels, 0).long()
    if loss_type == "stablemax_cross_entropy":
        log_probs = _stablemax_log_probs(logits.double())
        picked = log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
        return torch.where(valid, -picked, 0)
    if loss_type == "softmax_cross_entropy":
        flat = F.cross_entropy(logits.float().flatten(0, 1), safe_labels.flatten(), reduction="none")
        return torch.where(valid, flat.view(labels.shape), 0)
    raise ValueError(f"unknown loss type {loss_type!r}")
