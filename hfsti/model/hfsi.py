"""Hierarchical Frequency-Spatial Interaction (HFSI): FFB -> SRB -> IFB on one level.

The frequency parts call the ops through ``self.ops`` (an :class:`hfsti.ops.OpSet`), the one
place where ``hfsti_kernels`` swaps in fused kernels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hfsti.model.layers import ChannelLayerNorm, conv1x1, depthwise
from hfsti.ops import REFERENCE, OpSet


def fourier_unit_parameters(channels: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight (2C, 2C) and bias (2C,) of a Fourier unit, initialised like a 1x1 conv on the
    stacked real/imaginary spectrum (PyTorch's default conv init)."""
    weight = nn.Parameter(torch.empty(2 * channels, 2 * channels))
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(2 * channels)
    bias = nn.Parameter(torch.empty(2 * channels).uniform_(-bound, bound))
    return weight, bias


class FFB(nn.Module):
    """Frequency Filtering Block: FFT channel attention beside a Fourier-unit residual branch.

    ``X_f = X + Conv1x1(cat(LN(fft_channel_attention(Q, K, V)), fourier_unit(LN(X))))``.
    """

    def __init__(self, channels: int, ops: OpSet = REFERENCE) -> None:
        super().__init__()
        self.ops = ops
        self.norm = ChannelLayerNorm(channels)
        self.qkv = conv1x1(channels, 3 * channels)
        self.attn_norm = ChannelLayerNorm(channels)
        self.fu_weight, self.fu_bias = fourier_unit_parameters(channels)
        self.proj = conv1x1(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> X_f: (B, C, H, W)."""
        xh = self.norm(x)
        q, k, v = self.qkv(xh).chunk(3, dim=1)
        attn = self.attn_norm(self.ops.fft_channel_attention(q, k, v))
        freq = self.ops.fourier_unit(xh, self.fu_weight, self.fu_bias)
        return x + self.proj(torch.cat([attn, freq], dim=1))


class SRB(nn.Module):
    """Spatial Refinement Block: multi-scale depthwise-separable Q/K/V and a per-channel
    softmax over pixels, rescaled by N so that a uniform attention map is the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.q = nn.Sequential(depthwise(channels, 3), conv1x1(channels, channels))
        self.k = nn.Sequential(depthwise(channels, 5), conv1x1(channels, channels))
        self.v = conv1x1(channels, channels)
        self.proj = conv1x1(channels, channels)

    def forward(self, x_f: torch.Tensor) -> torch.Tensor:
        """x_f: (B, C, H, W) -> X_s: (B, C, H, W)."""
        xh = self.norm(x_f)
        B, C, H, W = xh.shape
        logits = (self.q(xh) * self.k(xh)).flatten(2) / math.sqrt(C)
        lam = (H * W) * torch.softmax(logits, dim=-1).view(B, C, H, W)
        return x_f + self.proj(lam * self.v(xh))


class IFB(nn.Module):
    """Intertwined Fusion Block: the gated frequency x spatial product feeds both paths back.

    ``x_c, x_fs = gated_fusion(X_f, X_s, X)``; ``chi = x_c + Conv1x1(cat(X_f + Conv1x1(x_fs),
    X_s + DW3x3(x_fs)))``.
    """

    def __init__(self, channels: int, ops: OpSet = REFERENCE) -> None:
        super().__init__()
        self.ops = ops
        self.fu_weight, self.fu_bias = fourier_unit_parameters(channels)
        self.gate_dw = depthwise(channels, 3)
        self.refine_f = conv1x1(channels, channels)
        self.refine_s = depthwise(channels, 3)
        self.fuse = conv1x1(2 * channels, channels)

    def forward(self, x_f: torch.Tensor, x_s: torch.Tensor, x_0: torch.Tensor) -> torch.Tensor:
        """x_f, x_s, x_0: (B, C, H, W) -> chi: (B, C, H, W)."""
        x_c, x_fs = self.ops.gated_fusion(
            x_f, x_s, x_0, self.fu_weight, self.fu_bias, self.gate_dw.weight, self.gate_dw.bias
        )
        y_f = x_f + self.refine_f(x_fs)
        y_s = x_s + self.refine_s(x_fs)
        return x_c + self.fuse(torch.cat([y_f, y_s], dim=1))


class HFSI(nn.Module):
    """The three serialized blocks on one level: X -> FFB -> SRB -> IFB -> chi."""

    def __init__(self, channels: int, ops: OpSet = REFERENCE) -> None:
        super().__init__()
        self.ffb = FFB(channels, ops)
        self.srb = SRB(channels)
        self.ifb = IFB(channels, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> chi: (B, C, H, W)."""
        x_f = self.ffb(x)
        x_s = self.srb(x_f)
        return self.ifb(x_f, x_s, x)


__all__ = ["FFB", "SRB", "IFB", "HFSI", "fourier_unit_parameters"]
