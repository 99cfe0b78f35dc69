"""Test-wide set-up: without a GPU, Triton kernels run in the CPU interpreter.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a kernel, so it must be set here,
before any test module imports ``hfsti_kernels``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
