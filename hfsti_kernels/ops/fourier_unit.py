"""Fused Triton kernels for ``fourier_unit`` (SPEC 1.2), and the pieces ``gated_fusion`` reuses.

    Z  = relu(weight @ cat[Re rfft2(x), Im rfft2(x)] + bias);   y = irfft2_strict(Z[:C'] + i Z[C':])

Design. The channel mixing is linear, so it moves before the transform: with
``weight = [A | B]`` (each (2C', C)), ``Z_o = Re rfft2(u_o) + Im rfft2(v_o) = Re F(u_o - i v_o)``
where ``u = A x`` and ``v = B x`` are mixed in the spatial domain. Forward, two launches:

1. ``_mix_kernel``: a batched GEMM ``[u; v] = [A; B] @ x`` (B, 2C', H*W) each, fp32 accumulate
   (``HAS_SUM3`` fuses gated_fusion's ``x_f + x_s + x_0`` into the operand load and stores x_c).
2. ``_fu_fwd_kernel``, one program per (b, o) output plane: the half spectrum of (u - i v) for
   the real (o) and imaginary (o + C') channel, + bias, ReLU, the strict inverse; writes y and,
   when a backward will follow, the post-ReLU spectrum ``zs`` (B, 2C', H, W//2+1) (its sign is the
   ReLU mask; cheaper than recomputing the GEMM).

Backward, four kinds of launch, all deterministic (no atomics):

1. ``_fu_bwd_kernel`` per (b, o) plane: ``gZ = mask * irfft2_strict^T(dy)``, the per-batch bias
   partial sums, and ``gu = (Re F)^T gZ``, ``gv = (Im F)^T gZ`` as spatial planes.
2. ``_mix_dx_kernel``: ``dx = A^T gu + B^T gv`` (``HAS_CONV`` adds gated_fusion's extra terms).
3. ``_mix_dw_kernel``: per-batch partials ``[gu; gv]_b @ x_b^T`` (B, 2C', 2C).
4. ``_sum_batch_kernel``: sums partials over the batch in a fixed order.

Not fused: the GEMM and the spectral kernel stay separate because each output plane needs every
input channel (the mixing) while each transform needs a whole plane; fusing would recompute the
transforms per output channel. u, v and gu, gv (fp32) travel through memory between the two.

Large planes (a tile side >= dft.STAGED_MIN_TILE, e.g. 88x88) take the staged spectral kernels
(``_fu_*_staged_kernel``, see dft.py): the same maths, one program per (b, o) plane, each
transform split into a W pass and an H pass over small blocks, intermediates in a per-program
global scratch of ``FWD_SLOTS`` / ``BWD_SLOTS`` (H_P, WH_P) slots.
fp16/bf16/fp32 are computed in fp32 (products at ``dft.dot_precision``), float64 in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hfsti._checks import compute_dtype
from hfsti.ops import check_fourier_unit_inputs
from hfsti.ops import fourier_unit as _reference
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels.dft import (
    blk_cmm,
    fwd,
    inv,
    ld_blk,
    load_fh,
    load_fw,
    load_plane,
    slot_pair,
    st_blk,
    st_cplx_blk,
    staged_col_blk,
    staged_inv_h,
    staged_inv_w,
    staged_row_pass,
    store_plane,
)

__all__ = ["fourier_unit"]

# Scratch slots (of (H_P, WH_P) each) per program of the staged spectral kernels.
FWD_SLOTS = 6
BWD_SLOTS = 6


# --------------------------------------------------------------------------- GEMM kernels


@triton.jit
def _mix_kernel(
    X_PTR,
    XS_PTR,
    X0_PTR,
    XC_PTR,
    W_PTR,
    U_PTR,
    V_PTR,
    C,
    CO2,
    HW,
    HAS_SUM3: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):
    """``u = W[:, :C] @ x``, ``v = W[:, C:] @ x`` per batch; grid (cdiv(HW, BN), cdiv(CO2, BM), B).

    X_PTR: (B, C, HW) input; if HAS_SUM3, x = X + XS + X0 (each (B, C, HW)) and x is also stored
    to XC_PTR (B, C, HW) (by the programs with pid_m == 0 only, so each element once).
    W_PTR: (CO2, 2C) weight. U_PTR, V_PTR: (B, CO2, HW) outputs in the compute dtype.
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    dt = U_PTR.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=dt)
    acc_v = tl.zeros((BLOCK_M, BLOCK_N), dtype=dt)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x_mask = (offs_k[:, None] < C) & (offs_n[None, :] < HW)
        x_off = b * C * HW + offs_k[:, None] * HW + offs_n[None, :]
        x = tl.load(X_PTR + x_off, mask=x_mask, other=0.0).to(dt)
        if HAS_SUM3:
            x += tl.load(XS_PTR + x_off, mask=x_mask, other=0.0).to(dt)
            x += tl.load(X0_PTR + x_off, mask=x_mask, other=0.0).to(dt)
            if pid_m == 0:
                tl.store(XC_PTR + x_off, x.to(XC_PTR.dtype.element_ty), mask=x_mask)
        w_mask = (offs_m[:, None] < CO2) & (offs_k[None, :] < C)
        w_off = offs_m[:, None] * (2 * C) + offs_k[None, :]
        a = tl.load(W_PTR + w_off, mask=w_mask, other=0.0).to(dt)
        bb = tl.load(W_PTR + w_off + C, mask=w_mask, other=0.0).to(dt)
        acc_u += tl.dot(a, x, input_precision=DOT)
        acc_v += tl.dot(bb, x, input_precision=DOT)
    o_mask = (offs_m[:, None] < CO2) & (offs_n[None, :] < HW)
    o_off = b * CO2 * HW + offs_m[:, None] * HW + offs_n[None, :]
    tl.store(U_PTR + o_off, acc_u, mask=o_mask)
    tl.store(V_PTR + o_off, acc_v, mask=o_mask)


