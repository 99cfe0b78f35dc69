"""fft_channel_attention's Triton kernels against the reference (docs/ops.md,
fft_channel_attention): the shared FFT-op checks (``fft_op_suite``) for this op, then its own
input validation and the refusal of Triton on CPU without the interpreter.
"""

from __future__ import annotations

import pytest
import torch
from fft_op_suite import *  # noqa: F403 (the shared FFT-op tests, run for OP below)
from fft_op_suite import KERNEL, bad_inputs_test
from helpers import INTERPRETER_ONLY

from hfsti_kernels import dft
from hfsti_kernels.ops import fft_channel_attention as fca_mod

pytestmark = INTERPRETER_ONLY
OP = "fft_channel_attention"


def _bad_cases():
    q = torch.randn(1, 2, 3, 4)
    fca = KERNEL["fft_channel_attention"]
    meta = torch.device("meta")
    return [
        ("fca rank", lambda: fca(q[0], q, q, backend="triton"), ValueError, r"^q: .*4-D"),
        ("fca shape", lambda: fca(q, q[..., :3], q, backend="triton"), ValueError, r"^k: "),
        ("fca dtype", lambda: fca(q, q, q.double(), backend="triton"), TypeError, r"^v: "),
        ("fca int", lambda: fca(q.long(), q, q, backend="triton"), TypeError, r"^q: "),
        ("fca device", lambda: fca(q, q.to(meta), q, backend="triton"), ValueError, r"^k: .*dev"),
        ("fca not tensor", lambda: fca(q, 1.0, q, backend="triton"), TypeError, r"^k: "),
        ("bad backend", lambda: fca(q, q, q, backend="fast"), ValueError, r"^backend: "),
        ("cuda backend", lambda: fca(q, q, q, backend="cuda"), ValueError, r"^backend: "),
        (
            "bad matrices",
            lambda: fca_mod._fca_op(q, q, q, *dft.dft_matrices(20, 4, torch.float32, q.device)),
            ValueError,
            r"^fh, fw: ",
        ),
    ]


test_bad_inputs_raise_naming_the_argument = bad_inputs_test(_bad_cases())


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"^backend: 'triton' needs CUDA"):
        KERNEL["fft_channel_attention"](q, q, q, backend="triton")
