"""Fused Triton kernels for ``fourier_unit`` (docs/ops.md, fourier_unit).

    Z  = relu(weight @ cat[Re rfft2(x), Im rfft2(x)] + bias);   y = irfft2_strict(Z[:C'] + i Z[C':])

Design (docs/kernels.md, fourier_unit). The channel mixing is linear, so it moves before the
transform: with ``weight = [A | B]`` (each (2C', C)), ``Z_o = Re rfft2(u_o) + Im rfft2(v_o) =
Re F(u_o - i v_o)`` where ``u = A x`` and ``v = B x`` are mixed in the spatial domain. Forward,
two launches:

1. ``_mix_kernel`` (``_channel_mix``): a batched GEMM ``[u; v] = [A; B] @ x`` (B, 2C', H*W)
   each, fp32 accumulate.
2. ``_fu_fwd_kernel``, one program per (b, o) output plane: the half spectrum of (u - i v) for
   the real (o) and imaginary (o + C') channel, + bias, ReLU, the strict inverse; writes y and,
   when a backward will follow, the post-ReLU spectrum ``zs`` (``_fourier_spectrum``).

Backward, four kinds of launch, all deterministic (no atomics):

1. ``_fu_bwd_kernel`` per (b, o) plane: ``gZ = mask * irfft2_strict^T(dy)``, the per-batch bias
   partials, and ``gu = (Re F)^T gZ``, ``gv = (Im F)^T gZ`` as spatial planes.
2. ``_mix_dx_kernel``: ``dx = A^T gu + B^T gv``.
3. ``_mix_dw_kernel``: per-batch partials ``[gu; gv]_b @ x_b^T`` (B, 2C', 2C).
4. ``_mix_sum_batch_kernel``: sums partials over the batch in a fixed order.

Not fused: the GEMM and the spectral kernel stay separate because each output plane needs every
input channel (the mixing) while each transform needs a whole plane; fusing would recompute the
transforms per output channel. u, v and gu, gv (fp32) travel through memory between the two.

Large planes (a tile side >= ``_staged.STAGED_MIN_TILE``, e.g. 88x88) take each kernel's
``IS_STAGED`` branch (docs/kernels.md, Staged path): the same maths, one program per (b, o)
plane, each transform split into a W pass and an H pass over small blocks, intermediates in a
per-program global scratch of ``FU_SLOTS`` (H_P, WH_P) slots. The branch is a constexpr, so each
path compiles exactly as a kernel of its own would.
fp16/bf16/fp32 are computed in fp32 (products at ``dft.dot_precision``), float64 in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hfsti._checks import compute_dtype
from hfsti.ops import autocast_policy, check_fourier_unit_inputs
from hfsti.ops import fourier_unit as _reference
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import select_backend
from hfsti_kernels._staged import launch_planes, staged_irdft2_w
from hfsti_kernels.dft import CG_RE, irdft2, load_fh, load_fw, load_plane, store_plane
from hfsti_kernels.ops import _fourier_spectrum as spec
from hfsti_kernels.ops._channel_mix import launch_mix, launch_mix_backward, sum_batch

__all__ = ["fourier_unit"]


@triton.jit
def _fu_fwd_kernel(
    U_PTR, V_PTR, BIAS_PTR,  # (B, 2CO, H, W) mixed planes (compute dtype); (2CO,)
    Y_PTR, ZS_PTR,  # (B, CO, H, W) output; (B, 2CO, H, W//2+1) spectrum, written if SAVE_Z
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    CO, H, W,
    SAVE_Z: tl.constexpr, IS_STAGED: tl.constexpr,
    H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, one program per (b, o) output plane, o < CO.

    U_PTR, V_PTR: (B, 2CO, H, W) compute dtype; BIAS_PTR: (2CO,); Y_PTR: (B, CO, H, W) output;
    ZS_PTR: (B, 2CO, H, W//2+1) post-ReLU spectrum, written if SAVE_Z.
    FH_PTR: (2, H_P, H_P), FW_PTR: (4, W_P, WH_P) DFT matrices.
    SCR_PTR (IS_STAGED): (B*CO, NSLOT, H_P, WH_P) scratch; BM, BN, BNW, BK: staged blocks.
    """
    pid, b, o = spec.plane_ids(CO)
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        zr, zi = spec.fu_spectrum(
            U_PTR, V_PTR, BIAS_PTR, ZS_PTR, SAVE_Z, b, o, CO, H, W, FW_PTR, Fr, Fi,
            H_P, W_P, WH_P, DOT,
        )  # fmt: skip
        Er, Ei = load_fw(FW_PTR, CG_RE, W_P, WH_P, True)
        store_plane(Y_PTR + pid * H * W, irdft2(zr, zi, Er, Ei, Fr, Fi, DOT), H, W, H_P, W_P)
    else:
        dt = FH_PTR.dtype.element_ty
        s0, s1 = spec.fu_spectrum_staged(
            U_PTR, V_PTR, BIAS_PTR, ZS_PTR, SAVE_Z, b, o, CO, H, W, FH_PTR, FW_PTR, SCR_PTR, pid,
            NSLOT, H_P, W_P, WH_P, BM, BN, BK, DOT,
        )  # fmt: skip
        staged_irdft2_w(
            s0, s1, FW_PTR, CG_RE, Y_PTR + pid * H * W, H, W, H_P, W_P, WH_P, BM, BNW, BK, dt, DOT
        )


