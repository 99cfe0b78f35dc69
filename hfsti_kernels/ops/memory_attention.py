# Memory attention (docs/ops.md, memory_attention) in Triton: flash-attention forward and
# backward with a per-key bias.
#
#   o = softmax(scale * q @ k^T + key_bias[..., None, :]) @ v
#
# Design (FlashAttention-2, Dao 2023; the layout of the Triton tutorial's fused attention):
# - Forward, one program per (query block, batch*head): stream key/value blocks through an online
#   softmax in base 2 (the logits are pre-multiplied by log2(e), so every exponential is one
#   exp2). Nothing of size Nq x Nk touches memory; only o and the row logsumexp are saved.
# - Backward, three launches, no atomics, so every gradient is bitwise reproducible:
#   1. delta = rowsum(dO * O), one program per query block;
#   2. dK, dV and dbias, one program per key block looping over all query blocks; dbias[j] is
#      the column sum of dS over that loop, in a fixed order;
#   3. dQ, one program per query block looping over all key blocks.
#   A key_bias broadcast over B or h is summed over those dims on the host
#   (hfsti.ops.key_bias_grad; torch.sum is deterministic), so its gradient has its own shape.
# - Arbitrary strides everywhere (the model feeds views made with .transpose(1, 2)); a size-1
#   key_bias dim is a zero stride. Ragged Nq, Nk and d are masked (EVEN_* flags drop the masks
#   when a size divides its block); padded key columns get the logit -inf, like a key whose bias
#   is -inf.
# - Fully masked rows (docs/ops.md, memory_attention): the forward's running max starts at the
#   finite -1e30 (NEG_BIG), below every logit a row with a live key has, so the exponentials
#   never compute -inf - -inf = NaN. A row whose every logit is -inf ends with l = 0: it gets
#   o = 0 and the saved lse +BIG, as a padded query row, so the backward's exp2(s - lse) is 0
#   and every gradient it feeds is 0. A fill value such as -1e9 on every key of a head would
#   make m so large that log2(l) vanishes beside it in the saved lse (wrong gradients): the host
#   rebases such biases first (hfsti.ops.rebase_key_bias, docs/ops.md, memory_attention), which
#   also keeps every live row's logits above NEG_BIG.
# - Precision: fp16/bf16 tiles feed the tensor cores, accumulating in fp32; fp32 tiles use
#   3xTF32 by default (about fp32 accuracy, docs/ops.md, Tolerances), "ieee" or the faster
#   "tf32" on request; fp64 runs in fp64 throughout (the scale is passed as an fp64 scalar), so
#   gradcheck passes. Each kernel accumulates in the dtype of its fp32/fp64 row buffer (lse or
#   delta), which the host allocates in ``compute_dtype``; one ``DOT`` constexpr sets every
#   product's input precision.
#
# Limits: d <= 128 (a q tile and its accumulator stay in registers); block sizes are fixed per
# (dtype, d) instead of autotuned, because autotuning times kernels on the first call (which
# breaks CUDA-graph capture) and a different BLOCK_M would change dbias's summation order.
#
# Over 500 lines: one op's four kernels (the forward and the three backward steps that keep every
# gradient deterministic), their tile helpers and the per-dtype launch table; the split by
# concern that the FFT ops need (shared DFT and staged machinery) has nothing to share here.

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import check_head_dim, compute_dtype
from hfsti.ops import (
    attention_scale,
    autocast_policy,
    check_memory_attention_inputs,
    key_bias_grad,
    rebase_key_bias,
)
from hfsti.ops import memory_attention as reference_memory_attention
from hfsti_kernels import _registry
from hfsti_kernels._backend import interpreter_enabled, select_backend

__all__ = ["memory_attention", "MAX_HEAD_DIM", "FP32_PRECISIONS"]

MAX_HEAD_DIM = 128
FP32_PRECISIONS = ("tf32x3", "ieee", "tf32")
LOG2E = 1.4426950408889634
_LOG2E = tl.constexpr(LOG2E)  # the same constant, readable from the kernels
NEG_INF = tl.constexpr(float("-inf"))  # the logit of a padded key column
NEG_BIG = tl.constexpr(-1.0e30)  # the forward's initial running max; minus the lse of dead rows


# --------------------------------------------------------------------------- kernels


@triton.jit
def _load_tile(ptrs, rows_ok, cols_ok, EVEN_ROWS: tl.constexpr, EVEN_COLS: tl.constexpr):
    """Load a 2-D tile, masking only the dims whose size is not a multiple of the block."""
    if EVEN_ROWS and EVEN_COLS:
        x = tl.load(ptrs)
    elif EVEN_ROWS:
        x = tl.load(ptrs, mask=cols_ok[None, :], other=0.0)
    elif EVEN_COLS:
        x = tl.load(ptrs, mask=rows_ok[:, None], other=0.0)
    else:
        x = tl.load(ptrs, mask=rows_ok[:, None] & cols_ok[None, :], other=0.0)
    return x


