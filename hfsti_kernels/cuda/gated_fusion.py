"""CUDA backend of ``gated_fusion``: ``x_c = x_f + x_s + x_0``,
``x_fs = gelu(fourier_unit(x_c)) * (dwconv3x3(x_c) + dw_bias)``.

The kernels are ``csrc/gated_fusion.cu`` (design and limits in its header): the sum, the
transforms, the depthwise conv, the GELU and the product fused per (b, c) plane, with the
Fourier unit's channel mixing as a torch GEMM in between (as ``fourier_unit``). Two
``torch.library`` ops, ``hfsti_cuda::gated_fusion`` and ``hfsti_cuda::gated_fusion_backward``,
with fake rules and autograd; registered as the ``"cuda"`` implementation of the public op.

The backward takes the forward's x_c (a saved output) and recomputes the spectrum (fourier_unit's
kernel) and the GEMM from it. All weight gradients are deterministic: the kernel writes
per-plane partial sums of the conv's weight and bias gradients, reduced in a fixed order in the
block, and torch sums them (and the GEMM-side gradients) over the batch in a fixed order; no
atomics.
Inputs are made contiguous first: a copy (one extra read and write) only for non-contiguous ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti_kernels._registry import kernel_op, register_implementation
from hfsti_kernels.cuda import _fft_plan
from hfsti_kernels.cuda import runtime as rt
from hfsti_kernels.cuda._autograd import backward_op
from hfsti_kernels.cuda.fourier_unit import spectrum

__all__ = ["gated_fusion"]


def _fwd_fake(x_f, x_s, x_0, fu_weight, fu_bias, dw_weight, dw_bias):
    return x_f.new_empty(x_f.shape), x_f.new_empty(x_f.shape)


def _sum_and_spectrum(x_f, x_s, x_0):
    """x_c and Z = cat([Re, Im] rfft2(x_c)) (B, 2C, H*(W//2+1)) in the compute dtype."""
    B, C, H, W = x_f.shape
    x_c = x_f.new_empty(x_f.shape)
    z = x_f.new_empty((B, 2 * C, H * (W // 2 + 1)), dtype=compute_dtype(x_f.dtype))
    args = [rt.ptr(x_f), rt.ptr(x_s), rt.ptr(x_0), rt.ptr(x_c), rt.ptr(z), rt.i32(C)]
    _fft_plan.launch("hfsti_gf_spec", x_f, args, B * C, H, W, nbuf=2)
    return x_c, z


@kernel_op("hfsti_cuda::gated_fusion", fake=_fwd_fake)
def gated_fusion(
    x_f: Tensor, x_s: Tensor, x_0: Tensor,
    fu_weight: Tensor, fu_bias: Tensor,
    dw_weight: Tensor, dw_bias: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`hfsti.ops.gated_fusion` in the CUDA kernels (arguments validated by the public op;
    any strides); differentiable in all seven inputs."""
    x_f, x_s, x_0, fu_bias, dw_weight, dw_bias = (
        t.contiguous() for t in (x_f, x_s, x_0, fu_bias, dw_weight, dw_bias)
    )
    B, C, H, W = x_f.shape
    x_c, z = _sum_and_spectrum(x_f, x_s, x_0)
    p = torch.matmul(fu_weight.contiguous().to(z.dtype), z)
    x_fs = x_f.new_empty(x_f.shape)
    args = [rt.ptr(t) for t in (p, fu_bias, x_c, dw_weight, dw_bias, x_fs)] + [rt.i32(C)]
    _fft_plan.launch("hfsti_gf_out", x_f, args, B * C, H, W, nbuf=2)
    return x_c, x_fs


@backward_op("hfsti_cuda::gated_fusion_backward", n_out_grads=2)
def _bwd(
    g_xc: Tensor | None, g_xfs: Tensor,
    x_c: Tensor, fu_weight: Tensor, fu_bias: Tensor, dw_weight: Tensor, dw_bias: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Gradients (x_c [shared by x_f, x_s, x_0], fu_weight, fu_bias, dw_weight, dw_bias)."""
    g_xfs, x_c, fu_bias, dw_weight, dw_bias = (
        t.contiguous() for t in (g_xfs, x_c, fu_bias, dw_weight, dw_bias)
    )
    g_xc = None if g_xc is None else g_xc.contiguous()
    B, C, H, W = x_c.shape
    z = spectrum(x_c)
    wc = fu_weight.contiguous().to(z.dtype)
    p = torch.matmul(wc, z)
    gp = torch.empty_like(p)
    dxconv = x_c.new_empty(x_c.shape, dtype=z.dtype)
    dwpart = x_c.new_empty((B, C, 10), dtype=z.dtype)
    tensors = (g_xfs, p, fu_bias, x_c, dw_weight, dw_bias, gp, dxconv, dwpart)
    args = [rt.ptr(t) for t in tensors] + [rt.i32(C)]
    red = 512 * torch.finfo(z.dtype).bits // 8  # the kernel's static reduction buffer
    _fft_plan.launch("hfsti_gf_spec_bwd", x_c, args, B * C, H, W, nbuf=4, static_smem=red)
    d_fu_weight = torch.matmul(gp, z.transpose(1, 2)).sum(0)
    d_fu_bias = gp.sum((0, 2))
    dx = x_c.new_empty(x_c.shape)
    gz = torch.matmul(wc.t(), gp)
    args = [rt.ptr(gz), rt.ptr(dxconv), rt.ptr(g_xc), rt.ptr(dx), rt.i32(C)]
    _fft_plan.launch("hfsti_gf_out_bwd", x_c, args, B * C, H, W, nbuf=2)
    return (
        dx,
        d_fu_weight.to(fu_weight.dtype),
        d_fu_bias.to(fu_bias.dtype),
        dwpart[:, :, :9].sum(0).reshape(dw_weight.shape).to(dw_weight.dtype),
        dwpart[:, :, 9].sum(0).to(dw_bias.dtype),
    )


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[0], *inputs[3:])


def _backward(ctx, g_xc, g_xfs):
    x_c, *params = ctx.saved_tensors
    if g_xfs is None:
        g_xfs = torch.zeros_like(x_c)
    dx, *grads = _bwd(g_xc, g_xfs, x_c, *params)
    return (dx, dx, dx, *grads)


gated_fusion.register_autograd(_backward, setup_context=_setup_context)
register_implementation("gated_fusion", "cuda", gated_fusion)
