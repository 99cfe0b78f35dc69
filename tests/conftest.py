"""Test-wide set-up: without a GPU, Triton kernels run in the CPU interpreter.

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a kernel, so it must be set here,
before any test module imports ``hfsti_kernels``. The interpreter is also taught the TF32 dot
precisions (``tf32_emulation``), so the kernels are held to the precision a GPU delivers.
The ``launches`` fixture records the CUDA kernels a test launches from Python.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("TRITON_INTERPRET") == "1":
    import tf32_emulation

    tf32_emulation.install()


@pytest.fixture
def launches(monkeypatch) -> list[str]:
    """The names of the CUDA kernels launched from Python during the test, in order."""
    from hfsti_kernels.cuda import runtime as rt

    names: list[str] = []
    real = rt.launch

    def spy(name, *args, **kwargs):
        names.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(rt, "launch", spy)
    return names
