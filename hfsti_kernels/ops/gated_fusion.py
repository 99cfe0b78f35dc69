"""Fused Triton kernels for ``gated_fusion`` (docs/ops.md, gated_fusion), the core of the
Intertwined Fusion Block.

    x_c  = x_f + x_s + x_0
    x_fs = gelu(fourier_unit(x_c, fu_weight, fu_bias)) * dwconv3x3(x_c, dw_weight, dw_bias)

Design (docs/kernels.md, gated_fusion; the Fourier unit's structure is in ``fourier_unit.py``,
its shared pieces in ``_channel_mix`` and ``_fourier_spectrum``). Forward, two passes:

1. ``_mix_kernel`` with ``HAS_SUM3``: reads x_f, x_s, x_0 once per tile, writes x_c, and mixes
   channels in the spatial domain (u, v = A x_c, B x_c), so x_c is never re-read for the GEMM.
2. ``_gf_fwd_kernel``, one program per (b, c) plane: the Fourier unit's spectrum (+bias, ReLU),
   its strict inverse, the exact-erf GELU, the 3x3 depthwise conv of x_c (+bias, zero padding;
   nine shifted masked loads of the plane, cache-resident) and the product; x_fs is written once,
   with the post-ReLU spectrum when a backward will follow.

Backward, with g_c and g_fs the incoming gradients of x_c and x_fs:

1. ``_gf_bwd_kernel`` per (b, c) plane: recomputes the Fourier-unit output from the saved
   spectrum (one inverse transform) and the conv from x_c, forms
   ``g_fu = g_fs * conv * gelu'(fu)`` and ``g_s = g_fs * gelu(fu)`` (written, it is needed at
   shifted positions), the per-batch partials of the conv weight and bias, then the Fourier
   unit's spectral adjoint (ReLU mask, bias partials, gu, gv).
2. ``_mix_dx_kernel`` with ``HAS_CONV``: ``dx_c = A^T gu + B^T gv + g_c + conv^T(g_s)``; the three
   inputs' gradients are all dx_c.
3. ``_mix_dw_kernel`` (fu_weight partials) and ``_mix_sum_batch_kernel`` (all batch reductions,
   fixed order, no atomics).

Not fused: the channel mixing needs every channel of x_c while the transforms need whole planes,
so mixing and spectral work are separate passes (see fourier_unit.py).

Large planes (a tile side >= ``_staged.STAGED_MIN_TILE``, e.g. 88x88) take each kernel's
``IS_STAGED`` branch (docs/kernels.md, Staged path): the same maths, one program per (b, c)
plane, transforms in W and H passes over small blocks via a per-program global scratch
(``FWD_SLOTS`` / ``BWD_SLOTS`` slots of (H_P, WH_P); the backward keeps g_fu in the two slots
after the Fourier unit's). The branch is a constexpr, so each path compiles exactly as a kernel
of its own would.
fp16/bf16/fp32 are computed in fp32 (products at ``dft.dot_precision``), float64 in float64;
x_c is returned in the input dtype from an fp32 sum (one rounding, not the reference's two).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti.ops import autocast_policy, check_gated_fusion_inputs
from hfsti.ops import gated_fusion as _reference
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels._staged import (
    launch_planes,
    ld_blk,
    slot,
    slot_pair,
    st_blk,
    staged_irdft2_h,
    staged_irdft2_w_blk,
)
from hfsti_kernels.dft import CG_RE, irdft2, load_fh, load_fw, load_plane, store_plane
from hfsti_kernels.ops import _fourier_spectrum as spec
from hfsti_kernels.ops._channel_mix import launch_mix, launch_mix_backward, sum_batch

__all__ = ["gated_fusion"]

# Scratch slots (of (H_P, WH_P) each) per program on the staged path: the Fourier unit's, and
# in the backward two more for g_fu, one (H_P, W_P) plane.
FWD_SLOTS = spec.FU_SLOTS
BWD_SLOTS = spec.FU_SLOTS + 2

_SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)


@triton.jit
def _shifted(
    PLANE_PTR, I: tl.constexpr, J: tl.constexpr, H, W, H_P: tl.constexpr, W_P: tl.constexpr
):
    """x[h + I - 1, w + J - 1] over an (H_P, W_P) tile, zero outside the (H, W) plane."""
    r = tl.arange(0, H_P)[:, None] + (I - 1)
    c = tl.arange(0, W_P)[None, :] + (J - 1)
    ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    return tl.load(PLANE_PTR + r * W + c, mask=ok, other=0.0)


@triton.jit
def _dwconv3x3(XC_PTR, DWW_PTR, DWB_PTR, c, H, W, H_P: tl.constexpr, W_P: tl.constexpr, DTYPE):
    """Depthwise 3x3 conv (cross-correlation, zero padding) + bias of the plane at XC_PTR."""
    acc = tl.zeros((H_P, W_P), dtype=DTYPE) + tl.load(DWB_PTR + c).to(DTYPE)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            k = tl.load(DWW_PTR + c * 9 + i * 3 + j).to(DTYPE)
            acc += k * _shifted(XC_PTR, i, j, H, W, H_P, W_P).to(DTYPE)
    return acc


@triton.jit
def _shifted_blk(PLANE_PTR, I: tl.constexpr, J: tl.constexpr, H, W, r0, c0, BR, BC):
    """Block (r0, c0) of (BR, BC) of :func:`_shifted`."""
    r = r0 + tl.arange(0, BR)[:, None] + (I - 1)
    cc = c0 + tl.arange(0, BC)[None, :] + (J - 1)
    ok = (r >= 0) & (r < H) & (cc >= 0) & (cc < W)
    return tl.load(PLANE_PTR + r * W + cc, mask=ok, other=0.0)


@triton.jit
def _dwconv3x3_blk(
    XC_PTR, DWW_PTR, DWB_PTR, c, H, W, r0, c0, BR: tl.constexpr, BC: tl.constexpr, DTYPE
):
    """Block (r0, c0) of (BR, BC) of :func:`_dwconv3x3` (conv + bias of the plane at XC_PTR)."""
    acc = tl.zeros((BR, BC), dtype=DTYPE) + tl.load(DWB_PTR + c).to(DTYPE)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            k = tl.load(DWW_PTR + c * 9 + i * 3 + j).to(DTYPE)
            acc += k * _shifted_blk(XC_PTR, i, j, H, W, r0, c0, BR, BC).to(DTYPE)
    return acc


@triton.jit
def _gelu(f):
    """Exact (erf) GELU."""
    return 0.5 * f * (1.0 + tl.math.erf(f * _SQRT1_2))


@triton.jit
def _gelu_mul_bwd(g, f, s):
    """Gradients of ``gelu(f) * s`` from g: (g_f, g_s) = (g s gelu'(f), g gelu(f))."""
    cdf = 0.5 * (1.0 + tl.math.erf(f * _SQRT1_2))
    pdf = tl.exp(-0.5 * f * f) * _INV_SQRT_2PI
    return g * s * (cdf + f * pdf), g * f * cdf


@triton.jit
def _gf_fwd_kernel(
    U_PTR, V_PTR, FUB_PTR,  # (B, 2C, H, W) channel-mixed x_c (compute dtype); (2C,) fu_bias
    XC_PTR, DWW_PTR, DWB_PTR,  # (B, C, H, W) x_c; (C, 1, 3, 3), (C,) conv weight and bias
    XFS_PTR, ZS_PTR,  # (B, C, H, W) output; (B, 2C, H, W//2+1) spectrum, written if SAVE_Z
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    C, H, W,
    SAVE_Z: tl.constexpr, IS_STAGED: tl.constexpr,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, one program per (b, c) plane.

    U_PTR, V_PTR: (B, 2C, H, W) channel-mixed x_c (compute dtype); FUB_PTR: (2C,) fu_bias;
    XC_PTR: (B, C, H, W) x_c; DWW_PTR: (C, 1, 3, 3), DWB_PTR: (C,); XFS_PTR: (B, C, H, W)
    output; ZS_PTR: (B, 2C, H, W//2+1) post-ReLU spectrum, written if SAVE_Z.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices.
    SCR_PTR (IS_STAGED): (B*C, NSLOT, H_P, WH_P) scratch; BM, BN, BNW, BK: staged blocks.
    """
    pid, b, c = spec.plane_ids(C)
    plane = pid * H * W
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        dt = Fr.dtype
        zr, zi = spec.fu_spectrum(
            U_PTR, V_PTR, FUB_PTR, ZS_PTR, SAVE_Z, b, c, C, H, W, FW_PTR, Fr, Fi,
            H_P, W_P, WH_P, DOT,
        )  # fmt: skip
        Er, Ei = load_fw(FW_PTR, CG_RE, W_P, WH_P, True)
        gelu = _gelu(irdft2(zr, zi, Er, Ei, Fr, Fi, DOT))
        s = _dwconv3x3(XC_PTR + plane, DWW_PTR, DWB_PTR, c, H, W, H_P, W_P, dt)
        store_plane(XFS_PTR + plane, gelu * s, H, W, H_P, W_P)
    else:
        dt = FH_PTR.dtype.element_ty
        s0, s1 = spec.fu_spectrum_staged(
            U_PTR, V_PTR, FUB_PTR, ZS_PTR, SAVE_Z, b, c, C, H, W, FH_PTR, FW_PTR, SCR_PTR, pid,
            NSLOT, H_P, W_P, WH_P, BM, BN, BK, DOT,
        )  # fmt: skip
        for r0 in range(0, H_P, BM):
            for c0 in range(0, W_P, BNW):
                f = staged_irdft2_w_blk(
                    s0, s1, FW_PTR, CG_RE, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
                )
                gelu = _gelu(f)
                s = _dwconv3x3_blk(XC_PTR + plane, DWW_PTR, DWB_PTR, c, H, W, r0, c0, BM, BNW, dt)
                st_blk(XFS_PTR + plane, gelu * s, W, r0, c0, H, W, BM, BNW)


@triton.jit
def _gf_bwd_kernel(
    GFS_PTR, ZS_PTR,  # (B, C, H, W) gradient of x_fs; (B, 2C, H, W//2+1) saved spectrum
    XC_PTR, DWW_PTR, DWB_PTR,  # (B, C, H, W) x_c; (C, 1, 3, 3), (C,)
    GU_PTR, GV_PTR, GS_PTR,  # outputs: (B, 2C, H, W) x2 mixing gradients; (B, C, H, W)
    FUB_PART_PTR, DWW_PART_PTR, DWB_PART_PTR,  # outputs: (B, 2C), (B, C, 9), (B, C) partials
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    C, H, W,
    IS_STAGED: tl.constexpr, H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, one program per (b, c) plane.

    GFS_PTR: (B, C, H, W) gradient of x_fs; ZS_PTR: (B, 2C, H, W//2+1) saved spectrum;
    XC_PTR: (B, C, H, W) x_c; DWW_PTR: (C, 1, 3, 3); DWB_PTR: (C,).
    Outputs: GU_PTR, GV_PTR: (B, 2C, H, W) mixing gradients; GS_PTR: (B, C, H, W) gradient of
    the conv output; FUB_PART_PTR: (B, 2C), DWW_PART_PTR: (B, C, 9), DWB_PART_PTR: (B, C)
    per-batch partial sums. FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices.
    SCR_PTR (IS_STAGED): (B*C, NSLOT, H_P, WH_P) scratch. Slots 0-1: ``conj(F_H) Z``; the last
    two (after the Fourier unit's ``FU_SLOTS``): g_fu as one (H_P, W_P) plane; then the Fourier
    unit's staged tail (its slots 0 to FU_SLOTS - 1).
    """
    pid, b, c = spec.plane_ids(C)
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        dt = Fr.dtype
        zr, zi = spec.fu_load_spectrum(ZS_PTR, b, c, C, H, W, H_P, WH_P, dt)
        Er, Ei = load_fw(FW_PTR, CG_RE, W_P, WH_P, True)
        f = irdft2(zr, zi, Er, Ei, Fr, Fi, DOT)
        plane = pid * H * W  # here, not earlier: the sm_90 compile spills less
        s = _dwconv3x3(XC_PTR + plane, DWW_PTR, DWB_PTR, c, H, W, H_P, W_P, dt)
        g = load_plane(GFS_PTR + plane, H, W, H_P, W_P, dt)  # zero padding: padded terms vanish
        g_fu, g_s = _gelu_mul_bwd(g, f, s)
        store_plane(GS_PTR + plane, g_s, H, W, H_P, W_P)
        tl.store(DWB_PART_PTR + pid, tl.sum(tl.sum(g_s, axis=1), axis=0))
        for i in tl.static_range(3):
            for j in tl.static_range(3):
                xs = _shifted(XC_PTR + plane, i, j, H, W, H_P, W_P).to(dt)
                t = tl.sum(tl.sum(g_s * xs, axis=1), axis=0)
                tl.store(DWW_PART_PTR + pid * 9 + i * 3 + j, t)
        spec.fu_backward_tail(
            g_fu, zr, zi, GU_PTR, GV_PTR, FUB_PART_PTR, b, c, C, H, W, FW_PTR, Fr, Fi,
            H_P, W_P, WH_P, DOT,
        )  # fmt: skip
    else:
        dt = FH_PTR.dtype.element_ty
        s0, s1 = slot_pair(SCR_PTR, pid, 0, NSLOT, H_P, WH_P)
        s_gfu = slot(SCR_PTR, pid, NSLOT - 2, NSLOT, H_P, WH_P)  # the last two slots
        WH = W // 2 + 1
        zs_plane = (b * 2 * C + c) * H * WH
        staged_irdft2_h(
            FH_PTR, ZS_PTR + zs_plane, ZS_PTR + zs_plane + C * H * WH, WH, H, WH, s0, s1,
            H_P, WH_P, BM, BN, BK, dt, DOT,
        )  # fmt: skip
        tl.debug_barrier()
        plane = pid * H * W
        sum_s = tl.zeros((BM, BNW), dtype=dt)
        tap = tl.arange(0, 16)
        sum_w = tl.zeros((16,), dtype=dt)
        for r0 in range(0, H_P, BM):
            for c0 in range(0, W_P, BNW):
                f = staged_irdft2_w_blk(
                    s0, s1, FW_PTR, CG_RE, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
                )
                s = _dwconv3x3_blk(XC_PTR + plane, DWW_PTR, DWB_PTR, c, H, W, r0, c0, BM, BNW, dt)
                g = ld_blk(GFS_PTR + plane, W, 1, r0, c0, H, W, BM, BNW, dt)  # zero padding
                g_fu, g_s = _gelu_mul_bwd(g, f, s)
                st_blk(GS_PTR + plane, g_s, W, r0, c0, H, W, BM, BNW)
                st_blk(s_gfu, g_fu, W_P, r0, c0, H_P, W_P, BM, BNW)
                sum_s += g_s
                for i in tl.static_range(3):
                    for j in tl.static_range(3):
                        xs = _shifted_blk(XC_PTR + plane, i, j, H, W, r0, c0, BM, BNW).to(dt)
                        t = tl.sum(tl.sum(g_s * xs, axis=1), axis=0)
                        sum_w += tl.where(tap == i * 3 + j, t, 0.0)
        tl.store(DWB_PART_PTR + pid, tl.sum(tl.sum(sum_s, axis=1), axis=0))
        tl.store(DWW_PART_PTR + pid * 9 + tap, sum_w, mask=tap < 9)
        tl.debug_barrier()
        spec.fu_backward_tail_staged(
            s_gfu, W_P, ZS_PTR, GU_PTR, GV_PTR, FUB_PART_PTR, b, c, C, H, W,
            FH_PTR, FW_PTR, SCR_PTR, pid, NSLOT, H_P, W_P, WH_P, BM, BN, BNW, BK, DOT,
        )  # fmt: skip


@_registry.triton_kernel_op("hfsti::gated_fusion")
def _gf_op(
    x_f: Tensor, x_s: Tensor, x_0: Tensor,
    fu_weight: Tensor, fu_bias: Tensor, dw_weight: Tensor, dw_bias: Tensor,
    fh: Tensor, fw: Tensor, save_spectrum: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    B, C, H, W = x_f.shape
    dft.check_mats(H, W, fh, fw)
    x_f, x_s, x_0 = x_f.contiguous(), x_s.contiguous(), x_0.contiguous()
    fu_weight, fu_bias = fu_weight.contiguous(), fu_bias.contiguous()
    dw_weight, dw_bias = dw_weight.contiguous(), dw_bias.contiguous()
    u, v, x_c = launch_mix(x_f, fu_weight, x_s, x_0)
    x_fs = torch.empty_like(x_f)
    zs = spec.empty_spectrum(B, 2 * C, H, W, u.dtype, x_f.device, save_spectrum)
    launch_planes(
        _gf_fwd_kernel, FWD_SLOTS, B * C, H, W,
        (u, v, fu_bias, x_c, dw_weight, dw_bias, x_fs, zs), fh, fw, C,
        SAVE_Z=save_spectrum, DOT=dft.dot_precision(x_f.dtype),
    )  # fmt: skip
    return x_c, x_fs, zs


@_registry.triton_kernel_op("hfsti::gated_fusion_backward")
def _gf_bwd_op(
    g_c: Tensor, g_fs: Tensor, x_c: Tensor,
    fu_weight: Tensor, dw_weight: Tensor, dw_bias: Tensor,
    zs: Tensor, fh: Tensor, fw: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    B, C, H, W = x_c.shape
    dft.check_mats(H, W, fh, fw)
    spec.check_spectrum(zs, B, 2 * C, H, W)
    g_c, g_fs, x_c, zs = g_c.contiguous(), g_fs.contiguous(), x_c.contiguous(), zs.contiguous()
    fu_weight, dw_weight = fu_weight.contiguous(), dw_weight.contiguous()
    dw_bias = dw_bias.contiguous()
    dt = zs.dtype
    dev = x_c.device
    gu = torch.empty(B, 2 * C, H, W, dtype=dt, device=dev)
    gv = torch.empty_like(gu)
    gs = torch.empty(B, C, H, W, dtype=dt, device=dev)
    fub_part = torch.empty(B, 2 * C, dtype=dt, device=dev)
    dww_part = torch.empty(B, C, 9, dtype=dt, device=dev)
    dwb_part = torch.empty(B, C, dtype=dt, device=dev)
    launch_planes(
        _gf_bwd_kernel, BWD_SLOTS, B * C, H, W,
        (g_fs, zs, x_c, dw_weight, dw_bias, gu, gv, gs, fub_part, dww_part, dwb_part), fh, fw, C,
        DOT=dft.dot_precision(x_c.dtype),
    )  # fmt: skip
    dx, fuw_part = launch_mix_backward(gu, gv, x_c, fu_weight, x_c.dtype, conv=(g_c, gs, dw_weight))
    pdt = fu_weight.dtype
    d_fuw = sum_batch(fuw_part, fu_weight.shape, pdt)
    d_fub = sum_batch(fub_part, (2 * C,), pdt)
    d_dww = sum_batch(dww_part, dw_weight.shape, pdt)
    d_dwb = sum_batch(dwb_part, (C,), pdt)
    return dx, d_fuw, d_fub, d_dww, d_dwb


def _setup_context(ctx, inputs, output):
    _x_f, _x_s, _x_0, fu_weight, _fu_bias, dw_weight, dw_bias, fh, fw, _save = inputs
    x_c, _x_fs, zs = output
    ctx.save_for_backward(x_c, fu_weight, dw_weight, dw_bias, zs, fh, fw)


def _backward(ctx, g_c, g_fs, _g_zs):
    x_c, fu_weight, dw_weight, dw_bias, zs, fh, fw = ctx.saved_tensors
    dx, d_fuw, d_fub, d_dww, d_dwb = _gf_bwd_op(
        g_c, g_fs, x_c, fu_weight, dw_weight, dw_bias, zs, fh, fw
    )
    # x_c = x_f + x_s + x_0: the three inputs share one gradient.
    return dx, dx, dx, d_fuw, d_fub, d_dww, d_dwb, None, None, None


_gf_op.register_autograd(_backward, setup_context=_setup_context)


def _gf_triton(*params: Tensor) -> tuple[Tensor, Tensor]:
    """params: (x_f, x_s, x_0, fu_weight, fu_bias, dw_weight, dw_bias), validated."""
    H, W = params[0].shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(params[0].dtype), params[0].device)
    x_c, x_fs, _ = _gf_op(*params, fh, fw, spec.needs_grad(*params))
    return x_c, x_fs


_registry.register_implementation("gated_fusion", "triton", _gf_triton)


@autocast_policy("lower")
def gated_fusion(
    x_f: Tensor, x_s: Tensor, x_0: Tensor,
    fu_weight: Tensor, fu_bias: Tensor,
    dw_weight: Tensor, dw_bias: Tensor,
    *, backend: str | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Drop-in for :func:`hfsti.ops.gated_fusion`, fused in Triton.

    Args:
        x_f, x_s, x_0: (B, C, H, W); fu_weight: (2C, 2C); fu_bias: (2C,);
            dw_weight: (C, 1, 3, 3); dw_bias: (C,); same dtype and device, any strides.
        backend: "auto" (Triton on CUDA tensors, the reference elsewhere), "triton",
            "reference"; None reads ``HFSTI_BACKEND`` (default "auto").
    Returns:
        (x_c, x_fs), both (B, C, H, W) in the input dtype; differentiable in every argument.
    """
    params = (x_f, x_s, x_0, fu_weight, fu_bias, dw_weight, dw_bias)
    check_gated_fusion_inputs(*params)
    name = select_backend(backend, x_f)
    if name == "reference":
        return _reference(*params)
    return _registry.implementation("gated_fusion", name)(*params)
