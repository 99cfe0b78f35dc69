"""Every CUDA op under AddressSanitizer: the emulator build of all csrc/ kernels with
``-fsanitize=address``, run forward and backward in a child process (ASan's runtime must be
preloaded), on non-contiguous inputs and gradients so that every copy the launchers make is
exercised. An out-of-bounds access, or a launch on a tensor already freed (a temporary whose
address outlived it), aborts the child with an ASan report; the values are checked too."""

from __future__ import annotations

import pytest
from helpers import NEEDS_CXX, run_sanitized

from hfsti_kernels.cuda import _hostbuild, build

pytestmark = NEEDS_CXX
MODULE = "_cuda_emu_asan"

_SCRIPT = f"""
import torch
from helpers import check_cuda_op
from hfsti_kernels._inputs import attention_inputs, fft_op_inputs
from hfsti_kernels.cuda import build

build._LOADED[build.MODULE] = build.load("asan", module={MODULE!r})

def strided(t):  # the same values, transposed in memory
    return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() > 1 else t

for op in ("fft_channel_attention", "fourier_unit", "gated_fusion"):
    check_cuda_op(op, fft_op_inputs(op, 2, 3, 5, 7, torch.float32, c_out=2), strided)
inputs = attention_inputs((2, 3, 5, 19, 8), torch.float32, "bcast_h")
check_cuda_op("memory_attention", inputs, strided)
print("ok")
"""


def test_addresssanitizer_reports_no_memory_error():
    if not _hostbuild.asan_preload():
        pytest.skip("the compiler has no AddressSanitizer runtime")
    build.build("asan", module=MODULE)  # compile outside the sanitized child
    run_sanitized(_SCRIPT, "asan", timeout=900)
