"""CUDA memory_attention (csrc/memory_attention.cu) against the reference, on the host emulator.

The kernels run on CPU tensors in the SIMT emulator (``HFSTI_CUDA_EMULATE=1``, set per test),
reached through the public op with ``backend="cuda"``: forward and every gradient (dq, dk, dv,
dkey_bias) vs ``hfsti.ops.memory_attention`` in float64 at ragged sizes (Nk = 1, 19, 33, 40, 70
around the 32-key tile, Nq past the 32-query tile), d = 1, 3, 24 and 128 (all three head-dim
tiles), every key_bias layout, B = 1 and 5, fp64/fp32/fp16/bf16; strided and expanded inputs;
bitwise-reproducible gradients; the edge cases of the reference; ``opcheck``; fp64 gradcheck;
and a ThreadSanitizer run. Each emulated block is 128 OS threads, so launches stay at tens of
blocks. Skipped only without a C++ compiler (a failing build fails here).
"""

import os
import re
from pathlib import Path

import pytest
import torch
from helpers import (
    FILL_VALUES,
    NEEDS_CXX,
    TOLERANCE,
    assert_rel_close,
    check_fill_bias_is_a_shift,
    memory_attention_gradcheck,
    model_layout_attention_inputs,
    run_sanitized,
)

from hfsti.ops import memory_attention as reference
from hfsti_kernels import _registry
from hfsti_kernels._inputs import attention_inputs
from hfsti_kernels.cuda import build
from hfsti_kernels.cuda import memory_attention as ma
from hfsti_kernels.cuda import runtime as rt
from hfsti_kernels.ops.memory_attention import memory_attention

pytestmark = NEEDS_CXX
SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "memory_attention.cu"
NAMES = ("o", "dq", "dk", "dv", "dkey_bias")


@pytest.fixture(autouse=True)
def _emulate(monkeypatch):
    monkeypatch.setenv(rt.EMULATE_ENV, "1")


