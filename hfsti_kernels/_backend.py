"""Which implementation an op call runs: the ``backend=`` keyword and ``HFSTI_BACKEND``.

- ``"auto"`` (default): Triton kernels on CUDA tensors, the reference ops elsewhere.
- ``"triton"``: the Triton kernels; on CPU tensors only under ``TRITON_INTERPRET=1`` (how CI
  verifies them), which must be set before ``hfsti_kernels`` is imported.
- ``"reference"``: ``hfsti.ops``, the oracle.
- ``"cuda"``: the hand-written CUDA kernels (``csrc/``), where an executor for them exists.
"""

from __future__ import annotations

import os

import torch

from hfsti.ops import BACKEND_ENV_VAR as ENV_VAR

BACKENDS = ("auto", "triton", "reference", "cuda")


def interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_backend(name: str) -> str:
    """Return ``name`` if it is one of :data:`BACKENDS` that can run in this process, else raise
    a one-line ``ValueError`` naming the ``backend`` argument."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if name == "cuda":
        require_cuda(None)
    return name


def require_cuda(x: torch.Tensor | None) -> None:
    """Raise a one-line ``ValueError`` unless the CUDA kernels can run (on ``x``'s device;
    ``x=None``: anywhere): CUDA tensors need the nvcc-built extension or CuPy, CPU tensors
    ``HFSTI_CUDA_EMULATE=1`` (the host emulator); the error names the ways to get one."""
    from hfsti_kernels.cuda import runtime

    runtime.require(x)


def select_backend(backend: str | None, x: torch.Tensor) -> str:
    """Resolve ``backend`` (or the ``HFSTI_BACKEND`` default) for an input on ``x.device``.

    Returns ``"reference"``, ``"triton"`` or ``"cuda"``; raises ``ValueError`` naming
    ``backend`` when the request cannot run here.
    """
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if name not in BACKENDS:
        source = "backend" if backend is not None else f"{ENV_VAR} environment variable"
        raise ValueError(f"{source}: expected one of {BACKENDS}, got {name!r}")
    if name == "reference" or (name == "auto" and not x.is_cuda):
        return "reference"
    if name == "cuda":
        require_cuda(x)
        return "cuda"
    if not x.is_cuda and not interpreter_enabled():
        raise ValueError(
            f"backend: 'triton' needs CUDA tensors (got device {x.device}); set "
            "TRITON_INTERPRET=1 before importing hfsti_kernels to run the kernels on CPU"
        )
    return "triton"
