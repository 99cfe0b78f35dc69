"""Autograd plumbing shared by the CUDA ops whose backward is one op of (output grads, *inputs)."""

from __future__ import annotations

from collections.abc import Callable

from hfsti_kernels._registry import kernel_op


def backward_op(name: str, n_out_grads: int = 1):
    """Decorator: register a backward launcher ``fn(*out_grads, *inputs)`` that returns one
    gradient per input, shaped like it, as the custom op ``name`` (its fake rule follows from
    that contract); returns the op."""

    def fake(*args):
        return tuple(t.new_empty(t.shape) for t in args[n_out_grads:])

    return kernel_op(name, fake=fake)


def register_backward_of_inputs(op, backward: Callable) -> None:
    """Give ``op`` an autograd rule that saves all its inputs and returns
    ``backward(dy, *inputs)`` (one gradient per input) for the output gradient ``dy``."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def run_backward(ctx, dy):
        return backward(dy, *ctx.saved_tensors)

    op.register_autograd(run_backward, setup_context=setup_context)
