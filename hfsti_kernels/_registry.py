"""How kernels become ``torch.library`` ops, and which backend's kernels an op call runs.

Two registries, one per concern:

- **Custom ops.** :func:`triton_kernel_op` registers a function that launches Triton kernels
  (through :func:`launch`) as ``torch.library.triton_op`` on GPU, so torch.compile traces into
  the kernels; under ``TRITON_INTERPRET=1`` the kernels are Python functions that cannot be
  traced into, so the same function becomes an opaque ``custom_op`` with a fake (shape) rule.
  :func:`kernel_op` registers any other opaque kernel launcher (the CUDA backend's) the same
  opaque way. Both return the op, so ``op.register_autograd(...)`` follows.
- **Implementations.** Each public op (``hfsti_kernels.<op>``) validates its inputs with the
  reference's checker, resolves ``backend=`` with :func:`hfsti_kernels._backend.select_backend`
  and then runs the reference or ``implementation(op, backend)``. A backend module registers
  its entry points with :func:`register_implementation`; an implementation takes the reference
  op's arguments (already validated, no ``backend=``) plus the public function's op-specific
  keyword options (memory attention's ``fp32_precision``). An op with no ``"cuda"``
  implementation falls back to its ``"triton"`` one (the losses do), so the CUDA backend is
  complete as soon as it registers the ops it speeds up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch.library import triton_op, wrap_triton

from hfsti.ops import OpSet
from hfsti_kernels._backend import interpreter_enabled

# The public ops, named as the fields of ``hfsti.ops.OpSet`` (after "name").
OPS = tuple(f.name for f in dataclasses.fields(OpSet) if f.name != "name")
# The backends that register implementations ("reference" is hfsti.ops itself, "auto" a choice).
KERNEL_BACKENDS = ("triton", "cuda")

_IMPLEMENTATIONS: dict[tuple[str, str], Callable] = {}


def register_implementation(op: str, backend: str, fn: Callable) -> Callable:
    """Make ``fn`` the ``backend`` ("triton" or "cuda") implementation of the public ``op``.

    Registering again replaces the previous implementation. Returns ``fn``.
    """
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"backend: expected one of {KERNEL_BACKENDS}, got {backend!r}")
    _IMPLEMENTATIONS[op, backend] = fn
    return fn


def implementation(op: str, backend: str) -> Callable:
    """The registered ``backend`` implementation of ``op``; "cuda" falls back to "triton"."""
    fn = _IMPLEMENTATIONS.get((op, backend))
    if fn is None and backend == "cuda":
        fn = _IMPLEMENTATIONS.get((op, "triton"))
    if fn is None:
        raise LookupError(f"{op}: no {backend!r} implementation is registered")
    return fn


def triton_kernel_op(name: str, fake: Callable | None = None):
    """Decorator: register ``fn``, which launches Triton kernels, as the custom op ``name``
    (e.g. ``"hfsti::fourier_unit"``); returns the op.

    On GPU this is ``torch.library.triton_op``. Under the interpreter it is an opaque
    ``torch.library.custom_op`` whose fake rule is ``fake``, by default ``fn`` itself (its
    launches are skipped on fake tensors by :func:`launch`); the eager results are identical.
    """

    def deco(fn):
        if interpreter_enabled():
            return kernel_op(name, fake or fn)(fn)
        return triton_op(name, fn, mutates_args=())

    return deco


def kernel_op(name: str, fake: Callable):
    """Decorator: register ``fn``, an opaque kernel launcher, as the custom op ``name`` with
    the fake (shape) rule ``fake``; returns the op."""

    def deco(fn):
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fake)
        return op

    return deco


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launch a Triton ``kernel`` on ``grid`` through ``torch.library.wrap_triton``, so that
    torch.compile can trace the launch.

    Under ``TRITON_INTERPRET=1`` wrap_triton hands back the interpreted kernel itself, which
    would try to read the data of fake (or meta) tensors during shape propagation; there is
    nothing to compute then, so the launch is skipped. On GPU the wrapper's own fake rule
    handles it.
    """
    if interpreter_enabled() and any(
        isinstance(a, torch.Tensor)
        and (a.device.type == "meta" or torch._subclasses.fake_tensor.is_fake(a))
        for a in args
    ):
        return
    wrap_triton(kernel)[grid](*args, **kwargs)
