"""The staged path of the FFT kernels, for planes too large for one tile, and the plane launcher.

Why (docs/kernels.md, Staged path): the fast path keeps a whole (H, W) plane as one tile.
Compiled for sm_90, those plane kernels need 48-96 KB of shared memory at 64x64 tiles (H, W <= 64:
the model's 11, 22, 44; ``benchmarks/results/static-sm90/``) but 256-320 KB at 128x128 tiles
(e.g. 88), over the H100's 227 KB per block. Planes with a tile side >= ``STAGED_MIN_TILE`` (128)
take the staged branch of the same kernels instead (``IS_STAGED``, :func:`is_staged`): still one
program per plane, but every transform is split into two passes over (BLOCK x BLOCK) output
blocks whose products are tiled over the contraction in ``STAGED_BK``-wide steps with operands
loaded from global memory (:func:`blk_cmm`), and the intermediates (``x @ G`` along W, then
``F_H @ .`` along H, each a complex (H_P, WH_P) plane) go through a per-program global scratch
buffer ("slots", :func:`scratch`) with ``tl.debug_barrier()`` between the passes. The inverse is
computed H-first, ``Re(conj(F_H) Y) A``, so every pass works on independent blocks. Any plane
size works there (only the scratch grows); the maths is the same, only the association of the
sums differs.

Matrix arguments ``IDX`` name the first of a (re, im) pair of ``fw`` (``dft.G_RE``,
``dft.CG_RE``); every product takes the kernels' ``DOT`` precision.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hfsti_kernels import _registry
from hfsti_kernels.dft import tile_sizes

# Planes whose padded tile has a side >= STAGED_MIN_TILE take the staged path (module docstring).
# Tests lower it to run the staged path on small planes under the interpreter.
STAGED_MIN_TILE = 128
# Staged path: output block side (rows and columns of every pass) and contraction step.
STAGED_BLOCK = 32
STAGED_BK = 16
# 8 warps: the backward kernels keep up to 8 live (32 x 32) blocks; 4 would need 255 registers.
STAGED_NUM_WARPS = 8


def is_staged(H: int, W: int) -> bool:
    """Whether an (H, W) plane takes the staged path (tile side >= STAGED_MIN_TILE)."""
    H_P, W_P, _ = tile_sizes(H, W)
    return max(H_P, W_P) >= STAGED_MIN_TILE


def staged_blocks(H: int, W: int) -> dict:
    """Constexpr block sizes of the staged path for an (H, W) plane (all powers of two >= 16).

    BM: rows; BN: half-spectrum columns; BNW: spatial columns; BK: contraction step.
    """
    H_P, W_P, WH_P = tile_sizes(H, W)
    bk = min(STAGED_BK, H_P, WH_P)
    return dict(
        BM=min(STAGED_BLOCK, H_P), BN=min(STAGED_BLOCK, WH_P), BNW=min(STAGED_BLOCK, W_P), BK=bk
    )


def scratch(n_programs: int, n_slots: int, H: int, W: int, dtype, device) -> torch.Tensor:
    """Per-program scratch of the staged path: (n_programs, n_slots, H_P, WH_P).

    A slot holds one (H_P, WH_P) real plane (row stride WH_P); two consecutive slots hold one
    (H_P, W_P) spatial plane (row stride W_P <= 2 WH_P).
    """
    H_P, _, WH_P = tile_sizes(H, W)
    return torch.empty(n_programs, n_slots, H_P, WH_P, dtype=dtype, device=device)


def plane_num_warps(H: int, W: int) -> int:
    """Warps for a one-plane-per-program kernel: 8 past 64x64 tiles, to spread the registers;
    STAGED_NUM_WARPS on the staged path."""
    if is_staged(H, W):
        return STAGED_NUM_WARPS
    H_P, W_P, _ = tile_sizes(H, W)
    return 4 if H_P * W_P <= 64 * 64 else 8


def launch_planes(
    kernel, n_slots: int, n_planes: int, H: int, W: int, tensors, fh, fw, *scalars, **consts
) -> None:
    """Launch the one-program-per-plane ``kernel`` over ``n_planes`` (H, W) planes.

    Arguments passed: ``*tensors, fh, fw, scratch, *scalars, H, W``, then the constexprs
    ``IS_STAGED`` (:func:`is_staged`), ``H_P, W_P, WH_P``, ``NSLOT`` and :func:`staged_blocks`,
    ``consts`` and :func:`plane_num_warps`. On the staged path the scratch has ``n_slots``
    slots per plane, in ``fh``'s dtype and device; otherwise the kernel never reads it and gets
    ``fh`` in its place.
    """
    H_P, W_P, WH_P = tile_sizes(H, W)
    staged = is_staged(H, W)
    scr = scratch(n_planes, n_slots, H, W, fh.dtype, fh.device) if staged else fh
    _registry.launch(
        kernel, (n_planes,), *tensors, fh, fw, scr, *scalars, H, W,
        IS_STAGED=staged, H_P=H_P, W_P=W_P, WH_P=WH_P, NSLOT=n_slots, **staged_blocks(H, W),
        num_warps=plane_num_warps(H, W), **consts,
    )  # fmt: skip


# --------------------------------------------------------------------------- Triton helpers


@triton.jit
def slot(SCR_PTR, pid, s, NSLOT: tl.constexpr, H_P: tl.constexpr, WH_P: tl.constexpr):
    """Pointer to slot s of program pid's scratch (NSLOT slots of (H_P, WH_P) each)."""
    return SCR_PTR + (pid * NSLOT + s) * (H_P * WH_P)


