"""The op benchmark cases: shapes per configuration, random inputs, FLOP counts.

Inputs are random (never zeros, which can hide unwritten outputs and run faster than real data)
and drawn from a fixed seed, so every provider of a case sees the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from _config import BenchConfig

from hfsti_kernels._inputs import FFT_OPS, attention_inputs, fft_op_inputs, loss_inputs

LOSS_OPS = ("structure_loss", "spectral_correlation_loss")
OPS = (*FFT_OPS, "memory_attention", *LOSS_OPS)
MODES = ("fwd_bwd", "fwd")
PROVIDERS = {
    **dict.fromkeys(FFT_OPS, ("triton", "cuda", "eager", "compile", "cupy")),
    "memory_attention": (
        "triton",
        "cuda",
        "eager",
        "compile",
        "sdpa_mem_efficient",
        "flex_attention",
    ),
    "structure_loss": ("triton", "eager", "compile"),
    "spectral_correlation_loss": ("triton", "eager", "compile", "cupy"),
}


@dataclass(frozen=True)
class Case:
    op: str
    dims: tuple[
        int, ...
    ]  # FFT ops (B, C, H, W); memory attention (B, h, Nq, Nk, d); losses (B, H, W)
    dtype: torch.dtype
    mode: str
    provider: str

    @property
    def shape(self) -> str:
        if self.op == "memory_attention":
            B, h, nq, nk, d = self.dims
            return f"B{B}xh{h}xNq{nq}xNk{nk}xd{d}"
        return "x".join(map(str, self.dims))

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def id(self) -> str:
        return f"{self.op}-{self.shape}-{self.dtype_name}-{self.mode}-{self.provider}"


def _shapes(op: str, batches: tuple[int, ...], channels: tuple[int, ...], cfg: BenchConfig):
    if op in FFT_OPS:
        return [(B, C, s, s) for B in batches for C in channels for s in cfg.maps]
    if op == "memory_attention":
        nq = cfg.mem_grid**2
        return [
            (B, cfg.mem_heads, nq, f * nq, cfg.mem_dim) for B in batches for f in cfg.mem_frames
        ]
    return [(B, cfg.loss_size, cfg.loss_size) for B in batches]


def cases(cfg: BenchConfig) -> list[Case]:
    """All cases, most important first: tier by tier, then dtype, op, shape, mode, provider."""
    out, seen = [], set()
    for batches, channels in cfg.tiers:
        for dtype in cfg.dtypes:
            for op in OPS:
                for dims in _shapes(op, batches, channels, cfg):
                    for mode in MODES:
                        for provider in PROVIDERS[op]:
                            if provider == "cupy" and mode == "fwd_bwd":
                                continue  # CuPy transforms have no autograd
                            case = Case(op, dims, dtype, mode, provider)
                            if case.id not in seen:  # C-free ops repeat across tiers
                                seen.add(case.id)
                                out.append(case)
    return out


def inputs(case: Case, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(all arguments, the differentiable ones) of the op, requiring grad in fwd_bwd mode; drawn
    by the factories the kernel tests use (``hfsti_kernels._inputs``)."""
    op = case.op
    if op in FFT_OPS:
        B, C, H, W = case.dims
        args = diff = fft_op_inputs(op, B, C, H, W, case.dtype, c_out=C, device=device)
    elif op == "memory_attention":
        args = diff = list(attention_inputs(case.dims, case.dtype, "full", device=device))
    else:
        B, H, W = case.dims
        logits, target = loss_inputs((B, 1, H, W), "soft", scale=2.0, device=device)
        target = (target > 0.5).to(case.dtype)
        logits = logits.to(case.dtype)
        args, diff = [logits, target], [logits]
    if case.mode == "fwd_bwd":
        for t in diff:
            t.requires_grad_(True)
    return args, diff


def _fft_flops(H: int, W: int) -> float:
    """One real 2-D transform (or its inverse) of an H x W plane, counted as FFTs: 5 N log2 N
    for a complex transform of N points, half that for a real one (W-point real transforms of
    the H rows, then H-point complex transforms of the W // 2 + 1 columns). The op's own count,
    not a particular algorithm's: a dense-DFT kernel does more work than this."""
    return 2.5 * H * W * math.log2(W) + 5 * (W // 2 + 1) * H * math.log2(H)


def flops(case: Case) -> float:
    """Useful FLOPs of the op: transforms as FFTs, attention as FlashAttention counts it, the
    channel mix and the depthwise conv as products (0: pointwise only)."""
    bwd = case.mode == "fwd_bwd"
    if case.op == "memory_attention":
        B, h, nq, nk, d = case.dims
        return (14 if bwd else 4) * B * h * nq * nk * d  # FlashAttention-2 counting
    if case.op == "structure_loss":
        return 0
    if case.op == "spectral_correlation_loss":
        B, H, W = case.dims
        return (3 if bwd else 2) * B * _fft_flops(H, W)  # P, G; then P's adjoint
    B, C, H, W = case.dims
    t = B * C * _fft_flops(H, W)
    if case.op == "fft_channel_attention":
        return (8 if bwd else 4) * t  # 3 transforms + 1 inverse; backward the same count
    mix = B * 2 * (2 * C) * (2 * C) * H * (W // 2 + 1)  # the 1x1 conv on the half spectrum
    fu = (4 * t + 3 * mix) if bwd else (2 * t + mix)
    conv = (3 if bwd else 1) * 18 * B * C * H * W if case.op == "gated_fusion" else 0
    return fu + conv
