"""Triton FFT ops on CUDA at the model's shapes (skipped without a GPU).

B=8, C=64, planes 88/44/22/11 in fp32/fp16/bf16: forward and every gradient vs the float64
reference (docs/ops.md, Tolerances), torch.compile(fullgraph=True) with inductor, CUDA-graph capture
and replay of forward + backward, opcheck of every op on CUDA, determinism, strided inputs and
``backend="auto"`` routing CUDA tensors to the kernels.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from fft_op_suite import (  # noqa: E402
    KERNEL,
    OPS,
    REFERENCE,
    as_tuple,
    check_against_reference,
    run_with_grads,
    strided_like,
)
from helpers import TOLERANCE, assert_rel_close, graph_replays  # noqa: E402

from hfsti_kernels import _registry, _staged, dft  # noqa: E402
from hfsti_kernels._inputs import fft_op_inputs  # noqa: E402
from hfsti_kernels.ops import fft_channel_attention as fca_mod  # noqa: E402
from hfsti_kernels.ops import fourier_unit as fu_mod  # noqa: E402
from hfsti_kernels.ops import gated_fusion as gf_mod  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cuda_inputs(op, B, C, H, W, dtype, seed=0):
    return fft_op_inputs(op, B, C, H, W, dtype, seed=seed, c_out=C, device=DEV)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", [88, 44, 22, 11])
@pytest.mark.parametrize("op", OPS)
def test_model_shapes_match_reference(op, size, dtype):
    inputs = cuda_inputs(op, 8, 64, size, size, dtype)
    check_against_reference(op, inputs, TOLERANCE[dtype])


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 5, 11, 13), (2, 4, 6, 8), (1, 2, 1, 1)])
@pytest.mark.parametrize("op", OPS)
def test_odd_shapes_fp32(op, shape):
    check_against_reference(op, cuda_inputs(op, *shape, torch.float32), TOLERANCE[torch.float32])


@pytest.mark.parametrize("op", OPS)
def test_float64_and_gradcheck(op):
    inputs = cuda_inputs(op, 2, 3, 11, 13, torch.float64)
    check_against_reference(op, inputs, TOLERANCE[torch.float64])
    small = [t.requires_grad_() for t in cuda_inputs(op, 1, 2, 3, 4, torch.float64, seed=2)]
    assert torch.autograd.gradcheck(
        lambda *a: KERNEL[op](*a, backend="triton"), small, eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("op", OPS)
def test_auto_backend_uses_kernels_on_cuda(op, monkeypatch):
    calls = []
    real_launch = _registry.launch
    monkeypatch.setattr(
        _registry, "launch", lambda *a, **k: (calls.append(a[0]), real_launch(*a, **k))
    )
    monkeypatch.delenv("HFSTI_BACKEND", raising=False)
    inputs = cuda_inputs(op, 2, 8, 22, 22, torch.float32)
    outs = as_tuple(KERNEL[op](*inputs))
    assert calls, "backend='auto' on CUDA tensors did not launch a Triton kernel"
    ref_outs = as_tuple(REFERENCE[op](*[t.double() for t in inputs]))
    for o, r in zip(outs, ref_outs):
        assert_rel_close(o, r, 1e-5, f"{op} auto")


@pytest.mark.parametrize("op", OPS)
def test_strided_inputs(op):
    inputs = cuda_inputs(op, 2, 8, 22, 22, torch.float32)
    strided = [strided_like(t.cpu()).to(DEV) for t in inputs]
    assert not strided[0].is_contiguous()
    check_against_reference(op, strided, 1e-5)


@pytest.mark.parametrize("op", OPS)
def test_deterministic(op):
    inputs = cuda_inputs(op, 8, 64, 22, 22, torch.float32)
    fn = lambda *a: KERNEL[op](*a, backend="triton")  # noqa: E731
    outs1, grads1, grad_outs = run_with_grads(fn, inputs)
    outs2, grads2, _ = run_with_grads(fn, inputs, grad_outs)
    for a, b in zip(outs1 + grads1, outs2 + grads2):
        assert torch.equal(a, b), f"{op}: results differ between two identical runs"


@pytest.mark.parametrize("op", OPS)
def test_opcheck_cuda(op):
    H, W = 11, 11
    inputs = [t.requires_grad_() for t in cuda_inputs(op, 2, 4, H, W, torch.float32)]
    fh, fw = dft.dft_matrices(H, W, torch.float32, torch.device(DEV))
    if op == "fft_channel_attention":
        torch.library.opcheck(fca_mod._fca_op, (*inputs, fh, fw))
        args = [t.detach() for t in inputs]
        torch.library.opcheck(fca_mod._fca_bwd_op, (torch.randn_like(args[0]), *args, fh, fw))
    elif op == "fourier_unit":
        torch.library.opcheck(fu_mod._fu_op, (*inputs, fh, fw, True))
        x, w, b = [t.detach() for t in inputs]
        y, zs = fu_mod._fu_op(x, w, b, fh, fw, True)
        torch.library.opcheck(fu_mod._fu_bwd_op, (torch.randn_like(y), x, w, zs, fh, fw))
    else:
        torch.library.opcheck(gf_mod._gf_op, (*inputs, fh, fw, True))
        x_f, x_s, x_0, fuw, fub, dww, dwb = [t.detach() for t in inputs]
        x_c, _, zs = gf_mod._gf_op(x_f, x_s, x_0, fuw, fub, dww, dwb, fh, fw, True)
        gc, gfs = torch.randn_like(x_c), torch.randn_like(x_c)
        torch.library.opcheck(gf_mod._gf_bwd_op, (gc, gfs, x_c, fuw, dww, dwb, zs, fh, fw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_compile_inductor_fullgraph(op, dtype):
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: KERNEL[op](*a, backend="triton"), fullgraph=True)
    inputs = cuda_inputs(op, 2, 8, 22, 22, dtype, seed=4)
    check_against_reference(op, inputs, TOLERANCE[dtype], fn=compiled)
    for t in dft._CACHE.values():
        assert not any(torch._subclasses.fake_tensor.is_fake(m) for m in t)


@pytest.mark.parametrize("op", OPS)
def test_cuda_graph_capture_replay(op):
    """Forward + backward captured once; replays on new data equal eager runs bitwise."""
    fn = lambda *a: KERNEL[op](*a, backend="triton")  # noqa: E731

    def fresh(seed):
        return cuda_inputs(op, 8, 64, 44, 44, torch.float32, seed=seed)

    static = [t.requires_grad_() for t in fresh(0)]
    for got, want in graph_replays(fn, static, (11, 12), fresh):
        for a, b in zip(got, want):
            assert torch.equal(a, b), f"{op}: graph replay differs from eager"


@pytest.mark.parametrize("op", OPS)
def test_staged_path_matches_single_tile_path(op, monkeypatch):
    """At 44x44 both paths fit: the staged kernels (forced) agree with the single-tile ones."""
    inputs = cuda_inputs(op, 2, 8, 44, 44, torch.float32, seed=11)
    fast = run_with_grads(lambda *a: KERNEL[op](*a, backend="triton"), inputs)
    monkeypatch.setattr(_staged, "STAGED_MIN_TILE", 16)
    staged = run_with_grads(lambda *a: KERNEL[op](*a, backend="triton"), inputs, fast[2])
    for a, b in zip(fast[0] + fast[1], staged[0] + staged[1]):
        assert_rel_close(b.double(), a.double(), 1e-5, f"{op} staged vs single-tile")