def run(fn, inputs, do, scale=None, **kw):
    """o = fn(q, k, v, key_bias, scale) and the gradients of <o, do> for every tensor input."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    o = fn(*leaves, scale, **kw)
    grads = torch.autograd.grad(o, [t for t in leaves if t is not None], do.to(o.dtype))
    return (o, *grads)


def cuda_run(inputs, do, scale=None):
    return run(memory_attention, inputs, do, scale, backend="cuda")


def check_against_reference(inputs, tol, scale=None, seed=1) -> float:
    """Output and every gradient vs the float64 reference; returns the largest relative error."""
    q = inputs[0]
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = cuda_run(inputs, do, scale)
    want = run(reference, [t.double() if t is not None else None for t in inputs], do, scale)
    worst = 0.0
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == q.dtype, f"{name}: dtype {g.dtype}"
        assert_rel_close(g, w, tol, name)
        worst = max(worst, ((g.double() - w).norm() / w.norm()).item())
    return worst


# --------------------------------------------------------------------------- numerics

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", ["none", "full"])
def test_base_case_every_dtype(bias, dtype):
    """Nq = 7, Nk = 19, d = 24 in every dtype (fp16/bf16 via the 16-bit storage types)."""
    inputs = attention_inputs((1, 2, 7, 19, 24), dtype, bias, seed=2)
    check_against_reference(inputs, TOLERANCE[dtype])


# (B, h, Nq, Nk, d): head dims in all three tiles, key counts around the 32-key tile, a
# multi-tile query loop for dk/dv, B = 5, and a model-like 11x11 token grid.
SHAPES = [
    ((1, 1, 7, 19, 1), "full"),
    ((1, 2, 7, 19, 3), "bcast_h"),
    ((1, 1, 7, 19, 128), "full"),
    ((1, 1, 5, 33, 40), "bcast_b"),
    ((2, 1, 7, 1, 24), "full"),
    ((1, 2, 7, 33, 24), "bcast_b"),
    ((1, 1, 9, 40, 24), "none"),
    ((1, 1, 70, 70, 16), "full"),
    ((5, 2, 7, 19, 24), "bcast_b"),
    ((5, 1, 3, 40, 8), "bcast_h"),
    ((1, 2, 121, 121, 24), "full"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape, bias", SHAPES, ids=lambda s: str(s))
def test_matches_reference(shape, bias, dtype):
    check_against_reference(attention_inputs(shape, dtype, bias), TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_multi_tile(dtype):
    inputs = attention_inputs((1, 2, 40, 45, 24), dtype, "bcast_h", seed=3)
    check_against_reference(inputs, TOLERANCE[dtype])


def test_custom_scale_and_peaked_softmax():
    # Logits of a few hundred: the running max keeps exp2 finite; nearly one-hot rows.
    q, k, v, key_bias = attention_inputs((1, 2, 17, 40, 8), torch.float64, "full", q_mult=30.0)
    check_against_reference((q, k, v, key_bias * 50), TOLERANCE[torch.float64], scale=0.77)
    inputs = attention_inputs((2, 1, 9, 21, 12), torch.float32, "full", seed=4)
    check_against_reference(inputs, TOLERANCE[torch.float32], scale=0.77)


def test_fp32_precision_modes_are_accepted_and_identical():
    inputs = attention_inputs((1, 1, 5, 19, 8), torch.float32, "full")
    outs = [memory_attention(*inputs, backend="cuda", fp32_precision=p) for p in ("ieee", "tf32")]
    assert torch.equal(outs[0], outs[1])


# --------------------------------------------------------------------------- layouts


def test_non_contiguous_inputs_match_contiguous_bitwise():
    g = torch.Generator().manual_seed(3)
    strided = model_layout_attention_inputs(35, g)
    do = torch.randn(strided[0].shape, generator=g, dtype=torch.float64)
    for got, want in zip(cuda_run(strided, do), cuda_run([t.contiguous() for t in strided], do)):
        assert torch.equal(got, want)
    check_against_reference(strided, TOLERANCE[torch.float32])


def test_expanded_output_gradient_and_broadcast_bias_gradient_shape():
    # o.sum() hands the backward a zero-stride gradient; a (1, 1, Nk) bias keeps its shape.
    q, k, v, _ = attention_inputs((2, 2, 7, 19, 8), torch.float64, "none")
    key_bias = torch.randn(1, 1, 19, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, key_bias)]
    memory_attention(*leaves, backend="cuda").sum().backward()
    refs = [t.clone().requires_grad_() for t in (q, k, v, key_bias)]
    reference(*refs).sum().backward()
    assert leaves[3].grad.shape == (1, 1, 19)
    for name, got, want in zip(NAMES[1:], leaves, refs):
        assert_rel_close(got.grad, want.grad, TOLERANCE[torch.float64], name)


def test_gradients_are_bitwise_reproducible():
    inputs = attention_inputs((2, 2, 37, 45, 8), torch.float32, "bcast_h", seed=5)
    do = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(5))
    first, second = cuda_run(inputs, do), cuda_run(inputs, do)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), f"{name} differs between two runs"


# --------------------------------------------------------------------------- edge cases


def test_masked_keys_and_fully_masked_rows_as_the_reference():
    """Bias -inf: some keys of every row (in both key tiles) of head 1, and every key of head 0,
    whose rows then attend to nothing: o = 0 and zero gradients, as the reference defines."""
    q, k, v, key_bias = attention_inputs((1, 2, 5, 40, 8), torch.float64, "full")
    masked = key_bias.clone()
    masked[:, 1, ::3] = float("-inf")
    masked[:, 0] = float("-inf")
    check_against_reference((q, k, v, masked), TOLERANCE[torch.float64])
    o = memory_attention(q, k, v, masked, backend="cuda")
    assert torch.equal(o[:, 0], torch.zeros_like(o[:, 0]))
    f32 = [t.float() for t in (q, k, v, masked)]
    check_against_reference(f32, TOLERANCE[torch.float32])


@pytest.mark.parametrize("shape", [(0, 2, 5, 7, 8), (2, 0, 5, 7, 8), (1, 1, 3, 4, 0)])
def test_zero_sizes_behave_as_the_reference(shape):
    """B, h or d = 0: whatever the reference does (validation error or empty result)."""
    inputs = attention_inputs(shape, torch.float32, "full")
    try:
        want = reference(*inputs)
    except Exception as e:
        with pytest.raises(type(e), match=re.escape(str(e))):
            memory_attention(*inputs, backend="cuda")
    else:
        torch.testing.assert_close(memory_attention(*inputs, backend="cuda"), want)


def test_head_dim_above_128_is_rejected():
    inputs = attention_inputs((1, 1, 3, 4, 129), torch.float32, "full")
    with pytest.raises(ValueError, match="q: head dim d=129 > 128 .* CUDA kernels"):
        memory_attention(*inputs, backend="cuda")


def test_registered_as_the_cuda_implementation():
    assert _registry.implementation("memory_attention", "cuda") is ma.memory_attention


def test_hfsti_backend_env_selects_the_cuda_kernels(monkeypatch):
    calls = []
    fwd = ma._fwd
    monkeypatch.setattr(ma, "_fwd", lambda *args: calls.append(1) or fwd(*args))
    monkeypatch.setenv("HFSTI_BACKEND", "cuda")
    inputs = attention_inputs((1, 1, 5, 7, 8), torch.float32, "full")
    torch.testing.assert_close(memory_attention(*inputs), reference(*inputs))
    assert calls == [1]


# --------------------------------------------------------------------------- torch.library


@pytest.mark.parametrize("bias", ["none", "bcast_h"])
def test_opcheck_forward(bias):
    q, k, v, key_bias = attention_inputs((2, 2, 5, 19, 8), torch.float32, bias)
    args = [t.requires_grad_() if t is not None else None for t in (q, k, v, key_bias)]
    torch.library.opcheck(ma._fwd, (*args, 0.4))


@pytest.mark.parametrize("bias", ["none", "bcast_b"])
def test_opcheck_backward(bias):
    q, k, v, key_bias = attention_inputs((1, 2, 5, 19, 8), torch.float32, bias)
    o, lse = ma._fwd(q, k, v, key_bias, 0.4)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    torch.library.opcheck(ma._bwd, (do, q, k, v, key_bias, o, lse, 0.4))


def test_gradcheck_float64():
    assert memory_attention_gradcheck("cuda")


@pytest.mark.parametrize("fill", FILL_VALUES)
def test_fill_value_on_every_key_is_a_shift(fill):
    check_fill_bias_is_a_shift("cuda", fill)


# --------------------------------------------------------------------------- ThreadSanitizer

_TSAN_SCRIPT = """
import torch
from helpers import check_cuda_op
from hfsti_kernels._inputs import attention_inputs
from hfsti_kernels.cuda import build

# Make the runtime launch through the TSan build (only this file's kernels).
build._LOADED[build.MODULE] = build.load("tsan", kernels=[{source!r}], module="_cuda_emu_ma_tsan")
check_cuda_op("memory_attention", attention_inputs((1, 1, 35, 37, 8), torch.float64, "full"))
print("ok")
"""


def test_threadsanitizer_reports_no_race():
    runtime_lib = build._hostbuild.tsan_runtime()
    if not os.path.isabs(runtime_lib):
        pytest.skip("the compiler has no ThreadSanitizer runtime")
    build.build("tsan", kernels=[SOURCE], module="_cuda_emu_ma_tsan")  # build outside TSan
    run_sanitized(_TSAN_SCRIPT.format(source=str(SOURCE)), "tsan")
