"""The deep-supervision hybrid loss with the spectral term (docs/model.md, Loss)."""

from __future__ import annotations

import torch
from torch import nn

from hfsti.ops import REFERENCE, OpSet


class HybridLoss(nn.Module):
    """``L = sum_i 2^-(i-1) structure_loss(P^i, G) + lambda_spec * spectral_loss(P^1, G)``.

    Accepts the model's logits per frame (B, 4, H, W) with target (B, 1, H, W), or per clip
    (B, T, 4, H, W) with target (B, T, 1, H, W); frames of a clip count as batch items. The
    ops come from ``self.ops``, so ``hfsti_kernels`` can swap in its fused losses.

    Args:
        lambda_spec: weight of the spectral correlation term (0 disables it).
        ops: the op implementations (default: the reference).
    """

    def __init__(self, lambda_spec: float = 0.1, ops: OpSet = REFERENCE) -> None:
        super().__init__()
        if lambda_spec < 0:
            raise ValueError(f"lambda_spec: expected >= 0, got {lambda_spec}")
        self.lambda_spec = lambda_spec
        self.ops = ops

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 5:
            logits, target = logits.flatten(0, 1), target.flatten(0, 1)
        if logits.dim() != 4:
            raise ValueError(
                f"logits: expected (B, L, H, W) or (B, T, L, H, W), got {tuple(logits.shape)}"
            )
        loss = sum(
            2.0 ** (-i) * self.ops.structure_loss(logits[:, i : i + 1], target)
            for i in range(logits.shape[1])
        )
        if self.lambda_spec:
            loss = loss + self.lambda_spec * self.ops.spectral_correlation_loss(
                logits[:, :1], target
            )
        return loss
