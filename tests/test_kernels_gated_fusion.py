"""gated_fusion's Triton kernels against the reference (docs/ops.md, gated_fusion): the shared
FFT-op checks (``fft_op_suite``) for this op, then its own: more channels than one GEMM tile,
input validation.
"""

from __future__ import annotations

import torch
from fft_op_suite import *  # noqa: F403 (the shared FFT-op tests, run for OP below)
from fft_op_suite import KERNEL, bad_inputs_test, wide_channels_test
from helpers import INTERPRETER_ONLY

from hfsti_kernels._inputs import fft_op_inputs

pytestmark = INTERPRETER_ONLY
OP = "gated_fusion"


test_wide_channels = wide_channels_test(33, 33)


def _bad_cases():
    x_f, x_s, x_0, fw, fb, dw, db = fft_op_inputs("gated_fusion", 1, 2, 3, 4, torch.float32)
    gf = KERNEL["gated_fusion"]
    meta = torch.device("meta")
    return [
        (
            "gf x_s shape",
            lambda: gf(x_f, x_s[:, :1], x_0, fw, fb, dw, db, backend="triton"),
            ValueError,
            r"^x_s: ",
        ),
        (
            "gf fu_weight",
            lambda: gf(x_f, x_s, x_0, fw[:2], fb, dw, db, backend="triton"),
            ValueError,
            r"^fu_weight: ",
        ),
        (
            "gf dw_weight",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw[..., :2], db, backend="triton"),
            ValueError,
            r"^dw_weight: ",
        ),
        (
            "gf dw_bias dtype",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw, db.half(), backend="triton"),
            TypeError,
            r"^dw_bias: ",
        ),
        (
            "gf x_0 device",
            lambda: gf(x_f, x_s, x_0.to(meta), fw, fb, dw, db, backend="triton"),
            ValueError,
            r"^x_0: .*device",
        ),
        (
            "gf bad backend",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw, db, backend=""),
            ValueError,
            r"^backend: ",
        ),
    ]


test_bad_inputs_raise_naming_the_argument = bad_inputs_test(_bad_cases())
