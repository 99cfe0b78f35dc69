"""The Fourier unit's spectral work, shared by ``fourier_unit`` and ``gated_fusion``.

After the channel mixing (``_channel_mix``), output channel o of the Fourier unit (docs/ops.md,
fourier_unit) is ``Z_o = relu(Re rfft2(u_o) + Im rfft2(v_o) + bias_o) = relu(Re F(u_o - i v_o)
+ bias_o)``, for o and o + C' (the real and imaginary parts of the spectrum that the strict
inverse turns into the output plane). The helpers here compute, for one (b, o) output plane:

- forward: the post-ReLU spectrum ``(zr, zi)`` (:func:`fu_spectrum`), saved for the backward as
  ``zs`` (B, 2C', H, W//2+1) when one will follow (its sign is the ReLU mask; cheaper than
  recomputing the GEMM);
- backward, from dL/dy of the plane: ``gZ = mask * irfft2_strict^T(dy)``, the per-batch bias
  partials and ``gu = (Re F)^T gZ``, ``gv = (Im F)^T gZ`` as spatial planes
  (:func:`fu_backward_tail`), which the transposed GEMM then takes to dx and dweight;

each as a whole-tile helper and a staged one (docs/kernels.md, Staged path) that works through
``FU_SLOTS`` scratch slots. The kernels that call them live in the op files.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti_kernels._staged import (
    blk_cmm,
    ld_blk,
    slot_pair,
    st_blk,
    st_cplx_blk,
    staged_col_blk,
    staged_irdft2_h,
    staged_rdft2_w,
)
from hfsti_kernels.dft import CG_RE, G_RE, load_fw, load_plane, rdft2, store_plane

# Scratch slots (of (H_P, WH_P) each) the staged helpers use, from slot 0.
FU_SLOTS = 6


@triton.jit
def plane_ids(C):
    """(pid, b, c) of a program of a one-program-per-(b, c)-plane grid (B*C,); pid is int64."""
    pid = tl.program_id(0).to(tl.int64)
    return pid, pid // C, pid % C


@triton.jit
def _store_spectrum(ZS_PTR, zr, zi, b, o, CO, H, W, H_P: tl.constexpr, WH_P: tl.constexpr):
    """Store (zr, zi) into ZS_PTR (B, 2CO, H, W//2+1) at channels o and o + CO."""
    WH = W // 2 + 1
    re_plane = (b * 2 * CO + o) * H * WH
    store_plane(ZS_PTR + re_plane, zr, H, WH, H_P, WH_P)
    store_plane(ZS_PTR + re_plane + CO * H * WH, zi, H, WH, H_P, WH_P)


@triton.jit
def fu_spectrum(
    U_PTR, V_PTR, BIAS_PTR, ZS_PTR, SAVE_Z: tl.constexpr, b, o, CO, H, W, FW_PTR, Fr, Fi,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Post-ReLU spectrum (zr, zi), each (H_P, WH_P), of output channel o of batch b, also
    stored into ZS_PTR (B, 2CO, H, W//2+1) if SAVE_Z.

    U_PTR, V_PTR: (B, 2CO, H, W) mixed planes; BIAS_PTR: (2CO,). ``Z_j = Re F(u_j - i v_j)``
    with ``F(u - i v) @ G = (u Gr + v Gi) + i (u Gi - v Gr)`` along W, then F_H along H.
    """
    dt = Fr.dtype
    Gr, Gi = load_fw(FW_PTR, G_RE, W_P, WH_P, False)
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
    if SAVE_Z:
        _store_spectrum(ZS_PTR, zr, zi, b, o, CO, H, W, H_P, WH_P)
    return zr, zi


@triton.jit
def fu_load_spectrum(ZS_PTR, b, o, CO, H, W, H_P: tl.constexpr, WH_P: tl.constexpr, DTYPE):
    """Load (zr, zi), each (H_P, WH_P), from ZS_PTR (B, 2CO, H, W//2+1); zero padding."""
    WH = W // 2 + 1
    re_plane = (b * 2 * CO + o) * H * WH
    zr = load_plane(ZS_PTR + re_plane, H, WH, H_P, WH_P, DTYPE)
    zi = load_plane(ZS_PTR + re_plane + CO * H * WH, H, WH, H_P, WH_P, DTYPE)
    return zr, zi


@triton.jit
def fu_backward_tail(
    g, zr, zi,  # dL/dy (H_P, W_P) of plane (b, o); the post-ReLU spectrum
    GU_PTR, GV_PTR, DB_PART_PTR,  # (B, 2CO, H, W) x2, (B, 2CO) outputs
    b, o, CO, H, W, FW_PTR, Fr, Fi,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """From g = dL/dy (H_P, W_P) of output plane (b, o): bias partials and gu, gv planes.

    zr, zi: the post-ReLU spectrum (its sign is the ReLU mask; padding is 0, so masked out).
    GU_PTR, GV_PTR: (B, 2CO, H, W) outputs; DB_PART_PTR: (B, 2CO) per-batch bias partials.
    """
    Cr, Ci = load_fw(FW_PTR, CG_RE, W_P, WH_P, False)
    gyr, gyi = rdft2(g, Cr, Ci, Fr, Fi, DOT)  # adjoint of irfft2_strict
    gzr = tl.where(zr > 0, gyr, 0.0)
    gzi = tl.where(zi > 0, gyi, 0.0)
    tl.store(DB_PART_PTR + b * 2 * CO + o, tl.sum(tl.sum(gzr, axis=1), axis=0))
    tl.store(DB_PART_PTR + b * 2 * CO + o + CO, tl.sum(tl.sum(gzi, axis=1), axis=0))
    # The adjoint of (u, v) -> Re F(u - i v) at g: gu = rfft2^T(g + 0i), gv = rfft2^T(0 + i g),
    # which is rdft2 of g with the transposed G.
    GrT, GiT = load_fw(FW_PTR, G_RE, W_P, WH_P, True)
    HW = H * W
    re_plane = (b * 2 * CO + o) * HW
    gu, gv = rdft2(gzr, GrT, GiT, Fr, Fi, DOT)
    store_plane(GU_PTR + re_plane, gu, H, W, H_P, W_P)
    store_plane(GV_PTR + re_plane, gv, H, W, H_P, W_P)
    gu, gv = rdft2(gzi, GrT, GiT, Fr, Fi, DOT)
    store_plane(GU_PTR + re_plane + CO * HW, gu, H, W, H_P, W_P)
    store_plane(GV_PTR + re_plane + CO * HW, gv, H, W, H_P, W_P)


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
def _st_mix_adjoint_blk(
    TR, TI, FW_PTR, GU_PTR, GV_PTR, H, W, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
):
    """Block (r0, c0) of the W pass of the adjoint of ``(u, v) -> Re F(u - i v)`` from
    ``T = (Fr gZ, Fi gZ)`` in two (H_P, WH_P) slots: ``gu = Tr Gr^T - Ti Gi^T``,
    ``gv = Tr Gi^T + Ti Gr^T``, stored into the (H, W) planes at GU_PTR, GV_PTR."""
    rr, ri, ir, ii = blk_cmm(
        TR, TI, WH_P, 1, H_P, WH_P,
        FW_PTR, FW_PTR + W_P * WH_P, 1, WH_P, WH_P, W_P,
        r0, c0, WH_P, BM, BNW, BK, True, True, DTYPE, DOT,
    )  # fmt: skip
    st_blk(GU_PTR, rr - ii, W, r0, c0, H, W, BM, BNW)
    st_blk(GV_PTR, ri + ir, W, r0, c0, H, W, BM, BNW)


@triton.jit
def fu_spectrum_staged(
    U_PTR, V_PTR, BIAS_PTR, ZS_PTR, SAVE_Z: tl.constexpr,  # as in fu_spectrum
    b, o, CO, H, W,
    FH_PTR, FW_PTR, SCR_PTR, pid, NSLOT: tl.constexpr,  # DFT matrices; program pid's scratch
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Staged :func:`fu_spectrum`, then the first
    (H) pass of the strict inverse: leaves ``conj(F_H) Z`` in slots 0-1 (uses ``FU_SLOTS``
    slots) and returns those two slot pointers.

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
    staged_irdft2_h(FH_PTR, s4, s5, WH_P, H_P, WH_P, s0, s1, H_P, WH_P, BM, BN, BK, dt, DOT)
    tl.debug_barrier()
    return s0, s1


@triton.jit
def fu_backward_tail_staged(
    G_PTR, g_rs, ZS_PTR,  # dL/dy, a real (H, W) plane with row stride g_rs; saved spectrum
    GU_PTR, GV_PTR, DB_PART_PTR,  # as in fu_backward_tail
    b, o, CO, H, W,
    FH_PTR, FW_PTR, SCR_PTR, pid, NSLOT: tl.constexpr,  # DFT matrices; program pid's scratch
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Staged :func:`fu_backward_tail` (uses ``FU_SLOTS`` slots); g = dL/dy is the real
    (H, W) plane at G_PTR with row stride g_rs, read only in its first pass; ZS_PTR as in
    fu_load_spectrum.

    Slots 0-1: ``g @ cG``; 2-3: gZ; then 0-1 and 4-5: ``(Fr gZ, Fi gZ)`` of the real and the
    imaginary channel. ``gu = (Fr gZ) Gr^T - (Fi gZ) Gi^T``, ``gv = (Fr gZ) Gi^T + (Fi gZ) Gr^T``.
    """
    dt = FH_PTR.dtype.element_ty
    s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
    s2, s3 = slot_pair(SCR_PTR, pid, 2, NSLOT, H_P, WH_P)
    s4, s5 = slot_pair(SCR_PTR, pid, 4, NSLOT, H_P, WH_P)
    staged_rdft2_w(G_PTR, g_rs, H, W, FW_PTR, CG_RE, s0, s1, H_P, W_P, WH_P, BM, BN, BK, dt, DOT)
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
            _st_mix_adjoint_blk(
                s0, s1, FW_PTR, GU_PTR + re_plane, GV_PTR + re_plane, H, W, r0, c0,
                H_P, W_P, WH_P, BM, BNW, BK, dt, DOT,
            )  # fmt: skip
            _st_mix_adjoint_blk(
                s4, s5, FW_PTR, GU_PTR + re_plane + CO * HW, GV_PTR + re_plane + CO * HW, H, W,
                r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT,
            )  # fmt: skip


# --------------------------------------------------------------------------- host helpers


def empty_spectrum(B: int, CO2: int, H: int, W: int, dtype, device, save: bool) -> Tensor:
    """The post-ReLU spectrum buffer (B, 2C', H, W//2+1) if ``save``, else an empty (0,)."""
    shape = (B, CO2, H, W // 2 + 1) if save else (0,)
    return torch.empty(shape, dtype=dtype, device=device)


def check_spectrum(zs: Tensor, B: int, CO2: int, H: int, W: int) -> None:
    """Check that ``zs`` is a saved spectrum (B, 2C', H, W//2+1) (the forward saved one)."""
    if zs.shape != (B, CO2, H, W // 2 + 1):
        raise ValueError(
            f"zs: expected the saved spectrum of shape {(B, CO2, H, W // 2 + 1)}, got "
            f"{tuple(zs.shape)} (was the forward run with save_spectrum=False?)"
        )


def needs_grad(*tensors: Tensor) -> bool:
    """Whether autograd will call the backward: only then is the spectrum worth saving."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
