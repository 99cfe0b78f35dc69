"""CUDA FFT ops (fft_channel_attention, fourier_unit, gated_fusion) against the reference.

The kernels of csrc/ run on CPU tensors in the host SIMT emulator (``HFSTI_CUDA_EMULATE=1``,
set per test): forward and every gradient vs ``hfsti.ops`` evaluated in float64 at odd, prime,
even and model sizes, fp64/fp32/fp16/bf16; the global-scratch path for planes too large for
shared memory (forced, and natural at fp64 88x88) with several planes per block; non-contiguous
inputs; bitwise-reproducible weight gradients; ``torch.library.opcheck`` of every forward and
backward op; torch.compile(fullgraph=True) through the public ops; fp64 gradcheck; a
ThreadSanitizer run of every kernel. Each emulated block is a pool of OS threads, so launches
stay at a few hundred blocks at most. Skipped only without a C++ compiler (a failing build
fails here).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import (
    NEEDS_CXX,
    TOLERANCE,
    as_tuple,
    assert_rel_close,
    run_sanitized,
    run_with_grads,
    strided_like,
)

import hfsti_kernels
from hfsti import ops as ref
from hfsti_kernels import _registry
from hfsti_kernels._inputs import fft_op_inputs
from hfsti_kernels.cuda import _fft_plan, _hostbuild, build
from hfsti_kernels.cuda import fft_channel_attention as fca_mod
from hfsti_kernels.cuda import fourier_unit as fu_mod
from hfsti_kernels.cuda import gated_fusion as gf_mod
from hfsti_kernels.cuda import runtime as rt

pytestmark = NEEDS_CXX

OPS = ("fft_channel_attention", "fourier_unit", "gated_fusion")
MODULES = {"fft_channel_attention": fca_mod, "fourier_unit": fu_mod, "gated_fusion": gf_mod}
REFERENCE = {op: getattr(ref, op) for op in OPS}


@pytest.fixture(autouse=True)
def _emulate(monkeypatch):
    monkeypatch.setenv(rt.EMULATE_ENV, "1")


def cuda_op(op):
    """The registered "cuda" implementation of ``op`` (what ``backend="cuda"`` runs)."""
    return _registry.implementation(op, "cuda")


make_inputs = fft_op_inputs


def check_against_reference(op, inputs, tol):
    """Forward and every gradient of the CUDA path vs the float64 reference; returns the
    largest relative error seen."""
    dtype = inputs[0].dtype
    outs, grads, grad_outs = run_with_grads(cuda_op(op), inputs)
    ref_outs, ref_grads, _ = run_with_grads(REFERENCE[op], [t.double() for t in inputs], grad_outs)
    worst = 0.0
    for kind, got, want in (("output", outs, ref_outs), ("grad of input", grads, ref_grads)):
        for i, (o, r) in enumerate(zip(got, want)):
            assert o.dtype == dtype, f"{op} {kind} {i}: dtype {o.dtype}, expected {dtype}"
            # floor: a gradient that is zero in exact arithmetic (all ReLUs off) is judged
            # against the size of the inputs, not against its own rounding noise.
            assert_rel_close(o, r, tol, f"{op} {kind} {i}", floor=1e-3)
            worst = max(worst, (o.double() - r).norm().item() / max(r.norm().item(), 1e-3))
    return worst


# --------------------------------------------------------------------------- numerics

SHAPES = [(1, 3, 5, 7), (2, 3, 11, 13), (2, 3, 6, 8)]  # odd, odd (model-like), even W
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_matches_reference(op, shape, dtype):
    check_against_reference(op, make_inputs(op, *shape, dtype), TOLERANCE[dtype])


@pytest.mark.parametrize("op", OPS)
def test_batch5_tiny_and_prime_planes(op):
    shapes = [(5, 3, 2, 3), (1, 2, 1, 1), (1, 2, 1, 2), (2, 1, 3, 1), (1, 2, 13, 17), (1, 1, 17, 4)]
    for shape in shapes:
        check_against_reference(op, make_inputs(op, *shape, torch.float32), 1e-5)


@pytest.mark.parametrize("op", OPS)
def test_model_sizes(op):
    """The model's plane sides 22 and 44 (radices 2, 4, 11) and one 88x88 plane (8 x 11)."""
    for shape in [(1, 2, 22, 22), (1, 1, 44, 44), (1, 1, 88, 88)]:
        check_against_reference(op, make_inputs(op, *shape, torch.float32, c_out=1), 1e-5)


