"""The Triton memory_attention kernels against the reference op (CPU: Triton interpreter).

Forward and every gradient (dq, dk, dv, dkey_bias) are compared with ``hfsti.ops``'s
``memory_attention`` evaluated in float64 on the same inputs.
"""

import pytest
import torch
from helpers import (
    TOLERANCE,
    assert_rel_close,
    memory_attention_gradcheck,
    model_layout_attention_inputs,
    rel_err,
)

from hfsti.ops import memory_attention as reference
from hfsti_kernels._inputs import ATTENTION_BIASES, attention_inputs
from hfsti_kernels.ops.memory_attention import memory_attention

# (B, h, Nq, Nk, d): ragged Nk (not a multiple of 16), d not a power of two, all-size-1.
SHAPES = [(1, 1, 7, 19, 24), (2, 3, 5, 33, 8), (5, 1, 1, 1, 1), (1, 2, 17, 40, 3)]
BIASES = list(ATTENTION_BIASES)


def run(fn, q, k, v, key_bias, do, scale=None, **kw):
    """Forward and the gradients of <o, do> with respect to every tensor input."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    bias = key_bias.detach().clone().requires_grad_() if key_bias is not None else None
    o = fn(*leaves, bias, scale, **kw)
    inputs = leaves + ([bias] if bias is not None else [])
    return o, torch.autograd.grad(o, inputs, do.to(o.dtype))


def check_against_reference(q, k, v, key_bias, tol, scale=None, seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(q.shape, generator=g, dtype=torch.float64)
    out, grads = run(memory_attention, q, k, v, key_bias, do, scale, backend="triton", **kw)
    as64 = [t.double() if t is not None else None for t in (q, k, v, key_bias)]
    ref, ref_grads = run(reference, *as64, do, scale)
    assert out.dtype == q.dtype
    assert_rel_close(out, ref, tol, "o")
    names = ["dq", "dk", "dv", "dkey_bias"]
    for name, got, want in zip(names, grads, ref_grads):
        assert got.dtype == q.dtype, name
        assert_rel_close(got, want, tol, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, bias, dtype):
    q, k, v, key_bias = attention_inputs(shape, dtype, bias)
    check_against_reference(q, k, v, key_bias, TOLERANCE[dtype])


@pytest.mark.parametrize("fp32_precision", ["ieee", "tf32x3"])
def test_custom_scale_and_precision(fp32_precision):
    q, k, v, key_bias = attention_inputs((2, 2, 9, 21, 12), torch.float32, "full")
    check_against_reference(q, k, v, key_bias, 1e-5, scale=0.77, fp32_precision=fp32_precision)


def test_float16():
    q, k, v, key_bias = attention_inputs((1, 2, 7, 19, 24), torch.float16, "bcast_b")
    check_against_reference(q, k, v, key_bias, TOLERANCE[torch.float16])


def test_large_logits_do_not_overflow():
    # Logits up to a few hundred: exp() of them overflows fp32 unless the running max is
    # subtracted. The softmax is then nearly one-hot, so the gradients are tiny and dominated by
    # the rounding of the fp32 logits: hold them to the fp32 reference's own error (x4).
    q, k, v, key_bias = attention_inputs((1, 2, 17, 40, 8), torch.float32, "full", q_mult=30.0)
    key_bias = key_bias * 50
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = run(memory_attention, q, k, v, key_bias, do, backend="triton")
    ref32 = run(reference, q, k, v, key_bias, do)
    ref64 = run(reference, q.double(), k.double(), v.double(), key_bias.double(), do)
    names = ["o", "dq", "dk", "dv", "dkey_bias"]
    for name, got, want, fp32 in zip(
        names, (out[0], *out[1]), (ref64[0], *ref64[1]), (ref32[0], *ref32[1])
    ):
        assert_rel_close(got, want, max(1e-5, 4 * rel_err(fp32, want)), name)


def test_non_contiguous_inputs():
    strided = model_layout_attention_inputs(19, torch.Generator().manual_seed(3))
    check_against_reference(*strided, 1e-5)


def test_expanded_output_gradient():
    # o.sum() hands the backward a zero-stride gradient.
    q, k, v, key_bias = attention_inputs((1, 2, 7, 19, 8), torch.float64, "full")
    leaves = [t.clone().requires_grad_() for t in (q, k, v, key_bias)]
    memory_attention(*leaves, backend="triton").sum().backward()
    refs = [t.clone().requires_grad_() for t in (q, k, v, key_bias)]
    reference(*refs).sum().backward()
    for name, got, want in zip(["dq", "dk", "dv", "dkey_bias"], leaves, refs):
        assert_rel_close(got.grad, want.grad, TOLERANCE[torch.float64], name)


def test_gradcheck_float64():
    assert memory_attention_gradcheck("triton")


def test_bias_gradient_is_deterministic():
    q, k, v, key_bias = attention_inputs((2, 2, 37, 45, 8), torch.float32, "bcast_h")
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    first = run(memory_attention, q, k, v, key_bias, do, backend="triton")[1]
    second = run(memory_attention, q, k, v, key_bias, do, backend="triton")[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- validation


def _good():
    return attention_inputs((2, 3, 5, 7, 8), torch.float32, "full")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda q, k, v, b: (q[0], k, v, b), "q: expected a 4-D tensor"),
        (lambda q, k, v, b: (q, k[:, :2], v, b), "k: expected shape"),
        (lambda q, k, v, b: (q, k, v[..., :4], b), "v: expected shape"),
        (lambda q, k, v, b: (q, k, v, b[..., :3]), "key_bias: expected shape"),
        (lambda q, k, v, b: (q, k, v, b[:, :2]), "key_bias: expected shape"),
        (lambda q, k, v, b: (q, k, v, b[0]), "key_bias: expected a 3-D tensor"),
        (lambda q, k, v, b: (q, k.double(), v, b), "k: expected dtype"),
        (lambda q, k, v, b: (q, k, v, b.half()), "key_bias: expected dtype"),
        (lambda q, k, v, b: (q.long(), k, v, b), "q: expected dtype"),
    ],
)
def test_bad_inputs_name_the_argument(mutate, match):
    args = mutate(*_good())
    for backend in ("triton", "reference"):
        with pytest.raises((ValueError, TypeError), match=match):
            memory_attention(*args, backend=backend)


def test_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        memory_attention(*_good(), scale=-1.0, backend="triton")


def test_head_dim_above_128_is_rejected_by_triton():
    q, k, v, key_bias = attention_inputs((1, 1, 3, 4, 129), torch.float32, "full")
    with pytest.raises(ValueError, match="q: head dim d=129 > 128"):
        memory_attention(q, k, v, key_bias, backend="triton")
    memory_attention(q, k, v, key_bias, backend="reference")  # the reference has no limit


def test_bad_fp32_precision():
    with pytest.raises(ValueError, match="fp32_precision"):
        memory_attention(*_good(), backend="triton", fp32_precision="fast")


def test_bad_backend_name(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        memory_attention(*_good(), backend="cudnn")
    monkeypatch.setenv("HFSTI_BACKEND", "nope")
    with pytest.raises(ValueError, match="HFSTI_BACKEND"):
        memory_attention(*_good())


@pytest.mark.parametrize("backend", ["reference", "auto", None])
def test_cpu_routes_to_reference(backend, monkeypatch):
    monkeypatch.delenv("HFSTI_BACKEND", raising=False)
    import hfsti_kernels.ops.memory_attention as mod

    def fail(*args, **kwargs):
        raise AssertionError("the Triton op ran")

    monkeypatch.setattr(mod, "_fwd_op", fail)
    monkeypatch.setattr(torch.ops.hfsti, "memory_attention_fwd", fail, raising=False)
    args = _good()
    torch.testing.assert_close(memory_attention(*args, backend=backend), reference(*args))


# --------------------------------------------------------------------------- torch integration


@pytest.mark.parametrize("bias", ["none", "bcast_h"])
def test_opcheck(bias):
    q, k, v, key_bias = attention_inputs((2, 2, 5, 19, 8), torch.float32, bias)
    args = [t.requires_grad_() if t is not None else None for t in (q, k, v, key_bias)]
    torch.library.opcheck(torch.ops.hfsti.memory_attention_fwd.default, (*args, 0.4, "ieee"))


def test_opcheck_backward_op():
    q, k, v, key_bias = attention_inputs((1, 2, 5, 19, 8), torch.float32, "bcast_b")
    o, lse = torch.ops.hfsti.memory_attention_fwd(q, k, v, key_bias, 0.4, "ieee")
    do = torch.randn_like(o)
    args = (do, q, k, v, key_bias, o, lse, 0.4, "ieee")
    torch.library.opcheck(torch.ops.hfsti.memory_attention_bwd.default, args)


def test_compile_fullgraph():
    torch._dynamo.reset()
    q, k, v, key_bias = attention_inputs((2, 2, 7, 19, 8), torch.float32, "bcast_b")
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))

    def fn(q, k, v, key_bias, scale):
        return memory_attention(q, k, v, key_bias, scale, backend="triton")

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = run(compiled, q, k, v, key_bias, do)
    want = run(fn, q, k, v, key_bias, do)
    for name, a, b in zip(
        ["o", "dq", "dk", "dv", "dkey_bias"], (got[0], *got[1]), (want[0], *want[1])
    ):
        assert torch.equal(a, b), name
