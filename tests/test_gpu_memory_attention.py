"""The Triton memory_attention kernels on a GPU, at the model's shapes (skipped without CUDA).

Forward and every gradient against ``hfsti.ops.memory_attention`` evaluated in float64 at the
docs/ops.md tolerances; torch.compile (inductor, fullgraph); CUDA-graph capture and replay;
bitwise-deterministic key_bias gradient.
"""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from helpers import TOLERANCE, assert_rel_close  # noqa: E402

from hfsti.ops import memory_attention as reference  # noqa: E402
from hfsti_kernels._inputs import attention_inputs  # noqa: E402
from hfsti_kernels.ops.memory_attention import memory_attention  # noqa: E402

pytestmark = pytest.mark.gpu

# (B, h, Nq, Nk, d): TAM/MAM at 352x352 (an 11x11 F4 grid: 121 tokens, memory of 1 or 4
# frames), and a long sequence.
SHAPES = [
    (8, 4, 121, 121, 24),
    (8, 4, 121, 484, 24),
    (8, 4, 121, 121, 64),
    (8, 4, 121, 484, 64),
    (1, 4, 3000, 3000, 64),
]


def make_inputs(shape, dtype, bias, seed=0):
    """(B, N, h, d) tokens viewed as (B, h, N, d), as the model builds them; a (B, 1, Nk)
    key_bias if ``bias``."""
    return attention_inputs(
        shape, dtype, "bcast_h" if bias else "none", seed, device="cuda", token_major=True
    )


def run(fn, q, k, v, key_bias, do, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    bias = key_bias.detach().clone().requires_grad_() if key_bias is not None else None
    o = fn(*leaves, bias, **kw)
    inputs = leaves + ([bias] if bias is not None else [])
    return (o, *torch.autograd.grad(o, inputs, do.to(o.dtype)))


@pytest.mark.parametrize("bias", [False, True], ids=["tam", "mam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype, bias):
    if dtype == torch.float64 and shape[2] > 1000:
        pytest.skip("fp64 at the long shape is slow and adds nothing over the short ones")
    q, k, v, key_bias = make_inputs(shape, dtype, bias)
    do = torch.randn(q.shape, device="cuda", dtype=torch.float64)
    got = run(memory_attention, q, k, v, key_bias, do, backend="triton")
    as64 = [t.double() if t is not None else None for t in (q, k, v, key_bias)]
    want = run(reference, *as64, do)
    for name, a, b in zip(["o", "dq", "dk", "dv", "dkey_bias"], got, want):
        assert a.dtype == dtype, name
        assert_rel_close(a, b, TOLERANCE[dtype], f"{name} {dtype}")


@pytest.mark.parametrize("fp32_precision, tol", [("ieee", 1e-5), ("tf32", 1e-3)])
def test_fp32_precision_modes(fp32_precision, tol):
    q, k, v, key_bias = make_inputs(SHAPES[1], torch.float32, True)
    do = torch.randn(q.shape, device="cuda", dtype=torch.float64)
    got = run(memory_attention, q, k, v, key_bias, do, fp32_precision=fp32_precision)
    as64 = [t.double() for t in (q, k, v, key_bias)]
    for name, a, b in zip(["o", "dq", "dk", "dv", "dkey_bias"], got, run(reference, *as64, do)):
        assert_rel_close(a, b, tol, f"{name} {fp32_precision}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bias_gradient_is_deterministic(dtype):
    q, k, v, key_bias = make_inputs((8, 4, 1000, 1500, 64), dtype, True)
    do = torch.randn(q.shape, device="cuda", dtype=dtype)
    first = run(memory_attention, q, k, v, key_bias, do)
    for _ in range(3):
        again = run(memory_attention, q, k, v, key_bias, do)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_compile_inductor_fullgraph():
    torch._dynamo.reset()
    q, k, v, key_bias = make_inputs(SHAPES[1], torch.bfloat16, True)
    do = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)

    def fn(q, k, v, key_bias):
        return memory_attention(q, k, v, key_bias, backend="triton")

    compiled = torch.compile(fn, fullgraph=True)
    got = run(compiled, q, k, v, key_bias, do)
    want = run(fn, q, k, v, key_bias, do)
    for name, a, b in zip(["o", "dq", "dk", "dv", "dkey_bias"], got, want):
        assert_rel_close(a, b, 1e-6, f"compiled {name}")


def test_cuda_graph_capture_and_replay():
    shape = SHAPES[1]
    static = [t.requires_grad_() for t in make_inputs(shape, torch.float16, True)]
    static_do = torch.randn(static[0].shape, device="cuda", dtype=torch.float16)

    def step():
        o = memory_attention(*static, backend="triton")
        return (o, *torch.autograd.grad(o, static, static_do))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile the kernels before capture
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step()

    for seed in (1, 2):
        fresh = make_inputs(shape, torch.float16, True, seed=seed)
        with torch.no_grad():
            for s, f in zip(static, fresh):
                s.copy_(f)
            static_do.normal_()
        graph.replay()
        want = run(memory_attention, *fresh, static_do, backend="triton")
        for name, a, b in zip(["o", "dq", "dk", "dv", "dkey_bias"], outs, want):
            assert torch.equal(a, b), f"graph replay {name}"
