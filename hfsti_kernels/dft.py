"""Dense DFT matrices and the Triton helpers shared by the FFT kernels.

Design: at the model's sizes (H, W in 11..88) a 2-D real FFT is cheapest as two small dense matrix
products, ``X = F_H @ x @ G_W``, which Triton lowers to tensor-core ``tl.dot`` (TF32 or 3xTF32,
:func:`dot_precision`) and which keep every complex intermediate in registers. Complex matrices are
carried as separate real and imaginary real matrices. Every matrix is zero-padded to power-of-two
tiles >= 16 (``tl.dot``'s minimum), so a kernel masks only its loads and stores of data, never the
matrices, and the padded rows and columns of every product are exactly zero.

Matrices (``norm="ortho"``), built in float64 and cast once per (H, W, dtype, device):

- ``fh``: (2, H_P, H_P) = [Fr, Fi], ``F_H[k, h] = exp(-2 pi i k h / H) / sqrt(H)`` (symmetric).
- ``fw``: (4, W_P, WH_P) = [Gr, Gi, c*Gr, c*Gi], ``G[w, l] = exp(-2 pi i l w / W) / sqrt(W)`` for
  the W // 2 + 1 half-spectrum columns l, and ``c_l`` the C2R Hermitian weights (1 for l = 0 and,
  for even W, l = W / 2; 2 otherwise).

With these, as real-linear maps on (real, imag) tile pairs (``fwd``/``inv`` below):

- ``rfft2(x) = fwd(x; Gr, Gi)``;  its adjoint is ``inv(.; Gr^T, Gi^T)``.
- ``irfft2_strict(Y) = inv(Y; (cGr)^T, (cGi)^T)`` (SPEC 1.2): the imaginary parts of column 0 and,
  for even W, column W/2 are dropped because ``sin`` is exactly 0 there (set exactly, not
  rounded), which is the strict convention; its adjoint is ``fwd(.; cGr, cGi)``.

Limits and the staged path: the fast path keeps a whole (H, W) plane as one tile. Compiled for
sm_90, those plane kernels need 48-96 KB of shared memory at 64x64 tiles (H, W <= 64: the model's
11, 22, 44; ``benchmarks/results/static-sm90/``) but 256-320 KB at 128x128 tiles (e.g. 88), over
the H100's 227 KB per block. Planes with a tile side >= ``STAGED_MIN_TILE`` (128) take the staged
path instead (:func:`is_staged`, the ``*_staged_kernel`` twins): still one program per
plane, but every transform is split into two passes over (BLOCK x BLOCK) output blocks whose
products are tiled over the contraction in ``STAGED_BK``-wide steps with operands loaded from
global memory (:func:`blk_cmm`), and the intermediates (``x @ G`` along W, then ``F_H @ .`` along
H, each a complex (H_P, WH_P) plane) go through a per-program global scratch buffer ("slots", see
:func:`scratch`) with ``tl.debug_barrier()`` between the passes. The inverse is computed H-first,
``Re(conj(F_H) Y) A``, so every pass works on independent blocks. Any plane size works there (only
the scratch grows); the maths is the same, only the association of the sums differs.

Caching: the matrices are built once per key and passed into the ops as tensor arguments, so the
ops stay pure functions of their inputs. While torch.compile traces, or a CUDA graph captures
(the kernels that fill a new matrix would not run until replay), or under FakeTensor tracing, the
matrices are built without being cached, so a cache never holds a fake or unfilled tensor. A
graph compiled with a warm cache (the op run once eagerly) takes the cached matrices as constants;
with a cold one it rebuilds them inside the graph on every call.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from hfsti_kernels import _registry

__all__ = [
    "dft_matrices",
    "tile_sizes",
    "check_mats",
    "plane_num_warps",
    "dot_precision",
    "launch_planes",
    "load_plane",
    "store_plane",
    "load_fh",
    "load_fw",
    "fwd",
    "inv",
    "cmul",
    "STAGED_MIN_TILE",
    "STAGED_BLOCK",
    "STAGED_BK",
    "is_staged",
    "staged_blocks",
    "scratch",
    "slot",
    "slot_pair",
    "ld_blk",
    "st_blk",
    "st_cplx_blk",
    "blk_cmm",
    "staged_inv_w",
]

_CACHE: dict[tuple[int, int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def tile_sizes(H: int, W: int) -> tuple[int, int, int]:
    """(H_P, W_P, WH_P): H, W and W // 2 + 1 padded to powers of two >= 16 (tl.dot minimum)."""
    return (
        max(16, triton.next_power_of_2(H)),
        max(16, triton.next_power_of_2(W)),
        max(16, triton.next_power_of_2(W // 2 + 1)),
    )


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


def scratch(n_programs: int, n_slots: int, H: int, W: int, dtype, device, staged: bool):
    """Per-program scratch of the staged path: (n_programs, n_slots, H_P, WH_P); (0,) if unused.

    A slot holds one (H_P, WH_P) real plane (row stride WH_P); two consecutive slots hold one
    (H_P, W_P) spatial plane (row stride W_P <= 2 WH_P).
    """
    if not staged:
        return torch.empty(0, dtype=dtype, device=device)
    H_P, _, WH_P = tile_sizes(H, W)
    return torch.empty(n_programs, n_slots, H_P, WH_P, dtype=dtype, device=device)


def plane_num_warps(H: int, W: int) -> int:
    """Warps for a one-plane-per-program kernel: 8 past 64x64 tiles, to spread the registers;
    STAGED_NUM_WARPS on the staged path."""
    if is_staged(H, W):
        return STAGED_NUM_WARPS
    H_P, W_P, _ = tile_sizes(H, W)
    return 4 if H_P * W_P <= 64 * 64 else 8


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision of the FFT kernels for an op whose inputs have ``dtype``.

    The kernels compute in fp32 (fp64 for fp64 inputs), and fp32 tensor-core products round
    their operands to TF32. Measured with the interpreter's TF32 emulation (tests), the FFT ops
    come out at a relative error of about 6e-3 with plain TF32 and 3e-6 with 3xTF32. So: plain
    "tf32" for bf16 inputs (SPEC tolerance 2e-2), "tf32x3" for fp16 (5e-3) and fp32 (1e-5), and
    "ieee" for fp64. IEEE fp32 products would run on the FMA units instead, at a fraction of the
    tensor cores' rate, and their unrolled code spills heavily at 64x64 tiles (see
    ``benchmarks/compile_report.py``).
    """
    if dtype == torch.float64:
        return "ieee"
    return "tf32" if dtype == torch.bfloat16 else "tf32x3"


def check_mats(H: int, W: int, fh: torch.Tensor, fw: torch.Tensor) -> tuple[int, int, int]:
    """Check ``fh``, ``fw`` against an (H, W) plane; return (H_P, W_P, WH_P).

    Only the padded shapes can be checked without reading the matrices (a device sync): the
    public wrappers always pass :func:`dft_matrices` of the input's own (H, W).
    """
    H_P, W_P, WH_P = tile_sizes(H, W)
    if fh.shape != (2, H_P, H_P) or fw.shape != (4, W_P, WH_P):
        raise ValueError(
            f"fh, fw: expected DFT matrices of shapes (2, {H_P}, {H_P}) and (4, {W_P}, {WH_P}) "
            f"for a {H}x{W} plane (use hfsti_kernels.dft.dft_matrices), got "
            f"{tuple(fh.shape)} and {tuple(fw.shape)}"
        )
    return H_P, W_P, WH_P


def _dft_cos_sin(n: int, rows: int, cols: int, device: torch.device):
    """cos and -sin of 2 pi r c / n for r < rows, c < cols, in float64, angle reduced exactly."""
    r = torch.arange(rows, device=device, dtype=torch.int64)
    c = torch.arange(cols, device=device, dtype=torch.int64)
    m = (r[:, None] * c[None, :]) % n  # exact integer reduction keeps the angle accurate
    ang = m.to(torch.float64) * (2.0 * math.pi / n)
    re = torch.cos(ang)
    # sin is exactly zero at m = 0 and m = n/2; rounding would leak a 1e-16 imaginary part into
    # the bins that irfft2_strict must treat as real.
    im = torch.where((2 * m) % n == 0, torch.zeros_like(ang), -torch.sin(ang))
    scale = 1.0 / math.sqrt(n)
    return re * scale, im * scale


def _build(H: int, W: int, dtype: torch.dtype, device: torch.device):
    H_P, W_P, WH_P = tile_sizes(H, W)
    WH = W // 2 + 1
    fh = torch.zeros(2, H_P, H_P, dtype=torch.float64, device=device)
    fr, fi = _dft_cos_sin(H, H, H, device)
    fh[0, :H, :H] = fr
    fh[1, :H, :H] = fi
    fw = torch.zeros(4, W_P, WH_P, dtype=torch.float64, device=device)
    gr, gi = _dft_cos_sin(W, W, WH, device)
    weight = torch.full((WH,), 2.0, dtype=torch.float64, device=device)
    weight[0] = 1.0
    if W % 2 == 0:
        weight[W // 2] = 1.0
    fw[0, :W, :WH] = gr
    fw[1, :W, :WH] = gi
    fw[2, :W, :WH] = gr * weight
    fw[3, :W, :WH] = gi * weight
    return fh.to(dtype), fw.to(dtype)


def _must_not_cache(device: torch.device, probe: torch.Tensor) -> bool:
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return True
    return torch._subclasses.fake_tensor.is_fake(probe)


def dft_matrices(
    H: int, W: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached ``(fh, fw)`` pair for an (H, W) plane (see the module docstring for layout).

    Args:
        H, W: plane size, >= 1.
        dtype: the kernels' compute dtype (float32, or float64).
        device: where the kernels run.
    """
    key = (H, W, dtype, torch.device(device))
    mats = _CACHE.get(key)
    if mats is not None:
        return mats
    if torch.compiler.is_compiling():
        return _build(H, W, dtype, key[3])
    # Cached tensors must be ordinary ones: not inference tensors (autograd saves them for
    # backward) and not recorded by autograd.
    with torch.inference_mode(False), torch.no_grad():
        mats = _build(H, W, dtype, key[3])
    if not _must_not_cache(key[3], mats[0]):
        _CACHE[key] = mats
    return mats


def launch_planes(
    kernel, staged_kernel, n_slots: int, n_planes: int, H: int, W: int, tensors, fh, fw, *scalars,
    **consts,
) -> None:  # fmt: skip
    """Launch a one-program-per-plane ``kernel`` over ``n_planes`` (H, W) planes, or, for planes
    on the staged path (:func:`is_staged`), ``staged_kernel`` with an ``n_slots`` scratch.

    Arguments passed: ``*tensors, fh, fw, [scratch,] *scalars, H, W``, then the constexprs
    ``H_P, W_P, WH_P`` (and ``NSLOT`` and :func:`staged_blocks` if staged), ``consts`` and
    :func:`plane_num_warps`. The scratch has ``fh``'s dtype and device.
    """
    H_P, W_P, WH_P = tile_sizes(H, W)
    tiles = dict(H_P=H_P, W_P=W_P, WH_P=WH_P, num_warps=plane_num_warps(H, W), **consts)
    if is_staged(H, W):
        scr = scratch(n_planes, n_slots, H, W, fh.dtype, fh.device, True)
        _registry.launch(
            staged_kernel, (n_planes,), *tensors, fh, fw, scr, *scalars, H, W,
            NSLOT=n_slots, **staged_blocks(H, W), **tiles,
        )  # fmt: skip
    else:
        _registry.launch(kernel, (n_planes,), *tensors, fh, fw, *scalars, H, W, **tiles)


# --------------------------------------------------------------------------- Triton helpers
# Every matrix product takes its input precision from the kernels' DOT constexpr
# (:func:`dot_precision`).


@triton.jit
def load_plane(PTR, H, W, H_P: tl.constexpr, W_P: tl.constexpr, DTYPE: tl.constexpr):
    """Load a contiguous (H, W) plane at PTR into an (H_P, W_P) tile of DTYPE, zero-padded."""
    rows = tl.arange(0, H_P)[:, None]
    cols = tl.arange(0, W_P)[None, :]
    mask = (rows < H) & (cols < W)
    return tl.load(PTR + rows * W + cols, mask=mask, other=0.0).to(DTYPE)


@triton.jit
def store_plane(PTR, val, H, W, H_P: tl.constexpr, W_P: tl.constexpr):
    """Store the valid (H, W) corner of an (H_P, W_P) tile into a contiguous plane at PTR."""
    rows = tl.arange(0, H_P)[:, None]
    cols = tl.arange(0, W_P)[None, :]
    mask = (rows < H) & (cols < W)
    tl.store(PTR + rows * W + cols, val.to(PTR.dtype.element_ty), mask=mask)


@triton.jit
def load_fh(FH_PTR, H_P: tl.constexpr):
    """(Fr, Fi), each (H_P, H_P), from ``fh`` (2, H_P, H_P)."""
    r = tl.arange(0, H_P)
    off = r[:, None] * H_P + r[None, :]
    return tl.load(FH_PTR + off), tl.load(FH_PTR + H_P * H_P + off)


@triton.jit
def load_fw(FW_PTR, IDX: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr, TRANS: tl.constexpr):
    """Matrix IDX of ``fw`` (4, W_P, WH_P): (W_P, WH_P), or its transpose (WH_P, W_P) if TRANS."""
    base = FW_PTR + IDX * W_P * WH_P
    if TRANS:
        l_idx = tl.arange(0, WH_P)[:, None]
        w_idx = tl.arange(0, W_P)[None, :]
    else:
        w_idx = tl.arange(0, W_P)[:, None]
        l_idx = tl.arange(0, WH_P)[None, :]
    return tl.load(base + w_idx * WH_P + l_idx)


@triton.jit
def fwd(x, Br, Bi, Fr, Fi, DOT: tl.constexpr):
    """(Re, Im) of ``F_H @ x @ (Br + i Bi)`` for a real tile x (H_P, W_P) -> 2 x (H_P, WH_P)."""
    pr = tl.dot(x, Br, input_precision=DOT)
    pi = tl.dot(x, Bi, input_precision=DOT)
    xr = tl.dot(Fr, pr, input_precision=DOT) - tl.dot(Fi, pi, input_precision=DOT)
    xi = tl.dot(Fr, pi, input_precision=DOT) + tl.dot(Fi, pr, input_precision=DOT)
    return xr, xi


@triton.jit
def inv(yr, yi, Ar, Ai, Fr, Fi, DOT: tl.constexpr):
    """``Re(conj(F_H) @ (yr + i yi) @ (Ar + i Ai))``: 2 x (H_P, WH_P) -> real (H_P, W_P).

    Written as ``Fr (yr Ar + yi Ai) + Fi (yi Ar - yr Ai)`` (F_H is symmetric).
    """
    ur = tl.dot(yr, Ar, input_precision=DOT) + tl.dot(yi, Ai, input_precision=DOT)
    ui = tl.dot(yi, Ar, input_precision=DOT) - tl.dot(yr, Ai, input_precision=DOT)
    return tl.dot(Fr, ur, input_precision=DOT) + tl.dot(Fi, ui, input_precision=DOT)


@triton.jit
def cmul(ar, ai, br, bi, CONJ_B: tl.constexpr):
    """Elementwise complex product ``a * b`` (or ``a * conj(b)`` if CONJ_B) of (re, im) tiles."""
    if CONJ_B:
        return ar * br + ai * bi, ai * br - ar * bi
    return ar * br - ai * bi, ar * bi + ai * br


# --------------------------------------------------------------------------- staged-path helpers


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
    AR,
    AI,
    a_rs,
    a_cs,
    a_nr,
    a_nk,
    BR_,
    BI_,
    b_rs,
    b_cs,
    b_nk,
    b_nc,
    r0,
    c0,
    KP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    A_CPLX: tl.constexpr,
    B_CPLX: tl.constexpr,
    DTYPE: tl.constexpr,
    DOT: tl.constexpr,
    DIAG: tl.constexpr = False,
):
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
def staged_row_pass(
    X_PTR,
    x_rs,
    H,
    W,
    FW_PTR,
    IDX: tl.constexpr,
    OUT_R,
    OUT_I,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DTYPE: tl.constexpr,
    DOT: tl.constexpr,
):
    """``P = x @ (B_IDX + i B_IDX+1)`` along W for a real (H, W) plane at X_PTR (row stride x_rs)
    into two (H_P, WH_P) slots OUT_R, OUT_I (padded rows/columns exactly zero)."""
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
    FH_PTR,
    YR,
    YI,
    y_rs,
    y_nr,
    y_nc,
    r0,
    c0,
    H_P: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DTYPE: tl.constexpr,
    DOT: tl.constexpr,
):
    """Block (r0, c0) of the four products (Fr Yr, Fr Yi, Fi Yr, Fi Yi) along H (F_H is
    (H_P, H_P); Y has row stride y_rs and y_nr x y_nc valid entries)."""
    return blk_cmm(
        FH_PTR, FH_PTR + H_P * H_P, H_P, 1, H_P, H_P,
        YR, YI, y_rs, 1, y_nr, y_nc,
        r0, c0, H_P, BM, BN, BK, True, True, DTYPE, DOT,
    )  # fmt: skip


