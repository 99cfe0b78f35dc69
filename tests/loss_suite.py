"""The checks both Triton losses pass, run by each loss's test module for its own loss.

Not a test module itself: ``tests/test_kernels_<loss>.py`` imports these tests, whose ``loss``
argument is that module's ``loss`` fixture. Runs on CPU through the Triton interpreter (conftest
sets TRITON_INTERPRET=1 without a GPU): forward and logits gradient vs ``hfsti.ops`` evaluated in
float64 for float64 and float32 inputs, binary and soft targets, moderate and saturating logits,
gradcheck through the Triton path, non-contiguous logits, input validation,
torch.library.opcheck of every op, torch.compile(backend="aot_eager", fullgraph=True), bitwise
determinism. Shapes are small because the interpreter is slow; tests/test_gpu_losses.py covers
the model's.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TOLERANCE, assert_rel_close

from hfsti import ops as ref
from hfsti_kernels import dft
from hfsti_kernels._inputs import loss_inputs, loss_target
from hfsti_kernels.ops import spectral_correlation_loss as scc_mod
from hfsti_kernels.ops import structure_loss as sl_mod

KERNEL = {
    "structure_loss": sl_mod.structure_loss,
    "spectral_correlation_loss": scc_mod.spectral_correlation_loss,
}
REFERENCE = {
    "structure_loss": ref.structure_loss,
    "spectral_correlation_loss": ref.spectral_correlation_loss,
}


# (1, 1, 40, 33): the 31x31 window covers most of the image, and the plane spans several
# 32-wide kernel tiles in both losses (halo and block seams are exercised).
SHAPES = [(1, 1, 11, 13), (5, 1, 5, 7), (2, 1, 6, 8), (1, 1, 40, 33)]


def loss_and_grad(fn, logits, target):
    x = logits.detach().requires_grad_()
    out = fn(x, target)
    (dx,) = torch.autograd.grad(out, x)
    return out, dx


def check_against_reference(loss, logits, target, dtype, fn=None):
    """Loss and d loss / d logits of the Triton path in ``dtype`` vs the float64 reference."""
    fn = fn or (lambda x, t: KERNEL[loss](x, t, backend="triton"))
    out, dx = loss_and_grad(fn, logits.to(dtype), target.to(dtype))
    assert out.dtype == dtype and out.shape == (), f"{loss}: got {out.dtype} {tuple(out.shape)}"
    assert dx.dtype == dtype
    # The reference sees the same (rounded) inputs, in float64.
    r_out, r_dx = loss_and_grad(
        REFERENCE[loss], logits.to(dtype).double(), target.to(dtype).double()
    )
    tol = TOLERANCE[dtype]
    assert_rel_close(out, r_out, tol, f"{loss} {dtype} forward")
    assert_rel_close(dx, r_dx, tol, f"{loss} {dtype} d/dlogits")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,scale", [("binary", 3.0), ("soft", 30.0)])
def test_matches_reference(loss, shape, dtype, kind, scale):
    logits, target = loss_inputs(shape, kind, scale, seed=sum(shape) + len(kind))
    check_against_reference(loss, logits, target, dtype)


# Saturation levels: the largest |logit| each loss's float64 oracle still resolves (see below).
SATURATION_LEVEL = {"structure_loss": 30.0, "spectral_correlation_loss": 16.0}


def test_saturated_logits_binary_target(loss):
    # Saturating logits, mostly agreeing with a binary target: the stable BCE and sigmoid
    # derivative must hold. The spectral loss's gradient is then all sigmoid'(x), which the
    # float64 oracle's autograd forms as s (1 - s), losing log10(1 / sigmoid'(x)) digits (1e-3
    # relative at |x| = 30, 1e-9 at 16). Magnitudes vary in [level / 2, level]: a two-valued
    # sigmoid map has exactly-zero spectral bins, where dP/dX = X / P is 0 / eps in exact
    # arithmetic but rounding noise / eps = O(1) in float32 (ill-posed at any implementation).
    level = SATURATION_LEVEL[loss]
    g = torch.Generator().manual_seed(3)
    target = loss_target((2, 1, 6, 8), "binary", g)
    sign = torch.where(target > 0, 1.0, -1.0) * (
        1 - 2 * (torch.rand(target.shape, generator=g) < 0.3)
    )
    logits = sign * level * (0.5 + 0.5 * torch.rand(target.shape, generator=g, dtype=torch.float64))
    check_against_reference(loss, logits, target, torch.float32)
    check_against_reference(loss, logits, target, torch.float64)


def test_gradcheck_float64_through_triton(loss):
    logits, target = loss_inputs((2, 1, 3, 5), "soft", seed=4)
    x = logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: KERNEL[loss](z, target, backend="triton"), (x,))


def test_non_contiguous_logits(loss):
    logits, target = loss_inputs((2, 1, 13, 11), "binary", seed=5)
    # (B, 1, W, H) transposed, and every second column of a wider map.
    check_against_reference(
        loss, logits.transpose(-1, -2).contiguous().transpose(-1, -2), target, torch.float32
    )
    wide = torch.randn(2, 1, 13, 22, dtype=torch.float64)[..., ::2]
    assert not wide.is_contiguous()
    check_against_reference(loss, wide, target, torch.float32)


def test_target_gets_no_gradient(loss):
    logits, target = loss_inputs((1, 1, 5, 7), "soft", seed=6)
    x = logits.requires_grad_()
    t = target.requires_grad_()
    dx, dt = torch.autograd.grad(KERNEL[loss](x, t, backend="triton"), (x, t), allow_unused=True)
    assert dx is not None and dt is None


def test_deterministic(loss):
    logits, target = loss_inputs((5, 1, 40, 33), "binary", seed=7)
    a_out, a_dx = loss_and_grad(
        lambda x, t: KERNEL[loss](x, t, backend="triton"), logits.float(), target.float()
    )
    b_out, b_dx = loss_and_grad(
        lambda x, t: KERNEL[loss](x, t, backend="triton"), logits.float(), target.float()
    )
    assert torch.equal(a_out, b_out) and torch.equal(a_dx, b_dx), f"{loss}: runs differ"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "logits,target,error,name",
    [
        (torch.zeros(1, 5, 7), torch.zeros(1, 5, 7), ValueError, "logits"),
        (torch.zeros(1, 2, 5, 7), torch.zeros(1, 2, 5, 7), ValueError, "logits"),
        (torch.zeros(1, 1, 5, 7), torch.zeros(1, 1, 5, 6), ValueError, "target"),
        (torch.zeros(1, 1, 5, 7, dtype=torch.int64), torch.zeros(1, 1, 5, 7), TypeError, "logits"),
        (torch.zeros(1, 1, 5, 7), torch.zeros(1, 1, 5, 7, dtype=torch.int32), TypeError, "target"),
        (torch.zeros(1, 1, 5, 7), "t", TypeError, "target"),
    ],
    ids=["rank", "channels", "shape", "logits-dtype", "target-dtype", "target-type"],
)
def test_bad_inputs_name_the_argument(loss, logits, target, error, name):
    with pytest.raises(error, match=name):
        KERNEL[loss](logits, target, backend="triton")


def test_backend_routing(loss, monkeypatch):
    logits, target = loss_inputs((1, 1, 5, 7), "soft", seed=8)
    with pytest.raises(ValueError, match="backend"):
        KERNEL[loss](logits, target, backend="bogus")
    monkeypatch.setenv("HFSTI_BACKEND", "bogus")
    with pytest.raises(ValueError, match="HFSTI_BACKEND"):
        KERNEL[loss](logits, target)
    monkeypatch.setenv("HFSTI_BACKEND", "triton")
    via_env = KERNEL[loss](logits, target)
    assert torch.equal(via_env, KERNEL[loss](logits, target, backend="triton"))
    # "auto" on CPU tensors is the reference, bit for bit.
    ref_out = REFERENCE[loss](logits, target)
    assert torch.equal(KERNEL[loss](logits, target, backend="auto"), ref_out)
    assert torch.equal(KERNEL[loss](logits, target, backend="reference"), ref_out)


# --------------------------------------------------------------------------- torch.library


def _op_args(loss):
    logits, target = loss_inputs((2, 1, 5, 7), "soft", seed=9)
    if loss == "structure_loss":
        return sl_mod._sl_op, (logits.requires_grad_(), target)
    fh, fw = dft.dft_matrices(5, 7, torch.float64, logits.device)
    return scc_mod._scc_op, (logits.requires_grad_(), target, fh, fw, 1e-8)


def test_opcheck(loss):
    op, args = _op_args(loss)
    torch.library.opcheck(op, args)
    outs = op(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    dout = torch.tensor(0.7, dtype=torch.float64)
    if loss == "structure_loss":
        torch.library.opcheck(sl_mod._sl_bwd_op, (dout, args[0].detach(), args[1], outs[1]))
    else:
        _, spec, coef = outs
        logits, _, fh, fw, eps = args
        torch.library.opcheck(scc_mod._scc_bwd_op, (dout, logits.detach(), spec, coef, fh, fw, eps))


def test_compile_aot_eager_fullgraph(loss):
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, t: KERNEL[loss](x, t, backend="triton"), backend="aot_eager", fullgraph=True
    )
    logits, target = loss_inputs((2, 1, 6, 8), "binary", seed=10)
    check_against_reference(loss, logits, target, torch.float32, fn=compiled)
