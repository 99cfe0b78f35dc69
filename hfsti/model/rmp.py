"""Recurrent Memory Propagation (RMP): temporal alignment (TAM) then mask affinity (MAM).

Memory is a bank of the last ``T_m`` frames' MFE features and predicted mask probabilities on
the F4 grid. On an empty bank (first frame of a video) the current frame's own features stand
in as memory with an all-zero mask, so RMP reduces to self-attention (docs/model.md, Empty memory).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hfsti.model.layers import conv1x1
from hfsti.ops import REFERENCE, OpSet


class Memory(NamedTuple):
    """The memory bank of a batch of independent videos.

    features: (B, T, C, h, w), MFE outputs of the remembered frames, oldest first.
    masks: (B, T, 1, h, w), their predicted mask probabilities, detached, on the F4 grid.
    """

    features: torch.Tensor
    masks: torch.Tensor

    @staticmethod
    def start(features: torch.Tensor, masks: torch.Tensor) -> Memory:
        """The bank after a video's first frame ((B, C, h, w), (B, 1, h, w))."""
        empty = Memory(features[:, None][:, :0], masks[:, None][:, :0])
        return empty.push(features, masks, 1)

    def push(self, features: torch.Tensor, masks: torch.Tensor, capacity: int) -> Memory:
        """Append one frame ((B, C, h, w), (B, 1, h, w)) and keep the newest ``capacity``.

        The oldest frames are dropped before the concatenation, so the bank is always a fresh
        contiguous tensor: its strides depend only on its shape, and a compiled ``step`` sees
        the same layout at every fill level (no stride-driven recompiles; see
        ``hfsti.stream.VideoSegmenter``).
        """
        start = max(0, self.features.shape[1] - (capacity - 1))
        feats = torch.cat([self.features[:, start:], features[:, None]], dim=1)
        return Memory(feats, torch.cat([self.masks[:, start:], masks[:, None]], dim=1))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, h, w) or (B, C, h, w) -> (B, T*h*w, C)."""
    if x.dim() == 4:
        x = x[:, None]
    B, T, C, h, w = x.shape
    return x.permute(0, 1, 3, 4, 2).reshape(B, T * h * w, C)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads), a strided view as the kernels accept it."""
    B, N, C = x.shape
    return x.view(B, N, heads, C // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


class RMP(nn.Module):
    """TAM: ``Z = W_o attn(W_q M, W_k Mem, W_v Mem)``, ``Q_M = LN(MLP(Z) + Z) + M``.
    MAM: ``X_4 = Conv1x1(cat(q_v, attn(q_k, m_k, m_v, key_bias = alpha_h * m)))``.

    Args:
        channels: neck width C (divisible by ``heads``).
        heads: attention heads h; head width d = C / h.
        mlp_ratio: hidden width of TAM's MLP, in multiples of C.
    """

    def __init__(self, channels: int, heads: int, mlp_ratio: int, ops: OpSet = REFERENCE) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: must divide channels={channels}, got {heads}")
        self.ops = ops
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(channels, channels) for _ in range(4))
        self.mlp = nn.Sequential(
            nn.Linear(channels, mlp_ratio * channels),
            nn.GELU(),
            nn.Linear(mlp_ratio * channels, channels),
        )
        self.norm = nn.LayerNorm(channels)
        self.q_k = conv1x1(2 * channels, channels)
        self.q_v = conv1x1(2 * channels, channels)
        self.m_k = conv1x1(channels, channels)
        self.m_v = conv1x1(channels + 1, channels)
        self.alpha = nn.Parameter(torch.ones(heads))
        self.out = conv1x1(2 * channels, channels)

    def forward(self, m: torch.Tensor, memory: Memory) -> torch.Tensor:
        """m: (B, C, h, w) current MFE features; memory on the same grid -> X_4 (B, C, h, w)."""
        B, C, h, w = m.shape
        heads = self.heads
        tok_m = _tokens(m)
        tok_mem = _tokens(memory.features)
        z = self.ops.memory_attention(
            _heads(self.q(tok_m), heads),
            _heads(self.k(tok_mem), heads),
            _heads(self.v(tok_mem), heads),
        )
        z = self.o(_merge(z))
        q_m = (self.norm(self.mlp(z) + z) + tok_m).transpose(1, 2).reshape(B, C, h, w)

        both = torch.cat([q_m, m], dim=1)
        q_k, q_v = self.q_k(both), self.q_v(both)
        feats = memory.features.flatten(0, 1)  # (B*T, C, h, w)
        masks = memory.masks.flatten(0, 1)
        T = memory.features.shape[1]
        m_k = self.m_k(feats).view(B, T, C, h, w)
        m_v = self.m_v(torch.cat([feats, masks], dim=1)).view(B, T, C, h, w)
        key_bias = self.alpha[None, :, None] * memory.masks.reshape(B, 1, T * h * w)
        attn = self.ops.memory_attention(
            _heads(_tokens(q_k), heads),
            _heads(_tokens(m_k), heads),
            _heads(_tokens(m_v), heads),
            key_bias.to(q_k.dtype),
        )
        attn = _merge(attn).transpose(1, 2).reshape(B, C, h, w)
        return self.out(torch.cat([q_v, attn], dim=1))


def mask_to_grid(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-downsample a mask probability (B, 1, H, W) to the F4 grid ``size``."""
    return F.adaptive_avg_pool2d(prob, size)
