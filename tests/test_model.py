"""HFSTI-Net: shapes, size, streaming, causality, memory, losses and bad input."""

import dataclasses

import pytest
import torch

from hfsti import HFSTIConfig, HFSTINet, HybridLoss, VideoSegmenter, ops
from hfsti.complexity import count_macs, count_parameters

SMALL = HFSTIConfig(channels=16, rmp_heads=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HFSTINet(SMALL).eval()


def clip(B=2, T=3, H=64, W=96, seed=0):
    return torch.rand(B, T, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_default_size_matches_the_paper():
    model = HFSTINet()
    params = count_parameters(model)
    assert params == 28_148_616
    assert abs(params / 28.53e6 - 1) < 0.05
    assert model.config.channels == 96


def test_macs_are_counted():
    macs = count_macs(HFSTINet(SMALL), size=64)
    # The backbone alone costs about 0.33 G MACs at 64x64 (4.0 G at 224x224, scaled by area).
    assert 0.25e9 < macs < 1e9


@pytest.mark.parametrize("H, W", [(64, 96), (70, 45)])
def test_output_shape(model, H, W):
    with torch.no_grad():
        out = model(clip(B=1, T=2, H=H, W=W))
    assert out.shape == (1, 2, 4, H, W)
    assert torch.isfinite(out).all()


def test_streaming_equals_clip(model):
    frames = clip()
    with torch.no_grad():
        expected = model(frames)[:, :, 0:1]
    segmenter = VideoSegmenter(model)
    for _ in range(2):  # reset() really starts a new video
        segmenter.reset()
        got = torch.stack([segmenter.step(frames[:, t]) for t in range(3)], dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_memory_is_used(model):
    frames = clip()
    with torch.no_grad():
        with_memory = model(frames)[:, 1]
        alone = model(frames[:, 1:2])[:, 0]
    assert (with_memory - alone).abs().max() > 1e-4


def test_causality(model):
    frames = clip(T=3)
    changed = frames.clone()
    changed[:, 2] = torch.rand_like(changed[:, 2])
    with torch.no_grad():
        a, b = model(frames), model(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=0)
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-4


def test_batch_items_are_independent_videos(model):
    frames = clip(B=2)
    with torch.no_grad():
        both = model(frames)
        first = model(frames[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-5)


def test_memory_bank_keeps_memory_frames():
    torch.manual_seed(0)
    model = HFSTINet(dataclasses.replace(SMALL, memory_frames=2)).eval()
    memory = None
    with torch.no_grad():
        for t, frame in enumerate(clip(B=1, T=4).unbind(1)):
            _, memory = model.step(frame, memory)
            assert memory.features.shape[1] == min(t + 1, 2)
            assert memory.masks.shape == (1, min(t + 1, 2), 1, 2, 3)
            assert memory.masks.min() >= 0 and memory.masks.max() <= 1


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = HFSTINet(SMALL).train()
    frames, masks = clip(B=2, T=2), (torch.rand(2, 2, 1, 64, 96) > 0.5).float()
    HybridLoss()(model(frames), masks).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


def test_hybrid_loss_weights_levels():
    logits = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    target = (torch.rand(2, 1, 16, 16) > 0.5).double()
    terms = [ops.structure_loss(logits[:, i : i + 1], target) for i in range(4)]
    spectral = ops.spectral_correlation_loss(logits[:, :1], target)
    expected = terms[0] + terms[1] / 2 + terms[2] / 4 + terms[3] / 8 + 0.1 * spectral
    torch.testing.assert_close(HybridLoss()(logits, target), expected)
    torch.testing.assert_close(HybridLoss(lambda_spec=0)(logits, target), expected - 0.1 * spectral)
    clip_logits, clip_target = logits.view(1, 2, 4, 16, 16), target.view(1, 2, 1, 16, 16)
    torch.testing.assert_close(HybridLoss()(clip_logits, clip_target), expected)


def test_set_backend_swaps_every_op_user(model):
    swapped = dataclasses.replace(ops.REFERENCE, name="probe")
    model.set_backend(swapped)
    users = [m for m in model.modules() if hasattr(m, "ops")]
    assert len(users) == 9  # RMP + FFB and IFB on four levels
    assert all(m.ops is swapped for m in users)
    model.set_backend("reference")
    assert all(m.ops is ops.REFERENCE for m in users) and model.config.backend == "reference"


def test_hfsti_backend_puts_new_models_on_that_backend(monkeypatch):
    monkeypatch.delenv("HFSTI_BACKEND", raising=False)
    assert HFSTIConfig().backend == "reference"
    monkeypatch.setenv("HFSTI_BACKEND", "triton")
    model = HFSTINet(HFSTIConfig(channels=16, rmp_heads=2, input_size=32))
    assert model.config.backend == "triton"
    assert {m.ops.name for m in model.modules() if hasattr(m, "ops")} == {"triton"}
    assert HFSTIConfig(backend="reference").backend == "reference"  # an explicit name wins
    monkeypatch.setenv("HFSTI_BACKEND", "gpu")
    with pytest.raises(ValueError, match="^HFSTI_BACKEND environment variable: expected one of"):
        HFSTIConfig()


def test_bad_inputs_name_the_argument(model):
    with pytest.raises(ValueError, match="frames: expected a 5-D"):
        model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"frames: expected shape \(\*, \*, 3, \*, \*\)"):
        model(torch.rand(1, 2, 4, 64, 64))
    with pytest.raises(ValueError, match="frames: expected H, W >= 32"):
        model(torch.rand(1, 2, 3, 16, 64))
    with pytest.raises(TypeError, match="frames: expected the model's dtype"):
        model(torch.rand(1, 2, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="frame: expected a 4-D"):
        model.step(torch.rand(1, 1, 3, 64, 64))
    _, memory = model.step(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="memory: holds 2 videos, frame has 1"):
        model.step(torch.rand(1, 3, 64, 64), memory)
    with pytest.raises(ValueError, match="rmp_heads: must divide channels"):
        HFSTIConfig(channels=10, rmp_heads=4)
    with pytest.raises(ValueError, match="memory_frames: expected a positive integer"):
        HFSTIConfig(memory_frames=0)
    with pytest.raises(ValueError, match="config: unknown keys"):
        HFSTIConfig.from_dict({"channels": 8, "colour": 1})
    with pytest.raises(TypeError, match="model: expected an HFSTINet"):
        VideoSegmenter(torch.nn.Linear(2, 2))


def test_frames_outside_unit_range_are_refused(model):
    # 0..255 pixels (forgot to divide) and ImageNet-normalised frames are both wrong inputs.
    with pytest.raises(ValueError, match=r"frames: expected values in \[0, 1\], got \[0.*, 25\d"):
        model(clip(B=1, T=1) * 255)
    with pytest.raises(ValueError, match=r"frame: expected values in \[0, 1\]"):
        model.step(clip(B=1, T=1)[:, 0] - 0.5)
    nan = clip(B=1, T=1)
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frames: expected values in"):
        model(nan)


def test_empty_batch_or_clip_is_refused(model):
    with pytest.raises(ValueError, match=r"frames: expected \(B, T, 3, H, W\) with B, T >= 1"):
        model(torch.rand(0, 2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"frames: expected \(B, T, 3, H, W\) with B, T >= 1"):
        model(torch.rand(1, 0, 3, 64, 64))
    with pytest.raises(ValueError, match=r"frame: expected \(B, 3, H, W\) with B >= 1"):
        model.step(torch.rand(0, 3, 64, 64))


def test_hybrid_loss_refuses_targets_outside_unit_range():
    logits = torch.randn(2, 4, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    with pytest.raises(ValueError, match=r"target: expected values in \[0, 1\], got \[0, 255\]"):
        HybridLoss()(logits, target * 255)
    with pytest.raises(ValueError, match="target: expected values in"):
        HybridLoss(lambda_spec=0)(logits.view(1, 2, 4, 16, 16), target.view(1, 2, 1, 16, 16) - 1)
