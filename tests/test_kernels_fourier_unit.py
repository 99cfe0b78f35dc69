"""fourier_unit's Triton kernels against the reference (docs/ops.md, fourier_unit): the shared
FFT-op checks (``fft_op_suite``) for this op, then its own: more channels than one GEMM tile,
inference without the saved spectrum, input validation.
"""

from __future__ import annotations

import pytest
import torch
from fft_op_suite import *  # noqa: F403 (the shared FFT-op tests, run for OP below)
from fft_op_suite import KERNEL, bad_inputs_test, wide_channels_test
from helpers import INTERPRETER_ONLY, TOLERANCE, assert_rel_close

from hfsti import ops as ref
from hfsti_kernels import dft
from hfsti_kernels._inputs import fft_op_inputs
from hfsti_kernels.ops import fourier_unit as fu_mod

pytestmark = INTERPRETER_ONLY
OP = "fourier_unit"


test_wide_channels = wide_channels_test(40, 33)


def test_no_grad_skips_spectrum():
    """Inference does not write the saved spectrum, and still matches."""
    x, w, b = fft_op_inputs("fourier_unit", 1, 3, 5, 7, torch.float64)
    fh, fw = dft.dft_matrices(5, 7, torch.float64, x.device)
    y, zs = fu_mod._fu_op(x, w, b, fh, fw, False)
    assert zs.numel() == 0
    with torch.no_grad():
        y2 = fu_mod.fourier_unit(x.requires_grad_(), w, b, backend="triton")
    assert_rel_close(y2, ref.fourier_unit(x, w, b), TOLERANCE[torch.float64], "no_grad")
    assert torch.equal(y, y2)


def _bad_cases():
    q = torch.randn(1, 2, 3, 4)
    _, fw, fb = fft_op_inputs("fourier_unit", 1, 2, 3, 4, torch.float32, c_out=2)
    fu = KERNEL["fourier_unit"]
    return [
        ("fu weight", lambda: fu(q, fw[:, :3], fb, backend="triton"), ValueError, r"^weight: "),
        ("fu odd rows", lambda: fu(q, fw[:3], fb, backend="triton"), ValueError, r"^weight: "),
        ("fu bias", lambda: fu(q, fw, fb[:3], backend="triton"), ValueError, r"^bias: "),
        ("fu bias dtype", lambda: fu(q, fw, fb.double(), backend="triton"), TypeError, r"^bias"),
        ("fu rank", lambda: fu(q[0], fw, fb, backend="triton"), ValueError, r"^x: "),
        ("fu bad backend", lambda: fu(q, fw, fb, backend="Triton"), ValueError, r"^backend: "),
    ]


test_bad_inputs_raise_naming_the_argument = bad_inputs_test(_bad_cases())


def test_backward_without_saved_spectrum_is_refused():
    x, w, b = fft_op_inputs("fourier_unit", 1, 3, 5, 7, torch.float64)
    fh, fw = dft.dft_matrices(5, 7, torch.float64, x.device)
    with pytest.raises(ValueError, match=r"^zs: "):
        fu_mod._fu_bwd_op(torch.randn(1, 2, 5, 7, dtype=torch.float64), x, w, x[:0], fh, fw)