@triton.jit
def _store_tile(ptrs, x, rows_ok, cols_ok, EVEN_ROWS: tl.constexpr, EVEN_COLS: tl.constexpr):
    """Store a 2-D tile with the masking of :func:`_load_tile`."""
    if EVEN_ROWS and EVEN_COLS:
        tl.store(ptrs, x)
    elif EVEN_ROWS:
        tl.store(ptrs, x, mask=cols_ok[None, :])
    elif EVEN_COLS:
        tl.store(ptrs, x, mask=rows_ok[:, None])
    else:
        tl.store(ptrs, x, mask=rows_ok[:, None] & cols_ok[None, :])


@triton.jit
def _load_row(ptrs, ok, other, EVEN: tl.constexpr):
    """Load a 1-D block, masked unless its size divides the block."""
    return tl.load(ptrs) if EVEN else tl.load(ptrs, mask=ok, other=other)


@triton.jit
def _store_row(ptrs, x, ok, EVEN: tl.constexpr):
    """Store a 1-D block with the masking of :func:`_load_row`."""
    if EVEN:
        tl.store(ptrs, x)
    else:
        tl.store(ptrs, x, mask=ok)


@triton.jit
def _program_block(H, BLOCK: tl.constexpr):
    """This program's (batch*head index, batch, head, block offsets along its blocked dim).

    Every kernel's grid is (cdiv(N, BLOCK), B * H): axis 0 picks the block, axis 1 the
    (batch, head); batch and head are int64 so that the strided offsets cannot overflow.
    """
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    return pid_bh, off_b, off_h, offs


@triton.jit
def _tile_ptrs(PTR, off_b, off_h, rows, cols, sb, sh, sr, sc):
    """Pointers to PTR[off_b, off_h, rows, cols] of a (B, H, R, C) tensor with any strides.

    rows and cols come broadcast: (offs_r[:, None], offs_c[None, :]) reads a (R, C) tile,
    (offs_r[None, :], offs_c[:, None]) the same tile transposed.
    """
    return PTR + off_b * sb + off_h * sh + rows * sr + cols * sc


@triton.jit
def _acc_scales(sm_scale, qk_scale, acc_ty: tl.constexpr):
    """The backward kernels' fp64 scale arguments as scalars of the accumulation dtype."""
    return tl.full((), sm_scale, acc_ty), tl.full((), qk_scale, acc_ty)