def test_fourier_unit_other_widths():
    """C' != C (weight (2C', 2C)), both narrower and wider than the input."""
    for c_out in (1, 4):
        inputs = make_inputs("fourier_unit", 2, 3, 5, 6, torch.float64, c_out=c_out)
        check_against_reference("fourier_unit", inputs, TOLERANCE[torch.float64])


@pytest.mark.parametrize("op", OPS)
def test_global_workspace_path(op, monkeypatch):
    """Planes whose workspace exceeds shared memory use a global scratch, several per block."""
    monkeypatch.setattr(_fft_plan, "SMEM_LIMIT", 0)
    monkeypatch.setattr(_fft_plan, "WORKSPACE_GRID", 2)
    for dtype in (torch.float64, torch.float32):
        check_against_reference(op, make_inputs(op, 3, 2, 5, 6, dtype), TOLERANCE[dtype])


def test_fp64_88x88_backward_needs_global_workspace():
    """fp64 88x88 backward needs 4 x 63 KB > 227 KB: the natural global-scratch case."""
    H = W = 88
    assert 2 * 8 * (H + W + 4 * _fft_plan.plane_elems(H, W)) > _fft_plan.SMEM_LIMIT
    inputs = make_inputs("fft_channel_attention", 1, 1, H, W, torch.float64)
    check_against_reference("fft_channel_attention", inputs, TOLERANCE[torch.float64])


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_inputs(op):
    inputs = make_inputs(op, 2, 3, 5, 7, torch.float32, seed=5)
    strided = [strided_like(t) for t in inputs]
    outs, grads, grad_outs = run_with_grads(cuda_op(op), inputs)
    s_outs, s_grads, _ = run_with_grads(cuda_op(op), strided, grad_outs)
    for o, s in zip(outs + grads, s_outs + s_grads):
        assert_rel_close(s, o, 1e-6, f"{op} strided vs contiguous")
    check_against_reference(op, strided, 1e-5)


@pytest.mark.parametrize("op", ["fourier_unit", "gated_fusion"])
def test_weight_grads_bitwise_reproducible(op):
    inputs = make_inputs(op, 5, 3, 6, 7, torch.float32, seed=7)
    first = run_with_grads(cuda_op(op), inputs)[1]
    second = run_with_grads(cuda_op(op), inputs)[1]
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"{op}: gradient of input {i} differs between two runs"


def test_gated_fusion_x_c_gradient_only():
    """Only x_c used downstream: the backward gets no x_fs gradient and still matches."""
    inputs = [t.requires_grad_() for t in make_inputs("gated_fusion", 1, 2, 4, 5, torch.float64)]
    x_c, _ = cuda_op("gated_fusion")(*inputs)
    grads = torch.autograd.grad(x_c.sum(), inputs, allow_unused=True)
    ref_grads = torch.autograd.grad(ref.gated_fusion(*inputs)[0].sum(), inputs, allow_unused=True)
    for g, r in zip(grads, ref_grads):
        if r is None or not r.any():
            assert g is None or not g.any()
        else:
            assert_rel_close(g, r, TOLERANCE[torch.float64], "x_c-only gradient")


# --------------------------------------------------------------------------- torch.library


def _opcheck_cases():
    q, k, v = make_inputs("fft_channel_attention", 1, 2, 3, 4, torch.float32)
    x, w, b = make_inputs("fourier_unit", 1, 2, 3, 4, torch.float32, c_out=1)
    gf_in = make_inputs("gated_fusion", 1, 2, 3, 4, torch.float32)
    dy = torch.randn(1, 2, 3, 4)
    params = [t.clone() for t in gf_in[3:]]  # the backward ops take no differentiable inputs
    return [
        ("fca", fca_mod.fft_channel_attention, [t.requires_grad_() for t in (q, k, v)]),
        ("fca backward", fca_mod._bwd, [dy, q.detach(), k.detach(), v.detach()]),
        ("fu", fu_mod.fourier_unit, [t.requires_grad_() for t in (x, w, b)]),
        ("fu backward", fu_mod._bwd, [dy[:, :1], x.detach(), w.detach(), b.detach()]),
        ("gf", gf_mod.gated_fusion, [t.clone().requires_grad_() for t in gf_in]),
        ("gf backward", gf_mod._bwd, [dy, dy * 0.5, gf_in[0].clone(), *params]),
        ("gf backward no g_xc", gf_mod._bwd, [None, dy, gf_in[0].clone(), *params]),
    ]


