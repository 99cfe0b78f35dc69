"""The reference ops (the oracle) against independent evaluations, in float64.

Independent means: no ``torch.fft``. Circular convolution is summed directly, DFTs are explicit
sums in numpy, softmax is written out, and the losses are checked on cases worked by hand.
"""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FILL_VALUES, TOLERANCE, assert_rel_close, check_fill_bias_is_a_shift

import hfsti_kernels
from hfsti import ops
from hfsti_kernels._inputs import attention_inputs, fft_op_inputs, loss_inputs
from hfsti_kernels._registry import OPS

SHAPES = [(1, 3, 5, 7), (2, 3, 11, 13), (1, 2, 6, 8), (5, 1, 1, 1), (1, 1, 4, 1)]


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- independent maths


def circular_conv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a (*) b)[i, j] = sum_{m, n} a[m, n] b[i - m, j - n] (indices mod H, W), summed directly."""
    H, W = a.shape[-2:]
    out = torch.zeros_like(a)
    for m in range(H):
        for n in range(W):
            out += a[..., m : m + 1, n : n + 1] * torch.roll(b, shifts=(m, n), dims=(-2, -1))
    return out


def dft(n: int) -> np.ndarray:
    idx = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)


def fourier_unit_numpy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The Fourier unit with irfft2_strict (docs/ops.md) from explicit DFT matrices and the C2R
    sum written out term by term."""
    B, C, H, W = x.shape
    half = W // 2 + 1
    spec = np.einsum("kh,bchw,lw->bckl", dft(H), x, dft(W))[..., :half]
    z = np.concatenate([spec.real, spec.imag], axis=1)
    z = np.maximum(np.einsum("oc,bchw->bohw", weight, z) + bias[:, None, None], 0)
    c_out = weight.shape[0] // 2
    t = np.einsum("hk,bokl->bohl", dft(H).conj(), z[:, :c_out] + 1j * z[:, c_out:])
    n = np.arange(W)
    y = np.repeat(t[..., :1].real, W, axis=-1)  # bin 0: its imaginary part is dropped
    for k in range(1, half):
        if 2 * k == W:  # Nyquist bin of an even W: real part only, counted once
            y = y + t[..., k : k + 1].real * np.cos(np.pi * n)
        else:  # bins k and W - k of the implied Hermitian spectrum
            y = y + 2 * (t[..., k : k + 1] * np.exp(2j * np.pi * k * n / W)).real
    return y / np.sqrt(W)


