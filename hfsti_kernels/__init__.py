"""Fused Triton and CUDA kernels for HFSTI-Net: drop-in replacements for the ops of ``hfsti.ops``.

Each op takes the reference signature plus ``backend=``: "auto" (Triton on CUDA tensors, the
reference elsewhere; the default, or the ``HFSTI_BACKEND`` environment variable), "triton",
"reference", "cuda" (the kernels of ``csrc/``; ``hfsti_kernels._backend``). ``patch(model)``
switches a whole model; ``HFSTIConfig(backend="auto")`` builds one switched.
"""

# hfsti_kernels.cuda registers the "cuda" implementations; it never fails to import (a broken op
# module is reported by a warning and falls back to Triton, see hfsti_kernels/cuda/__init__.py).
import hfsti_kernels.cuda  # noqa: F401
from hfsti.ops import register_backend
from hfsti_kernels._backend import BACKENDS
from hfsti_kernels.accelerate import AcceleratedSegmenter, accelerate
from hfsti_kernels.ops.fft_channel_attention import fft_channel_attention
from hfsti_kernels.ops.fourier_unit import fourier_unit
from hfsti_kernels.ops.gated_fusion import gated_fusion
from hfsti_kernels.ops.memory_attention import memory_attention
from hfsti_kernels.ops.spectral_correlation_loss import spectral_correlation_loss
from hfsti_kernels.ops.structure_loss import structure_loss
from hfsti_kernels.patch import opset, patch

for _name in BACKENDS:
    if _name == "reference":  # hfsti.ops's own
        continue
    register_backend(_name, lambda name=_name: opset(name))

__all__ = [
    "AcceleratedSegmenter",
    "accelerate",
    "fft_channel_attention",
    "fourier_unit",
    "gated_fusion",
    "memory_attention",
    "opset",
    "patch",
    "spectral_correlation_loss",
    "structure_loss",
]