@pytest.mark.parametrize("case", _opcheck_cases(), ids=lambda c: c[0])
def test_opcheck(case):
    _, op, args = case
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("op", OPS)
def test_torch_compile_fullgraph(op):
    """torch.compile traces the public op with backend="cuda" to the opaque ops (their fake
    rules) and runs the same kernels: results and gradients bitwise equal to eager."""
    fn = getattr(hfsti_kernels, op)
    compiled = torch.compile(lambda *a: fn(*a, backend="cuda"), backend="aot_eager", fullgraph=True)
    inputs = make_inputs(op, 1, 2, 4, 5, torch.float32)
    outs, grads, grad_outs = run_with_grads(compiled, inputs)
    e_outs, e_grads, _ = run_with_grads(lambda *a: fn(*a, backend="cuda"), inputs, grad_outs)
    for got, want in zip(outs + grads, e_outs + e_grads):
        assert torch.equal(got, want), f"{op}: compiled and eager differ"


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    shape = {"fourier_unit": (1, 2, 2, 3)}.get(op, (1, 1, 3, 4))
    inputs = [t.requires_grad_() for t in make_inputs(op, *shape, torch.float64, seed=3, c_out=1)]
    assert torch.autograd.gradcheck(cuda_op(op), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", OPS)
def test_public_op_runs_these_kernels_with_backend_cuda(op):
    assert op not in hfsti_kernels.cuda.IMPORT_ERRORS
    assert cuda_op(op) is getattr(MODULES[op], op)
    inputs = make_inputs(op, 1, 2, 4, 5, torch.float32)
    got = as_tuple(getattr(hfsti_kernels, op)(*inputs, backend="cuda"))
    for g, w in zip(got, as_tuple(cuda_op(op)(*inputs))):
        assert torch.equal(g, w)


# --------------------------------------------------------------------------- ThreadSanitizer

SOURCES = [Path(__file__).resolve().parents[1] / "csrc" / f"{op}.cu" for op in OPS]
TSAN_MODULE = "_cuda_emu_fft_tsan"
_TSAN_SCRIPT = """
import torch
from helpers import check_cuda_op
from hfsti_kernels._inputs import fft_op_inputs
from hfsti_kernels.cuda import _fft_plan, build

torch.manual_seed(0)
torch.set_num_threads(1)  # torch's OpenMP pool synchronises outside TSan's view
# The runtime launches through the TSan build of this file's kernels only.
build._LOADED[build.MODULE] = build.load("tsan", kernels={sources!r}, module={module!r})
# shared-memory workspace (fp32), then the global one with 3 planes per block (fp64)
CASES = (((1, 2, 5, 6), torch.float32, None), ((3, 1, 3, 4), torch.float64, 0))
for op in {ops!r}:
    for shape, dtype, limit in CASES:
        if limit is not None:
            _fft_plan.SMEM_LIMIT, _fft_plan.WORKSPACE_GRID = limit, 1
        check_cuda_op(op, fft_op_inputs(op, *shape, dtype, c_out=1))
print("ok")
"""


def test_threadsanitizer_reports_no_race():
    """Every FFT kernel, forward and backward, on both workspace paths, under TSan."""
    runtime_lib = _hostbuild.tsan_runtime()
    if not os.path.isabs(runtime_lib):
        pytest.skip("the compiler has no ThreadSanitizer runtime")
    build.build("tsan", kernels=SOURCES, module=TSAN_MODULE)  # compile outside TSan
    script = _TSAN_SCRIPT.format(sources=[str(s) for s in SOURCES], module=TSAN_MODULE, ops=OPS)
    run_sanitized(script, "tsan")
