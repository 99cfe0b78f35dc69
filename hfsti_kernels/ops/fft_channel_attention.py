"""Fused Triton kernels for ``fft_channel_attention`` (docs/ops.md, fft_channel_attention).

    y = irfft2(rfft2(q) * rfft2(k) * rfft2(v), s=(H, W))          (norm="ortho")

Design: the op is independent per (b, c) plane, so one program owns one plane and everything
happens in registers: the three forward transforms (dense DFT products, ``hfsti_kernels.dft``),
the complex triple product and the inverse; q, k, v are read once and y written once.

Backward, one program per plane as well: with ``gS = irfft2^T(dy)`` (a c-weighted forward
transform, see dft.py) and ``Q, K, V`` the spectra recomputed from q, k, v (cheaper than storing
complex spectra), ``dq = rfft2^T(gS * conj(K V))`` and likewise for k and v: the exact adjoint of
the forward, i.e. circular cross-correlation. dy, q, k, v are read once; dq, dk, dv written once.

Large planes (a tile side >= ``_staged.STAGED_MIN_TILE``, e.g. 88x88) take each kernel's
``IS_STAGED`` branch (docs/kernels.md, Staged path): the same maths, one program per plane, with
each transform split into a W pass and an H pass over small blocks and the intermediates in a
per-program global scratch of ``FWD_SLOTS`` / ``BWD_SLOTS`` slots of (H_P, WH_P). The branch is
a constexpr, so each path compiles exactly as a kernel of its own would.
Computation is in float32 for fp16/bf16/fp32 inputs and in float64 for float64 inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti.ops import autocast_policy, check_fft_channel_attention_inputs
from hfsti.ops import fft_channel_attention as _reference
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels._staged import (
    launch_planes,
    slot_pair,
    st_blk,
    st_cplx_blk,
    staged_col_blk,
    staged_irdft2_h,
    staged_irdft2_w,
    staged_irdft2_w_blk,
    staged_rdft2_w,
)
from hfsti_kernels.dft import (
    CG_RE,
    G_RE,
    cmul,
    irdft2,
    load_fh,
    load_fw,
    load_plane,
    rdft2,
    store_plane,
)

__all__ = ["fft_channel_attention"]

# Scratch slots (of (H_P, WH_P) each) per program on the staged path.
FWD_SLOTS = 8  # t @ G for t = q, k, v; the product spectrum
BWD_SLOTS = 14  # the W passes of dy, q, k, v; the three spectral gradients


@triton.jit
def _qkv_spectra(
    Q_PTR, K_PTR, V_PTR, plane, FW_PTR, H, W, Fr, Fi,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """rfft2 of one (H, W) plane of each of q, k, v: (qr, qi, kr, ki, vr, vi), each (H_P, WH_P).

    Q_PTR, K_PTR, V_PTR: (B, C, H, W) contiguous inputs, read at the offset plane.
    FW_PTR: (4, W_P, WH_P) DFT matrices; Fr, Fi: F_H as from load_fh.
    """
    dt = Fr.dtype
    Gr, Gi = load_fw(FW_PTR, G_RE, W_P, WH_P, False)
    qr, qi = rdft2(load_plane(Q_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi, DOT)
    kr, ki = rdft2(load_plane(K_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi, DOT)
    vr, vi = rdft2(load_plane(V_PTR + plane, H, W, H_P, W_P, dt), Gr, Gi, Fr, Fi, DOT)
    return qr, qi, kr, ki, vr, vi


@triton.jit
def _grad_spectrum(gr, gi, ar, ai, br, bi):
    """The spectral gradient of the third factor of a triple product: gS * conj(A B)."""
    mr, mi = cmul(ar, ai, br, bi, False)
    return cmul(gr, gi, mr, mi, True)


@triton.jit
def _spectrum_blk(FH_PTR, YR, YI, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT):
    """Staged: block (r0, c0) of the spectrum ``F_H Y`` of a W pass Y held in slots YR, YI."""
    rr, ri, ir, ii = staged_col_blk(
        FH_PTR, YR, YI, WH_P, H_P, WH_P, r0, c0, H_P, BM, BN, BK, DTYPE, DOT
    )
    return rr - ii, ri + ir


@triton.jit
def _qkv_row_passes(
    Q_PTR, K_PTR, V_PTR, H, W, FW_PTR, SCR_PTR, S: tl.constexpr, NSLOT: tl.constexpr,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Staged: the W passes ``t @ G`` of this program's plane of q, k and v into slots S..S+5
    of its scratch (two each), then a barrier, so that the H passes may read any of their rows.
    """
    DTYPE: tl.constexpr = FW_PTR.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    plane = pid * H * W
    s0, s1 = slot_pair(SCR_PTR, pid, S, NSLOT, H_P, WH_P)
    s2, s3 = slot_pair(SCR_PTR, pid, S + 2, NSLOT, H_P, WH_P)
    s4, s5 = slot_pair(SCR_PTR, pid, S + 4, NSLOT, H_P, WH_P)
    staged_rdft2_w(
        Q_PTR + plane, W, H, W, FW_PTR, G_RE, s0, s1, H_P, W_P, WH_P, BM, BN, BK, DTYPE, DOT
    )
    staged_rdft2_w(
        K_PTR + plane, W, H, W, FW_PTR, G_RE, s2, s3, H_P, W_P, WH_P, BM, BN, BK, DTYPE, DOT
    )
    staged_rdft2_w(
        V_PTR + plane, W, H, W, FW_PTR, G_RE, s4, s5, H_P, W_P, WH_P, BM, BN, BK, DTYPE, DOT
    )
    tl.debug_barrier()


