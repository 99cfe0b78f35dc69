"""Mixed precision: every op (reference and Triton) under ``torch.autocast``, the model, and
``hfsti train --amp bf16|fp16`` on CPU (docs/ops.md, "Autocast").

The cast rule lives in one place, ``hfsti.ops.autocast_policy``: the four feature ops cast their
floating arguments to the autocast dtype, the two losses to float32. The inputs here are what a
model under autocast hands the ops: half-precision activations next to fp32 parameters.
Triton runs in the CPU interpreter (tests/conftest.py); on a GPU the CUDA-autocast test runs.
CPU fp16 convolutions are slow (no oneDNN fp16 kernels), so the fp16 model runs are tiny.
"""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from helpers import TOLERANCE, assert_rel_close
from PIL import Image

import hfsti_kernels
from hfsti import HFSTIConfig, HFSTINet, HybridLoss
from hfsti import ops as ref
from hfsti.cli import main
from hfsti_kernels._backend import interpreter_enabled
from hfsti_kernels._inputs import FFT_OPS, attention_inputs, fft_op_inputs, loss_inputs

HALF = [torch.bfloat16, torch.float16]
LOSSES = ("structure_loss", "spectral_correlation_loss")
OPS = (*FFT_OPS, "memory_attention", *LOSSES)
triton_needs_interpreter = pytest.mark.skipif(
    not interpreter_enabled(), reason="Triton on CPU tensors needs TRITON_INTERPRET=1"
)
BACKENDS = ["reference", pytest.param("triton", marks=triton_needs_interpreter)]


def op_inputs(op: str, dtype: torch.dtype, device="cpu") -> list[torch.Tensor]:
    """The first argument (an activation) in ``dtype``, every other tensor in fp32 (parameters,
    the memory bias, the target): the mix that crashed the ops under autocast."""
    if op in FFT_OPS:
        inputs = fft_op_inputs(op, 2, 3, 5, 7, torch.float32, device=device)
    elif op == "memory_attention":
        inputs = list(attention_inputs((2, 2, 5, 19, 8), torch.float32, "bcast_b", device=device))
    else:
        inputs = [t.float() for t in loss_inputs((2, 1, 11, 13), "soft", device=device)]
    return [inputs[0].to(dtype), *inputs[1:]]


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def check_op_under_autocast(op, backend, dtype, device="cpu"):
    inputs = op_inputs(op, dtype, device)
    n_diff = 1 if op in LOSSES else len(inputs)  # the losses are differentiable in logits
    leaves = [t.clone().requires_grad_(i < n_diff) for i, t in enumerate(inputs)]
    with torch.autocast(device, dtype=dtype):
        outs = as_tuple(getattr(hfsti_kernels, op)(*leaves, backend=backend))
    cast = torch.float32 if op in LOSSES else dtype
    g = torch.Generator().manual_seed(1)
    grad_outs = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outs]
    grads = torch.autograd.grad(outs, leaves[:n_diff], grad_outs)

    # The float64 oracle on the inputs as the op saw them (cast by the rule), same output grads.
    seen = [t.detach().to(cast).double().requires_grad_(i < n_diff) for i, t in enumerate(inputs)]
    ref_outs = as_tuple(getattr(ref, op)(*seen))
    ref_grads = torch.autograd.grad(ref_outs, seen[:n_diff], [go.double() for go in grad_outs])
    tol = TOLERANCE[cast]
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.dtype == cast, f"{op} output {i}: {o.dtype}, expected {cast}"
        assert_rel_close(o, r, tol, f"{op} {backend} {dtype} output {i}")
    for i, (gr, r) in enumerate(zip(grads, ref_grads)):
        # Each argument's gradient comes back in that argument's own dtype.
        assert gr.dtype == inputs[i].dtype, f"{op} grad {i}: {gr.dtype} != {inputs[i].dtype}"
        grad_tol = max(tol, TOLERANCE[gr.dtype])  # a half argument's gradient is rounded to it
        assert_rel_close(gr, r, grad_tol, f"{op} {backend} {dtype} grad of input {i}")


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_op_under_cpu_autocast(op, backend, dtype):
    if (op, backend, dtype) == ("memory_attention", "triton", torch.bfloat16):
        # Its bf16 tiles go straight into tl.dot, which the interpreter computes in numpy, which
        # has no bfloat16 (garbage, not an error). test_op_under_cuda_autocast covers it on GPU.
        pytest.skip("the Triton interpreter has no bf16 dot")
    check_op_under_autocast(op, backend, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_op_under_cuda_autocast(op, backend, dtype):
    check_op_under_autocast(op, backend, dtype, device="cuda")


@pytest.mark.parametrize("op", ["fourier_unit", "structure_loss"])
def test_outside_autocast_nothing_is_cast(op):
    inputs = op_inputs(op, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        if op == "fourier_unit":  # bf16 x with fp32 weights is a dtype error without autocast
            with pytest.raises(TypeError, match="weight: expected dtype torch.bfloat16"):
                ref.fourier_unit(*inputs)
        else:  # the loss keeps the logits' dtype
            assert ref.structure_loss(*inputs).dtype == torch.bfloat16


def test_policy_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="rule: expected one of"):
        ref.autocast_policy("fp8")


# --------------------------------------------------------------------------- the model

SMALL = HFSTIConfig(channels=16, rmp_heads=2)


# bf16 at 64x64: at 32x32 the F4 map is 1x1, where CPU bf16 5x5-conv weight gradients come out
# NaN now and then (a oneDNN defect, docs/gpu_paths.md); fp16 at 32x32 because CPU fp16
# convolutions are slow.
@pytest.mark.slow
@pytest.mark.parametrize("dtype, size", [(torch.bfloat16, 64), (torch.float16, 32)], ids=str)
def test_model_forward_backward_under_cpu_autocast(dtype, size):
    torch.manual_seed(0)
    model = HFSTINet(SMALL).train()
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 2, 3, size, size, generator=g)
    masks = (torch.rand(1, 2, 1, size, size, generator=g) > 0.5).float()
    with torch.no_grad():
        full = model(frames)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(frames)
    assert logits.dtype == dtype
    # Loose: a whole network in half precision, against itself in fp32.
    assert_rel_close(logits, full, 0.1, f"logits under {dtype} autocast")
    loss = HybridLoss()(logits.float(), masks)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert bad == []
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