def attention_numpy(q, k, v, bias, scale):
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    if bias is not None:
        s = s + bias[..., None, :]
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return np.einsum("bhij,bhjd->bhid", p / p.sum(-1, keepdims=True), v)


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def depthwise3x3_direct(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    H, W = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    out = b[None, :, None, None].expand_as(x).clone()
    for i in range(3):
        for j in range(3):
            out += w[None, :, 0, i, j, None, None] * padded[..., i : i + H, j : j + W]
    return out


# --------------------------------------------------------------------------- 1.1


@pytest.mark.parametrize("shape", SHAPES)
def test_fft_channel_attention_is_scaled_triple_circular_convolution(shape):
    q, k, v = (rand(*shape, seed=s) for s in range(3))
    H, W = shape[-2:]
    expected = circular_conv(circular_conv(q, k), v) / (H * W)
    assert_rel_close(ops.fft_channel_attention(q, k, v), expected, 1e-12, "y")


# --------------------------------------------------------------------------- 1.2


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("c_out", [None, 2])
def test_fourier_unit_matches_explicit_dft(shape, c_out):
    C = shape[1]
    c_out = c_out or C
    x = rand(*shape)
    weight, bias = rand(2 * c_out, 2 * C, seed=1), rand(2 * c_out, seed=2)
    expected = fourier_unit_numpy(x.numpy(), weight.numpy(), bias.numpy())
    out = ops.fourier_unit(x, weight, bias)
    assert out.shape == (shape[0], c_out, *shape[2:])
    assert_rel_close(out, torch.from_numpy(expected), 1e-12, "y")


@pytest.mark.parametrize("width", [6, 7])
def test_irfft2_strict_ignores_imaginary_parts_of_real_bins(width):
    spec = torch.complex(rand(2, 5, width // 2 + 1), rand(2, 5, width // 2 + 1, seed=1))
    bumped = spec.clone()
    bumped[..., 0] += 3j
    if width % 2 == 0:
        bumped[..., width // 2] -= 2j
    torch.testing.assert_close(ops.irfft2_strict(bumped, width), ops.irfft2_strict(spec, width))
    bumped[..., 1] += 1j  # any other bin does matter
    assert not torch.allclose(ops.irfft2_strict(bumped, width), ops.irfft2_strict(spec, width))


# --------------------------------------------------------------------------- 1.3


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_gated_fusion_matches_composition(shape):
    C = shape[1]
    x_f, x_s, x_0 = (rand(*shape, seed=s) for s in range(3))
    fu_w, fu_b = rand(2 * C, 2 * C, seed=3), rand(2 * C, seed=4)
    dw_w, dw_b = rand(C, 1, 3, 3, seed=5), rand(C, seed=6)
    x_c, x_fs = ops.gated_fusion(x_f, x_s, x_0, fu_w, fu_b, dw_w, dw_b)
    xc = x_f + x_s + x_0
    fu = torch.from_numpy(fourier_unit_numpy(xc.numpy(), fu_w.numpy(), fu_b.numpy()))
    expected = gelu_exact(fu) * depthwise3x3_direct(xc, dw_w, dw_b)
    assert_rel_close(x_c, xc, 1e-15, "x_c")
    assert_rel_close(x_fs, expected, 1e-12, "x_fs")


# --------------------------------------------------------------------------- 1.4


@pytest.mark.parametrize(
    "B, h, Nq, Nk, d, bias_shape",
    [
        (1, 1, 7, 19, 24, None),
        (2, 3, 5, 33, 8, (2, 3, 33)),
        (2, 3, 4, 9, 5, (1, 3, 9)),
        (2, 3, 4, 9, 5, (2, 1, 9)),
        (5, 1, 1, 1, 1, (5, 1, 1)),
    ],
)
def test_memory_attention_matches_explicit_softmax(B, h, Nq, Nk, d, bias_shape):
    q, k, v = rand(B, h, Nq, d), rand(B, h, Nk, d, seed=1), rand(B, h, Nk, d, seed=2)
    bias = None if bias_shape is None else 3 * rand(*bias_shape, seed=3)
    for scale in (None, 0.7):
        expected = attention_numpy(
            q.numpy(),
            k.numpy(),
            v.numpy(),
            None if bias is None else bias.numpy(),
            d**-0.5 if scale is None else scale,
        )
        out = ops.memory_attention(q, k, v, bias, scale)
        assert_rel_close(out, torch.from_numpy(expected), 1e-12, "o")


# --------------------------------------------------------------------------- losses


def test_structure_loss_hand_case_empty_target():
    # target 0 everywhere: w = 1, bce = log 2 at logits 0, p = 1/2, inter = 0,
    # union = N/2, so loss = log 2 + 1 - 1 / (N/2 + 1).
    logits = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    target = torch.zeros_like(logits)
    expected = math.log(2) + 1 - 1 / (24 / 2 + 1)
    assert ops.structure_loss(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_structure_loss_hand_case_full_target_uses_zero_padding():
    # target 1 on a 1x1 image: the 31x31 window (count_include_pad) averages to 1/961,
    # so w = 1 + 5 * 960/961; bce at logit x is log(1 + e^-x); p = sigmoid(x).
    x = 0.3
    logits = torch.full((1, 1, 1, 1), x, dtype=torch.float64)
    target = torch.ones_like(logits)
    w = 1 + 5 * (960 / 961)
    p = 1 / (1 + math.exp(-x))
    wiou = 1 - (p * w + 1) / ((p + 1) * w - p * w + 1)
    expected = math.log(1 + math.exp(-x)) + wiou
    assert ops.structure_loss(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_structure_loss_weights_are_per_pixel():
    # A prediction wrong only at the boundary costs more than one wrong only in the interior
    # (by the same amount per pixel): the per-pixel weights are not reduced to a mean.
    target = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    target[..., 10:30, 10:30] = 1
    good = 20 * (2 * target - 1)
    edge, inner = good.clone(), good.clone()
    edge[..., 10, 15:20] = -20
    inner[..., 20, 15:20] = -20
    assert ops.structure_loss(edge, target) > ops.structure_loss(inner, target)


def test_spectral_correlation_loss_hand_cases():
    target = torch.zeros(2, 1, 9, 11, dtype=torch.float64)
    target[0, 0, 2:6, 3:8] = 1
    target[1, 0, 4:9, 0:4] = 1
    perfect = 40 * (2 * target - 1)
    assert ops.spectral_correlation_loss(perfect, target).item() == pytest.approx(0, abs=1e-8)
    # A translated prediction has the same spectral magnitude: the loss cannot see shifts.
    shifted = torch.roll(perfect, shifts=(1, 2), dims=(-2, -1))
    assert ops.spectral_correlation_loss(shifted, target).item() == pytest.approx(0, abs=1e-8)
    noise = rand(2, 1, 9, 11)
    assert ops.spectral_correlation_loss(noise, target).item() > 0.1


def test_spectral_correlation_loss_matches_numpy():
    logits, target = rand(3, 1, 7, 10), (rand(3, 1, 7, 10, seed=1) > 0).double()
    eps = 1e-8
    p = 1 / (1 + np.exp(-logits.numpy()))
    P = np.sqrt(np.abs(np.fft.fft2(p, norm="ortho")) ** 2 + eps**2).reshape(3, -1)
    G = np.sqrt(np.abs(np.fft.fft2(target.numpy(), norm="ortho")) ** 2 + eps**2).reshape(3, -1)
    Pc, Gc = P - P.mean(1, keepdims=True), G - G.mean(1, keepdims=True)
    r = (Pc * Gc).sum(1) / (np.linalg.norm(Pc, axis=1) * np.linalg.norm(Gc, axis=1) + eps)
    out = ops.spectral_correlation_loss(logits, target)
    assert out.item() == pytest.approx(1 - r.mean(), rel=1e-12)


# --------------------------------------------------------------------------- autograd


def _grad_inputs(shape):
    return [rand(*shape, seed=s).requires_grad_() for s in range(3)]


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 1, 4, 6)])
def test_gradcheck_fft_ops(shape):
    C = shape[1]
    q, k, v = _grad_inputs(shape)
    assert torch.autograd.gradcheck(ops.fft_channel_attention, (q, k, v))
    w = rand(2 * C, 2 * C, seed=4).requires_grad_()
    b = (rand(2 * C, seed=5) + 0.5).requires_grad_()  # keep most bins off the ReLU kink
    assert torch.autograd.gradcheck(ops.fourier_unit, (q, w, b))
    dw, db = rand(C, 1, 3, 3, seed=6).requires_grad_(), rand(C, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(ops.gated_fusion, (q, k, v, w, b, dw, db))


def test_gradcheck_memory_attention():
    q, k, v = rand(2, 2, 3, 4), rand(2, 2, 5, 4, seed=1), rand(2, 2, 5, 4, seed=2)
    bias = rand(2, 1, 5, seed=3)
    args = [t.requires_grad_() for t in (q, k, v, bias)]
    assert torch.autograd.gradcheck(ops.memory_attention, (*args, 0.9))


def test_gradcheck_losses():
    logits = rand(2, 1, 6, 5).requires_grad_()
    target = (rand(2, 1, 6, 5, seed=1) > 0).double()
    assert torch.autograd.gradcheck(lambda x: ops.structure_loss(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: ops.spectral_correlation_loss(x, target), (logits,))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs_keep_dtype_and_accuracy(dtype):
    x = [rand(2, 3, 11, 13, seed=s) for s in range(3)]
    ref = ops.fft_channel_attention(*x)
    out = ops.fft_channel_attention(*(t.to(dtype) for t in x))
    assert out.dtype == dtype
    # Rounding the inputs costs about one unit of the dtype's precision.
    assert_rel_close(out, ref, 4 * TOLERANCE[dtype], "y")


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
    x = rand(1, 3, 5, 7)
    with pytest.raises(ValueError, match="k: expected a 4-D"):
        ops.fft_channel_attention(x, x[0], x)
    with pytest.raises(ValueError, match="v: expected the shape of q"):
        ops.fft_channel_attention(x, x, rand(1, 3, 5, 6))
    with pytest.raises(TypeError, match="k: expected dtype torch.float64"):
        ops.fft_channel_attention(x, x.float(), x)
    with pytest.raises(TypeError, match="q: expected dtype in"):
        ops.fft_channel_attention(x.long(), x.long(), x.long())
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        ops.fourier_unit(x.numpy(), rand(6, 6), rand(6))
    with pytest.raises(ValueError, match=r"weight: expected shape \(2C', 2C\)"):
        ops.fourier_unit(x, rand(6, 4), rand(6))
    with pytest.raises(ValueError, match="bias: expected shape"):
        ops.fourier_unit(x, rand(6, 6), rand(5))
    with pytest.raises(ValueError, match="dw_weight: expected shape"):
        ops.gated_fusion(x, x, x, rand(6, 6), rand(6), rand(3, 1, 5, 5), rand(3))
    with pytest.raises(ValueError, match="fu_bias: expected shape"):
        ops.gated_fusion(x, x, x, rand(6, 6), rand(5), rand(3, 1, 3, 3), rand(3))
    q = rand(2, 4, 7, 8)
    with pytest.raises(ValueError, match="k: expected shape"):
        ops.memory_attention(q, rand(2, 4, 9, 6), rand(2, 4, 9, 6))
    with pytest.raises(ValueError, match="key_bias: expected shape"):
        ops.memory_attention(q, rand(2, 4, 9, 8), rand(2, 4, 9, 8), rand(2, 3, 9))
    with pytest.raises(ValueError, match="scale: expected a positive"):
        ops.memory_attention(q, q, q, None, -1.0)
    with pytest.raises(ValueError, match=r"logits: expected shape \(\*, 1, \*, \*\)"):
        ops.structure_loss(rand(1, 2, 4, 4), rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="target: expected the shape of logits"):
        ops.spectral_correlation_loss(rand(1, 1, 4, 4), rand(1, 1, 4, 5))


def test_resolve_backend():
    assert ops.resolve_backend("reference") is ops.REFERENCE
    with pytest.raises(ValueError, match="backend: expected one of"):
        ops.resolve_backend("cudnn")


# --------------------------------------------------------------------------- edge cases
# The public functions of hfsti_kernels, on the reference and on the Triton kernels (the CPU
# interpreter; tests/conftest.py): the same result or the same clear error.

EDGE_BACKENDS = [
    "reference",
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            os.environ.get("TRITON_INTERPRET") != "1", reason="Triton on CPU needs the interpreter"
        ),
    ),
]


def public(op):
    return getattr(hfsti_kernels, op)


def edge_inputs(op, B=2, C=3, H=5, W=7, dtype=torch.float32):
    if op == "memory_attention":  # (B, h, Nq, Nk, d) = (B, C, H, W, 4)
        return list(attention_inputs((B, C, H, W, 4), dtype, "full"))
    if op in ("structure_loss", "spectral_correlation_loss"):
        return [t.to(dtype) for t in loss_inputs((B, 1, H, W), "soft")]
    return fft_op_inputs(op, B, C, H, W, dtype)


# Nk = 16 and 32 are multiples of the Triton key block (16 in the interpreter), 5 and 19 are not
# (a padded tail block).
@pytest.mark.parametrize("n_k", [5, 16, 19, 32])
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_every_key_masked_gives_zero_not_nan(backend, n_k):
    q, k, v, bias = edge_inputs("memory_attention", B=2, C=2, H=3, W=n_k, dtype=torch.float64)
    # Leading keys masked (bias -inf) per (batch, head): two heads with every key masked, one with
    # two keys masked, one with none, so fully masked rows sit beside live ones.
    n_masked = {(0, 0): n_k, (0, 1): 2, (1, 0): 0, (1, 1): n_k}
    for (b, h), m in n_masked.items():
        bias[b, h, :m] = -math.inf
    leaves = [t.requires_grad_() for t in (q, k, v, bias)]
    o = public("memory_attention")(*leaves, backend=backend)
    do = rand(*o.shape, seed=1)
    grads = torch.autograd.grad(o, leaves, do)
    assert torch.isfinite(o).all() and all(torch.isfinite(g).all() for g in grads)
    for (b, h), m in n_masked.items():
        head = (slice(b, b + 1), slice(h, h + 1))
        if m == n_k:  # attends to nothing: output 0 and no gradient to q, k, v or key_bias
            assert not o[head].any() and not any(g[head].any() for g in grads)
            continue
        # Otherwise attention over the unmasked keys alone; the masked ones get no gradient.
        sub = [t[head].detach().requires_grad_() for t in (q, k[..., m:, :], v[..., m:, :])]
        sub.append(bias[head][..., m:].detach().requires_grad_())
        expected = ops.memory_attention(*sub)
        torch.testing.assert_close(o[head], expected)
        sub_grads = torch.autograd.grad(expected, sub, do[head])
        torch.testing.assert_close(grads[0][head], sub_grads[0])
        for g, sub_g in zip(grads[1:], sub_grads[1:], strict=True):  # k, v, key_bias: dim 2 is Nk
            torch.testing.assert_close(g[head].narrow(2, m, n_k - m), sub_g)
            assert not g[head].narrow(2, 0, m).any()


def test_rebase_leaves_ordinary_biases_alone():
    # The model's mask prior and -inf masks pass bit for bit; a fill on every key of a head is
    # shifted to 0 there only; the shift takes no gradient.
    bias = torch.randn(2, 3, 7, dtype=torch.float64) * 100
    bias[0, 0, :3] = -math.inf
    bias[1, 2] = -math.inf
    bias[0, 1] = -1e9
    bias.requires_grad_()
    out = ops.rebase_key_bias(bias)
    keep = torch.ones(2, 3, dtype=torch.bool)
    keep[0, 1] = False
    assert torch.equal(out[keep], bias[keep])
    assert torch.equal(out[0, 1], torch.zeros(7, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out, bias, torch.arange(42.0, dtype=torch.float64).view(2, 3, 7))
    assert torch.equal(grad, torch.arange(42.0, dtype=torch.float64).view(2, 3, 7))


# finfo.min * log2(e) overflows to -inf in the Triton kernel (probability 0, as meant); the
# interpreter's numpy says so.
@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("fill", FILL_VALUES)
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_fill_value_on_every_key_is_a_shift(backend, fill):
    check_fill_bias_is_a_shift(backend, fill)


@pytest.mark.parametrize("loss", ["structure_loss", "spectral_correlation_loss"])
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_target_that_requires_grad_is_data(loss, backend):
    logits, target = edge_inputs(loss, dtype=torch.float64)
    x = logits.clone().requires_grad_()
    t = target.clone().requires_grad_()
    value = public(loss)(x, t, backend=backend)
    value.backward()
    assert t.grad is None  # every backend: the target gets no gradient
    x_ref = logits.clone().requires_grad_()
    ops_value = getattr(ops, loss)(x_ref, target)
    ops_value.backward()
    torch.testing.assert_close(value, ops_value)
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("loss", ["structure_loss", "spectral_correlation_loss"])
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_target_outside_unit_range_is_refused(loss, backend):
    logits, target = edge_inputs(loss)
    cases = [(target * 255, r"\[[\d.]+, 2\d\d"), (target - 1, r"\[-"), (target * math.nan, "")]
    for bad, shown in cases:
        with pytest.raises(ValueError, match=rf"target: expected values in \[0, 1\], got {shown}"):
            public(loss)(logits, bad, backend=backend)


@pytest.mark.parametrize("dim", range(4))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_zero_sizes_are_refused(backend, op, dim):
    """B, C, H or W (memory attention: B, h, Nq or Nk) of size zero: one error everywhere."""
    if op in ("structure_loss", "spectral_correlation_loss") and dim == 1:
        pytest.skip("the losses take one channel")
    inputs = edge_inputs(op)
    if op == "memory_attention":  # which (tensor index, dim) hold B, h, Nq, Nk
        where = [[(0, 0), (1, 0), (2, 0), (3, 0)], [(0, 1), (1, 1), (2, 1), (3, 1)]]
        where += [[(0, 2)], [(1, 2), (2, 2), (3, 2)]]
    else:  # the activations (and the target)
        n = {"fourier_unit": 1, "structure_loss": 2, "spectral_correlation_loss": 2}.get(op, 3)
        where = [[(i, d) for i in range(n)] for d in range(4)]
    for i, d in where[dim]:
        inputs[i] = inputs[i].narrow(d, 0, 0)
    with pytest.raises(ValueError, match="expected every size of .* >= 1"):
        public(op)(*inputs, backend=backend)


@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_memory_attention_head_dim_zero_is_refused(backend):
    q, k, v, bias = edge_inputs("memory_attention")
    with pytest.raises(ValueError, match=r"q: expected every size of \(B, h, Nq, d\) >= 1"):
        public("memory_attention")(q[..., :0], k[..., :0], v[..., :0], bias, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "auto", "triton", "cuda"])
def test_invalid_fp32_precision_is_refused_on_every_backend(backend):
    q, k, v, bias = edge_inputs("memory_attention")
    with pytest.raises(ValueError, match="fp32_precision: expected one of"):
        public("memory_attention")(q, k, v, bias, backend=backend, fp32_precision="fp64")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", EDGE_BACKENDS)
def test_meta_tensors_give_shapes(backend, op):
    real = edge_inputs(op)
    n_diff = 1 if "loss" in op else len(real)
    meta = [t.to("meta").requires_grad_(i < n_diff) for i, t in enumerate(real)]
    outs = public(op)(*meta, backend=backend)
    outs = outs if isinstance(outs, tuple) else (outs,)
    want = public(op)(*real, backend="reference")
    want = want if isinstance(want, tuple) else (want,)
    for o, w in zip(outs, want):
        assert o.device.type == "meta" and o.shape == w.shape and o.dtype == w.dtype
    grads = torch.autograd.grad(sum(o.sum() for o in outs), meta[:n_diff])
    assert [g.shape for g in grads] == [t.shape for t in real[:n_diff]]