@triton.jit
def _qkv_spectrum_blks(
    FH_PTR, SCR_PTR, pid, S: tl.constexpr, NSLOT, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT
):
    """Staged: block (r0, c0) of the spectra of q, k, v from their W passes in slots S..S+5:
    (qr, qi, kr, ki, vr, vi)."""
    s0, s1 = slot_pair(SCR_PTR, pid, S, NSLOT, H_P, WH_P)
    s2, s3 = slot_pair(SCR_PTR, pid, S + 2, NSLOT, H_P, WH_P)
    s4, s5 = slot_pair(SCR_PTR, pid, S + 4, NSLOT, H_P, WH_P)
    qr, qi = _spectrum_blk(FH_PTR, s0, s1, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT)
    kr, ki = _spectrum_blk(FH_PTR, s2, s3, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT)
    vr, vi = _spectrum_blk(FH_PTR, s4, s5, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT)
    return qr, qi, kr, ki, vr, vi


@triton.jit
def _fca_fwd_kernel(
    Q_PTR, K_PTR, V_PTR, Y_PTR,  # (B, C, H, W) contiguous inputs and output
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    H, W,
    IS_STAGED: tl.constexpr, H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, one program per (b, c) plane.

    Q_PTR, K_PTR, V_PTR: (B, C, H, W) contiguous inputs; Y_PTR: (B, C, H, W) output.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices in the compute dtype.
    SCR_PTR (IS_STAGED): (B*C, NSLOT, H_P, WH_P) scratch. Slots 0-5: ``t @ G`` for t = q, k, v;
    6-7: the product spectrum S; then 0-1: ``conj(F_H) S``. BM, BN, BNW, BK: staged blocks.
    """
    pid = tl.program_id(0).to(tl.int64)
    plane = pid * H * W
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        qr, qi, kr, ki, vr, vi = _qkv_spectra(
            Q_PTR, K_PTR, V_PTR, plane, FW_PTR, H, W, Fr, Fi, H_P, W_P, WH_P, DOT
        )
        mr, mi = cmul(kr, ki, vr, vi, False)
        sr, si = cmul(qr, qi, mr, mi, False)
        Er, Ei = load_fw(FW_PTR, CG_RE, W_P, WH_P, True)
        store_plane(Y_PTR + plane, irdft2(sr, si, Er, Ei, Fr, Fi, DOT), H, W, H_P, W_P)
    else:
        dt = FH_PTR.dtype.element_ty
        s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
        s6, s7 = slot_pair(SCR_PTR, pid, 6, NSLOT, H_P, WH_P)
        _qkv_row_passes(
            Q_PTR, K_PTR, V_PTR, H, W, FW_PTR, SCR_PTR, 0, NSLOT, H_P, W_P, WH_P, BM, BN, BK, DOT
        )
        for r0 in range(0, H_P, BM):
            for c0 in range(0, WH_P, BN):
                qr, qi, kr, ki, vr, vi = _qkv_spectrum_blks(
                    FH_PTR, SCR_PTR, pid, 0, NSLOT, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT
                )
                mr, mi = cmul(kr, ki, vr, vi, False)
                sr, si = cmul(qr, qi, mr, mi, False)
                st_cplx_blk(s6, s7, sr, si, r0, c0, H_P, WH_P, BM, BN)
        tl.debug_barrier()
        staged_irdft2_h(FH_PTR, s6, s7, WH_P, H_P, WH_P, s0, s1, H_P, WH_P, BM, BN, BK, dt, DOT)
        tl.debug_barrier()
        staged_irdft2_w(
            s0, s1, FW_PTR, CG_RE, Y_PTR + plane, H, W, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
        )


@triton.jit
def _fca_bwd_kernel(
    DY_PTR, Q_PTR, K_PTR, V_PTR,  # (B, C, H, W) contiguous
    DQ_PTR, DK_PTR, DV_PTR,  # (B, C, H, W) outputs
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    H, W,
    IS_STAGED: tl.constexpr, H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, one program per (b, c) plane.

    DY_PTR, Q_PTR, K_PTR, V_PTR: (B, C, H, W) contiguous; DQ_PTR, DK_PTR, DV_PTR: (B, C, H, W)
    outputs. FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices in the compute dtype.
    SCR_PTR (IS_STAGED): (B*C, NSLOT, H_P, WH_P) scratch. Slots 0-7: the W passes of dy
    (weighted) and q, k, v; 8-13: the spectral gradients of q, k, v; then 0-5: their
    ``conj(F_H) .``.
    """
    pid = tl.program_id(0).to(tl.int64)
    plane = pid * H * W
    # gS, the adjoint of irfft2_strict applied to dy, is a transform with the weighted cG; the
    # adjoint of rfft2 is an inverse with the unweighted, transposed G.
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        Cr, Ci = load_fw(FW_PTR, CG_RE, W_P, WH_P, False)
        gr, gi = rdft2(load_plane(DY_PTR + plane, H, W, H_P, W_P, Fr.dtype), Cr, Ci, Fr, Fi, DOT)
        qr, qi, kr, ki, vr, vi = _qkv_spectra(
            Q_PTR, K_PTR, V_PTR, plane, FW_PTR, H, W, Fr, Fi, H_P, W_P, WH_P, DOT
        )
        GrT, GiT = load_fw(FW_PTR, G_RE, W_P, WH_P, True)
        ar, ai = _grad_spectrum(gr, gi, kr, ki, vr, vi)
        store_plane(DQ_PTR + plane, irdft2(ar, ai, GrT, GiT, Fr, Fi, DOT), H, W, H_P, W_P)
        ar, ai = _grad_spectrum(gr, gi, qr, qi, vr, vi)
        store_plane(DK_PTR + plane, irdft2(ar, ai, GrT, GiT, Fr, Fi, DOT), H, W, H_P, W_P)
        ar, ai = _grad_spectrum(gr, gi, qr, qi, kr, ki)
        store_plane(DV_PTR + plane, irdft2(ar, ai, GrT, GiT, Fr, Fi, DOT), H, W, H_P, W_P)
    else:
        dt = FH_PTR.dtype.element_ty
        s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
        s2, s3 = slot_pair(SCR_PTR, pid, 2, NSLOT, H_P, WH_P)
        s4, s5 = slot_pair(SCR_PTR, pid, 4, NSLOT, H_P, WH_P)
        s8, s9 = slot_pair(SCR_PTR, pid, 8, NSLOT, H_P, WH_P)
        s10, s11 = slot_pair(SCR_PTR, pid, 10, NSLOT, H_P, WH_P)
        s12, s13 = slot_pair(SCR_PTR, pid, 12, NSLOT, H_P, WH_P)
        staged_rdft2_w(
            DY_PTR + plane, W, H, W, FW_PTR, CG_RE, s0, s1, H_P, W_P, WH_P, BM, BN, BK, dt, DOT
        )
        _qkv_row_passes(
            Q_PTR, K_PTR, V_PTR, H, W, FW_PTR, SCR_PTR, 2, NSLOT, H_P, W_P, WH_P, BM, BN, BK, DOT
        )
        for r0 in range(0, H_P, BM):
            for c0 in range(0, WH_P, BN):
                gr, gi = _spectrum_blk(FH_PTR, s0, s1, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT)
                qr, qi, kr, ki, vr, vi = _qkv_spectrum_blks(
                    FH_PTR, SCR_PTR, pid, 2, NSLOT, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT
                )
                ar, ai = _grad_spectrum(gr, gi, kr, ki, vr, vi)
                st_cplx_blk(s8, s9, ar, ai, r0, c0, H_P, WH_P, BM, BN)
                ar, ai = _grad_spectrum(gr, gi, qr, qi, vr, vi)
                st_cplx_blk(s10, s11, ar, ai, r0, c0, H_P, WH_P, BM, BN)
                ar, ai = _grad_spectrum(gr, gi, qr, qi, kr, ki)
                st_cplx_blk(s12, s13, ar, ai, r0, c0, H_P, WH_P, BM, BN)
        tl.debug_barrier()
        staged_irdft2_h(FH_PTR, s8, s9, WH_P, H_P, WH_P, s0, s1, H_P, WH_P, BM, BN, BK, dt, DOT)
        staged_irdft2_h(FH_PTR, s10, s11, WH_P, H_P, WH_P, s2, s3, H_P, WH_P, BM, BN, BK, dt, DOT)
        staged_irdft2_h(FH_PTR, s12, s13, WH_P, H_P, WH_P, s4, s5, H_P, WH_P, BM, BN, BK, dt, DOT)
        tl.debug_barrier()
        for r0 in range(0, H_P, BM):
            for c0 in range(0, W_P, BNW):
                d = staged_irdft2_w_blk(
                    s0, s1, FW_PTR, G_RE, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
                )
                st_blk(DQ_PTR + plane, d, W, r0, c0, H, W, BM, BNW)
                d = staged_irdft2_w_blk(
                    s2, s3, FW_PTR, G_RE, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
                )
                st_blk(DK_PTR + plane, d, W, r0, c0, H, W, BM, BNW)
                d = staged_irdft2_w_blk(
                    s4, s5, FW_PTR, G_RE, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
                )
                st_blk(DV_PTR + plane, d, W, r0, c0, H, W, BM, BNW)


@_registry.triton_kernel_op("hfsti::fft_channel_attention")
def _fca_op(q: Tensor, k: Tensor, v: Tensor, fh: Tensor, fw: Tensor) -> Tensor:
    dft.check_mats(*q.shape[-2:], fh, fw)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    y = torch.empty_like(q)
    B, C, H, W = q.shape
    launch_planes(
        _fca_fwd_kernel, FWD_SLOTS, B * C, H, W, (q, k, v, y), fh, fw,
        DOT=dft.dot_precision(q.dtype),
    )  # fmt: skip
    return y


@_registry.triton_kernel_op("hfsti::fft_channel_attention_backward")
def _fca_bwd_op(
    dy: Tensor, q: Tensor, k: Tensor, v: Tensor, fh: Tensor, fw: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    dft.check_mats(*q.shape[-2:], fh, fw)
    dy, q, k, v = dy.contiguous(), q.contiguous(), k.contiguous(), v.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(q), torch.empty_like(q)
    B, C, H, W = q.shape
    launch_planes(
        _fca_bwd_kernel, BWD_SLOTS, B * C, H, W, (dy, q, k, v, dq, dk, dv), fh, fw,
        DOT=dft.dot_precision(q.dtype),
    )  # fmt: skip
    return dq, dk, dv


def _setup_context(ctx, inputs, output):
    q, k, v, fh, fw = inputs
    ctx.save_for_backward(q, k, v, fh, fw)


def _backward(ctx, dy):
    q, k, v, fh, fw = ctx.saved_tensors
    dq, dk, dv = _fca_bwd_op(dy, q, k, v, fh, fw)
    return dq, dk, dv, None, None


_fca_op.register_autograd(_backward, setup_context=_setup_context)


def _fca_triton(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    H, W = q.shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(q.dtype), q.device)
    return _fca_op(q, k, v, fh, fw)


_registry.register_implementation("fft_channel_attention", "triton", _fca_triton)


@autocast_policy("lower")
def fft_channel_attention(q: Tensor, k: Tensor, v: Tensor, *, backend: str | None = None) -> Tensor:
    """Drop-in for :func:`hfsti.ops.fft_channel_attention`, fused in Triton.

    Args:
        q, k, v: (B, C, H, W), same shape, dtype and device; any strides.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        y: (B, C, H, W) in the input dtype; differentiable in q, k, v.
    """
    check_fft_channel_attention_inputs(q, k, v)
    name = select_backend(backend, q)
    if name == "reference":
        return _reference(q, k, v)
    return _registry.implementation("fft_channel_attention", name)(q, k, v)