@triton.jit
def _mix_dx_kernel(
    GU_PTR,
    GV_PTR,
    W_PTR,
    DX_PTR,
    GXC_PTR,
    GS_PTR,
    DWW_PTR,
    C,
    CO2,
    H,
    W,
    HAS_CONV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):
    """``dx = W[:, :C]^T gu + W[:, C:]^T gv``; grid (cdiv(HW, BN), cdiv(C, BM), B).

    GU_PTR, GV_PTR: (B, CO2, HW) compute dtype; W_PTR: (CO2, 2C); DX_PTR: (B, C, HW) output.
    If HAS_CONV (gated_fusion), also adds GXC_PTR (B, C, HW), the incoming gradient of x_c, and
    the transposed 3x3 depthwise conv of GS_PTR (B, C, H, W) with DWW_PTR (C, 1, 3, 3).
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    dt = GU_PTR.dtype.element_ty
    HW = H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < C
    n_ok = offs_n < HW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=dt)
    for k0 in range(0, CO2, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        w_mask = m_ok[:, None] & (offs_k[None, :] < CO2)
        w_off = offs_k[None, :] * (2 * C) + offs_m[:, None]  # (BM, BK) view of W^T
        at = tl.load(W_PTR + w_off, mask=w_mask, other=0.0).to(dt)
        bt = tl.load(W_PTR + w_off + C, mask=w_mask, other=0.0).to(dt)
        g_mask = (offs_k[:, None] < CO2) & n_ok[None, :]
        g_off = b * CO2 * HW + offs_k[:, None] * HW + offs_n[None, :]
        gu = tl.load(GU_PTR + g_off, mask=g_mask, other=0.0)
        gv = tl.load(GV_PTR + g_off, mask=g_mask, other=0.0)
        acc += tl.dot(at, gu, input_precision=DOT)
        acc += tl.dot(bt, gv, input_precision=DOT)
    o_mask = m_ok[:, None] & n_ok[None, :]
    o_off = b * C * HW + offs_m[:, None] * HW + offs_n[None, :]
    if HAS_CONV:
        acc += tl.load(GXC_PTR + o_off, mask=o_mask, other=0.0).to(dt)
        # d/dx of s[h, w] = sum_ij k[i, j] x[h+i-1, w+j-1]  is  sum_ij k[i, j] gs[h-i+1, w-j+1].
        h = offs_n // W
        w = offs_n % W
        for i in tl.static_range(3):
            for j in tl.static_range(3):
                hh = h - i + 1
                ww = w - j + 1
                ok = n_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                gs = tl.load(
                    GS_PTR + b * C * HW + offs_m[:, None] * HW + (hh * W + ww)[None, :],
                    mask=m_ok[:, None] & ok[None, :],
                    other=0.0,
                )
                k = tl.load(DWW_PTR + offs_m * 9 + i * 3 + j, mask=m_ok, other=0.0).to(dt)
                acc += k[:, None] * gs
    tl.store(DX_PTR + o_off, acc.to(DX_PTR.dtype.element_ty), mask=o_mask)


@triton.jit
def _mix_dw_kernel(
    GU_PTR,
    GV_PTR,
    X_PTR,
    PART_PTR,
    C,
    CO2,
    HW,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):
    """Per-batch weight-gradient partials; grid (cdiv(C, BN), cdiv(CO2, BM), B).

    GU_PTR, GV_PTR: (B, CO2, HW) compute dtype; X_PTR: (B, C, HW) the op's input.
    PART_PTR: (B, CO2, 2C) compute dtype: ``[gu_b @ x_b^T | gv_b @ x_b^T]``.
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    dt = GU_PTR.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc_a = tl.zeros((BLOCK_M, BLOCK_N), dtype=dt)
    acc_b = tl.zeros((BLOCK_M, BLOCK_N), dtype=dt)
    for k0 in range(0, HW, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        g_mask = (offs_m[:, None] < CO2) & (offs_k[None, :] < HW)
        g_off = b * CO2 * HW + offs_m[:, None] * HW + offs_k[None, :]
        gu = tl.load(GU_PTR + g_off, mask=g_mask, other=0.0)
        gv = tl.load(GV_PTR + g_off, mask=g_mask, other=0.0)
        x_mask = (offs_k[:, None] < HW) & (offs_n[None, :] < C)
        x_off = b * C * HW + offs_n[None, :] * HW + offs_k[:, None]  # (BK, BN) view of x^T
        xt = tl.load(X_PTR + x_off, mask=x_mask, other=0.0).to(dt)
        acc_a += tl.dot(gu, xt, input_precision=DOT)
        acc_b += tl.dot(gv, xt, input_precision=DOT)
    o_mask = (offs_m[:, None] < CO2) & (offs_n[None, :] < C)
    o_off = b * CO2 * 2 * C + offs_m[:, None] * (2 * C) + offs_n[None, :]
    tl.store(PART_PTR + o_off, acc_a, mask=o_mask)
    tl.store(PART_PTR + o_off + C, acc_b, mask=o_mask)


@triton.jit
def _sum_batch_kernel(PART_PTR, OUT_PTR, B, N, BLOCK: tl.constexpr):
    """``OUT[n] = sum_b PART[b, n]`` in batch order (deterministic); grid (cdiv(N, BLOCK),).

    PART_PTR: (B, N) compute dtype; OUT_PTR: (N,) in the parameter dtype.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    acc = tl.zeros((BLOCK,), dtype=PART_PTR.dtype.element_ty)
    for b in range(0, B):
        acc += tl.load(PART_PTR + b * N + offs, mask=ok, other=0.0)
    tl.store(OUT_PTR + offs, acc.to(OUT_PTR.dtype.element_ty), mask=ok)


# --------------------------------------------------------------------------- spectral helpers


@triton.jit
def plane_ids(C):
    """(pid, b, c) of a program of a one-program-per-(b, c)-plane grid (B*C,); pid is int64."""
    pid = tl.program_id(0).to(tl.int64)
    return pid, pid // C, pid % C


@triton.jit
def fu_spectrum(
    U_PTR,
    V_PTR,
    BIAS_PTR,
    b,
    o,
    CO,
    H,
    W,
    FW_PTR,
    Fr,
    Fi,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    DOT: tl.constexpr,
):
    """Post-ReLU spectrum (zr, zi), each (H_P, WH_P), of output channel o of batch b.

    U_PTR, V_PTR: (B, 2CO, H, W) mixed planes; BIAS_PTR: (2CO,). ``Z_j = Re F(u_j - i v_j)``
    with ``F(u - i v) @ G = (u Gr + v Gi) + i (u Gi - v Gr)`` along W, then F_H along H.
    """
    dt = Fr.dtype
    Gr = load_fw(FW_PTR, 0, W_P, WH_P, False)
    Gi = load_fw(FW_PTR, 1, W_P, WH_P, False)
    HW = H * W
    re_plane = (b * 2 * CO + o) * HW
    im_plane = re_plane + CO * HW
    u = load_plane(U_PTR + re_plane, H, W, H_P, W_P, dt)
    v = load_plane(V_PTR + re_plane, H, W, H_P, W_P, dt)
    pr = tl.dot(u, Gr, input_precision=DOT) + tl.dot(v, Gi, input_precision=DOT)
    pi = tl.dot(u, Gi, input_precision=DOT) - tl.dot(v, Gr, input_precision=DOT)
    zr = tl.dot(Fr, pr, input_precision=DOT) - tl.dot(Fi, pi, input_precision=DOT)
    u = load_plane(U_PTR + im_plane, H, W, H_P, W_P, dt)
    v = load_plane(V_PTR + im_plane, H, W, H_P, W_P, dt)
    pr = tl.dot(u, Gr, input_precision=DOT) + tl.dot(v, Gi, input_precision=DOT)
    pi = tl.dot(u, Gi, input_precision=DOT) - tl.dot(v, Gr, input_precision=DOT)
    zi = tl.dot(Fr, pr, input_precision=DOT) - tl.dot(Fi, pi, input_precision=DOT)
    zr = tl.maximum(zr + tl.load(BIAS_PTR + o).to(dt), 0.0)
    zi = tl.maximum(zi + tl.load(BIAS_PTR + o + CO).to(dt), 0.0)
    return zr, zi


@triton.jit
def fu_store_spectrum(ZS_PTR, zr, zi, b, o, CO, H, W, H_P: tl.constexpr, WH_P: tl.constexpr):
    """Store (zr, zi) into ZS_PTR (B, 2CO, H, W//2+1) at channels o and o + CO."""
    WH = W // 2 + 1
    re_plane = (b * 2 * CO + o) * H * WH
    store_plane(ZS_PTR + re_plane, zr, H, WH, H_P, WH_P)
    store_plane(ZS_PTR + re_plane + CO * H * WH, zi, H, WH, H_P, WH_P)


@triton.jit
def fu_load_spectrum(ZS_PTR, b, o, CO, H, W, H_P: tl.constexpr, WH_P: tl.constexpr, DTYPE):
    """Load (zr, zi), each (H_P, WH_P), from ZS_PTR (B, 2CO, H, W//2+1); zero padding."""
    WH = W // 2 + 1
    re_plane = (b * 2 * CO + o) * H * WH
    zr = load_plane(ZS_PTR + re_plane, H, WH, H_P, WH_P, DTYPE)
    zi = load_plane(ZS_PTR + re_plane + CO * H * WH, H, WH, H_P, WH_P, DTYPE)
    return zr, zi


@triton.jit
def _re_fwd_adjoint(g, GrT, GiT, Fr, Fi, DOT: tl.constexpr):
    """Adjoint of ``(u, v) -> Re F(u - i v)`` (F = rfft2) at g (H_P, WH_P) -> (gu, gv) (H_P, W_P).

    ``gu = rfft2^T(g + 0i)``, ``gv = rfft2^T(0 + i g)`` (see dft.inv with the transposed G).
    """
    t1 = tl.dot(g, GrT, input_precision=DOT)
    t2 = tl.dot(g, GiT, input_precision=DOT)
    gu = tl.dot(Fr, t1, input_precision=DOT) - tl.dot(Fi, t2, input_precision=DOT)
    gv = tl.dot(Fr, t2, input_precision=DOT) + tl.dot(Fi, t1, input_precision=DOT)
    return gu, gv


@triton.jit
def fu_backward_tail(
    g,
    zr,
    zi,
    GU_PTR,
    GV_PTR,
    DB_PART_PTR,
    b,
    o,
    CO,
    H,
    W,
    FW_PTR,
    Fr,
    Fi,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    DOT: tl.constexpr,
):
    """From g = dL/dy (H_P, W_P) of output plane (b, o): bias partials and gu, gv planes.

    zr, zi: the post-ReLU spectrum (its sign is the ReLU mask; padding is 0, so masked out).
    GU_PTR, GV_PTR: (B, 2CO, H, W) outputs; DB_PART_PTR: (B, 2CO) per-batch bias partials.
    """
    Cr = load_fw(FW_PTR, 2, W_P, WH_P, False)
    Ci = load_fw(FW_PTR, 3, W_P, WH_P, False)
    gyr, gyi = fwd(g, Cr, Ci, Fr, Fi, DOT)  # adjoint of irfft2_strict
    gzr = tl.where(zr > 0, gyr, 0.0)
    gzi = tl.where(zi > 0, gyi, 0.0)
    tl.store(DB_PART_PTR + b * 2 * CO + o, tl.sum(tl.sum(gzr, axis=1), axis=0))
    tl.store(DB_PART_PTR + b * 2 * CO + o + CO, tl.sum(tl.sum(gzi, axis=1), axis=0))
    GrT = load_fw(FW_PTR, 0, W_P, WH_P, True)
    GiT = load_fw(FW_PTR, 1, W_P, WH_P, True)
    HW = H * W
    re_plane = (b * 2 * CO + o) * HW
    gu, gv = _re_fwd_adjoint(gzr, GrT, GiT, Fr, Fi, DOT)
    store_plane(GU_PTR + re_plane, gu, H, W, H_P, W_P)
    store_plane(GV_PTR + re_plane, gv, H, W, H_P, W_P)
    gu, gv = _re_fwd_adjoint(gzi, GrT, GiT, Fr, Fi, DOT)
    store_plane(GU_PTR + re_plane + CO * HW, gu, H, W, H_P, W_P)
    store_plane(GV_PTR + re_plane + CO * HW, gv, H, W, H_P, W_P)


# --------------------------------------------------------------------------- spectral kernels


@triton.jit
def _fu_fwd_kernel(
    U_PTR,
    V_PTR,
    BIAS_PTR,
    Y_PTR,
    ZS_PTR,
    FH_PTR,
    FW_PTR,
    CO,
    H,
    W,
    SAVE_Z: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    DOT: tl.constexpr,
):
    """One program per (b, o) output plane, o < CO.

    U_PTR, V_PTR: (B, 2CO, H, W) compute dtype; BIAS_PTR: (2CO,); Y_PTR: (B, CO, H, W) output;
    ZS_PTR: (B, 2CO, H, W//2+1) post-ReLU spectrum, written if SAVE_Z.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // CO
    o = pid % CO
    Fr, Fi = load_fh(FH_PTR, H_P)
    zr, zi = fu_spectrum(
        U_PTR, V_PTR, BIAS_PTR, b, o, CO, H, W, FW_PTR, Fr, Fi, H_P, W_P, WH_P, DOT
    )
    if SAVE_Z:
        fu_store_spectrum(ZS_PTR, zr, zi, b, o, CO, H, W, H_P, WH_P)
    Er = load_fw(FW_PTR, 2, W_P, WH_P, True)
    Ei = load_fw(FW_PTR, 3, W_P, WH_P, True)
    store_plane(Y_PTR + pid * H * W, inv(zr, zi, Er, Ei, Fr, Fi, DOT), H, W, H_P, W_P)


@triton.jit
def _fu_bwd_kernel(
    DY_PTR,
    ZS_PTR,
    GU_PTR,
    GV_PTR,
    DB_PART_PTR,
    FH_PTR,
    FW_PTR,
    CO,
    H,
    W,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    DOT: tl.constexpr,
):
    """One program per (b, o) output plane, o < CO.

    DY_PTR: (B, CO, H, W); ZS_PTR: (B, 2CO, H, W//2+1) saved post-ReLU spectrum;
    GU_PTR, GV_PTR: (B, 2CO, H, W) outputs; DB_PART_PTR: (B, 2CO) bias partials.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // CO
    o = pid % CO
    Fr, Fi = load_fh(FH_PTR, H_P)
    dt = Fr.dtype
    zr, zi = fu_load_spectrum(ZS_PTR, b, o, CO, H, W, H_P, WH_P, dt)
    g = load_plane(DY_PTR + pid * H * W, H, W, H_P, W_P, dt)
    fu_backward_tail(
        g, zr, zi, GU_PTR, GV_PTR, DB_PART_PTR, b, o, CO, H, W, FW_PTR, Fr, Fi, H_P, W_P, WH_P, DOT
    )


# --------------------------------------------------------------------------- staged path


@triton.jit
def _uv_row_blk(U_PTR, V_PTR, H, W, FW_PTR, r0, c0, H_P, W_P, WH_P, BM, BN, BK, DTYPE, DOT):
    """Block (r0, c0) of ``(u - i v)(Gr + i Gi) = (u Gr + v Gi) + i (u Gi - v Gr)`` along W for
    the real (H, W) planes at U_PTR, V_PTR: (re, im)."""
    rr, ri, ir, ii = blk_cmm(
        U_PTR, V_PTR, W, 1, H, W,
        FW_PTR, FW_PTR + W_P * WH_P, WH_P, 1, W_P, WH_P,
        r0, c0, W_P, BM, BN, BK, True, True, DTYPE, DOT,
    )  # fmt: skip
    return rr + ii, ri - ir


@triton.jit
def _re_col_blk(FH_PTR, YR, YI, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT):
    """Block (r0, c0) of ``Re F_H Y = Fr Yr - Fi Yi`` along H, Y in two (H_P, WH_P) slots."""
    rr, _, _, ii = blk_cmm(
        FH_PTR, FH_PTR + H_P * H_P, H_P, 1, H_P, H_P,
        YR, YI, WH_P, 1, H_P, WH_P,
        r0, c0, H_P, BM, BN, BK, True, True, DTYPE, DOT, True,
    )  # fmt: skip
    return rr - ii


@triton.jit
def _real_col_blk(FH_PTR, Y, r0, c0, H_P, WH_P, BM, BN, BK, DTYPE, DOT):
    """Block (r0, c0) of ``(Fr Y, Fi Y)`` along H for a real Y in one (H_P, WH_P) slot."""
    rr, _, ir, _ = blk_cmm(
        FH_PTR, FH_PTR + H_P * H_P, H_P, 1, H_P, H_P,
        Y, Y, WH_P, 1, H_P, WH_P,
        r0, c0, H_P, BM, BN, BK, True, False, DTYPE, DOT,
    )  # fmt: skip
    return rr, ir


@triton.jit
def _st_re_fwd_adjoint_blk(
    TR, TI, FW_PTR, GU_PTR, GV_PTR, H, W, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
):
    """Block (r0, c0) of the W pass of :func:`_re_fwd_adjoint` from ``T = (Fr gZ, Fi gZ)`` in
    two (H_P, WH_P) slots: ``gu = Tr Gr^T - Ti Gi^T``, ``gv = Tr Gi^T + Ti Gr^T``, stored into
    the (H, W) planes at GU_PTR, GV_PTR."""
    rr, ri, ir, ii = blk_cmm(
        TR, TI, WH_P, 1, H_P, WH_P,
        FW_PTR, FW_PTR + W_P * WH_P, 1, WH_P, WH_P, W_P,
        r0, c0, WH_P, BM, BNW, BK, True, True, DTYPE, DOT,
    )  # fmt: skip
    st_blk(GU_PTR, rr - ii, W, r0, c0, H, W, BM, BNW)
    st_blk(GV_PTR, ri + ir, W, r0, c0, H, W, BM, BNW)


@triton.jit
def fu_spectrum_staged(
    U_PTR,
    V_PTR,
    BIAS_PTR,
    ZS_PTR,
    SAVE_Z: tl.constexpr,
    b,
    o,
    CO,
    H,
    W,
    FH_PTR,
    FW_PTR,
    SCR_PTR,
    pid,
    NSLOT: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
):
    """Staged :func:`fu_spectrum` (+ :func:`fu_store_spectrum` if SAVE_Z), then the first
    (H) pass of the strict inverse: leaves ``conj(F_H) Z`` in slots 0-1 (uses slots 0-5) and
    returns those two slot pointers.

    Slots 0-3: ``(u - i v) @ G`` of channels o and o + CO; 4-5: Z (post-ReLU).
    """
    dt = FH_PTR.dtype.element_ty
    s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
    s2, s3 = slot_pair(SCR_PTR, pid, 2, NSLOT, H_P, WH_P)
    s4, s5 = slot_pair(SCR_PTR, pid, 4, NSLOT, H_P, WH_P)
    HW = H * W
    re_plane = (b * 2 * CO + o) * HW
    im_plane = re_plane + CO * HW
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            pr, pi = _uv_row_blk(
                U_PTR + re_plane, V_PTR + re_plane, H, W, FW_PTR, r0, c0,
                H_P, W_P, WH_P, BM, BN, BK, dt, DOT,
            )  # fmt: skip
            st_cplx_blk(s0, s1, pr, pi, r0, c0, H_P, WH_P, BM, BN)
            pr, pi = _uv_row_blk(
                U_PTR + im_plane, V_PTR + im_plane, H, W, FW_PTR, r0, c0,
                H_P, W_P, WH_P, BM, BN, BK, dt, DOT,
            )  # fmt: skip
            st_cplx_blk(s2, s3, pr, pi, r0, c0, H_P, WH_P, BM, BN)
    tl.debug_barrier()
    WH = W // 2 + 1
    zs_plane = (b * 2 * CO + o) * H * WH
    br = tl.load(BIAS_PTR + o).to(dt)
    bi = tl.load(BIAS_PTR + o + CO).to(dt)
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            zr = _re_col_blk(FH_PTR, s0, s1, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT)
            zr = tl.maximum(zr + br, 0.0)
            zi = _re_col_blk(FH_PTR, s2, s3, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT)
            zi = tl.maximum(zi + bi, 0.0)
            st_cplx_blk(s4, s5, zr, zi, r0, c0, H_P, WH_P, BM, BN)
            if SAVE_Z:
                st_blk(ZS_PTR + zs_plane, zr, WH, r0, c0, H, WH, BM, BN)
                st_blk(ZS_PTR + zs_plane + CO * H * WH, zi, WH, r0, c0, H, WH, BM, BN)
    tl.debug_barrier()
    staged_inv_h(FH_PTR, s4, s5, WH_P, H_P, WH_P, s0, s1, H_P, WH_P, BM, BN, BK, dt, DOT)
    tl.debug_barrier()
    return s0, s1


@triton.jit
def fu_backward_tail_staged(
    G_PTR,
    g_rs,
    ZS_PTR,
    GU_PTR,
    GV_PTR,
    DB_PART_PTR,
    b,
    o,
    CO,
    H,
    W,
    FH_PTR,
    FW_PTR,
    SCR_PTR,
    pid,
    NSLOT: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BNW: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
):
    """Staged :func:`fu_backward_tail` (uses slots 0-5); g = dL/dy is the real (H, W) plane at
    G_PTR with row stride g_rs, read only in its first pass; ZS_PTR as in fu_load_spectrum.

    Slots 0-1: ``g @ cG``; 2-3: gZ; then 0-1 and 4-5: ``(Fr gZ, Fi gZ)`` of the real and the
    imaginary channel. ``gu = (Fr gZ) Gr^T - (Fi gZ) Gi^T``, ``gv = (Fr gZ) Gi^T + (Fi gZ) Gr^T``.
    """
    dt = FH_PTR.dtype.element_ty
    s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
    s2, s3 = slot_pair(SCR_PTR, pid, 2, NSLOT, H_P, WH_P)
    s4, s5 = slot_pair(SCR_PTR, pid, 4, NSLOT, H_P, WH_P)
    staged_row_pass(G_PTR, g_rs, H, W, FW_PTR, 2, s0, s1, H_P, W_P, WH_P, BM, BN, BK, dt, DOT)
    tl.debug_barrier()
    WH = W // 2 + 1
    zs_plane = (b * 2 * CO + o) * H * WH
    sum_r = tl.zeros((BM, BN), dtype=dt)
    sum_i = tl.zeros((BM, BN), dtype=dt)
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            rr, ri, ir, ii = staged_col_blk(
                FH_PTR, s0, s1, WH_P, H_P, WH_P, r0, c0, H_P, BM, BN, BK, dt, DOT
            )
            zr = ld_blk(ZS_PTR + zs_plane, WH, 1, r0, c0, H, WH, BM, BN, dt)
            zi = ld_blk(ZS_PTR + zs_plane + CO * H * WH, WH, 1, r0, c0, H, WH, BM, BN, dt)
            gzr = tl.where(zr > 0, rr - ii, 0.0)
            gzi = tl.where(zi > 0, ri + ir, 0.0)
            sum_r += gzr
            sum_i += gzi
            st_cplx_blk(s2, s3, gzr, gzi, r0, c0, H_P, WH_P, BM, BN)
    tl.store(DB_PART_PTR + b * 2 * CO + o, tl.sum(tl.sum(sum_r, axis=1), axis=0))
    tl.store(DB_PART_PTR + b * 2 * CO + o + CO, tl.sum(tl.sum(sum_i, axis=1), axis=0))
    tl.debug_barrier()
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            tr, ti = _real_col_blk(FH_PTR, s2, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT)
            st_cplx_blk(s0, s1, tr, ti, r0, c0, H_P, WH_P, BM, BN)
            tr, ti = _real_col_blk(FH_PTR, s3, r0, c0, H_P, WH_P, BM, BN, BK, dt, DOT)
            st_cplx_blk(s4, s5, tr, ti, r0, c0, H_P, WH_P, BM, BN)
    tl.debug_barrier()
    HW = H * W
    re_plane = (b * 2 * CO + o) * HW
    for r0 in range(0, H_P, BM):
        for c0 in range(0, W_P, BNW):
            _st_re_fwd_adjoint_blk(
                s0, s1, FW_PTR, GU_PTR + re_plane, GV_PTR + re_plane, H, W, r0, c0,
                H_P, W_P, WH_P, BM, BNW, BK, dt, DOT,
            )  # fmt: skip
            _st_re_fwd_adjoint_blk(
                s4, s5, FW_PTR, GU_PTR + re_plane + CO * HW, GV_PTR + re_plane + CO * HW, H, W,
                r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT,
            )  # fmt: skip


@triton.jit
def _fu_fwd_staged_kernel(
    U_PTR,
    V_PTR,
    BIAS_PTR,
    Y_PTR,
    ZS_PTR,
    FH_PTR,
    FW_PTR,
    SCR_PTR,
    CO,
    H,
    W,
    SAVE_Z: tl.constexpr,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    NSLOT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BNW: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
):
    """Staged _fu_fwd_kernel (same arguments); SCR_PTR: (B*CO, NSLOT, H_P, WH_P) scratch."""
    pid, b, o = plane_ids(CO)
    dt = FH_PTR.dtype.element_ty
    s0, s1 = fu_spectrum_staged(
        U_PTR, V_PTR, BIAS_PTR, ZS_PTR, SAVE_Z, b, o, CO, H, W, FH_PTR, FW_PTR, SCR_PTR, pid,
        NSLOT, H_P, W_P, WH_P, BM, BN, BK, DOT,
    )  # fmt: skip
    staged_inv_w(s0, s1, FW_PTR, 2, Y_PTR + pid * H * W, H, W, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT)


@triton.jit
def _fu_bwd_staged_kernel(
    DY_PTR,
    ZS_PTR,
    GU_PTR,
    GV_PTR,
    DB_PART_PTR,
    FH_PTR,
    FW_PTR,
    SCR_PTR,
    CO,
    H,
    W,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    NSLOT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BNW: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
):
    """Staged _fu_bwd_kernel (same arguments); SCR_PTR: (B*CO, NSLOT, H_P, WH_P) scratch."""
    pid, b, o = plane_ids(CO)
    fu_backward_tail_staged(
        DY_PTR + pid * H * W, W, ZS_PTR, GU_PTR, GV_PTR, DB_PART_PTR, b, o, CO, H, W,
        FH_PTR, FW_PTR, SCR_PTR, pid, NSLOT, H_P, W_P, WH_P, BM, BN, BNW, BK, DOT,
    )  # fmt: skip


# --------------------------------------------------------------------------- host launchers


def _pow2_block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def launch_mix(x, weight, x_s=None, x_0=None):
    """u, v (B, 2C', H, W) in the compute dtype (and x_c = x + x_s + x_0 when given)."""
    B, C, H, W = x.shape
    CO2 = weight.shape[0]
    HW = H * W
    dt = compute_dtype(x.dtype)
    u = torch.empty(B, CO2, H, W, dtype=dt, device=x.device)
    v = torch.empty_like(u)
    has_sum3 = x_s is not None
    x_c = torch.empty_like(x) if has_sum3 else x
    BM, BN, BK = _pow2_block(CO2, 16, 64), 64, _pow2_block(C, 16, 32)
    _registry.launch(
        _mix_kernel,
        (triton.cdiv(HW, BN), triton.cdiv(CO2, BM), B),
        x,
        x_s if has_sum3 else x,
        x_0 if has_sum3 else x,
        x_c,
        weight,
        u,
        v,
        C,
        CO2,
        HW,
        HAS_SUM3=has_sum3,
        BLOCK_M=BM,
        BLOCK_N=BN,
        BLOCK_K=BK,
        DOT=dft.dot_precision(x.dtype),
    )
    return u, v, x_c


def launch_mix_backward(gu, gv, x, weight, dx_dtype, conv=None):
    """(dx, dweight_partials (B, 2C', 2C)). ``conv = (g_xc, gs, dw_weight)`` for gated_fusion."""
    B, C, H, W = x.shape
    CO2 = weight.shape[0]
    dt = gu.dtype
    dx = torch.empty(B, C, H, W, dtype=dx_dtype, device=x.device)
    has_conv = conv is not None
    g_xc, gs, dw_weight = conv if has_conv else (dx, gu, weight)
    # The fused transposed conv keeps nine shifted tiles live: 32 rows keep it spill-free.
    BM, BN, BK = _pow2_block(C, 16, 32 if has_conv else 64), 64, _pow2_block(CO2, 16, 32)
    _registry.launch(
        _mix_dx_kernel,
        (triton.cdiv(H * W, BN), triton.cdiv(C, BM), B),
        gu,
        gv,
        weight,
        dx,
        g_xc,
        gs,
        dw_weight,
        C,
        CO2,
        H,
        W,
        HAS_CONV=has_conv,
        BLOCK_M=BM,
        BLOCK_N=BN,
        BLOCK_K=BK,
        DOT=dft.dot_precision(dx_dtype),
    )
    part = torch.empty(B, CO2, 2 * C, dtype=dt, device=x.device)
    BM, BN = _pow2_block(CO2, 16, 64), _pow2_block(C, 16, 64)
    _registry.launch(
        _mix_dw_kernel,
        (triton.cdiv(C, BN), triton.cdiv(CO2, BM), B),
        gu,
        gv,
        x,
        part,
        C,
        CO2,
        H * W,
        BLOCK_M=BM,
        BLOCK_N=BN,
        BLOCK_K=64,
        DOT=dft.dot_precision(dx_dtype),
    )
    return dx, part


def sum_batch(part: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """Deterministic sum over dim 0 of ``part`` (B, ...) into a new tensor of ``shape``."""
    B = part.shape[0]
    N = part[0].numel()
    out = torch.empty(shape, dtype=dtype, device=part.device)
    BLOCK = 256
    _registry.launch(_sum_batch_kernel, (triton.cdiv(N, BLOCK),), part, out, B, N, BLOCK=BLOCK)
    return out


def empty_spectrum(B: int, CO2: int, H: int, W: int, dtype, device, save: bool) -> torch.Tensor:
    """The post-ReLU spectrum buffer (B, 2C', H, W//2+1) if ``save``, else an empty (0,)."""
    shape = (B, CO2, H, W // 2 + 1) if save else (0,)
    return torch.empty(shape, dtype=dtype, device=device)


def check_spectrum(zs: torch.Tensor, B: int, CO2: int, H: int, W: int) -> None:
    """Check that ``zs`` is a saved spectrum (B, 2C', H, W//2+1) (the forward saved one)."""
    if zs.shape != (B, CO2, H, W // 2 + 1):
        raise ValueError(
            f"zs: expected the saved spectrum of shape {(B, CO2, H, W // 2 + 1)}, got "
            f"{tuple(zs.shape)} (was the forward run with save_spectrum=False?)"
        )


# --------------------------------------------------------------------------- ops


@_registry.triton_kernel_op("hfsti::fourier_unit")
def _fu_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    fh: torch.Tensor,
    fw: torch.Tensor,
    save_spectrum: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, C, H, W = x.shape
    dft.check_mats(H, W, fh, fw)
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    CO = weight.shape[0] // 2
    u, v, _ = launch_mix(x, weight)
    y = torch.empty(B, CO, H, W, dtype=x.dtype, device=x.device)
    zs = empty_spectrum(B, 2 * CO, H, W, u.dtype, x.device, save_spectrum)
    dft.launch_planes(
        _fu_fwd_kernel, _fu_fwd_staged_kernel, FWD_SLOTS, B * CO, H, W,
        (u, v, bias, y, zs), fh, fw, CO, SAVE_Z=save_spectrum, DOT=dft.dot_precision(x.dtype),
    )  # fmt: skip
    return y, zs


@_registry.triton_kernel_op("hfsti::fourier_unit_backward")
def _fu_bwd_op(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    zs: torch.Tensor,
    fh: torch.Tensor,
    fw: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C, H, W = x.shape
    dft.check_mats(H, W, fh, fw)
    CO2 = weight.shape[0]
    CO = CO2 // 2
    check_spectrum(zs, B, CO2, H, W)
    dy, x, weight, zs = dy.contiguous(), x.contiguous(), weight.contiguous(), zs.contiguous()
    dt = zs.dtype
    gu = torch.empty(B, CO2, H, W, dtype=dt, device=x.device)
    gv = torch.empty_like(gu)
    db_part = torch.empty(B, CO2, dtype=dt, device=x.device)
    dft.launch_planes(
        _fu_bwd_kernel, _fu_bwd_staged_kernel, BWD_SLOTS, B * CO, H, W,
        (dy, zs, gu, gv, db_part), fh, fw, CO, DOT=dft.dot_precision(x.dtype),
    )  # fmt: skip
    dx, dw_part = launch_mix_backward(gu, gv, x, weight, x.dtype)
    dweight = sum_batch(dw_part, weight.shape, weight.dtype)
    dbias = sum_batch(db_part, (CO2,), weight.dtype)
    return dx, dweight, dbias


def _setup_context(ctx, inputs, output):
    x, weight, _bias, fh, fw, _save = inputs
    ctx.save_for_backward(x, weight, output[1], fh, fw)


def _backward(ctx, dy, _dzs):
    x, weight, zs, fh, fw = ctx.saved_tensors
    dx, dweight, dbias = _fu_bwd_op(dy, x, weight, zs, fh, fw)
    return dx, dweight, dbias, None, None, None


_fu_op.register_autograd(_backward, setup_context=_setup_context)


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will call the backward: only then is the spectrum worth saving."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _fu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    H, W = x.shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(x.dtype), x.device)
    y, _ = _fu_op(x, weight, bias, fh, fw, needs_grad(x, weight, bias))
    return y


_registry.register_implementation("fourier_unit", "triton", _fu_triton)


def fourier_unit(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """Drop-in for :func:`hfsti.ops.fourier_unit`, in Triton.

    Args:
        x: (B, C, H, W); weight: (2C', 2C); bias: (2C',); same dtype and device, any strides.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        y: (B, C', H, W) in the input dtype; differentiable in x, weight, bias.
    """
    check_fourier_unit_inputs(x, weight, bias)
    name = select_backend(backend, x)
    if name == "reference":
        return _reference(x, weight, bias)
    return _registry.implementation("fourier_unit", name)(x, weight, bias)