@triton.jit
def _block_tiles(
    A_PTR, sab, sah, sar, sad,  # (B, H, N, HEAD_D)
    C_PTR, scb, sch, scr, scd,  # (B, H, N, HEAD_D)
    H, N, HEAD_D,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, EVEN: tl.constexpr, EVEN_D: tl.constexpr,
):  # fmt: skip
    """This program's block of BLOCK rows (of N) and the (BLOCK, BLOCK_D) tiles of A and C
    there, for the backward kernels that keep two tiles of their block resident.

    Returns (pid_bh, off_b, off_h, offs, ok, offs_d, d_ok, a, c): as :func:`_program_block`,
    then the rows' mask, the head dim's offsets and mask, and the two tiles.
    """
    pid_bh, off_b, off_h, offs = _program_block(H, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    ok = offs < N
    d_ok = offs_d < HEAD_D
    rows, cols = offs[:, None], offs_d[None, :]
    a_ptrs = _tile_ptrs(A_PTR, off_b, off_h, rows, cols, sab, sah, sar, sad)
    c_ptrs = _tile_ptrs(C_PTR, off_b, off_h, rows, cols, scb, sch, scr, scd)
    a = _load_tile(a_ptrs, ok, d_ok, EVEN, EVEN_D)
    c = _load_tile(c_ptrs, ok, d_ok, EVEN, EVEN_D)
    return pid_bh, off_b, off_h, offs, ok, offs_d, d_ok, a, c


@triton.jit
def _scores(
    q, kt, b_ptrs, n_ok, qk_scale, HAS_BIAS: tl.constexpr, EVEN_N: tl.constexpr, DOT: tl.constexpr
):
    """Base-2 logits of a (BLOCK_M, BLOCK_N) block, in the accumulator dtype of qk_scale:
    log2(e) * (scale * q k^T + key_bias), padded key columns -inf.

    q: (BLOCK_M, BLOCK_D); kt: (BLOCK_D, BLOCK_N), K read transposed; b_ptrs: the block's
    BLOCK_N key_bias pointers (unused unless HAS_BIAS); n_ok: the valid key columns;
    qk_scale: scale * log2(e), an fp32 (fp64) scalar.
    """
    acc_ty: tl.constexpr = qk_scale.dtype
    s = tl.dot(q, kt, input_precision=DOT, out_dtype=acc_ty) * qk_scale
    if HAS_BIAS:
        bias = _load_row(b_ptrs, n_ok, 0.0, EVEN_N)
        s += bias.to(acc_ty)[None, :] * tl.full((), _LOG2E, acc_ty)
    if not EVEN_N:
        s = tl.where(n_ok[None, :], s, NEG_INF)
    return s


@triton.jit
def _ma_fwd_kernel(
    Q_PTR, sqb, sqh, sqm, sqd,  # (B, H, N_Q, HEAD_D)
    K_PTR, skb, skh, skn, skd,  # (B, H, N_K, HEAD_D)
    V_PTR, svb, svh, svn, svd,  # (B, H, N_K, HEAD_D)
    BIAS_PTR, sbb, sbh, sbn,  # (B, H, N_K); zero strides broadcast
    O_PTR, sob, soh, som, sod,  # (B, H, N_Q, HEAD_D) output
    LSE_PTR,  # (B, H, N_Q) contiguous output, accumulation dtype
    H, N_Q, N_K, HEAD_D, qk_scale: tl.float64,
    HAS_BIAS: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Forward: o and the base-2 row logsumexp for one block of queries of one (batch, head).

    Grid: (cdiv(N_Q, BLOCK_M), B * H).
    Q_PTR: (B, H, N_Q, HEAD_D); K_PTR, V_PTR: (B, H, N_K, HEAD_D), any strides.
    BIAS_PTR: (B, H, N_K) with zero strides on broadcast dims (unused unless HAS_BIAS).
    O_PTR: (B, H, N_Q, HEAD_D) output, input dtype.
    LSE_PTR: (B, H, N_Q) contiguous output, fp32 (fp64 for fp64 inputs):
        log2(sum_j exp2(s_j)) where s = log2(e) * (scale * q k^T + key_bias); +BIG for a row
        whose every logit is -inf (its o is 0).
    qk_scale: scale * log2(e).
    """
    acc_ty: tl.constexpr = LSE_PTR.dtype.element_ty
    qk_scale = tl.full((), qk_scale, acc_ty)

    pid_bh, off_b, off_h, offs_m = _program_block(H, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_D

    rows_m, cols_d = offs_m[:, None], offs_d[None, :]
    q_ptrs = _tile_ptrs(Q_PTR, off_b, off_h, rows_m, cols_d, sqb, sqh, sqm, sqd)
    # K is read transposed, (BLOCK_D, BLOCK_N), so q @ k^T is a plain dot.
    rows_nt, cols_dt = offs_n[None, :], offs_d[:, None]
    kt_ptrs = _tile_ptrs(K_PTR, off_b, off_h, rows_nt, cols_dt, skb, skh, skn, skd)
    v_ptrs = _tile_ptrs(V_PTR, off_b, off_h, offs_n[:, None], cols_d, svb, svh, svn, svd)
    b_ptrs = BIAS_PTR + off_b * sbb + off_h * sbh + offs_n * sbn

    q = _load_tile(q_ptrs, m_ok, d_ok, EVEN_M, EVEN_D)
    m_i = tl.full((BLOCK_M,), NEG_BIG, acc_ty)
    l_i = tl.zeros((BLOCK_M,), acc_ty)
    acc = tl.zeros((BLOCK_M, BLOCK_D), acc_ty)
    for start_n in range(0, N_K, BLOCK_N):
        n_ok = start_n + offs_n < N_K
        kt = _load_tile(kt_ptrs + start_n * skn, d_ok, n_ok, EVEN_D, EVEN_N)
        s = _scores(q, kt, b_ptrs + start_n * sbn, n_ok, qk_scale, HAS_BIAS, EVEN_N, DOT)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_ptrs + start_n * svn, n_ok, d_ok, EVEN_N, EVEN_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT, out_dtype=acc_ty)
        m_i = m_new

    # l >= 1 unless every logit of the row is -inf (every key masked): then acc = 0 gives o = 0,
    # and lse = +BIG makes the backward's probabilities 0, so no gradient either.
    dead = l_i == 0
    l_safe = tl.where(dead, 1.0, l_i)
    o_ptrs = _tile_ptrs(O_PTR, off_b, off_h, rows_m, cols_d, sob, soh, som, sod)
    _store_tile(
        o_ptrs, (acc / l_safe[:, None]).to(O_PTR.dtype.element_ty), m_ok, d_ok, EVEN_M, EVEN_D
    )
    # The lse after o's store: computed before it, it stays live across the store (12 more
    # registers for bf16 at d = 24 on sm_90).
    lse = tl.where(dead, -NEG_BIG, m_i + tl.log2(l_safe))
    _store_row(LSE_PTR + pid_bh.to(tl.int64) * N_Q + offs_m, lse, m_ok, EVEN_M)


@triton.jit
def _ma_bwd_delta_kernel(
    O_PTR, sob, soh, som, sod,  # (B, H, N_Q, HEAD_D)
    DO_PTR, sdob, sdoh, sdom, sdod,  # (B, H, N_Q, HEAD_D)
    DELTA_PTR,  # (B, H, N_Q) contiguous output, accumulation dtype
    H, N_Q, HEAD_D,
    EVEN_M: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Backward step 1: delta = rowsum(dO * O), the softmax-gradient correction.

    Grid: (cdiv(N_Q, BLOCK_M), B * H).
    O_PTR, DO_PTR: (B, H, N_Q, HEAD_D), any strides (dO may be an expanded gradient).
    DELTA_PTR: (B, H, N_Q) contiguous output, fp32 (fp64 for fp64 inputs).
    """
    acc_ty: tl.constexpr = DELTA_PTR.dtype.element_ty
    pid_bh, _, _, offs_m, m_ok, _, _, o, do = _block_tiles(
        O_PTR, sob, soh, som, sod, DO_PTR, sdob, sdoh, sdom, sdod, H, N_Q, HEAD_D,
        BLOCK_M, BLOCK_D, EVEN_M, EVEN_D,
    )  # fmt: skip
    delta = tl.sum(o.to(acc_ty) * do.to(acc_ty), 1)
    _store_row(DELTA_PTR + pid_bh.to(tl.int64) * N_Q + offs_m, delta, m_ok, EVEN_M)


@triton.jit
def _ma_bwd_dkdv_kernel(
    Q_PTR, sqb, sqh, sqm, sqd,  # (B, H, N_Q, HEAD_D)
    K_PTR, skb, skh, skn, skd,  # (B, H, N_K, HEAD_D)
    V_PTR, svb, svh, svn, svd,  # (B, H, N_K, HEAD_D)
    BIAS_PTR, sbb, sbh, sbn,  # (B, H, N_K); zero strides broadcast
    DO_PTR, sdob, sdoh, sdom, sdod,  # (B, H, N_Q, HEAD_D)
    LSE_PTR, DELTA_PTR,  # (B, H, N_Q) contiguous, accumulation dtype
    DK_PTR, DV_PTR, DBIAS_PTR,  # outputs: (B, H, N_K, HEAD_D) x2 contiguous; (B, H, N_K)
    H, N_Q, N_K, HEAD_D, sm_scale: tl.float64, qk_scale: tl.float64,
    HAS_BIAS: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Backward step 2: dK, dV and dbias for one block of keys of one (batch, head).

    Grid: (cdiv(N_K, BLOCK_N), B * H). The scores are recomputed transposed, (BLOCK_N, BLOCK_M),
    so that dV += P^T dO and dK += dS^T Q need no transposed tile.
    Q_PTR, DO_PTR: (B, H, N_Q, HEAD_D); K_PTR, V_PTR: (B, H, N_K, HEAD_D); any strides.
    BIAS_PTR: (B, H, N_K) with zero strides on broadcast dims (unused unless HAS_BIAS).
    LSE_PTR, DELTA_PTR: (B, H, N_Q) contiguous, from the forward and step 1.
    DK_PTR, DV_PTR: (B, H, N_K, HEAD_D) contiguous outputs, input dtype.
    DBIAS_PTR: (B, H, N_K) contiguous output, fp32 (fp64 for fp64 inputs), written only if
        HAS_BIAS: dbias[j] = sum_i dS[i, j], summed in a fixed order (deterministic).
    sm_scale: the logit scale; qk_scale: sm_scale * log2(e).
    """
    acc_ty: tl.constexpr = LSE_PTR.dtype.element_ty
    log2e = tl.full((), _LOG2E, acc_ty)
    sm_scale, qk_scale = _acc_scales(sm_scale, qk_scale, acc_ty)

    pid_bh, off_b, off_h, offs_n, n_ok, offs_d, d_ok, k, v = _block_tiles(
        K_PTR, skb, skh, skn, skd, V_PTR, svb, svh, svn, svd, H, N_K, HEAD_D,
        BLOCK_N, BLOCK_D, EVEN_N, EVEN_D,
    )  # fmt: skip
    if HAS_BIAS:
        b_ptrs = BIAS_PTR + off_b * sbb + off_h * sbh + offs_n * sbn
        bias = _load_row(b_ptrs, n_ok, 0.0, EVEN_N).to(acc_ty) * log2e

    # Q and dO read transposed, (BLOCK_D, BLOCK_M).
    offs_m = tl.arange(0, BLOCK_M)
    rows_mt, cols_dt = offs_m[None, :], offs_d[:, None]
    qt_ptrs = _tile_ptrs(Q_PTR, off_b, off_h, rows_mt, cols_dt, sqb, sqh, sqm, sqd)
    dot_ptrs = _tile_ptrs(DO_PTR, off_b, off_h, rows_mt, cols_dt, sdob, sdoh, sdom, sdod)
    lse_ptrs = LSE_PTR + pid_bh.to(tl.int64) * N_Q + offs_m
    delta_ptrs = DELTA_PTR + pid_bh.to(tl.int64) * N_Q + offs_m

    dk = tl.zeros((BLOCK_N, BLOCK_D), acc_ty)
    dv = tl.zeros((BLOCK_N, BLOCK_D), acc_ty)
    dbias = tl.zeros((BLOCK_N,), acc_ty)
    for start_m in range(0, N_Q, BLOCK_M):
        m_ok = start_m + offs_m < N_Q
        qt = _load_tile(qt_ptrs + start_m * sqm, d_ok, m_ok, EVEN_D, EVEN_M)
        dot = _load_tile(dot_ptrs + start_m * sdom, d_ok, m_ok, EVEN_D, EVEN_M)
        # A padded query row gets lse = +BIG, so its probabilities are exactly 0.
        lse = _load_row(lse_ptrs + start_m, m_ok, -NEG_BIG, EVEN_M)
        delta = _load_row(delta_ptrs + start_m, m_ok, 0.0, EVEN_M)
        st = tl.dot(k, qt, input_precision=DOT, out_dtype=acc_ty) * qk_scale
        if HAS_BIAS:
            st += bias[:, None]
        if not EVEN_N:
            st = tl.where(n_ok[:, None], st, NEG_INF)
        pt = tl.exp2(st - lse[None, :])
        dv += tl.dot(pt.to(dot.dtype), tl.trans(dot), input_precision=DOT, out_dtype=acc_ty)
        dpt = tl.dot(v, dot, input_precision=DOT, out_dtype=acc_ty)
        dst = pt * (dpt - delta[None, :])
        if HAS_BIAS:
            dbias += tl.sum(dst, 1)
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT, out_dtype=acc_ty)

    out_off = pid_bh.to(tl.int64) * N_K * HEAD_D + offs_n[:, None] * HEAD_D + offs_d[None, :]
    _store_tile(
        DK_PTR + out_off, (dk * sm_scale).to(DK_PTR.dtype.element_ty), n_ok, d_ok, EVEN_N, EVEN_D
    )
    _store_tile(DV_PTR + out_off, dv.to(DV_PTR.dtype.element_ty), n_ok, d_ok, EVEN_N, EVEN_D)
    if HAS_BIAS:
        _store_row(DBIAS_PTR + pid_bh.to(tl.int64) * N_K + offs_n, dbias, n_ok, EVEN_N)


@triton.jit
def _ma_bwd_dq_kernel(
    Q_PTR, sqb, sqh, sqm, sqd,  # (B, H, N_Q, HEAD_D)
    K_PTR, skb, skh, skn, skd,  # (B, H, N_K, HEAD_D)
    V_PTR, svb, svh, svn, svd,  # (B, H, N_K, HEAD_D)
    BIAS_PTR, sbb, sbh, sbn,  # (B, H, N_K); zero strides broadcast
    DO_PTR, sdob, sdoh, sdom, sdod,  # (B, H, N_Q, HEAD_D)
    LSE_PTR, DELTA_PTR,  # (B, H, N_Q) contiguous, accumulation dtype
    DQ_PTR,  # output: (B, H, N_Q, HEAD_D) contiguous
    H, N_Q, N_K, HEAD_D, sm_scale: tl.float64, qk_scale: tl.float64,
    HAS_BIAS: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Backward step 3: dQ for one block of queries of one (batch, head).

    Grid: (cdiv(N_Q, BLOCK_M), B * H).
    Q_PTR, DO_PTR: (B, H, N_Q, HEAD_D); K_PTR, V_PTR: (B, H, N_K, HEAD_D); any strides.
    BIAS_PTR: (B, H, N_K) with zero strides on broadcast dims (unused unless HAS_BIAS).
    LSE_PTR, DELTA_PTR: (B, H, N_Q) contiguous, from the forward and step 1.
    DQ_PTR: (B, H, N_Q, HEAD_D) contiguous output, input dtype.
    sm_scale: the logit scale; qk_scale: sm_scale * log2(e).
    """
    acc_ty: tl.constexpr = LSE_PTR.dtype.element_ty
    sm_scale, qk_scale = _acc_scales(sm_scale, qk_scale, acc_ty)

    pid_bh, off_b, off_h, offs_m, m_ok, offs_d, d_ok, q, do = _block_tiles(
        Q_PTR, sqb, sqh, sqm, sqd, DO_PTR, sdob, sdoh, sdom, sdod, H, N_Q, HEAD_D,
        BLOCK_M, BLOCK_D, EVEN_M, EVEN_D,
    )  # fmt: skip
    # A padded query row gets lse = +BIG, so its probabilities are exactly 0.
    lse = _load_row(LSE_PTR + pid_bh.to(tl.int64) * N_Q + offs_m, m_ok, -NEG_BIG, EVEN_M)
    delta = _load_row(DELTA_PTR + pid_bh.to(tl.int64) * N_Q + offs_m, m_ok, 0.0, EVEN_M)

    # K and V read transposed, (BLOCK_D, BLOCK_N).
    offs_n = tl.arange(0, BLOCK_N)
    rows_nt, cols_dt = offs_n[None, :], offs_d[:, None]
    kt_ptrs = _tile_ptrs(K_PTR, off_b, off_h, rows_nt, cols_dt, skb, skh, skn, skd)
    vt_ptrs = _tile_ptrs(V_PTR, off_b, off_h, rows_nt, cols_dt, svb, svh, svn, svd)
    b_ptrs = BIAS_PTR + off_b * sbb + off_h * sbh + offs_n * sbn

    dq = tl.zeros((BLOCK_M, BLOCK_D), acc_ty)
    for start_n in range(0, N_K, BLOCK_N):
        n_ok = start_n + offs_n < N_K
        kt = _load_tile(kt_ptrs + start_n * skn, d_ok, n_ok, EVEN_D, EVEN_N)
        vt = _load_tile(vt_ptrs + start_n * svn, d_ok, n_ok, EVEN_D, EVEN_N)
        s = _scores(q, kt, b_ptrs + start_n * sbn, n_ok, qk_scale, HAS_BIAS, EVEN_N, DOT)
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, vt, input_precision=DOT, out_dtype=acc_ty)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT, out_dtype=acc_ty)

    dq_ptrs = (
        DQ_PTR + pid_bh.to(tl.int64) * N_Q * HEAD_D + offs_m[:, None] * HEAD_D + offs_d[None, :]
    )
    _store_tile(dq_ptrs, (dq * sm_scale).to(DQ_PTR.dtype.element_ty), m_ok, d_ok, EVEN_M, EVEN_D)


# --------------------------------------------------------------------------- launch configs


def _block_d(d: int) -> int:
    # tl.dot needs every dim >= 16.
    return max(16, triton.next_power_of_2(d))


def _cfg(block_m: int, block_n: int, warps: int, stages: int) -> dict[str, int]:
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": warps, "num_stages": stages}


# (fwd, dkdv, dq) launch configs for Hopper by dtype family and head-dim bucket (BLOCK_D 16/32,
# 64, 128). Chosen by compiling every kernel for sm_90 (ragged sizes, with bias) and taking
# the widest tiles whose SASS shows no register spills; where none is spill-free (fp32 with
# 3xTF32 triples the dot operands; fp64 d=128), the least spilling. Not yet timed on a GPU.
_GPU_CONFIGS = {
    "half": {
        32: (_cfg(128, 64, 8, 3), _cfg(32, 128, 8, 3), _cfg(128, 32, 8, 3)),
        64: (_cfg(128, 64, 8, 3), _cfg(32, 128, 8, 3), _cfg(128, 32, 8, 3)),
        128: (_cfg(128, 32, 8, 3), _cfg(16, 32, 4, 3), _cfg(64, 32, 8, 3)),
    },
    "fp32": {
        32: (_cfg(64, 32, 4, 2), _cfg(32, 64, 4, 2), _cfg(64, 32, 4, 2)),
        64: (_cfg(64, 32, 8, 2), _cfg(16, 32, 4, 2), _cfg(32, 16, 4, 2)),
        128: (_cfg(64, 32, 8, 2), _cfg(16, 32, 4, 2), _cfg(32, 16, 4, 2)),
    },
    "fp64": {
        32: (_cfg(32, 32, 4, 1), _cfg(16, 32, 4, 1), _cfg(32, 32, 4, 1)),
        64: (_cfg(32, 32, 4, 1), _cfg(16, 32, 4, 1), _cfg(16, 16, 4, 1)),
        128: (_cfg(32, 16, 4, 1), _cfg(16, 16, 4, 1), _cfg(16, 16, 4, 1)),
    },
}


def _configs(dtype: torch.dtype, d: int) -> dict[str, dict[str, int]]:
    """Block sizes and launch options per kernel ("fwd", "pre", "dkdv", "dq").

    The interpreter gets small blocks so that the loops over blocks are exercised and stay fast.
    """
    if interpreter_enabled():
        small = {"BLOCK_M": 16, "BLOCK_N": 16}
        return {"fwd": small, "pre": {"BLOCK_M": 16}, "dkdv": small, "dq": small}
    family = {torch.float32: "fp32", torch.float64: "fp64"}.get(dtype, "half")
    bucket = 32 if d <= 32 else 64 if d <= 64 else 128
    fwd, dkdv, dq = _GPU_CONFIGS[family][bucket]
    return {"fwd": fwd, "pre": {"BLOCK_M": 64, "num_warps": 4}, "dkdv": dkdv, "dq": dq}


def _dot_precision(dtype: torch.dtype, fp32_precision: str) -> str:
    # Only fp32 operands have a choice; "ieee" is the one mode every dtype accepts.
    return fp32_precision if dtype == torch.float32 else "ieee"


def _qkvb_args(q: Tensor, k: Tensor, v: Tensor, key_bias) -> tuple:
    """q, k, v and key_bias, each followed by its strides, in kernel argument order; zero
    strides broadcast a size-1 B or h of key_bias (and stand for a None one, with q as a
    pointer that is never read)."""
    if key_bias is None:
        bias = (q, 0, 0, 0)
    else:
        sbb = 0 if key_bias.shape[0] == 1 else key_bias.stride(0)
        sbh = 0 if key_bias.shape[1] == 1 else key_bias.stride(1)
        bias = (key_bias, sbb, sbh, key_bias.stride(2))
    return (q, *q.stride(), k, *k.stride(), v, *v.stride(), *bias)


def _head_flags(d: int) -> dict:
    """The constexprs every kernel takes from the head dim: EVEN_D, BLOCK_D."""
    block_d = _block_d(d)
    return dict(EVEN_D=d == block_d, BLOCK_D=block_d)


def _launch(kernel, cfg: dict, n_blocks: int, bh: int, n_q: int, n_k: int, *args, **flags):
    """Launch ``kernel`` on a (n_blocks, B * H) grid with the launch config ``cfg``, adding
    the EVEN_M and (for a config with a BLOCK_N) EVEN_N flags that drop its masks."""
    even = {"EVEN_M": n_q % cfg["BLOCK_M"] == 0}
    if "BLOCK_N" in cfg:
        even["EVEN_N"] = n_k % cfg["BLOCK_N"] == 0
    _registry.launch(kernel, (n_blocks, bh), *args, **even, **flags, **cfg)


# --------------------------------------------------------------------------- torch.library ops


def _fwd_outputs(q: Tensor) -> tuple[Tensor, Tensor]:
    """Empty o (B, h, Nq, d) and lse (B, h, Nq)."""
    B, H, n_q, d = q.shape
    o = torch.empty((B, H, n_q, d), dtype=q.dtype, device=q.device)
    return o, torch.empty((B, H, n_q), dtype=compute_dtype(q.dtype), device=q.device)


def _memory_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None, scale: float, fp32_precision: str
) -> tuple[Tensor, Tensor]:
    """Returns o (B, h, Nq, d) and the base-2 logsumexp (B, h, Nq) saved for the backward."""
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    o, lse = _fwd_outputs(q)
    cfg = _configs(q.dtype, d)["fwd"]
    _launch(
        _ma_fwd_kernel, cfg, triton.cdiv(n_q, cfg["BLOCK_M"]), B * H, n_q, n_k,
        *_qkvb_args(q, k, v, key_bias), o, *o.stride(), lse, H, n_q, n_k, d, scale * LOG2E,
        HAS_BIAS=key_bias is not None, DOT=_dot_precision(q.dtype, fp32_precision),
        **_head_flags(d),
    )  # fmt: skip
    return o, lse


