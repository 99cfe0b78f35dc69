"""Autograd plumbing shared by the CUDA ops whose backward is one op of (dy, *inputs)."""

from __future__ import annotations

from collections.abc import Callable


def register_backward_of_inputs(op, backward_op: Callable) -> None:
    """Give ``op`` an autograd rule that saves all its inputs and returns
    ``backward_op(dy, *inputs)`` (one gradient per input) for the output gradient ``dy``."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, dy):
        return backward_op(dy, *ctx.saved_tensors)

    op.register_autograd(backward, setup_context=setup_context)
