"""The checks every Triton FFT op passes, run by each op's test module for its own op.

Not a test module itself: ``tests/test_kernels_<op>.py`` imports these tests and the ``op``
fixture they take, which reads that module's ``OP``. Runs on CPU through the Triton interpreter
(conftest sets TRITON_INTERPRET=1 without a GPU): forward and every gradient vs ``hfsti.ops``
evaluated in float64, gradcheck through the Triton path (the single-tile kernels and, forced by a
lowered threshold, the staged large-plane branch), non-contiguous inputs, backend routing,
torch.library.opcheck of every forward and backward op, torch.compile(backend="aot_eager",
fullgraph=True). Shapes are tiny because the interpreter is slow; tests/test_gpu_fft_ops.py
covers the model's. The helpers (``check_against_reference`` ...) serve the GPU tests too.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCE, as_tuple, assert_rel_close, run_with_grads, strided_like

from hfsti import ops as ref
from hfsti_kernels import _registry, _staged, dft
from hfsti_kernels._inputs import fft_op_inputs
from hfsti_kernels.ops import fft_channel_attention as fca_mod
from hfsti_kernels.ops import fourier_unit as fu_mod
from hfsti_kernels.ops import gated_fusion as gf_mod

KERNEL = {
    "fft_channel_attention": fca_mod.fft_channel_attention,
    "fourier_unit": fu_mod.fourier_unit,
    "gated_fusion": gf_mod.gated_fusion,
}
REFERENCE = {
    "fft_channel_attention": ref.fft_channel_attention,
    "fourier_unit": ref.fourier_unit,
    "gated_fusion": ref.gated_fusion,
}
OPS = tuple(KERNEL)

# With a GPU, conftest leaves the interpreter off and CPU tensors cannot take the Triton path;
# tests/test_gpu_fft_ops.py runs the same checks on CUDA there. Each op's module sets it.


@pytest.fixture
def op(request):
    """The op under test: the ``OP`` of the test module that imports this suite."""
    return request.module.OP


def check_against_reference(op, inputs, tol, fn=None):
    """Forward and every gradient of the Triton path vs the float64 reference."""
    dtype = inputs[0].dtype
    fn = fn or (lambda *a: KERNEL[op](*a, backend="triton"))
    outs, grads, grad_outs = run_with_grads(fn, inputs)
    ref_outs, ref_grads, _ = run_with_grads(REFERENCE[op], [t.double() for t in inputs], grad_outs)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.dtype == dtype, f"{op} output {i}: dtype {o.dtype}, expected {dtype}"
        assert_rel_close(o, r, tol, f"{op} output {i}")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert g.dtype == dtype, f"{op} grad of input {i}: dtype {g.dtype}, expected {dtype}"
        assert_rel_close(g, r, tol, f"{op} grad of input {i}")


def bad_inputs_test(cases):
    """A test that each ``(id, call, exception type, message regex)`` of ``cases`` raises."""

    @pytest.mark.parametrize("case", cases, ids=lambda c: c[0])
    def test_bad_inputs_raise_naming_the_argument(case):
        _, call, exc, match = case
        with pytest.raises(exc, match=match):
            call()

    return test_bad_inputs_raise_naming_the_argument


def wide_channels_test(C, c_out):
    """A test with more channels than one GEMM tile (2C' > 64 rows, C > 32): block loops and
    edges, at the ``C`` in and ``c_out`` out channels that make them so for the module's op."""

    def test_wide_channels(op):
        inputs = fft_op_inputs(op, 1, C, 2, 3, torch.float64, c_out=c_out)
        check_against_reference(op, inputs, TOLERANCE[torch.float64])

    return test_wide_channels


# --------------------------------------------------------------------------- numerics

SHAPES = [(1, 3, 5, 7), (2, 3, 11, 13), (2, 3, 6, 8)]  # odd, odd (model-like), even W


# bf16 and fp16 run at different dot precisions (dft.dot_precision): both are checked.
HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(op, shape, dtype):
    check_against_reference(op, fft_op_inputs(op, *shape, dtype), TOLERANCE[dtype])


def test_batch5_and_tiny_planes(op):
    for shape in [(5, 3, 2, 3), (2, 2, 1, 1), (1, 2, 1, 2)]:
        check_against_reference(op, fft_op_inputs(op, *shape, torch.float32), 1e-5)


def test_gradcheck_triton_float64(op):
    shape = {"fft_channel_attention": (1, 1, 3, 4), "fourier_unit": (1, 2, 2, 3)}.get(
        op, (1, 1, 3, 4)
    )
    inputs = [t.requires_grad_() for t in fft_op_inputs(op, *shape, torch.float64, seed=3, c_out=1)]
    assert torch.autograd.gradcheck(
        lambda *a: KERNEL[op](*a, backend="triton"), inputs, eps=1e-6, atol=1e-7
    )


def test_noncontiguous_inputs(op):
    inputs = fft_op_inputs(op, 2, 3, 5, 7, torch.float32, seed=5)
    strided = [strided_like(t) for t in inputs]
    fn = lambda *a: KERNEL[op](*a, backend="triton")  # noqa: E731
    outs, grads, grad_outs = run_with_grads(fn, inputs)
    s_outs, s_grads, _ = run_with_grads(fn, strided, grad_outs)
    for o, s in zip(outs + grads, s_outs + s_grads):
        assert_rel_close(s, o, 1e-6, f"{op} strided vs contiguous")
    check_against_reference(op, strided, 1e-5)


def test_bad_env_backend(op, monkeypatch):
    monkeypatch.setenv("HFSTI_BACKEND", "gpu")
    with pytest.raises(ValueError, match=r"^HFSTI_BACKEND"):
        KERNEL[op](*fft_op_inputs(op, 1, 2, 3, 4, torch.float32))


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize("how", ["reference", "auto", "env-reference", "env-default"])
def test_reference_and_auto_route_to_reference_on_cpu(op, how, monkeypatch):
    def no_kernels(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched")

    monkeypatch.setattr(_registry, "launch", no_kernels)
    monkeypatch.delenv("HFSTI_BACKEND", raising=False)
    if how == "env-reference":
        monkeypatch.setenv("HFSTI_BACKEND", "reference")
    inputs = fft_op_inputs(op, 1, 2, 3, 4, torch.float32)
    backend = how if how in ("reference", "auto") else None
    outs = as_tuple(KERNEL[op](*inputs, backend=backend))
    for o, r in zip(outs, as_tuple(REFERENCE[op](*inputs))):
        assert torch.equal(o, r)


def test_env_triton_routes_to_kernels(op, monkeypatch):
    calls = []
    real_launch = _registry.launch
    monkeypatch.setattr(
        _registry, "launch", lambda *a, **k: (calls.append(a[0]), real_launch(*a, **k))
    )
    monkeypatch.setenv("HFSTI_BACKEND", "triton")
    inputs = fft_op_inputs(op, 1, 2, 3, 4, torch.float32)
    outs = as_tuple(KERNEL[op](*inputs))
    assert calls, "HFSTI_BACKEND=triton did not launch a kernel"
    for o, r in zip(outs, as_tuple(REFERENCE[op](*[t.double() for t in inputs]))):
        assert_rel_close(o, r, 1e-5, f"{op} via HFSTI_BACKEND=triton")


# --------------------------------------------------------------------------- torch.library


def _op_args(op, requires_grad):
    H, W = 3, 5
    inputs = fft_op_inputs(op, 1, 2, H, W, torch.float64, seed=7)
    inputs = [t.requires_grad_(requires_grad) for t in inputs]
    fh, fw = dft.dft_matrices(H, W, torch.float64, inputs[0].device)
    if op == "fft_channel_attention":
        return fca_mod._fca_op, (*inputs, fh, fw)
    if op == "fourier_unit":
        return fu_mod._fu_op, (*inputs, fh, fw, requires_grad)
    return gf_mod._gf_op, (*inputs, fh, fw, requires_grad)


def test_opcheck_forward_ops(op):
    fwd_op, args = _op_args(op, requires_grad=True)
    torch.library.opcheck(fwd_op, args)
    if op != "fft_channel_attention":  # the inference variant (no saved spectrum)
        fwd_op, args = _op_args(op, requires_grad=False)
        torch.library.opcheck(fwd_op, args)


def test_opcheck_backward_ops(op):
    fwd_op, args = _op_args(op, requires_grad=False)
    g = torch.Generator().manual_seed(8)
    if op == "fft_channel_attention":
        q, k, v, fh, fw = args
        dy = torch.randn(q.shape, generator=g, dtype=q.dtype)
        torch.library.opcheck(fca_mod._fca_bwd_op, (dy, q, k, v, fh, fw))
    elif op == "fourier_unit":
        x, w, b, fh, fw, _ = args
        y, zs = fu_mod._fu_op(x, w, b, fh, fw, True)
        dy = torch.randn(y.shape, generator=g, dtype=y.dtype)
        torch.library.opcheck(fu_mod._fu_bwd_op, (dy, x, w, zs, fh, fw))
    else:
        x_f, x_s, x_0, fuw, fub, dww, dwb, fh, fw, _ = args
        x_c, x_fs, zs = gf_mod._gf_op(x_f, x_s, x_0, fuw, fub, dww, dwb, fh, fw, True)
        g_c = torch.randn(x_c.shape, generator=g, dtype=x_c.dtype)
        g_fs = torch.randn(x_c.shape, generator=g, dtype=x_c.dtype)
        torch.library.opcheck(gf_mod._gf_bwd_op, (g_c, g_fs, x_c, fuw, dww, dwb, zs, fh, fw))


def test_compile_aot_eager_fullgraph(op):
    torch._dynamo.reset()
    dft._CACHE.clear()  # the compiled trace must build the matrices itself, uncached
    compiled = torch.compile(
        lambda *a: KERNEL[op](*a, backend="triton"), backend="aot_eager", fullgraph=True
    )
    inputs = fft_op_inputs(op, 2, 2, 5, 6, torch.float32, seed=9)
    check_against_reference(op, inputs, 1e-5, fn=compiled)
    assert not dft._CACHE, "tracing must not populate the DFT cache"
    # Warm cache: the cached (real) matrices enter the graph as constants.
    dft.dft_matrices(5, 6, torch.float32, torch.device("cpu"))
    torch._dynamo.reset()
    check_against_reference(
        op, fft_op_inputs(op, 1, 2, 5, 6, torch.float32, seed=10), 1e-5, fn=compiled
    )


# --------------------------------------------------------------------------- staged path
# Planes with a tile side >= _staged.STAGED_MIN_TILE (the model's 88x88) take the staged kernels.
# Lowering the threshold runs them on small planes here; 16-wide blocks make every block loop
# (rows, spectral and spatial columns, contraction) run more than once at 20x36.

STAGED_SHAPES = [(1, 1, 11, 13), (1, 1, 20, 36)]


@pytest.fixture
def force_staged(monkeypatch):
    """Force the staged path; yields the list of launched kernel names, with "[staged]" appended
    for launches of a kernel's staged branch (IS_STAGED)."""
    monkeypatch.setattr(_staged, "STAGED_MIN_TILE", 16)
    launched = []
    real_launch = _registry.launch

    def spy(kernel, *args, **kwargs):
        name = getattr(kernel, "__name__", None) or kernel.fn.__name__
        launched.append(name + ("[staged]" if kwargs.get("IS_STAGED") else ""))
        return real_launch(kernel, *args, **kwargs)

    monkeypatch.setattr(_registry, "launch", spy)
    return launched


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("shape", STAGED_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_staged_matches_reference(op, shape, dtype, force_staged, monkeypatch):
    # float64 at 20x36 with 16-wide blocks (multi-block loops everywhere), else the default 32.
    if dtype == torch.float64 and shape[-1] > 16:
        monkeypatch.setattr(_staged, "STAGED_BLOCK", 16)
    check_against_reference(op, fft_op_inputs(op, *shape, dtype), TOLERANCE[dtype])
    staged = [n for n in force_staged if "staged" in n]
    assert len(staged) == 2, f"expected a staged forward and backward, got {force_staged}"


def test_staged_gradcheck_float64(op, force_staged):
    # fast_mode (random projections): the full Jacobian takes minutes in the interpreter, and
    # test_staged_matches_reference already checks every gradient against the reference.
    inputs = fft_op_inputs(op, 1, 1, 2, 3, torch.float64, seed=3, c_out=1)
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda *a: KERNEL[op](*a, backend="triton"), inputs, eps=1e-6, atol=1e-7, fast_mode=True
    )
    assert any("staged" in n for n in force_staged)


def test_staged_opcheck(op, force_staged):
    test_opcheck_forward_ops(op)
    test_opcheck_backward_ops(op)
    assert any("staged" in n for n in force_staged)