@triton.jit
def slot_pair(
    SCR_PTR, pid, s: tl.constexpr, NSLOT: tl.constexpr, H_P: tl.constexpr, WH_P: tl.constexpr
):
    """Slots s and s + 1 of program pid's scratch: the real and imaginary parts of a plane."""
    return slot(SCR_PTR, pid, s, NSLOT, H_P, WH_P), slot(SCR_PTR, pid, s + 1, NSLOT, H_P, WH_P)


@triton.jit
def ld_blk(PTR, rs, cs, r0, c0, nr, nc, BR: tl.constexpr, BC: tl.constexpr, DTYPE: tl.constexpr):
    """(BR, BC) block at (r0, c0) of a matrix with strides (rs, cs) and nr x nc valid entries
    (zero outside), as DTYPE."""
    r = r0 + tl.arange(0, BR)[:, None]
    c = c0 + tl.arange(0, BC)[None, :]
    return tl.load(PTR + r * rs + c * cs, mask=(r < nr) & (c < nc), other=0.0).to(DTYPE)


@triton.jit
def st_blk(PTR, val, rs, r0, c0, nr, nc, BR: tl.constexpr, BC: tl.constexpr):
    """Store the valid part (rows < nr, cols < nc) of an (BR, BC) block at (r0, c0)."""
    r = r0 + tl.arange(0, BR)[:, None]
    c = c0 + tl.arange(0, BC)[None, :]
    tl.store(PTR + r * rs + c, val.to(PTR.dtype.element_ty), mask=(r < nr) & (c < nc))


@triton.jit
def st_cplx_blk(OUT_R, OUT_I, xr, xi, r0, c0, H_P, WH_P, BM: tl.constexpr, BN: tl.constexpr):
    """Store a complex (BM, BN) block at (r0, c0) into the (H_P, WH_P) slots OUT_R, OUT_I."""
    st_blk(OUT_R, xr, WH_P, r0, c0, H_P, WH_P, BM, BN)
    st_blk(OUT_I, xi, WH_P, r0, c0, H_P, WH_P, BM, BN)


@triton.jit
def blk_cmm(
    AR, AI, a_rs, a_cs, a_nr, a_nk,  # A: real, imag; strides; valid rows, contraction
    BR_, BI_, b_rs, b_cs, b_nk, b_nc,  # B: real, imag; strides; valid contraction, columns
    r0, c0,  # the output block's corner
    KP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    A_CPLX: tl.constexpr, B_CPLX: tl.constexpr, DTYPE: tl.constexpr, DOT: tl.constexpr,
    DIAG: tl.constexpr = False,
):  # fmt: skip
    """The (BM, BN) block at (r0, c0) of the four real products of (AR + i AI) @ (BR + i BI).

    A: (a_nr x a_nk valid) with strides (a_rs, a_cs); B: (b_nk x b_nc valid), strides (b_rs,
    b_cs); the contraction runs over [0, KP) in BK steps, operands loaded from global memory
    (masked: zero outside the valid part). Returns (AR BR, AR BI, AI BR, AI BI); the terms of an
    operand that is not complex (A_CPLX / B_CPLX False), and the cross terms if DIAG, are zero.
    """
    rr = tl.zeros((BM, BN), dtype=DTYPE)
    ri = tl.zeros((BM, BN), dtype=DTYPE)
    ir = tl.zeros((BM, BN), dtype=DTYPE)
    ii = tl.zeros((BM, BN), dtype=DTYPE)
    for k0 in range(0, KP, BK):
        ar = ld_blk(AR, a_rs, a_cs, r0, k0, a_nr, a_nk, BM, BK, DTYPE)
        br = ld_blk(BR_, b_rs, b_cs, k0, c0, b_nk, b_nc, BK, BN, DTYPE)
        rr = tl.dot(ar, br, rr, input_precision=DOT)
        if B_CPLX:
            bi = ld_blk(BI_, b_rs, b_cs, k0, c0, b_nk, b_nc, BK, BN, DTYPE)
            if not DIAG:
                ri = tl.dot(ar, bi, ri, input_precision=DOT)
        if A_CPLX:
            ai = ld_blk(AI, a_rs, a_cs, r0, k0, a_nr, a_nk, BM, BK, DTYPE)
            if not DIAG:
                ir = tl.dot(ai, br, ir, input_precision=DOT)
            if B_CPLX:
                ii = tl.dot(ai, bi, ii, input_precision=DOT)
    return rr, ri, ir, ii


