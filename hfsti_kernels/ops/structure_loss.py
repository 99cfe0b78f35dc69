"""Fused Triton kernels for ``structure_loss`` (docs/ops.md, structure_loss).

    w    = 1 + 5 |avg_pool2d(t, 31, stride=1, padding=15) - t|     (count_include_pad, zero pad)
    loss = mean_b [ sum(w bce(x, t)) / sum(w) + 1 - (I + 1) / (U - I + 1) ]
    I = sum(p t w),  U = sum((p + t) w),  p = sigmoid(x)            (sums over one image)

Design: the image is cut into BLOCK x BLOCK tiles (BLOCK = 32), one program per (image, tile),
so any H, W works and a 352x352 batch fills the GPU. A program loads the (2 BLOCK)^2 target
halo around its tile (zero outside the image: the zero padding of the pool) and gets the 31x31
box sums of the whole tile as two dense products with 0/1 band matrices built from indices,
``A @ halo @ A^T`` (separable box filter on ``tl.dot``, no shared-memory shuffles). Everything
per pixel (w, the stable BCE, sigmoid) stays in registers and the tile writes only its four
partial sums (sum w bce, sum w, sum p t w, sum (p + t) w).

Passes: forward = partial-sum kernel + a one-program finalize kernel that reduces each image's
partials in a fixed order, forms wbce + wiou and the batch mean; it also keeps (sum w, I + 1,
U - I + 1) per image for backward. Backward = one kernel of the same tiling that recomputes w
and p and writes

    dx = g / B * [w (p - t) / sum w + (-t w / den + num w (1 - t) / den^2) p (1 - p)].

No atomics: every reduction has a fixed order, so results are bitwise reproducible.

Limits: any B, H, W >= 1. Computation is in float32 for fp16/bf16/fp32 inputs and in float64
for float64 inputs; the target is cast to the logits' dtype first, as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti.ops import autocast_policy, check_loss_inputs
from hfsti.ops import structure_loss as _reference
from hfsti_kernels import _registry
from hfsti_kernels._backend import select_backend
from hfsti_kernels.ops._reduce import column_sum, program_row

__all__ = ["structure_loss"]

BLOCK = 32  # output tile side; the halo tile is 2 * BLOCK >= BLOCK + 2 * RADIUS + 1
RADIUS = 15  # the 31x31 window of the weight (docs/ops.md, structure_loss)
N_PARTIALS = 4
N_STATS = 3


@triton.jit
def _sigmoid_parts(x):
    """(p, 1 - p, log1p(exp(-|x|))) of a tile, each without cancellation for large |x|."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    r = 1.0 / u
    pos = x >= 0
    p = tl.where(pos, r, e * r)
    q = tl.where(pos, e * r, r)
    # log1p(e) = log(u) * e / (u - 1) (u - 1 is exact): accurate when e is below rounding of 1.
    is_one = u == 1.0
    lg = tl.where(is_one, e, tl.log(u) * e / tl.where(is_one, 1.0, u - 1.0))
    return p, q, lg


@triton.jit
def _tile_terms(
    X_PTR, T_PTR, H, W, BLOCK: tl.constexpr, RADIUS: tl.constexpr, DTYPE: tl.constexpr
):  # fmt: skip
    """Logits x, target t, weight w, validity mask and element offsets of this program's
    (BLOCK, BLOCK) tile, on a grid (B, tiles along H, tiles along W).

    X_PTR, T_PTR: (B, 1, H, W) contiguous.
    """
    plane = tl.program_id(0).to(tl.int64) * H * W
    r0 = tl.program_id(1) * BLOCK
    c0 = tl.program_id(2) * BLOCK
    HALO: tl.constexpr = 2 * BLOCK
    i = tl.arange(0, BLOCK)
    k = tl.arange(0, HALO)
    hr = r0 - (RADIUS + 1) + k
    hc = c0 - (RADIUS + 1) + k
    hmask = ((hr >= 0) & (hr < H))[:, None] & ((hc >= 0) & (hc < W))[None, :]
    halo = tl.load(T_PTR + plane + hr[:, None] * W + hc[None, :], mask=hmask, other=0.0)
    halo = halo.to(DTYPE)
    # Halo index k sits at offset k - RADIUS - 1 from tile index i: the window is k in
    # [i + 1, i + 2 RADIUS + 1], so A[i, k] = 1 there and box = A @ halo @ A^T.
    a = ((k[None, :] > i[:, None]) & (k[None, :] <= i[:, None] + 2 * RADIUS + 1)).to(DTYPE)
    at = ((k[:, None] > i[None, :]) & (k[:, None] <= i[None, :] + 2 * RADIUS + 1)).to(DTYPE)
    box = tl.dot(tl.dot(a, halo, input_precision="ieee"), at, input_precision="ieee")

    rows = r0 + i
    cols = c0 + i
    mask = (rows < H)[:, None] & (cols < W)[None, :]
    off = plane + rows[:, None] * W + cols[None, :]
    x = tl.load(X_PTR + off, mask=mask, other=0.0).to(DTYPE)
    t = tl.load(T_PTR + off, mask=mask, other=0.0).to(DTYPE)
    area: tl.constexpr = (2 * RADIUS + 1) * (2 * RADIUS + 1)
    w = 1.0 + 5.0 * tl.abs(box / area - t)
    return x, t, w, mask, off