@triton.jit
def staged_inv_h(
    FH_PTR,
    YR,
    YI,
    y_rs,
    y_nr,
    y_nc,
    OUT_R,
    OUT_I,
    H_P: tl.constexpr,
    WH_P: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DTYPE: tl.constexpr,
    DOT: tl.constexpr,
):
    """First pass of an inverse, ``T = conj(F_H) Y``: ``Tr = Fr Yr + Fi Yi``,
    ``Ti = Fr Yi - Fi Yr``, into two (H_P, WH_P) slots."""
    for r0 in range(0, H_P, BM):
        for c0 in range(0, WH_P, BN):
            rr, ri, ir, ii = staged_col_blk(
                FH_PTR, YR, YI, y_rs, y_nr, y_nc, r0, c0, H_P, BM, BN, BK, DTYPE, DOT
            )
            st_cplx_blk(OUT_R, OUT_I, rr + ii, ri - ir, r0, c0, H_P, WH_P, BM, BN)


@triton.jit
def staged_inv_w_blk(
    TR,
    TI,
    FW_PTR,
    IDX: tl.constexpr,
    r0,
    c0,
    H_P: tl.constexpr,
    W_P: tl.constexpr,
    WH_P: tl.constexpr,
    BM: tl.constexpr,
    BNW: tl.constexpr,
    BK: tl.constexpr,
    DTYPE: tl.constexpr,
    DOT: tl.constexpr,
):
    """Block (r0, c0) of the second pass of an inverse, ``Tr A_IDX^T + Ti A_IDX+1^T`` along W
    (T in two (H_P, WH_P) slots), a real (BM, BNW) spatial block."""
    A = FW_PTR + IDX * W_P * WH_P
    rr, _, _, ii = blk_cmm(
        TR, TI, WH_P, 1, H_P, WH_P,
        A, A + W_P * WH_P, 1, WH_P, WH_P, W_P,
        r0, c0, WH_P, BM, BNW, BK, True, True, DTYPE, DOT, True,
    )  # fmt: skip
    return rr + ii


@triton.jit
def staged_inv_w(
    TR, TI, FW_PTR, IDX: tl.constexpr, OUT_PTR, H, W, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
):
    """The whole second pass of an inverse (:func:`staged_inv_w_blk` over every block), stored
    into the contiguous real (H, W) plane at OUT_PTR."""
    for r0 in range(0, H_P, BM):
        for c0 in range(0, W_P, BNW):
            y = staged_inv_w_blk(
                TR, TI, FW_PTR, IDX, r0, c0, H_P, W_P, WH_P, BM, BNW, BK, DTYPE, DOT
            )
            st_blk(OUT_PTR, y, W, r0, c0, H, W, BM, BNW)
