"""Dense DFT matrices, their cache, and the whole-tile transforms of the FFT kernels.

Design (docs/kernels.md, DFT as dense matmul): at the model's sizes (H, W in 11..88) a 2-D real
FFT is cheapest as two small dense matrix products, ``X = F_H @ x @ G_W``, which Triton lowers to
tensor-core ``tl.dot`` (TF32 or 3xTF32, :func:`dot_precision`) and which keep every complex
intermediate in registers. Complex matrices are carried as separate real and imaginary real
matrices. Every matrix is zero-padded to power-of-two tiles >= 16 (``tl.dot``'s minimum), so a
kernel masks only its loads and stores of data, never the matrices, and the padded rows and
columns of every product are exactly zero.

Matrices (``norm="ortho"``), built in float64 and cast once per (H, W, dtype, device):

- ``fh``: (2, H_P, H_P) = [Fr, Fi], ``F_H[k, h] = exp(-2 pi i k h / H) / sqrt(H)`` (symmetric).
- ``fw``: (4, W_P, WH_P) = [Gr, Gi, cGr, cGi] (indices :data:`G_RE`, :data:`G_IM`,
  :data:`CG_RE`, :data:`CG_IM`), ``G[w, l] = exp(-2 pi i l w / W) / sqrt(W)`` for the W // 2 + 1
  half-spectrum columns l, and ``c_l`` the C2R Hermitian weights (1 for l = 0 and, for even W,
  l = W / 2; 2 otherwise).

With these, as real-linear maps on (real, imag) tile pairs:

- ``rfft2(x) = rdft2(x; Gr, Gi)``;  its adjoint is ``irdft2(.; Gr^T, Gi^T)``.
- ``irfft2_strict(Y) = irdft2(Y; cGr^T, cGi^T)`` (docs/ops.md, irfft2_strict): the imaginary
  parts of column 0 and, for even W, column W/2 are dropped because ``sin`` is exactly 0 there
  (set exactly, not rounded); its adjoint is ``rdft2(.; cGr, cGi)``.

Planes too large for one tile take the staged path (``hfsti_kernels._staged``).

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

# The matrices of ``fw``: G = Gr + i Gi, and the Hermitian-weighted cG = cGr + i cGi.
G_RE = tl.constexpr(0)
G_IM = tl.constexpr(1)
CG_RE = tl.constexpr(2)
CG_IM = tl.constexpr(3)

_CACHE: dict[tuple[int, int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def tile_sizes(H: int, W: int) -> tuple[int, int, int]:
    """(H_P, W_P, WH_P): H, W and W // 2 + 1 padded to powers of two >= 16 (tl.dot minimum)."""
    return (
        max(16, triton.next_power_of_2(H)),
        max(16, triton.next_power_of_2(W)),
        max(16, triton.next_power_of_2(W // 2 + 1)),
    )


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision of the FFT kernels for an op whose inputs have ``dtype``.

    The kernels compute in fp32 (fp64 for fp64 inputs), and fp32 tensor-core products round
    their operands to TF32. Measured with the interpreter's TF32 emulation (tests), the FFT ops
    come out at a relative error of about 6e-3 with plain TF32 and 3e-6 with 3xTF32. So: plain
    "tf32" for bf16 inputs (tolerance 2e-2, docs/ops.md, Tolerances), "tf32x3" for fp16 (5e-3)
    and fp32 (1e-5), and "ieee" for fp64. IEEE fp32 products would run on the FMA units
    instead, at a fraction of the tensor cores' rate, and their unrolled code spills heavily at
    64x64 tiles (see ``benchmarks/compile_report.py``).
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
    fw[:, :W, :WH] = torch.stack([gr, gi, gr * weight, gi * weight])  # G_RE .. CG_IM
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
    """The complex matrix of ``fw`` (4, W_P, WH_P) whose real part is matrix IDX
    (:data:`G_RE` or :data:`CG_RE`): (re, im), each (W_P, WH_P), or transposed (WH_P, W_P) if
    TRANS."""
    return (
        _load_fw_matrix(FW_PTR, IDX, W_P, WH_P, TRANS),
        _load_fw_matrix(FW_PTR, IDX + 1, W_P, WH_P, TRANS),
    )


@triton.jit
def _load_fw_matrix(
    FW_PTR, IDX: tl.constexpr, W_P: tl.constexpr, WH_P: tl.constexpr, TRANS: tl.constexpr
):
    """Matrix IDX of ``fw``: (W_P, WH_P), or its transpose (WH_P, W_P) if TRANS."""
    base = FW_PTR + IDX * W_P * WH_P
    if TRANS:
        l_idx = tl.arange(0, WH_P)[:, None]
        w_idx = tl.arange(0, W_P)[None, :]
    else:
        w_idx = tl.arange(0, W_P)[:, None]
        l_idx = tl.arange(0, WH_P)[None, :]
    return tl.load(base + w_idx * WH_P + l_idx)


@triton.jit
def rdft2(x, Br, Bi, Fr, Fi, DOT: tl.constexpr):
    """(Re, Im) of ``F_H @ x @ (Br + i Bi)`` for a real tile x: the 2-D DFT of a real plane.

    x (H_P, K), Br and Bi (K, N) -> 2 x (H_P, N); with B = G this is rfft2.
    """
    pr = tl.dot(x, Br, input_precision=DOT)
    pi = tl.dot(x, Bi, input_precision=DOT)
    xr = tl.dot(Fr, pr, input_precision=DOT) - tl.dot(Fi, pi, input_precision=DOT)
    xi = tl.dot(Fr, pi, input_precision=DOT) + tl.dot(Fi, pr, input_precision=DOT)
    return xr, xi


@triton.jit
def irdft2(yr, yi, Ar, Ai, Fr, Fi, DOT: tl.constexpr):
    """``Re(conj(F_H) @ (yr + i yi) @ (Ar - i Ai))``: the real part of an inverse 2-D DFT.

    2 x (H_P, WH_P) -> real (H_P, W_P); written as ``Fr (yr Ar + yi Ai) + Fi (yi Ar - yr Ai)``
    (F_H is symmetric). With A = (cG)^T this is irfft2_strict.
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
