"""The channel mixing of ``fourier_unit`` and ``gated_fusion``: batched GEMMs and batch sums.

The Fourier unit's channel mixing is linear, so it moves before the transform (docs/kernels.md,
fourier_unit): with ``weight = [A | B]`` (each (2C', C)), ``u = A x`` and ``v = B x`` are mixed in
the spatial domain by one batched GEMM (:func:`launch_mix`), whose backward is the transposed GEMM
for dx and per-batch weight partials (:func:`launch_mix_backward`), summed over the batch in a
fixed order (:func:`sum_batch`: deterministic, no atomics). ``gated_fusion`` fuses its extra terms
into these kernels: the sum ``x_f + x_s + x_0`` into the forward operand load (``HAS_SUM3``), and
the incoming gradient of x_c and the transposed 3x3 depthwise conv into dx (``HAS_CONV``).
Products accumulate in the compute dtype (fp32, fp64 for fp64) at ``dft.dot_precision``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti_kernels import _registry, dft


@triton.jit
def _program_tile(ACC_PTR, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's (BLOCK_M, BLOCK_N) output tile on a grid (column blocks, row blocks, B):
    (batch, int64; row offsets; column offsets; two zero accumulators in ACC_PTR's dtype, one
    per product of the pair the mixing kernels compute)."""
    b = tl.program_id(2).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dt = ACC_PTR.dtype.element_ty
    return b, offs_m, offs_n, tl.zeros((BLOCK_M, BLOCK_N), dt), tl.zeros((BLOCK_M, BLOCK_N), dt)


@triton.jit
def _tile(base, rows, cols, n_rows, n_cols, row_stride, col_stride):
    """Element offsets and mask of the tile ``rows x cols`` (1-D index blocks) of an
    (n_rows, n_cols) matrix at offset ``base`` with the given strides (a row stride of 1 reads
    a transposed view)."""
    off = base + rows[:, None] * row_stride + cols[None, :] * col_stride
    return off, (rows[:, None] < n_rows) & (cols[None, :] < n_cols)


