"""hfsti_kernels.accelerate on CUDA: bf16/fp16 + CUDA graphs at 352x352 vs the fp32 reference.

The model is the default configuration (C = 96, PVTv2-b2) with random weights: there is no
trained checkpoint in CI. A random model's logits carry no polyp information and are nearly
flat (spatial std about 0.1 around a mean of about 0.5), so binarising at 0 would compare noise
around an arbitrary level; the masks are therefore binarised at the reference's per-frame median
(half the pixels on each side, the most pixels near the threshold), and the relative logit
error, centred on the reference's mean, is bounded as well.

Honest limits. That proxy is badly conditioned: every rounding error is relative to the
features' large common mode, and the logits' spatial signal is small. Measured on CPU at 352x352
with this model on CVC-612 seq03: fp16 gives a centred logit error of about 2-3e-3 and Dice
0.998; bf16 (8-bit mantissa, an intrinsic ~2^-9 rounding of every matmul input) gives about
1.3-1.8e-2 and Dice 0.989-0.993, whichever part (backbone, neck, decoder) is kept in fp32 or
with autocast's fp32 residual stream. So here fp16 is held to the issue's Dice >= 0.99 per frame
and bf16 to Dice >= 0.98 and a centred error < 3e-2. The issue's criterion (Dice >= 0.99 of the
masks at probability 0.5) is meant for a trained model, whose logits are well separated; check
it with a checkpoint (``hfsti segment --weights``) before quoting it for bf16.
"""

import pytest
import torch
from cvc_streaming import SIZE, check_agreement, check_replay_equals_eager, cvc_videos
from helpers import CVC612, rel_err

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from hfsti import HFSTIConfig, HFSTINet, VideoSegmenter  # noqa: E402
from hfsti_kernels.accelerate import accelerate  # noqa: E402

pytestmark = pytest.mark.gpu
DEVICE = torch.device("cuda")
needs_data = pytest.mark.skipif(not CVC612.is_dir(), reason=f"CVC-612 not found at {CVC612}")


def make_model(memory_frames: int) -> HFSTINet:
    torch.manual_seed(0)
    return HFSTINet(HFSTIConfig(memory_frames=memory_frames)).to(DEVICE).eval()


@needs_data
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("memory_frames", [1, 2])
def test_graphs_agree_with_fp32_reference(memory_frames, batch, dtype):
    """Graphed reduced-precision streaming vs the fp32 eager reference, over two rounds of
    videos with a reset between them (first frame, filling and full bank each time)."""
    model = make_model(memory_frames)
    acc = accelerate(model, dtype=dtype, batch_size=batch)
    assert acc.graphed
    ref = VideoSegmenter(model)
    bank = acc._features.data_ptr()
    for round_, first in enumerate((1, 1 + batch)):
        video = cvc_videos(batch, first=first)
        acc.reset()
        ref.reset()
        for t in range(video.shape[0]):
            out, want = acc.step(video[t]), ref.step(video[t])
            assert out.dtype == torch.float32 and out.shape == want.shape
            check_agreement(out, want, dtype, f"{dtype} round {round_} frame {t}")
            mem = acc.memory
            assert mem.features.shape == ref.memory.features.shape
            assert rel_err(mem.masks, ref.memory.masks) < 2e-2
    assert acc._features.data_ptr() == bank


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("memory_frames", [1, 2])
def test_replay_equals_eager(memory_frames, dtype, tol):
    """Graph replay == the eager path of the same segmenter code, frame by frame and across a
    reset. Both run the same kernels on the same shapes; the tolerance only allows for
    cuDNN/cuBLAS picking a different (non-bitwise-identical) algorithm inside a capture."""
    model = make_model(memory_frames)
    graphed = accelerate(model, dtype=dtype, batch_size=2)
    eager = accelerate(model, dtype=dtype, batch_size=2, cuda_graphs=False)
    assert graphed.graphed and not eager.graphed
    check_replay_equals_eager(graphed, eager, tol)


def test_fp32_graphs_match_reference():
    """fp32 accelerate (fused kernels, folded BatchNorm, graphs) vs the reference model."""
    model = make_model(2)
    acc, ref = accelerate(model, dtype=torch.float32), VideoSegmenter(model)
    g = torch.Generator(device=DEVICE).manual_seed(2)
    for _ in range(4):
        frame = torch.rand(1, 3, SIZE, SIZE, device=DEVICE, generator=g)
        assert rel_err(acc.step(frame), ref.step(frame)) < 1e-3


def test_batch_mismatch_names_frame():
    acc = accelerate(make_model(1), batch_size=8)
    with pytest.raises(ValueError, match="frame: expected batch size 8"):
        acc.step(torch.rand(1, 3, SIZE, SIZE, device=DEVICE))


def test_other_sizes_and_host_frames():
    """A CPU frame at the data's own 384x288 is copied in, resized to 352 and back."""
    acc = accelerate(make_model(1))
    out = acc.step(torch.rand(1, 3, 288, 384))
    assert out.shape == (1, 1, 288, 384) and out.device.type == "cuda"
    assert torch.isfinite(out).all()
