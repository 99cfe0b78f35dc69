"""The whole HFSTI-Net on ``backend="cuda"`` (the csrc kernels in the host emulator) against the
reference model.

A small model (C = 16, two RMP heads, 64x64 frames, a clip of 2 frames) built with
``HFSTIConfig(backend="cuda")`` runs every fused op (fft_channel_attention, fourier_unit and
gated_fusion in each HFSI, memory_attention twice in RMP) through the CUDA kernels under
``HFSTI_CUDA_EMULATE=1``; the losses are not involved (the CUDA backend falls back to Triton for
them, tested with the Triton kernels). Compared with the reference model holding the same
weights: the logits and every parameter gradient (fp32, real backbone: 1e-4), and in fp64
(1e-9) the logits, the gradients of every parameter after the backbone and of the backbone's
four feature maps. The backbone has no fused op, so in fp64 (where CPU convolutions are slow) its
features are random tensors fed to both models; its parameter gradients follow from the feature
gradients by the chain rule. Also: ``patch(model, "cuda")``, ``torch.compile(fullgraph=True,
backend="aot_eager")`` through the CUDA custom ops, and streaming through
``accelerate(..., backend="cuda")`` against the reference's streaming logits.
"""

import dataclasses

import pytest
import torch
from helpers import NEEDS_CXX, assert_rel_close
from torch import nn
from torch._dynamo import lookup_backend

from hfsti import HFSTIConfig, HFSTINet, VideoSegmenter
from hfsti_kernels import accelerate, patch
from hfsti_kernels.cuda import runtime as rt

pytestmark = NEEDS_CXX
SMALL = HFSTIConfig(channels=16, rmp_heads=2, input_size=64)
B, T, SIZE = 1, 2, 64
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _emulate(monkeypatch):
    monkeypatch.setenv(rt.EMULATE_ENV, "1")


class FixedFeatures(nn.Module):
    """Stands in for the backbone: returns the given feature maps whatever the frames."""

    def __init__(self, feats: list[torch.Tensor]) -> None:
        super().__init__()
        self.feats = feats

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        return self.feats


def models(dtype):
    """(reference, cuda) models with the same weights, in train mode, in ``dtype``."""
    torch.manual_seed(0)
    ref = HFSTINet(SMALL).to(dtype)
    cuda = HFSTINet(dataclasses.replace(SMALL, backend="cuda")).to(dtype)
    cuda.load_state_dict(ref.state_dict())
    assert cuda.rmp.ops.name == "cuda" and ref.rmp.ops.name == "reference"
    return ref, cuda


def frames(dtype, seed=1, t=T):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, t, 3, SIZE, SIZE, generator=g, dtype=torch.float64).to(dtype)


def random_features(dtype, seed=2, t=T):
    """Backbone-like feature maps (B*t, dims_i, SIZE / 4 / 2**i, ...) for the four levels."""
    g = torch.Generator().manual_seed(seed)
    dims = (64, 128, 320, 512)
    return [
        torch.randn(B * t, c, SIZE // 4 >> i, SIZE // 4 >> i, generator=g, dtype=torch.float64)
        .to(dtype)
        .requires_grad_()
        for i, c in enumerate(dims)
    ]


def logits_and_grads(model, x, feats=None, run=None):
    """Logits of ``run(x)`` (default ``model(x)``) and the gradients of a fixed random
    functional of them w.r.t. every parameter of ``model`` that requires one (and the stand-in
    backbone features, if given: they replace ``model.backbone``), by name."""
    if feats is not None:
        feats = [f.detach().clone().requires_grad_() for f in feats]
        model.backbone = FixedFeatures(feats)
    out = (model if run is None else run)(x)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    named += [(f"backbone feature {i}", f) for i, f in enumerate(feats or [])]
    grads = torch.autograd.grad((out * w.to(out.dtype)).sum(), [t for _, t in named])
    return out.detach(), dict(zip([n for n, _ in named], grads))


def compare(got, want, tol):
    out, grads = got
    ref_out, ref_grads = want
    assert_rel_close(out, ref_out, tol, "logits")
    assert grads.keys() == ref_grads.keys()
    # Some gradients are zero in exact arithmetic (e.g. the key projections' biases: a shift
    # of every key changes a softmax row by a constant); they are judged against the largest
    # gradient of the same model rather than their own rounding noise.
    floor = 1e-3 * max(g.norm().item() for g in ref_grads.values())
    for name, g in grads.items():
        assert g.dtype == ref_grads[name].dtype, name
        assert_rel_close(g, ref_grads[name], tol, f"gradient of {name}", floor=floor)


def test_float32_logits_and_every_parameter_gradient():
    ref, cuda = models(torch.float32)
    x = frames(torch.float32)
    compare(logits_and_grads(cuda, x), logits_and_grads(ref, x), TOL[torch.float32])


def test_float64_logits_and_gradients_after_the_backbone():
    ref, cuda = models(torch.float64)
    x, feats = frames(torch.float64), random_features(torch.float64)
    got, want = logits_and_grads(cuda, x, feats), logits_and_grads(ref, x, feats)
    assert sum(n.startswith("rmp.") for n in got[1]) > 10  # RMP's parameters are compared
    compare(got, want, TOL[torch.float64])


def test_patch_to_cuda_matches_the_cuda_config():
    ref, cuda = models(torch.float32)
    patched = patch(ref, "cuda")
    assert patched.config.backend == "cuda"
    x, feats = frames(torch.float32), random_features(torch.float32)
    for m in (patched, cuda):
        m.backbone = FixedFeatures([f.detach() for f in feats])
    with torch.no_grad():
        assert torch.equal(patched(x), cuda(x))


def test_compile_fullgraph_traces_the_cuda_ops():
    # One frame (RMP still runs both attentions) keeps the trace short.
    _, cuda = models(torch.float32)
    x, feats = frames(torch.float32, t=1), random_features(torch.float32, t=1)
    eager = logits_and_grads(cuda, x, feats)
    traced = set()

    def backend(gm, example_inputs):
        traced.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(cuda, backend=backend, fullgraph=True)
    got = logits_and_grads(cuda, x, feats, run=compiled)
    ops = {"memory_attention_fwd", "fft_channel_attention", "gated_fusion"}
    assert all(any(f"hfsti_cuda.{op}" in t for t in traced) for op in ops), sorted(traced)
    # aot_eager decomposes some torch ops (batch norm), which rounds differently in fp32.
    compare(got, eager, TOL[torch.float32])


def test_accelerate_streaming_matches_the_reference_streaming():
    ref, _ = models(torch.float32)
    ref.eval()
    # A short video, one frame a step: the CUDA backend's fused fp32 copy vs the reference.
    x = frames(torch.float32, seed=4)
    fast = accelerate(ref, torch.float32, backend="cuda")
    assert fast.backend == "cuda"
    slow = VideoSegmenter(ref)
    for t in range(T):
        with torch.no_grad():
            want = slow.step(x[:, t])
        assert_rel_close(fast.step(x[:, t]), want, TOL[torch.float32], f"frame {t}")
