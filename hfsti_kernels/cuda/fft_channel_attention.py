"""CUDA backend of ``fft_channel_attention``: ``y = irfft2(rfft2(q) rfft2(k) rfft2(v))``.

The kernels are ``csrc/fft_channel_attention.cu`` (design and limits in its header): one thread
block per (b, c) plane, mixed-radix FFTs in shared memory (or a global scratch for planes too
large for it, see ``_fft_plan``), each input read once and each output written once, forward
and backward. Two ``torch.library`` ops, ``hfsti_cuda::fft_channel_attention`` and
``hfsti_cuda::fft_channel_attention_backward``, with fake rules and autograd; registered as the
``"cuda"`` implementation of the public op.

Inputs are made contiguous first (the kernels index planes densely): a copy, one extra read and
write of that tensor, only when a caller passes a non-contiguous view.
"""

from __future__ import annotations

from torch import Tensor

from hfsti_kernels._registry import kernel_op, register_implementation
from hfsti_kernels.cuda import _fft_plan
from hfsti_kernels.cuda import runtime as rt
from hfsti_kernels.cuda._autograd import backward_op, register_backward_of_inputs

__all__ = ["fft_channel_attention"]


def _fwd_fake(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return q.new_empty(q.shape)


@kernel_op("hfsti_cuda::fft_channel_attention", fake=_fwd_fake)
def fft_channel_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The CUDA kernels' ``fft_channel_attention`` (inputs already validated by the public op).

    Args:
        q, k, v: (B, C, H, W), same shape, dtype and device; any strides.
    Returns:
        y: (B, C, H, W) in the input dtype; differentiable in q, k, v.
    """
    q, k, v = (t.contiguous() for t in (q, k, v))
    B, C, H, W = q.shape
    y = q.new_empty(q.shape)
    args = [rt.ptr(q), rt.ptr(k), rt.ptr(v), rt.ptr(y)]
    _fft_plan.launch("hfsti_fca_fwd", q, args, B * C, H, W, nbuf=3)
    return y


@backward_op("hfsti_cuda::fft_channel_attention_backward")
def _bwd(dy: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dy, q, k, v = (t.contiguous() for t in (dy, q, k, v))
    B, C, H, W = q.shape
    dq, dk, dv = (q.new_empty(q.shape) for _ in range(3))
    args = [rt.ptr(t) for t in (dy, q, k, v, dq, dk, dv)]
    _fft_plan.launch("hfsti_fca_bwd", q, args, B * C, H, W, nbuf=4)
    return dq, dk, dv


register_backward_of_inputs(fft_channel_attention, _bwd)
register_implementation("fft_channel_attention", "cuda", fft_channel_attention)