@triton.jit
def _sl_partial_kernel(
    X_PTR, T_PTR, PART_PTR, H, W, BLOCK: tl.constexpr, RADIUS: tl.constexpr
):  # fmt: skip
    """Grid (B, tiles along H, tiles along W); one program per tile.

    X_PTR, T_PTR: (B, 1, H, W) contiguous logits and target.
    PART_PTR: (B, n_tiles, 4) in the compute dtype: sum w bce, sum w, sum p t w, sum (p + t) w.
    """
    x, t, w, mask, _ = _tile_terms(X_PTR, T_PTR, H, W, BLOCK, RADIUS, PART_PTR.dtype.element_ty)
    p, _, lg = _sigmoid_parts(x)
    bce = tl.maximum(x, 0.0) - x * t + lg
    out = program_row(PART_PTR, 4)
    tl.store(out + 0, tl.sum(tl.sum(tl.where(mask, w * bce, 0.0), axis=1), axis=0))
    tl.store(out + 1, tl.sum(tl.sum(tl.where(mask, w, 0.0), axis=1), axis=0))
    tl.store(out + 2, tl.sum(tl.sum(tl.where(mask, p * t * w, 0.0), axis=1), axis=0))
    tl.store(out + 3, tl.sum(tl.sum(tl.where(mask, (p + t) * w, 0.0), axis=1), axis=0))


@triton.jit
def _sl_finalize_kernel(PART_PTR, STATS_PTR, OUT_PTR, B, N_TILES, BLOCK_T: tl.constexpr):
    """One program: per-image reductions in a fixed order, then the batch mean.

    PART_PTR: (B, N_TILES, 4) partials; STATS_PTR: (B, 3) output (sum w, I + 1, U - I + 1);
    OUT_PTR: 0-d loss in the logits' dtype.
    """
    total = tl.zeros((), dtype=PART_PTR.dtype.element_ty)
    for b in range(B):
        sw = column_sum(PART_PTR, b, N_TILES, 4, 1, BLOCK_T)
        s_i = column_sum(PART_PTR, b, N_TILES, 4, 2, BLOCK_T)
        num = s_i + 1.0
        den = column_sum(PART_PTR, b, N_TILES, 4, 3, BLOCK_T) - s_i + 1.0
        total += column_sum(PART_PTR, b, N_TILES, 4, 0, BLOCK_T) / sw + 1.0 - num / den
        tl.store(STATS_PTR + b * 3 + 0, sw)
        tl.store(STATS_PTR + b * 3 + 1, num)
        tl.store(STATS_PTR + b * 3 + 2, den)
    tl.store(OUT_PTR, (total / B).to(OUT_PTR.dtype.element_ty))


