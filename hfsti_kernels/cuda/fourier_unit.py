"""CUDA backend of ``fourier_unit``: ``y = irfft2_strict(relu(weight @ [Re; Im] rfft2(x) + bias))``.

The per-plane transforms are ``csrc/fourier_unit.cu`` (design and limits in its header); the
channel mixing between them is a torch GEMM (cuBLAS on GPU) in the compute dtype (float32, or
float64 for float64 inputs; on GPU it follows torch's float32 matmul precision, IEEE by
default). Two ``torch.library`` ops, ``hfsti_cuda::fourier_unit`` and
``hfsti_cuda::fourier_unit_backward``, with fake rules and autograd; registered as the
``"cuda"`` implementation of the public op.

The backward recomputes the spectrum Z and the GEMM from x (one more transform of x and one
GEMM) rather than keeping two compute-dtype spectra alive from forward to backward. Weight
gradients are deterministic: fixed-order torch sums over the batch, no atomics.
Inputs are made contiguous first: a copy (one extra read and write) only for a non-contiguous x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti_kernels._registry import kernel_op, register_implementation
from hfsti_kernels.cuda import _fft_plan
from hfsti_kernels.cuda import runtime as rt
from hfsti_kernels.cuda._autograd import backward_op, register_backward_of_inputs

__all__ = ["fourier_unit"]


def spectrum(x: Tensor) -> Tensor:
    """Z = cat([Re, Im] rfft2(x)) as (B, 2C, H*(W//2+1)) in the compute dtype."""
    B, C, H, W = x.shape
    z = x.new_empty((B, 2 * C, H * (W // 2 + 1)), dtype=compute_dtype(x.dtype))
    _fft_plan.launch("hfsti_fu_spec", x, [rt.ptr(x), rt.ptr(z), rt.i32(C)], B * C, H, W, nbuf=2)
    return z


def inverse(gz: Tensor, like: Tensor) -> Tensor:
    """dx = rfft2^T(gZ) for gZ (B, 2C, H*(W//2+1)), in ``like``'s dtype and shape (B, C, H, W)."""
    B, C, H, W = like.shape
    dx = like.new_empty(like.shape)
    args = [rt.ptr(gz.contiguous()), rt.ptr(dx), rt.i32(C)]
    _fft_plan.launch("hfsti_fu_out_bwd", like, args, B * C, H, W, nbuf=2)
    return dx


def _fwd_fake(x, weight, bias):
    B, _, H, W = x.shape
    return x.new_empty((B, weight.shape[0] // 2, H, W))


@kernel_op("hfsti_cuda::fourier_unit", fake=_fwd_fake)
def fourier_unit(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The CUDA kernels' ``fourier_unit`` (inputs already validated by the public op).

    Args:
        x: (B, C, H, W); weight: (2C', 2C); bias: (2C',); one dtype and device; any strides.
    Returns:
        y: (B, C', H, W) in x's dtype; differentiable in x, weight and bias.
    """
    x, bias = x.contiguous(), bias.contiguous()
    B, _, H, W = x.shape
    co = weight.shape[0] // 2
    p = torch.matmul(weight.contiguous().to(compute_dtype(x.dtype)), spectrum(x))
    y = x.new_empty((B, co, H, W))
    args = [rt.ptr(p), rt.ptr(bias), rt.ptr(y), rt.i32(co)]
    _fft_plan.launch("hfsti_fu_out", x, args, B * co, H, W, nbuf=2)
    return y


@backward_op("hfsti_cuda::fourier_unit_backward")
def _bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dy, x, bias = dy.contiguous(), x.contiguous(), bias.contiguous()
    B, _, H, W = x.shape
    co = weight.shape[0] // 2
    wc = weight.contiguous().to(compute_dtype(x.dtype))
    z = spectrum(x)
    p = torch.matmul(wc, z)
    gp = torch.empty_like(p)
    args = [rt.ptr(dy), rt.ptr(p), rt.ptr(bias), rt.ptr(gp), rt.i32(co)]
    _fft_plan.launch("hfsti_fu_spec_bwd", x, args, B * co, H, W, nbuf=2)
    dweight = torch.matmul(gp, z.transpose(1, 2)).sum(0)
    dbias = gp.sum((0, 2))
    dx = inverse(torch.matmul(wc.t(), gp), x)
    return dx, dweight.to(weight.dtype), dbias.to(bias.dtype)


register_backward_of_inputs(fourier_unit, _bwd)
register_implementation("fourier_unit", "cuda", fourier_unit)