def _memory_attention_fwd_fake(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None, scale: float, fp32_precision: str
) -> tuple[Tensor, Tensor]:
    return _fwd_outputs(q)


def _memory_attention_bwd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None,
    o: Tensor, lse: Tensor, scale: float, fp32_precision: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Returns dq, dk, dv and dkey_bias (key_bias's shape; empty when key_bias is None)."""
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    acc_dtype = compute_dtype(q.dtype)
    cfgs = _configs(q.dtype, d)
    flags = _head_flags(d)

    delta = torch.empty((B, H, n_q), dtype=acc_dtype, device=q.device)
    cfg = cfgs["pre"]
    _launch(
        _ma_bwd_delta_kernel, cfg, triton.cdiv(n_q, cfg["BLOCK_M"]), B * H, n_q, n_k,
        o, *o.stride(), do, *do.stride(), delta, H, n_q, d, **flags,
    )  # fmt: skip

    dq = torch.empty((B, H, n_q, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, n_k, d), dtype=q.dtype, device=q.device)
    dv = torch.empty((B, H, n_k, d), dtype=q.dtype, device=q.device)
    has_bias = key_bias is not None
    dbias = torch.empty((B, H, n_k) if has_bias else (0,), dtype=acc_dtype, device=q.device)
    inputs = (*_qkvb_args(q, k, v, key_bias), do, *do.stride(), lse, delta)
    scalars = (H, n_q, n_k, d, scale, scale * LOG2E)
    flags.update(HAS_BIAS=has_bias, DOT=_dot_precision(q.dtype, fp32_precision))
    for kernel, name, outputs, n, block in (
        (_ma_bwd_dkdv_kernel, "dkdv", (dk, dv, dbias), n_k, "BLOCK_N"),  # a program per key block
        (_ma_bwd_dq_kernel, "dq", (dq,), n_q, "BLOCK_M"),  # a program per query block
    ):
        cfg = cfgs[name]
        n_blocks = triton.cdiv(n, cfg[block])
        _launch(kernel, cfg, n_blocks, B * H, n_q, n_k, *inputs, *outputs, *scalars, **flags)

    return dq, dk, dv, (key_bias_grad(dbias, key_bias) if has_bias else dbias)


def _memory_attention_bwd_fake(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None,
    o: Tensor, lse: Tensor, scale: float, fp32_precision: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    dbias = key_bias.new_empty(key_bias.shape) if key_bias is not None else q.new_empty((0,))
    return q.new_empty(q.shape), k.new_empty(k.shape), k.new_empty(k.shape), dbias


_fwd_op = _registry.triton_kernel_op("hfsti::memory_attention_fwd", _memory_attention_fwd_fake)(
    _memory_attention_fwd
)
_registry.triton_kernel_op("hfsti::memory_attention_bwd", _memory_attention_bwd_fake)(
    _memory_attention_bwd
)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, key_bias, scale, fp32_precision = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, key_bias, o, lse)
    ctx.scale = scale
    ctx.fp32_precision = fp32_precision
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do: Tensor, dlse: Tensor | None):
    q, k, v, key_bias, o, lse = ctx.saved_tensors
    dq, dk, dv, dbias = torch.ops.hfsti.memory_attention_bwd(
        do, q, k, v, key_bias, o, lse, ctx.scale, ctx.fp32_precision
    )
    return dq, dk, dv, (dbias if key_bias is not None else None), None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public API