# --------------------------------------------------------------------------- hfsti train --amp


def tiny_root(root, size):
    """A SUN-SEG-layout root with one case of two frames (one clip: the same batch every step)."""
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for t in range(2):
        (root / "Frame" / "case1").mkdir(parents=True, exist_ok=True)
        (root / "GT" / "case1").mkdir(parents=True, exist_ok=True)
        disc = (yy - size / 2 - 2 * t) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
        rgb = g.integers(0, 80, (size, size, 3), dtype=np.uint8)
        rgb[disc] += np.array([150, 60, 40], dtype=np.uint8)
        Image.fromarray(rgb).save(root / "Frame" / "case1" / f"{t}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "GT" / "case1" / f"{t}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("amp, size", [("bf16", 64), ("fp16", 32)])
def test_train_cli_under_amp(tmp_path, monkeypatch, amp, size):
    scaler_steps = []
    real_step = torch.amp.GradScaler.step

    def spy(self, optimizer, *args, **kwargs):
        scaler_steps.append((self.is_enabled(), self.get_scale()))
        return real_step(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", spy)
    root, out = tiny_root(tmp_path / "data", size), tmp_path / "run"
    argv = ["train", "--data", str(root), "--out", str(out), "--amp", amp, "--size", str(size)]
    argv += ["--steps", "3", "--batch-size", "1", "--clip-len", "2", "--channels", "8"]
    argv += ["--lr", "1e-3", "--warmup", "1", "--workers", "0", "--log-every", "1"]
    assert main([*argv, "--no-augment", "--save-every", "3"]) == 0
    with (out / "log.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    # fp16 goes through the GradScaler (enabled, scaling), bf16 does not need it.
    assert [enabled for enabled, _ in scaler_steps] == [amp == "fp16"] * 3
    if amp == "fp16":
        assert all(scale > 1 for _, scale in scaler_steps)


# --------------------------------------------------------------------------- segment / accelerate


def test_segment_precision_on_cpu_runs_in_that_precision(tmp_path):
    """``segment --precision bf16`` on CPU used to run fp32 silently; it now takes the
    accelerated path (eagerly) in bf16, and says so in the summary."""
    from hfsti.data import FrameSource
    from hfsti.segment import segment

    torch.manual_seed(0)
    model = HFSTINet(dataclasses.replace(SMALL, input_size=64)).eval()
    source = FrameSource(None, num_frames=2)
    summary = segment(
        model, source, tmp_path / "out", progress=False, accelerate_dtype=torch.bfloat16
    )
    assert summary.frames == 2 and summary.precision.startswith("bfloat16 accelerated")
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 2


@pytest.mark.slow
def test_accelerate_fp16_on_cpu_runs_in_fp16():
    torch.manual_seed(0)
    model = HFSTINet(dataclasses.replace(SMALL, input_size=32)).eval()
    segmenter = hfsti_kernels.accelerate(model, dtype=torch.float16, size=32)
    assert all(p.dtype == torch.float16 for p in segmenter.model.parameters())
    frame = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = segmenter.step(frame)
    with torch.no_grad():
        want = model.step(frame)[0][:, :1]
    assert logits.dtype == torch.float32
    assert_rel_close(logits, want, 0.05, "fp16 accelerated logits vs the fp32 model")
