"""Helpers shared by the tests: the skip marks of the emulator and interpreter modules, the
relative-error tolerances of docs/ops.md (Tolerances) and comparisons against them, gradients of
an op for random output gradients, non-contiguous copies of inputs, memory-attention inputs in the
model's strided layout, its float64 gradcheck and its fill-value check on a backend, a CUDA op's
check against the float64 reference, sanitized child runs, CUDA-graph replays of an op's forward +
backward beside eager runs, and a small model with non-trivial BatchNorm statistics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfsti_kernels._backend import interpreter_enabled

# Relative error ||out - ref|| / ||ref|| against the float64 reference (docs/ops.md, Tolerances).
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

TESTS = Path(__file__).resolve().parent
_CXX = os.environ.get("CXX", "g++")
# The marks of modules that run the CUDA kernels in the host emulator, or Triton's on CPU.
NEEDS_CXX = pytest.mark.skipif(
    shutil.which(_CXX) is None, reason=f"the CUDA host emulator needs a C++ compiler ({_CXX})"
)
INTERPRETER_ONLY = pytest.mark.skipif(
    not interpreter_enabled(), reason="Triton on CPU tensors needs TRITON_INTERPRET=1"
)
CVC612 = TESTS.parents[1] / "shared" / "data" / "cvc612"


def rel_err(out: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """||out - ref|| / max(||ref||, floor) in float64 (absolute error when both are zero).

    ``floor`` keeps a tensor that is zero in exact arithmetic (only rounding noise on both
    sides) from being judged relative to its own noise.
    """
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    den = max(ref.norm().item(), floor)
    return (out - ref).norm().item() / (den if den > 0 else 1.0)


def assert_rel_close(
    out: torch.Tensor, ref: torch.Tensor, tol: float, name: str, floor: float = 0.0
) -> None:
    """Fail with where and by how much ``out`` differs from ``ref``; NaN/Inf never pass."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).nonzero()[:5].tolist()
        raise AssertionError(f"{name}: non-finite values at {bad}")
    err = rel_err(out, ref, floor)
    if err > tol:
        diff = (out.detach().double().cpu() - ref.detach().double().cpu()).abs()
        worst = torch.unravel_index(diff.argmax(), diff.shape)
        idx = tuple(int(i) for i in worst)
        raise AssertionError(
            f"{name}: relative error {err:.3e} > {tol:.1e}; worst at index {idx}: "
            f"out={out[idx].item():.6g} ref={ref[idx].item():.6g}"
        )


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def run_with_grads(fn, inputs, grad_outs=None, seed=1, grad_layout=lambda t: t):
    """Outputs of ``fn(*inputs)`` and the gradients of every input for random output grads
    (float64, each passed through ``grad_layout``, e.g. to make them strided)."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    outs = as_tuple(fn(*inputs))
    if grad_outs is None:
        g = torch.Generator().manual_seed(seed)
        grad_outs = [
            grad_layout(torch.randn(o.shape, generator=g, dtype=torch.float64)) for o in outs
        ]
    grad_outs = [go.to(o.device) for go, o in zip(grad_outs, outs)]
    grads = torch.autograd.grad(outs, inputs, [go.to(o.dtype) for go, o in zip(grad_outs, outs)])
    return outs, grads, grad_outs


def graph_replays(fn, static, seeds, fresh_inputs):
    """Capture forward + backward of ``fn`` on ``static`` in a CUDA graph once; for each seed copy
    ``fresh_inputs(seed)`` and new output gradients in, replay, and yield (replayed results, eager
    results on the same data): the outputs, then the gradients of the inputs that require them."""
    outs = as_tuple(fn(*static))
    gouts = [torch.randn_like(o) for o in outs]
    diff = [t for t in static if t.requires_grad]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    # Warm-up outside the capture: kernel compiles, cache fills, shared-memory opt-ins.
    with torch.cuda.stream(side):
        for _ in range(2):
            torch.autograd.grad(as_tuple(fn(*static)), diff, gouts)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_outs = as_tuple(fn(*static))
        g_grads = torch.autograd.grad(g_outs, diff, gouts)
    for seed in seeds:
        fresh = fresh_inputs(seed)
        with torch.no_grad():
            for s, f in zip(static, fresh):
                s.copy_(f)
            for g in gouts:
                g.normal_()
        graph.replay()
        leaves = [f.requires_grad_(s.requires_grad) for s, f in zip(static, fresh)]
        want_outs = as_tuple(fn(*leaves))
        want_grads = torch.autograd.grad(want_outs, [t for t in leaves if t.requires_grad], gouts)
        yield (*g_outs, *g_grads), (*want_outs, *want_grads)


def small_model(memory_frames: int = 1, size: int = 64, seed: int = 0):
    """An eval-mode HFSTINet with C = 16 and non-trivial BatchNorm statistics, so that folding
    them is actually exercised."""
    from torch import nn

    from hfsti import HFSTIConfig, HFSTINet

    torch.manual_seed(seed)
    config = HFSTIConfig(channels=16, rmp_heads=2, memory_frames=memory_frames, input_size=size)
    model = HFSTINet(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def strided_like(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout (a transposed, sliced view)."""
    if t.dim() < 2:
        return torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]
    base = torch.zeros(*t.shape[:-2], t.shape[-1], 2 * t.shape[-2], dtype=t.dtype)
    view = base.transpose(-1, -2)[..., ::2, :]
    view.copy_(t)
    assert not view.is_contiguous()
    return view


