"""Small building blocks shared by the neck modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Conv(k x k, 'same' padding, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map, at every pixel, with weight and bias."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution with bias: the neck's pointwise projection."""
    return nn.Conv2d(in_channels, out_channels, 1)


def depthwise(channels: int, kernel_size: int) -> nn.Conv2d:
    """A depthwise k x k convolution with bias and 'same' padding."""
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
