"""Triton FFT ops (fft_channel_attention, fourier_unit, gated_fusion) against the reference.

Runs on CPU through the Triton interpreter (conftest sets TRITON_INTERPRET=1 without a GPU):
forward and every gradient vs ``hfsti.ops`` evaluated in float64, gradcheck through the Triton
path (the single-tile kernels and, forced by a lowered threshold, the staged large-plane ones),
non-contiguous inputs, input validation, backend routing, torch.library.opcheck of every
forward and backward op, torch.compile(backend="aot_eager", fullgraph=True), the DFT cache.
Shapes are tiny because the interpreter is slow; tests/test_gpu_fft_ops.py covers the model's.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCE, assert_rel_close
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

from hfsti import ops as ref
from hfsti_kernels import _registry, dft
from hfsti_kernels._backend import interpreter_enabled
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
# tests/test_gpu_fft_ops.py runs the same checks on CUDA there.
pytestmark = pytest.mark.skipif(
    not interpreter_enabled(), reason="Triton on CPU tensors needs TRITON_INTERPRET=1"
)


def make_inputs(op, B, C, H, W, dtype, seed=0, c_out=2, device="cpu"):
    """Random inputs of ``op`` (drawn in float64, then cast), parameters at realistic scales."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype)

    if op == "fft_channel_attention":
        return [rnd(B, C, H, W) for _ in range(3)]
    if op == "fourier_unit":
        return [rnd(B, C, H, W), rnd(2 * c_out, 2 * C, scale=(2 * C) ** -0.5), rnd(2 * c_out)]
    return [rnd(B, C, H, W) for _ in range(3)] + [
        rnd(2 * C, 2 * C, scale=(2 * C) ** -0.5),
        rnd(2 * C, scale=0.3),
        rnd(C, 1, 3, 3, scale=1 / 3),
        rnd(C, scale=0.3),
    ]


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def run_with_grads(fn, inputs, grad_outs=None, seed=1):
    """Outputs of ``fn(*inputs)`` and the gradients of every input for random output grads."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    outs = as_tuple(fn(*inputs))
    if grad_outs is None:
        g = torch.Generator().manual_seed(seed)
        grad_outs = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    grad_outs = [go.to(o.device) for go, o in zip(grad_outs, outs)]
    grads = torch.autograd.grad(outs, inputs, [go.to(o.dtype) for go, o in zip(grad_outs, outs)])
    return outs, grads, grad_outs


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


# --------------------------------------------------------------------------- numerics

SHAPES = [(1, 3, 5, 7), (2, 3, 11, 13), (2, 3, 6, 8)]  # odd, odd (model-like), even W


# bf16 and fp16 run at different dot precisions (dft.dot_precision): both are checked.
HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_matches_reference(op, shape, dtype):
    check_against_reference(op, make_inputs(op, *shape, dtype), TOLERANCE[dtype])


@pytest.mark.parametrize("op", OPS)
def test_batch5_and_tiny_planes(op):
    for shape in [(5, 3, 2, 3), (2, 2, 1, 1), (1, 2, 1, 2)]:
        check_against_reference(op, make_inputs(op, *shape, torch.float32), 1e-5)


@pytest.mark.parametrize("op", ["fourier_unit", "gated_fusion"])
def test_wide_channels(op):
    """More channels than one GEMM tile (2C' = 66 > 64 rows, C > 32): block loops and edges."""
    C = 40 if op == "fourier_unit" else 33
    inputs = make_inputs(op, 1, C, 2, 3, torch.float64, c_out=33)
    check_against_reference(op, inputs, TOLERANCE[torch.float64])


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_triton_float64(op):
    shape = {"fft_channel_attention": (1, 1, 3, 4), "fourier_unit": (1, 2, 2, 3)}.get(
        op, (1, 1, 3, 4)
    )
    inputs = [t.requires_grad_() for t in make_inputs(op, *shape, torch.float64, seed=3, c_out=1)]
    assert torch.autograd.gradcheck(
        lambda *a: KERNEL[op](*a, backend="triton"), inputs, eps=1e-6, atol=1e-7
    )


def _strided_like(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout (a transposed, sliced view)."""
    if t.dim() < 2:
        return torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]
    base = torch.zeros(*t.shape[:-2], t.shape[-1], 2 * t.shape[-2], dtype=t.dtype)
    view = base.transpose(-1, -2)[..., ::2, :]
    view.copy_(t)
    assert not view.is_contiguous()
    return view


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_inputs(op):
    inputs = make_inputs(op, 2, 3, 5, 7, torch.float32, seed=5)
    strided = [_strided_like(t) for t in inputs]
    fn = lambda *a: KERNEL[op](*a, backend="triton")  # noqa: E731
    outs, grads, grad_outs = run_with_grads(fn, inputs)
    s_outs, s_grads, _ = run_with_grads(fn, strided, grad_outs)
    for o, s in zip(outs + grads, s_outs + s_grads):
        assert_rel_close(s, o, 1e-6, f"{op} strided vs contiguous")
    check_against_reference(op, strided, 1e-5)


def test_no_grad_skips_spectrum():
    """Inference does not write the saved spectrum, and still matches."""
    x, w, b = make_inputs("fourier_unit", 1, 3, 5, 7, torch.float64)
    fh, fw = dft.dft_matrices(5, 7, torch.float64, x.device)
    y, zs = fu_mod._fu_op(x, w, b, fh, fw, False)
    assert zs.numel() == 0
    with torch.no_grad():
        y2 = fu_mod.fourier_unit(x.requires_grad_(), w, b, backend="triton")
    assert_rel_close(y2, ref.fourier_unit(x, w, b), TOLERANCE[torch.float64], "no_grad")
    assert torch.equal(y, y2)


# --------------------------------------------------------------------------- validation


def _bad_cases():
    q = torch.randn(1, 2, 3, 4)
    x = make_inputs("gated_fusion", 1, 2, 3, 4, torch.float32)
    x_f, x_s, x_0, fw, fb, dw, db = x
    fca, fu, gf = KERNEL.values()
    meta = torch.device("meta")
    return [
        ("fca rank", lambda: fca(q[0], q, q, backend="triton"), ValueError, r"^q: .*4-D"),
        ("fca shape", lambda: fca(q, q[..., :3], q, backend="triton"), ValueError, r"^k: "),
        ("fca dtype", lambda: fca(q, q, q.double(), backend="triton"), TypeError, r"^v: "),
        ("fca int", lambda: fca(q.long(), q, q, backend="triton"), TypeError, r"^q: "),
        ("fca device", lambda: fca(q, q.to(meta), q, backend="triton"), ValueError, r"^k: .*dev"),
        ("fca not tensor", lambda: fca(q, 1.0, q, backend="triton"), TypeError, r"^k: "),
        ("fu weight", lambda: fu(q, fw[:, :3], fb, backend="triton"), ValueError, r"^weight: "),
        ("fu odd rows", lambda: fu(q, fw[:3], fb, backend="triton"), ValueError, r"^weight: "),
        ("fu bias", lambda: fu(q, fw, fb[:3], backend="triton"), ValueError, r"^bias: "),
        ("fu bias dtype", lambda: fu(q, fw, fb.double(), backend="triton"), TypeError, r"^bias"),
        ("fu rank", lambda: fu(q[0], fw, fb, backend="triton"), ValueError, r"^x: "),
        (
            "gf x_s shape",
            lambda: gf(x_f, x_s[:, :1], x_0, fw, fb, dw, db, backend="triton"),
            ValueError,
            r"^x_s: ",
        ),
        (
            "gf fu_weight",
            lambda: gf(x_f, x_s, x_0, fw[:2], fb, dw, db, backend="triton"),
            ValueError,
            r"^fu_weight: ",
        ),
        (
            "gf dw_weight",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw[..., :2], db, backend="triton"),
            ValueError,
            r"^dw_weight: ",
        ),
        (
            "gf dw_bias dtype",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw, db.half(), backend="triton"),
            TypeError,
            r"^dw_bias: ",
        ),
        (
            "gf x_0 device",
            lambda: gf(x_f, x_s, x_0.to(meta), fw, fb, dw, db, backend="triton"),
            ValueError,
            r"^x_0: .*device",
        ),
        ("bad backend", lambda: fca(q, q, q, backend="fast"), ValueError, r"^backend: "),
        ("fu bad backend", lambda: fu(q, fw, fb, backend="Triton"), ValueError, r"^backend: "),
        (
            "gf bad backend",
            lambda: gf(x_f, x_s, x_0, fw, fb, dw, db, backend=""),
            ValueError,
            r"^backend: ",
        ),
        ("cuda backend", lambda: fca(q, q, q, backend="cuda"), ValueError, r"^backend: "),
        (
            "bad matrices",
            lambda: fca_mod._fca_op(q, q, q, *dft.dft_matrices(20, 4, torch.float32, q.device)),
            ValueError,
            r"^fh, fw: ",
        ),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs_raise_naming_the_argument(case):
    _, call, exc, match = case
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("op", OPS)
def test_bad_env_backend(op, monkeypatch):
    monkeypatch.setenv("HFSTI_BACKEND", "gpu")
    with pytest.raises(ValueError, match=r"^HFSTI_BACKEND"):
        KERNEL[op](*make_inputs(op, 1, 2, 3, 4, torch.float32))


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"^backend: 'triton' needs CUDA"):
        KERNEL["fft_channel_attention"](q, q, q, backend="triton")


def test_backward_without_saved_spectrum_is_refused():
    x, w, b = make_inputs("fourier_unit", 1, 3, 5, 7, torch.float64)
    fh, fw = dft.dft_matrices(5, 7, torch.float64, x.device)
    with pytest.raises(ValueError, match=r"^zs: "):
        fu_mod._fu_bwd_op(torch.randn(1, 2, 5, 7, dtype=torch.float64), x, w, x[:0], fh, fw)


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("how", ["reference", "auto", "env-reference", "env-default"])
def test_reference_and_auto_route_to_reference_on_cpu(op, how, monkeypatch):
    def no_kernels(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched")

    monkeypatch.setattr(_registry, "launch", no_kernels)
    monkeypatch.delenv("HFSTI_BACKEND", raising=False)
    if how == "env-reference":
        monkeypatch.setenv("HFSTI_BACKEND", "reference")
    inputs = make_inputs(op, 1, 2, 3, 4, torch.float32)
    backend = how if how in ("reference", "auto") else None
    outs = as_tuple(KERNEL[op](*inputs, backend=backend))
    for o, r in zip(outs, as_tuple(REFERENCE[op](*inputs))):
        assert torch.equal(o, r)


@pytest.mark.parametrize("op", OPS)
def test_env_triton_routes_to_kernels(op, monkeypatch):
    calls = []
    real_launch = _registry.launch
    monkeypatch.setattr(
        _registry, "launch", lambda *a, **k: (calls.append(a[0]), real_launch(*a, **k))
    )
    monkeypatch.setenv("HFSTI_BACKEND", "triton")
    inputs = make_inputs(op, 1, 2, 3, 4, torch.float32)
    outs = as_tuple(KERNEL[op](*inputs))
    assert calls, "HFSTI_BACKEND=triton did not launch a kernel"
    for o, r in zip(outs, as_tuple(REFERENCE[op](*[t.double() for t in inputs]))):
        assert_rel_close(o, r, 1e-5, f"{op} via HFSTI_BACKEND=triton")


# --------------------------------------------------------------------------- torch.library


def _op_args(op, requires_grad):
    H, W = 3, 5
    inputs = make_inputs(op, 1, 2, H, W, torch.float64, seed=7)
    inputs = [t.requires_grad_(requires_grad) for t in inputs]
    fh, fw = dft.dft_matrices(H, W, torch.float64, inputs[0].device)
    if op == "fft_channel_attention":
        return fca_mod._fca_op, (*inputs, fh, fw)
    if op == "fourier_unit":
        return fu_mod._fu_op, (*inputs, fh, fw, requires_grad)
    return gf_mod._gf_op, (*inputs, fh, fw, requires_grad)


@pytest.mark.parametrize("op", OPS)
def test_opcheck_forward_ops(op):
    fwd_op, args = _op_args(op, requires_grad=True)
    torch.library.opcheck(fwd_op, args)
    if op != "fft_channel_attention":  # the inference variant (no saved spectrum)
        fwd_op, args = _op_args(op, requires_grad=False)
        torch.library.opcheck(fwd_op, args)


@pytest.mark.parametrize("op", OPS)
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


@pytest.mark.parametrize("op", OPS)
def test_compile_aot_eager_fullgraph(op):
    torch._dynamo.reset()
    dft._CACHE.clear()  # the compiled trace must build the matrices itself, uncached
    compiled = torch.compile(
        lambda *a: KERNEL[op](*a, backend="triton"), backend="aot_eager", fullgraph=True
    )
    inputs = make_inputs(op, 2, 2, 5, 6, torch.float32, seed=9)
    check_against_reference(op, inputs, 1e-5, fn=compiled)
    assert not dft._CACHE, "tracing must not populate the DFT cache"
    # Warm cache: the cached (real) matrices enter the graph as constants.
    dft.dft_matrices(5, 6, torch.float32, torch.device("cpu"))
    torch._dynamo.reset()
    check_against_reference(
        op, make_inputs(op, 1, 2, 5, 6, torch.float32, seed=10), 1e-5, fn=compiled
    )


# --------------------------------------------------------------------------- staged path
# Planes with a tile side >= dft.STAGED_MIN_TILE (the model's 88x88) take the staged kernels.
# Lowering the threshold runs them on small planes here; 16-wide blocks make every block loop
# (rows, spectral and spatial columns, contraction) run more than once at 20x36.

STAGED_SHAPES = [(1, 1, 11, 13), (1, 1, 20, 36)]


@pytest.fixture
def force_staged(monkeypatch):
    """Force the staged path; yields the list of launched kernel names."""
    monkeypatch.setattr(dft, "STAGED_MIN_TILE", 16)
    launched = []
    real_launch = _registry.launch

    def spy(kernel, *args, **kwargs):
        launched.append(getattr(kernel, "__name__", None) or kernel.fn.__name__)
        return real_launch(kernel, *args, **kwargs)

    monkeypatch.setattr(_registry, "launch", spy)
    return launched


def test_staged_threshold_at_model_sizes():
    assert dft.is_staged(88, 88) and dft.is_staged(65, 20) and dft.is_staged(11, 100)
    assert not dft.is_staged(44, 44) and not dft.is_staged(64, 64) and not dft.is_staged(11, 11)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("shape", STAGED_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_staged_matches_reference(op, shape, dtype, force_staged, monkeypatch):
    # float64 at 20x36 with 16-wide blocks (multi-block loops everywhere), else the default 32.
    if dtype == torch.float64 and shape[-1] > 16:
        monkeypatch.setattr(dft, "STAGED_BLOCK", 16)
    check_against_reference(op, make_inputs(op, *shape, dtype), TOLERANCE[dtype])
    staged = [n for n in force_staged if "staged" in n]
    assert len(staged) == 2, f"expected a staged forward and backward, got {force_staged}"


@pytest.mark.parametrize("op", OPS)
def test_staged_gradcheck_float64(op, force_staged):
    # fast_mode (random projections): the full Jacobian takes minutes in the interpreter, and
    # test_staged_matches_reference already checks every gradient against the reference.
    inputs = make_inputs(op, 1, 1, 2, 3, torch.float64, seed=3, c_out=1)
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda *a: KERNEL[op](*a, backend="triton"), inputs, eps=1e-6, atol=1e-7, fast_mode=True
    )
    assert any("staged" in n for n in force_staged)


@pytest.mark.parametrize("op", OPS)
def test_staged_opcheck(op, force_staged):
    test_opcheck_forward_ops(op)
    test_opcheck_backward_ops(op)
    assert any("staged" in n for n in force_staged)


# --------------------------------------------------------------------------- DFT matrices


@pytest.mark.parametrize("H, W", [(5, 7), (6, 8), (1, 1), (11, 13)])
def test_dft_matrices_give_rfft2(H, W):
    fh, fw = dft.dft_matrices(H, W, torch.float64, torch.device("cpu"))
    F = torch.complex(fh[0], fh[1])[:H, :H]
    G = torch.complex(fw[0], fw[1])[:W, : W // 2 + 1]
    x = torch.randn(H, W, dtype=torch.float64).to(torch.complex128)
    assert_rel_close(
        torch.view_as_real(F @ x @ G),
        torch.view_as_real(torch.fft.rfft2(x.real, norm="ortho")),
        1e-13,
        "dft",
    )
    # Hermitian weights: the inverse dropped bins are exactly real.
    assert torch.all(fw[1, :, 0] == 0) and (W % 2 or torch.all(fw[1, :, W // 2] == 0))
    assert dft.dft_matrices(H, W, torch.float64, torch.device("cpu"))[0] is fh  # cached


def test_dft_cache_never_holds_fake_tensors():
    dft._CACHE.clear()
    with FakeTensorMode():
        fh, _ = dft.dft_matrices(9, 10, torch.float32, torch.device("cpu"))
    assert is_fake(fh)
    assert not dft._CACHE
    fh, _ = dft.dft_matrices(9, 10, torch.float32, torch.device("cpu"))
    assert not is_fake(fh) and len(dft._CACHE) == 1


def test_dft_matrices_in_inference_mode_stay_usable_for_autograd():
    dft._CACHE.clear()
    with torch.inference_mode():
        dft.dft_matrices(5, 7, torch.float64, torch.device("cpu"))
    check_against_reference(
        "fft_channel_attention",
        make_inputs("fft_channel_attention", 1, 1, 5, 7, torch.float64),
        TOLERANCE[torch.float64],
    )
