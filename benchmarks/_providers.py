"""The implementations a case can time, each a function with the reference op's signature.

- ``triton``: ``hfsti_kernels`` (ours), ``backend="triton"``.
- ``cuda``: ``hfsti_kernels``, ``backend="cuda"`` (the csrc kernels, on the nvcc extension or
  CuPy; under ``HFSTI_CUDA_EMULATE=1`` the host emulator on the CPU, for wiring only); skipped
  where the op has no CUDA kernel of its own (the backend would run the Triton one).
- ``eager``: ``hfsti.ops``, the reference; its transforms are ``torch.fft``, i.e. cuFFT on a
  GPU, so it is also the cuFFT peer.
- ``compile``: ``torch.compile`` of the reference (static shapes, compiled afresh per case).
- ``cupy``: the reference with its ``torch.fft`` calls served by ``cupy.fft`` (forward only).
- ``sdpa_mem_efficient``: ``F.scaled_dot_product_attention`` with the key bias as ``attn_mask``,
  the memory-efficient backend forced (the MATH backend in the CPU configuration, for wiring).
- ``flex_attention``: FlexAttention with a ``score_mod`` that adds the key bias (compiled).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from _cases import Case
from _config import BenchConfig

import hfsti.ops as reference


def _triton(case: Case, cfg: BenchConfig) -> Callable:
    from hfsti_kernels._backend import interpreter_enabled

    if not (cfg.cuda or interpreter_enabled()):
        pytest.skip("triton: needs CUDA (or TRITON_INTERPRET=1 before import)")
    import hfsti_kernels

    return functools.partial(getattr(hfsti_kernels, case.op), backend="triton")


def _cuda(case: Case, cfg: BenchConfig) -> Callable:
    import hfsti_kernels
    from hfsti_kernels._registry import implementation
    from hfsti_kernels.cuda import runtime

    if implementation(case.op, "cuda") is implementation(case.op, "triton"):
        pytest.skip(f"cuda: {case.op} has no CUDA kernel")
    try:
        runtime.require(torch.empty(0, device=cfg.device))
    except ValueError as e:
        pytest.skip(f"cuda: {e}")
    return functools.partial(getattr(hfsti_kernels, case.op), backend="cuda")


def _compile(case: Case, cfg: BenchConfig) -> Callable:
    torch._dynamo.reset()  # one shape per compiled function: no recompile limit is reached
    return torch.compile(getattr(reference, case.op), dynamic=False, backend=cfg.compile_backend)


_TORCH_FFT = ("rfft2", "irfft2", "ifft", "irfft", "fft2")


@contextlib.contextmanager
def _cupy_fft():
    """Serve ``torch.fft.<name>`` from ``cupy.fft`` (zero-copy through DLPack)."""
    import cupy

    def wrap(name):
        fn = getattr(cupy.fft, name)

        def call(x, *args, dim=None, **kwargs):
            if dim is not None:
                kwargs["axes" if isinstance(dim, tuple) else "axis"] = dim
            return torch.from_dlpack(fn(cupy.from_dlpack(x.contiguous()), *args, **kwargs))

        return call

    saved = {name: getattr(torch.fft, name) for name in _TORCH_FFT}
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    try:
        for name in _TORCH_FFT:
            setattr(torch.fft, name, wrap(name))
        with stream:
            yield
    finally:
        for name, fn in saved.items():
            setattr(torch.fft, name, fn)


def _cupy(case: Case, cfg: BenchConfig) -> Callable:
    if not cfg.cuda:
        pytest.skip("cupy: needs CUDA")
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy: not installed")
    op = getattr(reference, case.op)

    def call(*args):
        with _cupy_fft():
            return op(*args)

    return call


def _sdpa(case: Case, cfg: BenchConfig) -> Callable:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.EFFICIENT_ATTENTION if cfg.cuda else SDPBackend.MATH

    def call(q, k, v, key_bias):
        mask = key_bias[:, :, None, :].expand(-1, -1, q.shape[2], -1)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return call


def _flex(case: Case, cfg: BenchConfig) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    if not cfg.cuda and case.mode == "fwd_bwd":
        pytest.skip("flex_attention: no backward on the CPU")

    def call(q, k, v, key_bias):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + key_bias[b, h, kv_idx]

        return flex_attention(q, k, v, score_mod=score_mod)

    if not cfg.cuda:  # eager FlexAttention is the unfused CPU fallback: wiring only
        return call
    torch._dynamo.reset()
    return torch.compile(call, dynamic=False)


_FACTORIES = {
    "triton": _triton,
    "cuda": _cuda,
    "eager": lambda case, cfg: getattr(reference, case.op),
    "compile": _compile,
    "cupy": _cupy,
    "sdpa_mem_efficient": _sdpa,
    "flex_attention": _flex,
}


def implementation(case: Case, cfg: BenchConfig) -> Callable:
    """The function to time for ``case``; skips the test when it cannot run here."""
    return _FACTORIES[case.provider](case, cfg)