@triton.jit
def _mix_kernel(
    X_PTR, XS_PTR, X0_PTR, XC_PTR,  # (B, C, HW): x (x_f), x_s, x_0; x_c output
    W_PTR, U_PTR, V_PTR,  # (CO2, 2C) weight; (B, CO2, HW) outputs
    C, CO2, HW,
    HAS_SUM3: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """``u = W[:, :C] @ x``, ``v = W[:, C:] @ x`` per batch; grid (cdiv(HW, BN), cdiv(CO2, BM), B).

    X_PTR: (B, C, HW) input; if HAS_SUM3, x = X + XS + X0 (each (B, C, HW)) and x is also stored
    to XC_PTR (B, C, HW) (by the first row block's programs only, so each element once).
    W_PTR: (CO2, 2C) weight. U_PTR, V_PTR: (B, CO2, HW) outputs in the compute dtype.
    """
    b, offs_m, offs_n, acc_u, acc_v = _program_tile(U_PTR, BLOCK_M, BLOCK_N)
    dt = acc_u.dtype
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x_off, x_mask = _tile(b * C * HW, offs_k, offs_n, C, HW, HW, 1)
        x = tl.load(X_PTR + x_off, mask=x_mask, other=0.0).to(dt)
        if HAS_SUM3:
            x += tl.load(XS_PTR + x_off, mask=x_mask, other=0.0).to(dt)
            x += tl.load(X0_PTR + x_off, mask=x_mask, other=0.0).to(dt)
            if tl.program_id(1) == 0:
                tl.store(XC_PTR + x_off, x.to(XC_PTR.dtype.element_ty), mask=x_mask)
        w_off, w_mask = _tile(0, offs_m, offs_k, CO2, C, 2 * C, 1)
        a = tl.load(W_PTR + w_off, mask=w_mask, other=0.0).to(dt)
        bb = tl.load(W_PTR + w_off + C, mask=w_mask, other=0.0).to(dt)
        acc_u += tl.dot(a, x, input_precision=DOT)
        acc_v += tl.dot(bb, x, input_precision=DOT)
    o_off, o_mask = _tile(b * CO2 * HW, offs_m, offs_n, CO2, HW, HW, 1)
    tl.store(U_PTR + o_off, acc_u, mask=o_mask)
    tl.store(V_PTR + o_off, acc_v, mask=o_mask)


@triton.jit
def _mix_dx_kernel(
    GU_PTR, GV_PTR, W_PTR, DX_PTR,  # (B, CO2, HW) gradients of u, v; (CO2, 2C); (B, C, HW)
    GXC_PTR, GS_PTR, DWW_PTR,  # HAS_CONV: (B, C, HW) gradients of x_c and of the conv; (C, 1, 3, 3)
    C, CO2, H, W,
    HAS_CONV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """``dx = W[:, :C]^T gu + W[:, C:]^T gv``; grid (cdiv(HW, BN), cdiv(C, BM), B).

    GU_PTR, GV_PTR: (B, CO2, HW) compute dtype; W_PTR: (CO2, 2C); DX_PTR: (B, C, HW) output.
    If HAS_CONV (gated_fusion), also adds GXC_PTR (B, C, HW), the incoming gradient of x_c, and
    the transposed 3x3 depthwise conv of GS_PTR (B, C, H, W) with DWW_PTR (C, 1, 3, 3).
    """
    b, offs_m, offs_n, acc, _ = _program_tile(GU_PTR, BLOCK_M, BLOCK_N)
    dt = acc.dtype
    HW = H * W
    m_ok = offs_m < C
    n_ok = offs_n < HW
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
    GU_PTR, GV_PTR, X_PTR, PART_PTR,  # (B, CO2, HW) x2; (B, C, HW); (B, CO2, 2C) output
    C, CO2, HW,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Per-batch weight-gradient partials; grid (cdiv(C, BN), cdiv(CO2, BM), B).

    GU_PTR, GV_PTR: (B, CO2, HW) compute dtype; X_PTR: (B, C, HW) the op's input.
    PART_PTR: (B, CO2, 2C) compute dtype: ``[gu_b @ x_b^T | gv_b @ x_b^T]``.
    """
    b, offs_m, offs_n, acc_a, acc_b = _program_tile(GU_PTR, BLOCK_M, BLOCK_N)
    dt = acc_a.dtype
    for k0 in range(0, HW, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        g_off, g_mask = _tile(b * CO2 * HW, offs_m, offs_k, CO2, HW, HW, 1)
        gu = tl.load(GU_PTR + g_off, mask=g_mask, other=0.0)
        gv = tl.load(GV_PTR + g_off, mask=g_mask, other=0.0)
        x_off, x_mask = _tile(b * C * HW, offs_k, offs_n, HW, C, 1, HW)  # (BK, BN) view of x^T
        xt = tl.load(X_PTR + x_off, mask=x_mask, other=0.0).to(dt)
        acc_a += tl.dot(gu, xt, input_precision=DOT)
        acc_b += tl.dot(gv, xt, input_precision=DOT)
    o_off, o_mask = _tile(b * CO2 * 2 * C, offs_m, offs_n, CO2, C, 2 * C, 1)
    tl.store(PART_PTR + o_off, acc_a, mask=o_mask)
    tl.store(PART_PTR + o_off + C, acc_b, mask=o_mask)


@triton.jit
def _mix_sum_batch_kernel(PART_PTR, OUT_PTR, B, N, BLOCK: tl.constexpr):
    """``OUT[n] = sum_b PART[b, n]`` in batch order (deterministic); grid (cdiv(N, BLOCK),).

    PART_PTR: (B, N) compute dtype; OUT_PTR: (N,) in the parameter dtype.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    acc = tl.zeros((BLOCK,), dtype=PART_PTR.dtype.element_ty)
    for b in range(0, B):
        acc += tl.load(PART_PTR + b * N + offs, mask=ok, other=0.0)
    tl.store(OUT_PTR + offs, acc.to(OUT_PTR.dtype.element_ty), mask=ok)


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
        _mix_kernel, (triton.cdiv(HW, BN), triton.cdiv(CO2, BM), B),
        x, x_s if has_sum3 else x, x_0 if has_sum3 else x, x_c, weight, u, v, C, CO2, HW,
        HAS_SUM3=has_sum3, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, DOT=dft.dot_precision(x.dtype),
    )  # fmt: skip
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
        _mix_dx_kernel, (triton.cdiv(H * W, BN), triton.cdiv(C, BM), B),
        gu, gv, weight, dx, g_xc, gs, dw_weight, C, CO2, H, W,
        HAS_CONV=has_conv, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, DOT=dft.dot_precision(dx_dtype),
    )  # fmt: skip
    part = torch.empty(B, CO2, 2 * C, dtype=dt, device=x.device)
    BM, BN = _pow2_block(CO2, 16, 64), _pow2_block(C, 16, 64)
    _registry.launch(
        _mix_dw_kernel, (triton.cdiv(C, BN), triton.cdiv(CO2, BM), B),
        gu, gv, x, part, C, CO2, H * W,
        BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=64, DOT=dft.dot_precision(dx_dtype),
    )  # fmt: skip
    return dx, part


def sum_batch(part: Tensor, shape, dtype: torch.dtype) -> Tensor:
    """Deterministic sum over dim 0 of ``part`` (B, ...) into a new tensor of ``shape``."""
    B = part.shape[0]
    N = part[0].numel()
    out = torch.empty(shape, dtype=dtype, device=part.device)
    BLOCK = 256
    _registry.launch(_mix_sum_batch_kernel, (triton.cdiv(N, BLOCK),), part, out, B, N, BLOCK=BLOCK)
    return out
