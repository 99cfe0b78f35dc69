"""Multi-scale Feature Enhancement (MFE) on the deepest backbone level F4."""

from __future__ import annotations

import torch
from torch import nn

from hfsti.model.layers import ConvBNReLU, conv1x1


class MFE(nn.Module):
    """Parallel 1x1 / 3x3 / 5x5 ConvBNReLU branches, fused by a 1x1 ConvBNReLU, plus a
    1x1 projection shortcut: ``M = CBR1x1(cat(b1, b3, b5)) + Conv1x1(F4)``.

    Args:
        in_channels: channels of F4 (512 for PVTv2-b2).
        channels: the neck width C.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(ConvBNReLU(in_channels, channels, k) for k in (1, 3, 5))
        self.fuse = ConvBNReLU(3 * channels, channels, 1)
        self.shortcut = conv1x1(in_channels, channels)

    def forward(self, f4: torch.Tensor) -> torch.Tensor:
        """f4: (B, C4, h, w) -> M: (B, C, h, w)."""
        return self.fuse(torch.cat([b(f4) for b in self.branches], dim=1)) + self.shortcut(f4)
