"""The TF32 dot precisions: emulated by the interpreter on CPU (tf32_emulation), native on GPU.

The same bounds hold for both, so on a GPU this checks the emulation's premise: that the
hardware's "tf32" is no less accurate than truncating the operands to 10 mantissa bits, and
that "tf32x3" meets the fp32 tolerance.
"""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from helpers import rel_err
from tf32_emulation import to_tf32

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _dot_kernel(
    A_PTR, B_PTR, C_PTR, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, DOT: tl.constexpr
):
    """C = A @ B for one (M, K) x (K, N) tile; all row-major fp32."""
    rm = tl.arange(0, M)[:, None]
    rn = tl.arange(0, N)[None, :]
    rk = tl.arange(0, K)
    a = tl.load(A_PTR + rm * K + rk[None, :])
    b = tl.load(B_PTR + rk[:, None] * N + rn)
    tl.store(C_PTR + rm * N + rn, tl.dot(a, b, input_precision=DOT))


def _dot(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    (M, K), N = a.shape, b.shape[1]
    c = torch.empty(M, N, dtype=torch.float32, device=a.device)
    _dot_kernel[(1,)](a, b, c, M, N, K, precision)
    return c


def test_to_tf32_keeps_ten_mantissa_bits():
    x = np.array([1 + 2**-10, 1 + 2**-11, -(1 + 2**-10 + 2**-11), 3.0], dtype=np.float32)
    np.testing.assert_array_equal(to_tf32(x), [1 + 2**-10, 1.0, -(1 + 2**-10), 3.0])


@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 64, 16)])
def test_dot_precisions_against_fp64(shape):
    M, N, K = shape
    g = torch.Generator().manual_seed(1)
    a = torch.randn(M, K, generator=g).to(DEVICE)
    b = torch.randn(K, N, generator=g).to(DEVICE)
    ref = a.double() @ b.double()
    err = {p: rel_err(_dot(a, b, p), ref) for p in ("ieee", "tf32", "tf32x3")}
    print(f"{shape}: " + ", ".join(f"{p} {e:.2e}" for p, e in err.items()))
    assert err["ieee"] < 1e-6
    # TF32 keeps 10 of 23 mantissa bits: visibly worse than fp32, but within 2^-10.
    assert 1e-5 < err["tf32"] < 2**-10
    assert err["tf32x3"] < 1e-5