@triton.jit
def _fu_bwd_kernel(
    DY_PTR, ZS_PTR,  # (B, CO, H, W); (B, 2CO, H, W//2+1) saved post-ReLU spectrum
    GU_PTR, GV_PTR, DB_PART_PTR,  # (B, 2CO, H, W) x2 outputs; (B, 2CO) bias partials
    FH_PTR, FW_PTR, SCR_PTR,  # DFT matrices; staged scratch
    CO, H, W,
    IS_STAGED: tl.constexpr, H_P: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr,
    NSLOT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BNW: tl.constexpr, BK: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, one program per (b, o) output plane, o < CO.

    DY_PTR: (B, CO, H, W); ZS_PTR: (B, 2CO, H, W//2+1) saved post-ReLU spectrum;
    GU_PTR, GV_PTR: (B, 2CO, H, W) outputs; DB_PART_PTR: (B, 2CO) bias partials.
    SCR_PTR (IS_STAGED): (B*CO, NSLOT, H_P, WH_P) scratch; BM, BN, BNW, BK: staged blocks.
    """
    pid, b, o = spec.plane_ids(CO)
    if not IS_STAGED:
        Fr, Fi = load_fh(FH_PTR, H_P)
        dt = Fr.dtype
        zr, zi = spec.fu_load_spectrum(ZS_PTR, b, o, CO, H, W, H_P, WH_P, dt)
        g = load_plane(DY_PTR + pid * H * W, H, W, H_P, W_P, dt)
        spec.fu_backward_tail(
            g, zr, zi, GU_PTR, GV_PTR, DB_PART_PTR, b, o, CO, H, W, FW_PTR, Fr, Fi,
            H_P, W_P, WH_P, DOT,
        )  # fmt: skip
    else:
        spec.fu_backward_tail_staged(
            DY_PTR + pid * H * W, W, ZS_PTR, GU_PTR, GV_PTR, DB_PART_PTR, b, o, CO, H, W,
            FH_PTR, FW_PTR, SCR_PTR, pid, NSLOT, H_P, W_P, WH_P, BM, BN, BNW, BK, DOT,
        )  # fmt: skip


# --------------------------------------------------------------------------- ops


@_registry.triton_kernel_op("hfsti::fourier_unit")
def _fu_op(
    x: Tensor, weight: Tensor, bias: Tensor, fh: Tensor, fw: Tensor, save_spectrum: bool
) -> tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    dft.check_mats(H, W, fh, fw)
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    CO = weight.shape[0] // 2
    u, v, _ = launch_mix(x, weight)
    y = torch.empty(B, CO, H, W, dtype=x.dtype, device=x.device)
    zs = spec.empty_spectrum(B, 2 * CO, H, W, u.dtype, x.device, save_spectrum)
    launch_planes(
        _fu_fwd_kernel, spec.FU_SLOTS, B * CO, H, W,
        (u, v, bias, y, zs), fh, fw, CO, SAVE_Z=save_spectrum, DOT=dft.dot_precision(x.dtype),
    )  # fmt: skip
    return y, zs


@_registry.triton_kernel_op("hfsti::fourier_unit_backward")
def _fu_bwd_op(
    dy: Tensor, x: Tensor, weight: Tensor, zs: Tensor, fh: Tensor, fw: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    dft.check_mats(H, W, fh, fw)
    CO2 = weight.shape[0]
    CO = CO2 // 2
    spec.check_spectrum(zs, B, CO2, H, W)
    dy, x, weight, zs = dy.contiguous(), x.contiguous(), weight.contiguous(), zs.contiguous()
    dt = zs.dtype
    gu = torch.empty(B, CO2, H, W, dtype=dt, device=x.device)
    gv = torch.empty_like(gu)
    db_part = torch.empty(B, CO2, dtype=dt, device=x.device)
    launch_planes(
        _fu_bwd_kernel, spec.FU_SLOTS, B * CO, H, W,
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


def _fu_triton(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    H, W = x.shape[-2:]
    fh, fw = dft.dft_matrices(H, W, compute_dtype(x.dtype), x.device)
    y, _ = _fu_op(x, weight, bias, fh, fw, spec.needs_grad(x, weight, bias))
    return y


_registry.register_implementation("fourier_unit", "triton", _fu_triton)


@autocast_policy("lower")
def fourier_unit(x: Tensor, weight: Tensor, bias: Tensor, *, backend: str | None = None) -> Tensor:
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
