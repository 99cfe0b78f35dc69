"""Fused Triton kernels for ``fft_channel_attention`` (SPEC 1.1).

    y = irfft2(rfft2(q) * rfft2(k) * rfft2(v), s=(H, W))          (norm="ortho")

Design: the op is independent per (b, c) plane, so one program owns one plane and everything
happens in registers: the three forward transforms (dense DFT products, ``hfsti_kernels.dft``),
the complex triple product and the inverse; q, k, v are read once and y written once.

Backward, one program per plane as well: with ``gS = irfft2^T(dy)`` (a c-weighted forward
transform, see dft.py) and ``Q, K, V`` the spectra recomputed from q, k, v (cheaper than storing
complex spectra), ``dq = rfft2^T(gS * conj(K V))`` and likewise for k and v: the exact adjoint of
the forward, i.e. circular cross-correlation. dy, q, k, v are read once; dq, dk, dv written once.

Limits: one plane is one register tile (fine up to 128x128 on an H100; larger planes spill).
Computation is in float32 for fp16/bf16/fp32 inputs and in float64 for float64 inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hfsti._checks import compute_dtype
from hfsti.ops import check_fft_channel_attention_inputs
from hfsti.ops import fft_channel_attention as _reference
from hfsti_kernels import dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels.dft import cmul, fwd, inv, load_fh, load_fw, load_plane, store_plane

__all__ = ["fft_channel_attention"]


@triton.jit
def _fca_fwd_kernel(
    Q_PTR,
    K_PTR,
    V_PTR,
    Y_PTR,
    FH_PTR,
    FW_PTR,
    H,
    W,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
):
    """One program per (b, c) plane.

    Q_PTR, K_PTR, V_PTR: (B, C, H, W) contiguous inputs; Y_PTR: (B, C, H, W) output.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices in the compute dtype.
    """
    plane = tl.program_id(0).to(tl.int64) * H * W
    Fr, Fi = load_fh(FH_PTR, H_P)
    dt = Fr.dtype
    Gr = load_fw(FW_PTR, 0, W_P, WH_P, False)
    Gi = load_fw(FW_PTR, 1, W_P, WH_P, False)
    qr, qi = fwd(load_plane(Q_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    kr, ki = fwd(load_plane(K_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    vr, vi = fwd(load_plane(V_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    mr, mi = cmul(kr, ki, vr, vi, False)
    sr, si = cmul(qr, qi, mr, mi, False)
    Er = load_fw(FW_PTR, 2, W_P, WH_P, True)
    Ei = load_fw(FW_PTR, 3, W_P, WH_P, True)
    store_plane(Y_PTR + plane, inv(sr, si, Er, Ei, Fr, Fi), H, W, H_P, W_P)


@triton.jit
def _fca_bwd_kernel(
    DY_PTR,
    Q_PTR,
    K_PTR,
    V_PTR,
    DQ_PTR,
    DK_PTR,
    DV_PTR,
    FH_PTR,
    FW_PTR,
    H,
    W,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
):
    """One program per (b, c) plane.

    DY_PTR, Q_PTR, K_PTR, V_PTR: (B, C, H, W) contiguous; DQ_PTR, DK_PTR, DV_PTR: (B, C, H, W)
    outputs. FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices in the compute dtype.
    """
    plane = tl.program_id(0).to(tl.int64) * H * W
    Fr, Fi = load_fh(FH_PTR, H_P)
    dt = Fr.dtype
    # gS: adjoint of irfft2_strict applied to dy = forward transform with Hermitian weights.
    Cr = load_fw(FW_PTR, 2, W_P, WH_P, False)
    Ci = load_fw(FW_PTR, 3, W_P, WH_P, False)
    gr, gi = fwd(load_plane(DY_PTR + plane, H, W, H_P, W_P, dt), Cr, Ci, Fr, Fi)
    Gr = load_fw(FW_PTR, 0, W_P, WH_P, False)
    Gi = load_fw(FW_PTR, 1, W_P, WH_P, False)
    qr, qi = fwd(load_plane(Q_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    kr, ki = fwd(load_plane(K_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    vr, vi = fwd(load_plane(V_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi)
    # The adjoint of rfft2 is an inverse with the unweighted, transposed G.
    GrT = load_fw(FW_PTR, 0, W_P, WH_P, True)
    GiT = load_fw(FW_PTR, 1, W_P, WH_P, True)
    mr, mi = cmul(kr, ki, vr, vi, False)
    ar, ai = cmul(gr, gi, mr, mi, True)
    store_plane(DQ_PTR + plane, inv(ar, ai, GrT, GiT, Fr, Fi), H, W, H_P, W_P)
    mr, mi = cmul(qr, qi, vr, vi, False)
    ar, ai = cmul(gr, gi, mr, mi, True)
    store_plane(DK_PTR + plane, inv(ar, ai, GrT, GiT, Fr, Fi), H, W, H_P, W_P)
    mr, mi = cmul(qr, qi, kr, ki, False)
    ar, ai = cmul(gr, gi, mr, mi, True)
    store_plane(DV_PTR + plane, inv(ar, ai, GrT, GiT, Fr, Fi), H, W, H_P, W_P)


@dft.register_triton_op("hfsti::fft_channel_attention")
def _fca_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fh: torch.Tensor, fw: torch.Tensor
) -> torch.Tensor:
    B, C, H, W = q.shape
    H_P, W_P, WH_P = dft.check_mats(H, W, fh, fw)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    y = torch.empty_like(q)
    dft.launch(
        _fca_fwd_kernel,
        (B * C,),
        q,
        k,
        v,
        y,
        fh,
        fw,
        H,
        W,
        H_P=H_P,
        W_P=W_P,
        WH_P=WH_P,
        num_warps=dft.plane_num_warps(H, W),
    )
    return y


@dft.register_triton_op("hfsti::fft_channel_attention_backward")
def _fca_bwd_op(
    dy: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fh: torch.Tensor,
    fw: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C, H, W = q.shape
    H_P, W_P, WH_P = dft.check_mats(H, W, fh, fw)
    dy, q, k, v = dy.contiguous(), q.contiguous(), k.contiguous(), v.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(q), torch.empty_like(q)
    dft.launch(
        _fca_bwd_kernel,
        (B * C,),
        dy,
        q,
        k,
        v,
        dq,
        dk,
        dv,
        fh,
        fw,
        H,
        W,
        H_P=H_P,
        W_P=W_P,
        WH_P=WH_P,
        num_warps=dft.plane_num_warps(H, W),
    )
    return dq, dk, dv


def _setup_context(ctx, inputs, output):
    q, k, v, fh, fw = inputs
    ctx.save_for_backward(q, k, v, fh, fw)


def _backward(ctx, dy):
    q, k, v, fh, fw = ctx.saved_tensors
    dq, dk, dv = _fca_bwd_op(dy, q, k, v, fh, fw)
    return dq, dk, dv, None, None


_fca_op.register_autograd(_backward, setup_context=_setup_context)


def fft_channel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """Drop-in for :func:`hfsti.ops.fft_channel_attention`, fused in Triton.

    Args:
        q, k, v: (B, C, H, W), same shape, dtype and device; any strides.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        y: (B, C, H, W) in the input dtype; differentiable in q, k, v.
    """
    check_fft_channel_attention_inputs(q, k, v)
    if select_backend(backend, q) == "reference":
        return _reference(q, k, v)
    H, W = q.shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(q.dtype), q.device)
    return _fca_op(q, k, v, fh, fw)
