"""Make the Triton interpreter honour ``tl.dot``'s TF32 input precisions.

The interpreter computes every fp32 ``tl.dot`` exactly in fp32, whatever its
``input_precision``; on a GPU, "tf32" rounds both operands to TF32 (10 mantissa bits) and
"tf32x3" adds the two cross terms of a hi/lo split (``a_hi b_lo + a_lo b_hi + a_hi b_hi``).
Without this, a kernel's choice of TF32 would be invisible to the CPU tests, and the
tolerances (docs/ops.md, Tolerances) would be checked against a precision the GPU never delivers.

The operands are truncated (round toward zero), which is no more accurate than the hardware's
conversion, so a tolerance that holds here holds on the GPU as far as operand rounding goes.
"""

from __future__ import annotations

import numpy as np
from triton._C.libtriton import ir
from triton.runtime import interpreter

_TF32_MASK = np.uint32(0xFFFFE000)  # sign, exponent and the top 10 of 23 mantissa bits


def to_tf32(a: np.ndarray) -> np.ndarray:
    """fp32 values truncated to TF32 precision (still stored as fp32)."""
    return (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) & _TF32_MASK).view(np.float32)


def tf32_matmul(a: np.ndarray, b: np.ndarray, x3: bool) -> np.ndarray:
    """fp32 ``a @ b`` with TF32 operands; with ``x3``, the 3xTF32 split products."""
    a_hi, b_hi = to_tf32(a), to_tf32(b)
    out = np.matmul(a_hi, b_hi, dtype=np.float32)
    if x3:
        a_lo, b_lo = to_tf32(a - a_hi), to_tf32(b - b_hi)
        out = (
            np.matmul(a_hi, b_lo, dtype=np.float32) + np.matmul(a_lo, b_hi, dtype=np.float32) + out
        )
    return out


def install() -> None:
    """Patch the interpreter's dot (idempotent)."""
    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "emulates_tf32", False):
        return
    exact = builder.create_dot
    tf32_modes = {ir.INPUT_PRECISION.TF32: False, ir.INPUT_PRECISION.TF32x3: True}

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision not in tf32_modes or a.data.dtype != np.float32:
            return exact(self, a, b, d, input_precision, max_num_imprecise_acc)
        prod = tf32_matmul(a.data, b.data, tf32_modes[input_precision])
        return interpreter.TensorHandle(prod.astype(d.data.dtype) + d.data, d.dtype.scalar)

    create_dot.emulates_tf32 = True
    builder.create_dot = create_dot
