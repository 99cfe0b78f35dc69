"""hfsti_kernels.patch: the fused model equals the reference model, outputs and gradients."""

import copy

import pytest
import torch
from helpers import assert_rel_close

import hfsti_kernels
from hfsti import HFSTIConfig, HFSTINet, HybridLoss, ops

CONFIG = HFSTIConfig(channels=8, rmp_heads=2, input_size=32)


def outputs_and_grads(model, loss_fn, frames, masks):
    model.zero_grad()
    logits = model(frames)
    loss_fn(logits, masks).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_patched_model_matches_reference(dtype, tol):
    torch.manual_seed(0)
    reference = HFSTINet(CONFIG).to(dtype).eval()
    fused = hfsti_kernels.patch(copy.deepcopy(reference), backend="triton")
    assert fused.config.backend == "triton" and reference.config.backend == "reference"
    assert fused.state_dict().keys() == reference.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 2, 3, 32, 40, generator=g, dtype=dtype)
    masks = (torch.rand(1, 2, 1, 32, 40, generator=g) > 0.5).to(dtype)
    ref_out, ref_grads = outputs_and_grads(reference, HybridLoss(), frames, masks)
    loss = hfsti_kernels.patch(HybridLoss(), backend="triton")
    out, grads = outputs_and_grads(fused, loss, frames, masks)
    assert_rel_close(out, ref_out, tol, "logits")
    assert grads.keys() == ref_grads.keys()
    # Some gradients are zero in exact arithmetic (a key bias shifts a whole softmax row);
    # judge every tensor relative to at least 1e-3 of the total gradient norm.
    floor = 1e-3 * torch.cat([g.flatten() for g in ref_grads.values()]).norm().item()
    for name in ref_grads:
        assert_rel_close(grads[name], ref_grads[name], tol, f"grad of {name}", floor)


def test_backend_selected_at_construction():
    model = HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, backend="triton"))
    users = [m for m in model.modules() if hasattr(m, "ops")]
    assert users and all(m.ops.name == "triton" for m in users)
    model.set_backend("reference")
    assert all(m.ops is ops.REFERENCE for m in users)


def test_unknown_backends_are_named(monkeypatch):
    with pytest.raises(ValueError, match="backend: expected one of"):
        hfsti_kernels.patch(HybridLoss(), backend="fast")
    monkeypatch.setenv("HFSTI_CUDA_EMULATE", "0")  # no CPU path
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # and no GPU path
    with pytest.raises(ValueError, match="backend: 'cuda' needs a CUDA device"):
        HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, backend="cuda"))
