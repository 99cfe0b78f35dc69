"""Drop-in swap of the reference ops for the fused kernels."""

from __future__ import annotations

import functools

from torch import nn

from hfsti.model import HFSTINet
from hfsti.ops import OpSet, use_backend
from hfsti_kernels._backend import check_backend
from hfsti_kernels.ops.fft_channel_attention import fft_channel_attention
from hfsti_kernels.ops.fourier_unit import fourier_unit
from hfsti_kernels.ops.gated_fusion import gated_fusion
from hfsti_kernels.ops.memory_attention import memory_attention
from hfsti_kernels.ops.spectral_correlation_loss import spectral_correlation_loss
from hfsti_kernels.ops.structure_loss import structure_loss


def opset(backend: str = "auto") -> OpSet:
    """The six ops with ``backend`` bound ("auto", "triton", "reference" or "cuda")."""
    check_backend(backend)
    ops = (
        fft_channel_attention,
        fourier_unit,
        gated_fusion,
        memory_attention,
        structure_loss,
        spectral_correlation_loss,
    )
    return OpSet(backend, *(functools.partial(op, backend=backend) for op in ops))


def patch(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Make ``module`` (an ``HFSTINet``, a ``HybridLoss``, ...) call the fused ops, in place.

    Parameters and ``state_dict`` are untouched; an ``HFSTINet`` records the backend in its
    config, so its checkpoints rebuild the patched model.
    """
    if isinstance(module, HFSTINet):
        return module.set_backend(opset(backend))
    use_backend(module, opset(backend))
    return module