@triton.jit
def _sl_bwd_kernel(
    DOUT_PTR, X_PTR, T_PTR, STATS_PTR, DX_PTR, B, H, W, BLOCK: tl.constexpr, RADIUS: tl.constexpr
):  # fmt: skip
    """Grid (B, tiles along H, tiles along W); one program per tile.

    DOUT_PTR: 0-d incoming gradient; X_PTR, T_PTR: (B, 1, H, W) contiguous;
    STATS_PTR: (B, 3) from the forward; DX_PTR: (B, 1, H, W) output in the logits' dtype.
    """
    b = tl.program_id(0)
    dt = STATS_PTR.dtype.element_ty
    x, t, w, mask, off = _tile_terms(X_PTR, T_PTR, H, W, BLOCK, RADIUS, dt)
    p, q, _ = _sigmoid_parts(x)
    sw = tl.load(STATS_PTR + b * 3 + 0)
    num = tl.load(STATS_PTR + b * 3 + 1)
    den = tl.load(STATS_PTR + b * 3 + 2)
    g = tl.load(DOUT_PTR).to(dt) / B
    dwiou_dp = (num * (1.0 - t) / den - t) * w / den
    dx = g * (w * (p - t) / sw + dwiou_dp * p * q)
    tl.store(DX_PTR + off, dx.to(DX_PTR.dtype.element_ty), mask=mask)


def _prepare(logits: Tensor, target: Tensor):
    """Contiguous inputs, the compute dtype and the tile grid."""
    B, _, H, W = logits.shape
    cdtype = compute_dtype(logits.dtype)
    grid = (B, triton.cdiv(H, BLOCK), triton.cdiv(W, BLOCK))
    return logits.contiguous(), target.contiguous(), cdtype, grid


@_registry.triton_kernel_op("hfsti::structure_loss")
def _sl_op(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    x, t, cdtype, grid = _prepare(logits, target)
    B = x.shape[0]
    n_tiles = grid[1] * grid[2]
    part = torch.empty((B, n_tiles, N_PARTIALS), dtype=cdtype, device=x.device)
    stats = torch.empty((B, N_STATS), dtype=cdtype, device=x.device)
    loss = torch.empty((), dtype=x.dtype, device=x.device)
    _registry.launch(
        _sl_partial_kernel, grid, x, t, part, x.shape[2], x.shape[3], BLOCK=BLOCK, RADIUS=RADIUS,
    )  # fmt: skip
    _registry.launch(
        _sl_finalize_kernel, (1,), part, stats, loss, B, n_tiles,
        BLOCK_T=min(1024, triton.next_power_of_2(n_tiles)),
    )  # fmt: skip
    return loss, stats


@_registry.triton_kernel_op("hfsti::structure_loss_backward")
def _sl_bwd_op(dout: Tensor, logits: Tensor, target: Tensor, stats: Tensor) -> Tensor:
    x, t, _, grid = _prepare(logits, target)
    dx = torch.empty_like(x)
    _registry.launch(
        _sl_bwd_kernel, grid, dout.contiguous(), x, t, stats, dx, x.shape[0], x.shape[2],
        x.shape[3], BLOCK=BLOCK, RADIUS=RADIUS,
    )  # fmt: skip
    return dx


def _setup_context(ctx, inputs, output):
    logits, target = inputs
    _, stats = output
    ctx.mark_non_differentiable(stats)
    ctx.save_for_backward(logits, target, stats)


def _backward(ctx, dloss, _dstats):
    logits, target, stats = ctx.saved_tensors
    return _sl_bwd_op(dloss, logits, target, stats), None


_sl_op.register_autograd(_backward, setup_context=_setup_context)


def _sl_triton(logits: Tensor, target: Tensor) -> Tensor:
    return _sl_op(logits, target.detach().to(logits.dtype))[0]


_registry.register_implementation("structure_loss", "triton", _sl_triton)


@autocast_policy("fp32")
def structure_loss(logits: Tensor, target: Tensor, *, backend: str | None = None) -> Tensor:
    """Drop-in for :func:`hfsti.ops.structure_loss`, fused in Triton.

    Args:
        logits: (B, 1, H, W), any strides.
        target: (B, 1, H, W) in [0, 1], same device; cast to the logits' dtype (as the
            reference does). Gets no gradient.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        A 0-d tensor in the logits' dtype: mean over the batch of wbce + wiou; differentiable
        in logits.
    """
    check_loss_inputs(logits, target)
    name = select_backend(backend, logits)
    if name == "reference":
        return _reference(logits, target)
    return _registry.implementation("structure_loss", name)(logits, target)