def _ma_triton(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None, scale: float | None = None,
    *, fp32_precision: str = "tf32x3",
) -> Tensor:  # fmt: skip
    check_head_dim(q, MAX_HEAD_DIM, "the Triton kernels")
    scale = attention_scale(scale, q.shape[-1])
    if key_bias is not None:
        key_bias = rebase_key_bias(key_bias)
    o, _ = torch.ops.hfsti.memory_attention_fwd(q, k, v, key_bias, scale, fp32_precision)
    return o


_registry.register_implementation("memory_attention", "triton", _ma_triton)


@autocast_policy("lower")
def memory_attention(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None, scale: float | None = None,
    *, backend: str | None = None, fp32_precision: str = "tf32x3",
) -> Tensor:  # fmt: skip
    """Multi-head attention with an additive per-key bias (docs/ops.md, memory_attention), fused
    in Triton.

    Args:
        q: (B, h, Nq, d); k, v: (B, h, Nk, d); any strides, fp16/bf16/fp32/fp64.
        key_bias: None or (B, h, Nk); a size-1 B or h broadcasts (its gradient keeps that shape).
        scale: logit scale, default ``d ** -0.5``.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
        fp32_precision: matrix-product mode for fp32 inputs: "tf32x3" (default, about fp32
            accuracy on tensor cores), "ieee" (exact fp32 products, slower) or "tf32"
            (fastest, about 1e-3 relative error: an explicit opt-in).
    Returns:
        o: (B, h, Nq, d), dtype of q, ``softmax(scale * q @ k^T + key_bias[..., None, :]) @ v``.
        Differentiable in q, k, v and key_bias; backward is deterministic.
    """
    check_memory_attention_inputs(q, k, v, key_bias, scale)
    if fp32_precision not in FP32_PRECISIONS:  # checked on every backend, the reference's too
        raise ValueError(
            f"fp32_precision: expected one of {FP32_PRECISIONS}, got {fp32_precision!r}"
        )
    name = select_backend(backend, q)
    if name == "reference":
        return reference_memory_attention(q, k, v, key_bias, scale)
    impl = _registry.implementation("memory_attention", name)
    return impl(q, k, v, key_bias, scale, fp32_precision=fp32_precision)
