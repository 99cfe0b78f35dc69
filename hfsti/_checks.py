"""Input validation shared by the reference ops, the kernels and the model.

Every check raises ``ValueError`` (wrong shape or value) or ``TypeError`` (wrong type or
dtype) with a message that names the argument and says what was expected, so a caller never
gets a silent wrong answer or a crash deep inside a kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(
    name: str,
    x: object,
    ndim: int | None = None,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of rank ``ndim``; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D tensor, got {x.dim()}-D with shape {tuple(x.shape)}"
        )
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name}: expected dtype in ({allowed}), got {x.dtype}")
    return x


def check_shape(name: str, x: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Check ``x.shape`` against ``shape``; ``None`` entries match any size."""
    ok = x.dim() == len(shape) and all(s is None or s == n for s, n in zip(shape, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def check_same(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """Check that tensors share shape, dtype and device with the first one."""
    ref_name, ref = names[0], tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.shape != ref.shape:
            raise ValueError(
                f"{name}: expected the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}"
            )
        check_like(name, t, ref_name, ref)


def check_like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Check that ``t`` has the dtype and device of ``ref``."""
    if t.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (that of {ref_name}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(
            f"{name}: expected device {ref.device} (that of {ref_name}), got {t.device}"
        )


def check_nonempty(name: str, x: torch.Tensor, dims: str) -> None:
    """Reject a zero size in any dim; ``dims`` names them, e.g. "(B, C, H, W)"."""
    if 0 in x.shape:
        raise ValueError(f"{name}: expected every size of {dims} >= 1, got {tuple(x.shape)}")


def check_head_dim(q: torch.Tensor, limit: int, kernels: str) -> None:
    """Refuse attention inputs whose head dim (q's last) is over the ``kernels``' ``limit``."""
    d = q.shape[-1]
    if d > limit:
        raise ValueError(
            f"q: head dim d={d} > {limit} is not supported by {kernels}; use backend='reference'"
        )


def _traced(x: torch.Tensor) -> bool:
    """True when ``x`` has no values to look at: a meta or fake tensor, or torch.compile is
    tracing (value checks then stay out of the graph)."""
    return torch.compiler.is_compiling() or x.device.type == "meta" or is_fake(x)


def check_unit_range(name: str, x: torch.Tensor, hint: str = "") -> None:
    """Reject values outside [0, 1] (NaN included) with the range found.

    One ``aminmax`` and one host sync; skipped for meta/fake tensors and under torch.compile.
    """
    if _traced(x) or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.stack(torch.aminmax(x.detach())).tolist())
    if not (lo >= 0 and hi <= 1):
        raise ValueError(f"{name}: expected values in [0, 1], got [{lo:g}, {hi:g}]{hint}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference computes in: at least float32 (docs/ops.md, Compute dtype)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