def model_layout_attention_inputs(n_k: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """float32 q (2, 3, 9, 8), k, v (2, 3, n_k, 8) and key_bias (2, 3, n_k) drawn from ``g``,
    none contiguous: (B, N, h, d) tokens viewed as (B, h, N, d) as the model builds them, v also
    strided along d, key_bias a transposed (B, Nk, h) tensor."""
    B, h, n_q, d = 2, 3, 9, 8
    q = torch.randn(B, n_q, h, d, generator=g).transpose(1, 2)
    k = torch.randn(B, n_k, h, d, generator=g).transpose(1, 2)
    v = torch.randn(B, n_k, h, 2 * d, generator=g)[..., ::2].transpose(1, 2)
    key_bias = torch.randn(B, n_k, h, generator=g).transpose(1, 2)
    inputs = (q, k, v, key_bias)
    assert not any(t.is_contiguous() for t in inputs)
    return inputs


def memory_attention_gradcheck(backend: str) -> bool:
    """torch.autograd.gradcheck of the public memory_attention on ``backend`` in float64, with a
    batch-broadcast key bias and a custom scale (fails by raising)."""
    from hfsti_kernels._inputs import attention_inputs
    from hfsti_kernels.ops.memory_attention import memory_attention

    q, k, v, key_bias = attention_inputs((1, 2, 3, 5, 4), torch.float64, "bcast_b")
    inputs = [t.clone().requires_grad_() for t in (q, k, v, key_bias)]

    def fn(q, k, v, key_bias):
        return memory_attention(q, k, v, key_bias, 0.6, backend=backend)

    return torch.autograd.gradcheck(fn, inputs)


FILL_VALUES = [-1e4, -1e9, -1e30, "finfo.min"]  # masked_fill values seen in attention masks


def check_fill_bias_is_a_shift(backend: str, fill: float | str) -> None:
    """float32 memory_attention on ``backend`` with a fill value on every key of one head (a
    constant shift of its logits, which softmax ignores) and on some keys of another (those keys
    are as good as masked), against float64 attention with bias 0 and -inf there, forward and
    backward (docs/ops.md, memory_attention)."""
    from hfsti_kernels._inputs import attention_inputs
    from hfsti_kernels.ops.memory_attention import memory_attention

    fill = torch.finfo(torch.float32).min if fill == "finfo.min" else fill
    q, k, v, bias = attention_inputs((2, 2, 5, 19, 8), torch.float64, "full")
    want_bias = bias.clone()
    bias[0, 0], want_bias[0, 0] = fill, 0.0
    bias[1, 1, :7], want_bias[1, 1, :7] = fill, float("-inf")
    outs, grads, gouts = run_with_grads(
        lambda *t: memory_attention(*t, backend=backend), [t.float() for t in (q, k, v, bias)]
    )
    want, want_grads, _ = run_with_grads(
        lambda *t: memory_attention(*t, backend="reference"), [q, k, v, want_bias], gouts
    )
    tol = TOLERANCE[torch.float32]
    assert_rel_close(outs[0], want[0], tol, f"o (fill {fill:g})")
    for name, g, w in zip(("dq", "dk", "dv", "dkey_bias"), grads, want_grads, strict=True):
        assert_rel_close(g, w, tol, f"{name} (fill {fill:g})")


_SANITIZERS = {  # name: (its report's banner, the child's environment)
    "tsan": ("ThreadSanitizer", {"TSAN_OPTIONS": "halt_on_error=1 report_signal_unsafe=0"}),
    # Python itself is not instrumented: its allocations are not leaks to report.
    "asan": ("AddressSanitizer", {"ASAN_OPTIONS": "detect_leaks=0 abort_on_error=1"}),
}


def check_cuda_op(op: str, inputs, layout=lambda t: t) -> None:
    """The CUDA implementation of ``op`` on ``layout(t)`` of each input, with output gradients
    laid out the same way, forward and every gradient, against the float64 reference on the
    same values, within the tolerance of the inputs' dtype (fails by raising)."""
    from hfsti import ops as ref
    from hfsti_kernels import _registry

    fn = _registry.implementation(op, "cuda")
    outs, grads, gouts = run_with_grads(fn, [layout(t) for t in inputs], grad_layout=layout)
    want, want_grads, _ = run_with_grads(getattr(ref, op), [t.double() for t in inputs], gouts)
    got, want = (*outs, *grads), (*want, *want_grads)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_rel_close(g, w, TOLERANCE[inputs[0].dtype], f"{op} result {i}", floor=1e-3)


def run_sanitized(script: str, sanitizer: str, timeout: int = 600) -> None:
    """Run ``script``, which prints "ok" when done, in a child Python with the CUDA emulator on
    and the ``sanitizer`` ("tsan" or "asan") runtime preloaded (build the sanitized extension
    beforehand, outside the child); fail with the child's report if the sanitizer finds anything
    or the script fails. Skips when the compiler has no such runtime. The child can import this
    module (``from helpers import check_cuda_op``)."""
    from hfsti_kernels.cuda import _hostbuild
    from hfsti_kernels.cuda import runtime as rt

    preload = _hostbuild.tsan_runtime() if sanitizer == "tsan" else _hostbuild.asan_preload()
    banner, options = _SANITIZERS[sanitizer]
    if not os.path.isabs(preload.split()[0] if preload else ""):
        pytest.skip(f"the compiler has no {banner} runtime")
    # One OpenMP thread: torch's pool synchronises outside TSan's view.
    env = {**os.environ, rt.EMULATE_ENV: "1", "OMP_NUM_THREADS": "1", "LD_PRELOAD": preload}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(TESTS), env.get("PYTHONPATH"))))
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**env, **options},
        timeout=timeout,
    )
    assert banner not in res.stderr, res.stderr[-4000:]
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-4000:]