@triton.jit
def staged_rdft2_w(
    X_PTR, x_rs, H, W,  # a real (H, W) plane, row stride x_rs
    FW_PTR, IDX: tl.constexpr,  # the pair (IDX, IDX + 1) of fw
    OUT_R, OUT_I,  # two (H_P, WH_P) slots
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, DTYPE: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """``P = x @ (B_IDX + i B_IDX+1)`` along W into the slots OUT_R, OUT_I (padded rows and
    columns exactly zero)."""
    GB = FW_PTR + IDX * W_P * WH_P
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            pr, pi, _, _ = blk_cmm(
                X_PTR, X_PTR, x_rs, 1, H, W,
                GB, GB + W_P * WH_P, WH_P, 1, W_P, WH_P,
                r0, c0, W_P, BM, BN, BK, False, True, DTYPE, DOT,
            )  # fmt: skip
            st_cplx_blk(OUT_R, OUT_I, pr, pi, r0, c0, H_P, WH_P, BM, BN)


@triton.jit
def staged_col_blk(
    FH_PTR, YR, YI, y_rs, y_nr, y_nc,  # F_H; Y (real, imag), row stride, valid rows, columns
    r0, c0,
    H_P: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    DTYPE: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Block (r0, c0) of the four products (Fr Yr, Fr Yi, Fi Yr, Fi Yi) along H."""
    return blk_cmm(
        FH_PTR, FH_PTR + H_P * H_P, H_P, 1, H_P, H_P,
        YR, YI, y_rs, 1, y_nr, y_nc,
        r0, c0, H_P, BM, BN, BK, True, True, DTYPE, DOT,
    )  # fmt: skip


@triton.jit
def staged_irdft2_h(
    FH_PTR, YR, YI, y_rs, y_nr, y_nc,  # as in staged_col_blk
    OUT_R, OUT_I,  # two (H_P, WH_P) slots
    H_P: tl.constexpr, WH_P: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    DTYPE: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """First (H) pass of an inverse, ``T = conj(F_H) Y``: ``Tr = Fr Yr + Fi Yi``,
    ``Ti = Fr Yi - Fi Yr``, into the slots OUT_R, OUT_I."""
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            rr, ri, ir, ii = staged_col_blk(
                FH_PTR, YR, YI, y_rs, y_nr, y_nc, r0, c0, H_P, BM, BN, BK, DTYPE, DOT
            )
            st_cplx_blk(OUT_R, OUT_I, rr + ii, ri - ir, r0, c0, H_P, WH_P, BM, BN)


@triton.jit
def staged_irdft2_w_blk(
    TR, TI,  # T in two (H_P, WH_P) slots
    FW_PTR, IDX: tl.constexpr,  # the pair (IDX, IDX + 1) of fw, used transposed
    r0, c0,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BM: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr, DTYPE: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Block (r0, c0) of the second (W) pass of an inverse, ``Tr A_IDX^T + Ti A_IDX+1^T``: a
    real (BM, BNW) spatial block."""
    A = FW_PTR + IDX * W_P * WH_P
    rr, _, _, ii = blk_cmm(
        TR, TI, WH_P, 1, H_P, WH_P,
        A, A + W_P * WH_P, 1, WH_P, WH_P, W_P,
        r0, c0, WH_P, BM, BNW, BK, True, True, DTYPE, DOT, True,
    )  # fmt: skip
    return rr + ii


@triton.jit
def staged_irdft2_w(
    TR, TI, FW_PTR, IDX: tl.constexpr, OUT_PTR, H, W, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
):
    """The whole second pass of an inverse (:func:`staged_irdft2_w_blk` over every block), stored
    into the contiguous real (H, W) plane at OUT_PTR."""
    for r0 in range(0, H_P, BM):
        for c0 in range(0, W_P, BNW):
            y = staged_irdft2_w_blk(
                TR, TI, FW_PTR, IDX, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
            )
            st_blk(OUT_PTR, y, W, r0, c0, H, W, BM, BNW)
