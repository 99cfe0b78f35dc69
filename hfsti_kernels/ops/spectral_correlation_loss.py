"""Fused Triton kernels for ``spectral_correlation_loss`` (docs/ops.md,
spectral_correlation_loss).

    P = sqrt(|fft2(sigmoid(x))|^2 + eps^2),  G = sqrt(|fft2(t)|^2 + eps^2)      (norm="ortho")
    r_b = sum((P - mean P)(G - mean G)) / (||P - mean P|| ||G - mean G|| + eps)
    loss = 1 - mean_b r_b

Half spectrum: x and t are real, so bin (k, l) of the full spectrum is the conjugate of bin
(-k mod H, W - l). Every column l of the half spectrum (l <= W // 2) thus stands for c_l columns
of the full one, with the same magnitudes up to a permutation of the rows: c_l = 1 for l = 0
and, for even W, l = W / 2, and 2 otherwise (sum c_l = W). Any sum over all H W bins of a function
of (|X|, |X_t|), the means included, is therefore the c-weighted sum over the half spectrum, and
the loss gradient reaches the half-spectrum bin (k, l) c_l times.

Design, any H, W: the transform is the dense product ``X = F_H @ x @ G_W`` with the matrices of
``hfsti_kernels.dft`` (zero-padded to power-of-two sizes, so matrix loads need no masks), tiled
in 32 x 32 output blocks (or the padded size when smaller) with 16-wide contraction blocks, so
no program holds more than a few small tiles whatever the plane size. Passes:

- forward 1, grid (B, k-blocks, l-blocks): one program computes a 32 x 32 block of both
  spectra, sigmoid fused into the loads (``sum_h F[k, h] sum_w x[h, w] G[w, l]``, the inner
  product redone per k-block: cheaper than a round trip through memory at these sizes), turns
  it into P and G and writes the block's (count, means, centred second moments) and the spectra
  (Re, Im of the prediction's, |.| of the target's) for backward.
- forward 2, one program: per image, merges the block moments in a fixed order (total = within
  + between blocks: no cancellation), forms r_b, the batch mean and the two per-image
  coefficients of dL/dP that backward needs.
- backward, grid (B, h-blocks, w-blocks): per bin dL/dP = -g/B (alpha (G - mean G) - beta
  (P - mean P)); dL/dX = c dL/dP X / P; the adjoint transform ``Re(conj(F_H) Y conj(G_W)^T)``,
  then the sigmoid derivative, all in one kernel.

No atomics, fixed reduction orders: bitwise reproducible. Computation is in float32 for
fp16/bf16/fp32 inputs (products at ``dft.dot_precision``) and float64 for float64 inputs (eps
enters the kernels as a float32 scalar; its rounding changes the result by about 1e-16 of eps).
Limits: any B, H, W >= 1; the DFT matrices are dense, O(H^2 + W^2) memory and O(H W (H + W))
work per image, fine up to the model's 352 x 352.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti.ops import autocast_policy, check_loss_inputs
from hfsti.ops import spectral_correlation_loss as _reference
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels.ops._reduce import program_row, tile_rows

__all__ = ["spectral_correlation_loss"]

# Output blocks 32 x 32, contraction blocks 16 wide, 8 warps: chosen when the products were
# FMA dots (ieee fp32), as the largest blocks that compile for sm_90 without register spills in
# float32 and float64; products now run at ``dft.dot_precision`` (benchmarks/compile_report.py).
OUT_BLOCK = 32
RED_BLOCK = 16
NUM_WARPS = 8
N_PARTIALS = 6  # per spectrum block: count, mean P, mean G, S_PP, S_GG, S_PG (centred)
N_COEFS = 4  # per image: mean P, mean G, alpha, beta


@triton.jit
def _hermitian_weight(l, W):
    """c_l: 1 for column 0 and (even W) column W / 2, else 2."""
    return tl.where((l == 0) | (2 * l == W), 1.0, 2.0)


@triton.jit
def _sigmoid(x):
    """(sigmoid(x), sigmoid'(x)) from exp(-|x|): no overflow, and the derivative keeps its
    relative accuracy where 1 - sigmoid(x) would round to 0."""
    e = tl.exp(-tl.abs(x))
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0, r, e * r), e * r * r


@triton.jit
def _zeros4(BR: tl.constexpr, BC: tl.constexpr, DTYPE: tl.constexpr):
    """Four zero (BR, BC) tiles: the accumulators of the real and imaginary parts of the two
    spectra (of sigmoid(x) and of t)."""
    z = tl.zeros((BR, BC), dtype=DTYPE)
    return z, tl.zeros_like(z), tl.zeros_like(z), tl.zeros_like(z)


@triton.jit
def _w_pass_blk(
    X_PTR, T_PTR, plane, h, l, H, W, FW_PTR,
    W_P: tl.constexpr, WH_P: tl.constexpr, BH: tl.constexpr, BL: tl.constexpr, BW: tl.constexpr,
    DTYPE: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Rows h and half-spectrum columns l of the W pass ``. @ G_W`` of sigmoid(x) and of t in
    the (H, W) planes at offset ``plane``, summed over BW-wide blocks of w: (ur, ui, vr, vi),
    the real and imaginary parts of each, (BH, BL) in DTYPE."""
    ur, ui, vr, vi = _zeros4(BH, BL, DTYPE)
    for w0 in range(0, W, BW):
        w = w0 + tl.arange(0, BW)
        m = (h < H)[:, None] & (w < W)[None, :]
        off = plane + h[:, None] * W + w[None, :]
        s, _ = _sigmoid(tl.load(X_PTR + off, mask=m, other=0.0).to(DTYPE))
        s = tl.where(m, s, 0.0)  # sigmoid(0) = 1/2: padding must be re-zeroed
        t = tl.load(T_PTR + off, mask=m, other=0.0).to(DTYPE)
        g_off = w[:, None] * WH_P + l[None, :]
        gr = tl.load(FW_PTR + g_off)
        gi = tl.load(FW_PTR + W_P * WH_P + g_off)
        ur += tl.dot(s, gr, input_precision=DOT)
        ui += tl.dot(s, gi, input_precision=DOT)
        vr += tl.dot(t, gr, input_precision=DOT)
        vi += tl.dot(t, gi, input_precision=DOT)
    return ur, ui, vr, vi


@triton.jit
def _scc_fwd_kernel(
    X_PTR, T_PTR, FH_PTR, FW_PTR,  # (B, 1, H, W) logits, target; DFT matrices
    SPEC_PTR, PART_PTR,  # outputs: (B, 3, H, W // 2 + 1) spectra; (B, n_blocks, 6) moments
    H, W, eps,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BK: tl.constexpr, BL: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Grid (B, cdiv(H, BK), cdiv(W // 2 + 1, BL)); one program per spectrum block.

    X_PTR, T_PTR: (B, 1, H, W) contiguous logits and target.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices (dft.py) in the compute dtype.
    SPEC_PTR: (B, 3, H, W // 2 + 1) output: Re X, Im X of sigmoid(x), and G.
    PART_PTR: (B, n_blocks, 6) output: the block's c-weighted count, means of P and G, and
    centred sums S_PP, S_GG, S_PG.
    """
    b = tl.program_id(0)
    dt = FH_PTR.dtype.element_ty
    WH = W // 2 + 1
    plane = b.to(tl.int64) * H * W
    k = tl.program_id(1) * BK + tl.arange(0, BK)
    l = tl.program_id(2) * BL + tl.arange(0, BL)
    xr, xi, tr, ti = _zeros4(BK, BL, dt)
    for h0 in range(0, H, BH):
        h = h0 + tl.arange(0, BH)
        ur, ui, vr, vi = _w_pass_blk(
            X_PTR, T_PTR, plane, h, l, H, W, FW_PTR, W_P, WH_P, BH, BL, BW, dt, DOT
        )
        f_off = k[:, None] * H_P + h[None, :]
        fr = tl.load(FH_PTR + f_off)
        fi = tl.load(FH_PTR + H_P * H_P + f_off)
        xr += tl.dot(fr, ur, input_precision=DOT) - tl.dot(fi, ui, input_precision=DOT)
        xi += tl.dot(fr, ui, input_precision=DOT) + tl.dot(fi, ur, input_precision=DOT)
        tr += tl.dot(fr, vr, input_precision=DOT) - tl.dot(fi, vi, input_precision=DOT)
        ti += tl.dot(fr, vi, input_precision=DOT) + tl.dot(fi, vr, input_precision=DOT)

    valid = (k < H)[:, None] & (l < WH)[None, :]
    c = tl.where(valid, _hermitian_weight(l, W)[None, :], 0.0).to(dt)
    p = tl.sqrt(xr * xr + xi * xi + eps * eps)
    g = tl.sqrt(tr * tr + ti * ti + eps * eps)

    spec = SPEC_PTR + b.to(tl.int64) * 3 * H * WH + k[:, None] * WH + l[None, :]
    tl.store(spec, xr, mask=valid)
    tl.store(spec + H * WH, xi, mask=valid)
    tl.store(spec + 2 * H * WH, g, mask=valid)

    n = tl.sum(tl.sum(c, axis=1), axis=0)
    mp = tl.sum(tl.sum(c * p, axis=1), axis=0) / n
    mg = tl.sum(tl.sum(c * g, axis=1), axis=0) / n
    dp = p - mp
    dg = g - mg
    out = program_row(PART_PTR, 6)
    tl.store(out + 0, n)
    tl.store(out + 1, mp)
    tl.store(out + 2, mg)
    tl.store(out + 3, tl.sum(tl.sum(c * dp * dp, axis=1), axis=0))
    tl.store(out + 4, tl.sum(tl.sum(c * dg * dg, axis=1), axis=0))
    tl.store(out + 5, tl.sum(tl.sum(c * dp * dg, axis=1), axis=0))


@triton.jit
def _block_moments(PART_PTR, b, t0, N_BLOCKS, BLOCK_T: tl.constexpr):
    """The moments of image b's spectrum blocks t0 .. t0 + BLOCK_T - 1 in PART_PTR
    (B, N_BLOCKS, 6), 0 past the last block: (count, mean P, mean G, S_PP, S_GG, S_PG), each
    (BLOCK_T,)."""
    ptr, m = tile_rows(PART_PTR, b, t0, N_BLOCKS, 6, BLOCK_T)
    n = tl.load(ptr, mask=m, other=0.0)
    mp = tl.load(ptr + 1, mask=m, other=0.0)
    mg = tl.load(ptr + 2, mask=m, other=0.0)
    s_pp = tl.load(ptr + 3, mask=m, other=0.0)
    s_gg = tl.load(ptr + 4, mask=m, other=0.0)
    s_pg = tl.load(ptr + 5, mask=m, other=0.0)
    return n, mp, mg, s_pp, s_gg, s_pg


@triton.jit
def _scc_finalize_kernel(PART_PTR, COEF_PTR, OUT_PTR, B, N_BLOCKS, eps, BLOCK_T: tl.constexpr):
    """One program: per-image merge of the block moments in a fixed order, then the loss.

    PART_PTR: (B, N_BLOCKS, 6) from the forward kernel; COEF_PTR: (B, 4) output (mean P,
    mean G, alpha = 1 / D, beta = S_PG ||G - mean G|| / (D^2 ||P - mean P||), D the
    denominator of r); OUT_PTR: 0-d loss in the logits' dtype.
    """
    dt = PART_PTR.dtype.element_ty
    total = tl.zeros((), dtype=dt)
    for b in range(B):
        s_n = tl.zeros((BLOCK_T,), dtype=dt)
        s_p = tl.zeros((BLOCK_T,), dtype=dt)
        s_g = tl.zeros((BLOCK_T,), dtype=dt)
        for t0 in range(0, N_BLOCKS, BLOCK_T):
            n, mp_t, mg_t, _, _, _ = _block_moments(PART_PTR, b, t0, N_BLOCKS, BLOCK_T)
            s_n += n
            s_p += n * mp_t
            s_g += n * mg_t
        count = tl.sum(s_n, axis=0)
        mp = tl.sum(s_p, axis=0) / count
        mg = tl.sum(s_g, axis=0) / count
        # Total centred sums = within-block sums + between-block terms n (m_blk - m)(...).
        s_pp = tl.zeros((BLOCK_T,), dtype=dt)
        s_gg = tl.zeros((BLOCK_T,), dtype=dt)
        s_pg = tl.zeros((BLOCK_T,), dtype=dt)
        for t0 in range(0, N_BLOCKS, BLOCK_T):
            n, mp_t, mg_t, spp, sgg, spg = _block_moments(PART_PTR, b, t0, N_BLOCKS, BLOCK_T)
            dp = mp_t - mp
            dg = mg_t - mg
            s_pp += spp + n * dp * dp
            s_gg += sgg + n * dg * dg
            s_pg += spg + n * dp * dg
        norm_p = tl.sqrt(tl.sum(s_pp, axis=0))
        norm_g = tl.sqrt(tl.sum(s_gg, axis=0))
        cov = tl.sum(s_pg, axis=0)
        den = norm_p * norm_g + eps
        total += cov / den
        # A constant P (norm_p = 0) has no defined gradient through ||P - mean P||; use 0.
        beta = tl.where(norm_p > 0, cov * norm_g / (den * den * norm_p), 0.0)
        tl.store(COEF_PTR + b * 4 + 0, mp)
        tl.store(COEF_PTR + b * 4 + 1, mg)
        tl.store(COEF_PTR + b * 4 + 2, 1.0 / den)
        tl.store(COEF_PTR + b * 4 + 3, beta)
    tl.store(OUT_PTR, (1.0 - total / B).to(OUT_PTR.dtype.element_ty))


@triton.jit
def _scc_bwd_kernel(
    DOUT_PTR, X_PTR, SPEC_PTR, COEF_PTR,  # 0-d; (B, 1, H, W); saved spectra and coefficients
    FH_PTR, FW_PTR, DX_PTR,  # DFT matrices; (B, 1, H, W) output
    B, H, W, eps,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    BK: tl.constexpr, BL: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Grid (B, cdiv(H, BH), cdiv(W, BW)); one program per block of dlogits.

    DOUT_PTR: 0-d incoming gradient; X_PTR: (B, 1, H, W) contiguous logits;
    SPEC_PTR: (B, 3, H, W // 2 + 1) and COEF_PTR: (B, 4) from the forward;
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices; DX_PTR: (B, 1, H, W) output.
    """
    b = tl.program_id(0)
    dt = FH_PTR.dtype.element_ty
    WH = W // 2 + 1
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    w = tl.program_id(2) * BW + tl.arange(0, BW)
    g = -tl.load(DOUT_PTR).to(dt) / B
    mp = tl.load(COEF_PTR + b * 4 + 0)
    mg = tl.load(COEF_PTR + b * 4 + 1)
    alpha = tl.load(COEF_PTR + b * 4 + 2)
    beta = tl.load(COEF_PTR + b * 4 + 3)
    spec_base = SPEC_PTR + b.to(tl.int64) * 3 * H * WH
    acc = tl.zeros((BH, BW), dtype=dt)
    for k0 in range(0, H, BK):
        k = k0 + tl.arange(0, BK)
        vr = tl.zeros((BK, BW), dtype=dt)
        vi = tl.zeros((BK, BW), dtype=dt)
        for l0 in range(0, WH, BL):
            l = l0 + tl.arange(0, BL)
            valid = (k < H)[:, None] & (l < WH)[None, :]
            spec = spec_base + k[:, None] * WH + l[None, :]
            xr = tl.load(spec, mask=valid, other=0.0)
            xi = tl.load(spec + H * WH, mask=valid, other=0.0)
            gm = tl.load(spec + 2 * H * WH, mask=valid, other=0.0)
            p = tl.sqrt(xr * xr + xi * xi + eps * eps)
            dldp = g * (alpha * (gm - mg) - beta * (p - mp))
            # dP/dX = X / P; each half-spectrum bin stands for c_l bins of the full spectrum.
            s = tl.where(valid, _hermitian_weight(l, W)[None, :] * dldp / p, 0.0).to(dt)
            yr = s * xr
            yi = s * xi
            g_off = w[None, :] * WH_P + l[:, None]  # G_W^T block (BL, BW)
            gr = tl.load(FW_PTR + g_off)
            gi = tl.load(FW_PTR + W_P * WH_P + g_off)
            # V = Y conj(G_W)^T
            vr += tl.dot(yr, gr, input_precision=DOT) + tl.dot(yi, gi, input_precision=DOT)
            vi += tl.dot(yi, gr, input_precision=DOT) - tl.dot(yr, gi, input_precision=DOT)
        # Re(conj(F_H) V), F_H symmetric.
        f_off = h[:, None] * H_P + k[None, :]
        fr = tl.load(FH_PTR + f_off)
        fi = tl.load(FH_PTR + H_P * H_P + f_off)
        acc += tl.dot(fr, vr, input_precision=DOT) + tl.dot(fi, vi, input_precision=DOT)

    m = (h < H)[:, None] & (w < W)[None, :]
    off = b.to(tl.int64) * H * W + h[:, None] * W + w[None, :]
    _, ds = _sigmoid(tl.load(X_PTR + off, mask=m, other=0.0).to(dt))
    tl.store(DX_PTR + off, (acc * ds).to(DX_PTR.dtype.element_ty), mask=m)


def _tiles(x: Tensor, fh: Tensor, fw: Tensor) -> dict[str, int]:
    """The padded matrix sizes (H_P, W_P, WH_P) of ``x``'s plane, with ``fh, fw`` checked
    against them; the block sizes divide them, so the matrices need no masks."""
    H_P, W_P, WH_P = dft.check_mats(*x.shape[-2:], fh, fw)
    return dict(H_P=H_P, W_P=W_P, WH_P=WH_P)


def _blocks(meta: dict[str, int], forward: bool) -> dict[str, int]:
    """``meta`` with the block sizes: the forward's output blocks run over (k, l) and its
    contraction blocks over (h, w), the backward's the other way round."""
    out_rows, out_cols, red_rows, red_cols = (
        ("BK", "BL", "BH", "BW") if forward else ("BH", "BW", "BK", "BL")
    )
    out_w = meta["WH_P"] if forward else meta["W_P"]
    return {
        **meta, out_rows: min(OUT_BLOCK, meta["H_P"]), out_cols: min(OUT_BLOCK, out_w),
        red_rows: RED_BLOCK, red_cols: RED_BLOCK, "num_warps": NUM_WARPS,
    }  # fmt: skip


@_registry.triton_kernel_op("hfsti::spectral_correlation_loss")
def _scc_op(
    logits: Tensor, target: Tensor, fh: Tensor, fw: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    meta = _tiles(logits, fh, fw)
    B, _, H, W = logits.shape
    x, t = logits.contiguous(), target.contiguous()
    meta = _blocks(meta, forward=True)
    grid = (B, triton.cdiv(H, meta["BK"]), triton.cdiv(W // 2 + 1, meta["BL"]))
    n_blocks = grid[1] * grid[2]
    spec = torch.empty((B, 3, H, W // 2 + 1), dtype=fh.dtype, device=x.device)
    part = torch.empty((B, n_blocks, N_PARTIALS), dtype=fh.dtype, device=x.device)
    coef = torch.empty((B, N_COEFS), dtype=fh.dtype, device=x.device)
    loss = torch.empty((), dtype=x.dtype, device=x.device)
    _registry.launch(
        _scc_fwd_kernel, grid, x, t, fh, fw, spec, part, H, W, eps, DOT=dft.dot_precision(x.dtype),
        **meta,
    )  # fmt: skip
    _registry.launch(
        _scc_finalize_kernel, (1,), part, coef, loss, B, n_blocks, eps,
        BLOCK_T=min(1024, triton.next_power_of_2(n_blocks)),
    )  # fmt: skip
    return loss, spec, coef


@_registry.triton_kernel_op("hfsti::spectral_correlation_loss_backward")
def _scc_bwd_op(
    dout: Tensor, logits: Tensor, spec: Tensor, coef: Tensor, fh: Tensor, fw: Tensor, eps: float
) -> Tensor:
    meta = _tiles(logits, fh, fw)
    B, _, H, W = logits.shape
    x = logits.contiguous()
    dx = torch.empty_like(x)
    meta = _blocks(meta, forward=False)
    grid = (B, triton.cdiv(H, meta["BH"]), triton.cdiv(W, meta["BW"]))
    _registry.launch(
        _scc_bwd_kernel, grid, dout.contiguous(), x, spec, coef, fh, fw, dx, B, H, W, eps,
        DOT=dft.dot_precision(x.dtype), **meta,
    )  # fmt: skip
    return dx


def _setup_context(ctx, inputs, output):
    logits, _, fh, fw, eps = inputs
    _, spec, coef = output
    ctx.mark_non_differentiable(spec, coef)
    ctx.save_for_backward(logits, spec, coef, fh, fw)
    ctx.eps = eps


def _backward(ctx, dloss, _dspec, _dcoef):
    logits, spec, coef, fh, fw = ctx.saved_tensors
    return _scc_bwd_op(dloss, logits, spec, coef, fh, fw, ctx.eps), None, None, None, None


_scc_op.register_autograd(_backward, setup_context=_setup_context)


def _scc_triton(logits: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    H, W = logits.shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(logits.dtype), logits.device)
    return _scc_op(logits, target.detach().to(logits.dtype), fh, fw, float(eps))[0]


_registry.register_implementation("spectral_correlation_loss", "triton", _scc_triton)


@autocast_policy("fp32")
def spectral_correlation_loss(
    logits: Tensor, target: Tensor, eps: float = 1e-8, *, backend: str | None = None
) -> Tensor:
    """Drop-in for :func:`hfsti.ops.spectral_correlation_loss`, fused in Triton.

    Args:
        logits: (B, 1, H, W), any strides.
        target: (B, 1, H, W) in [0, 1], same device; cast to the logits' dtype (as the
            reference does). Gets no gradient.
        eps: smooths the magnitudes at zero and the correlation's denominator.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        A 0-d tensor in the logits' dtype, 1 - mean over the batch of r_b; differentiable in
        logits.
    """
    check_loss_inputs(logits, target)
    name = select_backend(backend, logits)
    if name == "reference":
        return _reference(logits, target, eps)
    return _registry.implementation("spectral_correlation_loss", name)(logits, target, eps)
