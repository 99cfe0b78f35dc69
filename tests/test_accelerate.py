"""hfsti_kernels.accelerate on CPU: the eager path of the accelerated streaming segmenter.

On CPU the segmenter runs the same step as its CUDA graphs would (eagerly, with the same static
buffers and in-place memory bank), so these tests pin down the API, the bank logic (first frame,
filling, shifting, reset), the BatchNorm folding and the precision policy. The CUDA graphs
themselves are tested in ``test_gpu_accelerate.py``.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import CVC612, rel_err, small_model
from torch import nn

from hfsti import VideoSegmenter
from hfsti.model.layers import ConvBNReLU
from hfsti_kernels.accelerate import AcceleratedSegmenter, accelerate, fold_batchnorms

SIZE = 64


@pytest.fixture(scope="module")
def models():
    return {t: small_model(t) for t in (1, 2)}


def assert_memory_equal(acc: AcceleratedSegmenter, ref: VideoSegmenter) -> None:
    mem, want = acc.memory, ref.memory
    assert mem.features.shape == want.features.shape
    assert mem.masks.shape == want.masks.shape
    torch.testing.assert_close(mem.features, want.features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mem.masks, want.masks, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("memory_frames", [1, 2])
def test_fp32_streaming_matches_reference(models, memory_frames):
    """fp32 accelerate == the reference VideoSegmenter, frame by frame, bank included, through
    the first frame, the filling of the bank, a full shifting bank and a reset."""
    model = models[memory_frames]
    acc = accelerate(model, dtype=torch.float32, batch_size=2)
    ref = VideoSegmenter(model)
    features_ptr = acc._features.data_ptr()
    g = torch.Generator().manual_seed(2)
    videos = [torch.rand(2, n, 3, SIZE, SIZE, generator=g) for n in (memory_frames + 2, 1)]
    for video in videos:
        acc.reset()
        ref.reset()
        assert acc.memory is None
        for t in range(video.shape[1]):
            out, want = acc.step(video[:, t]), ref.step(video[:, t])
            assert out.dtype == torch.float32 and out.shape == (2, 1, SIZE, SIZE)
            torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
            assert_memory_equal(acc, ref)
    assert acc._features.data_ptr() == features_ptr  # the bank is updated in place


def test_bf16_copy_policy_and_user_model_untouched(models):
    """The user's model keeps its weights, backend, BatchNorms and mode; the private copy is
    fused, folded and cast, with the level-1 head kept in fp32; cuda_graphs=True on CPU runs
    eagerly; logits come back float32."""
    model = models[1].train()
    before = copy.deepcopy(model.state_dict())
    acc = accelerate(model, cuda_graphs=True)
    assert not acc.graphed
    assert model.training and model.config.backend == "reference"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()
    net = acc.model
    assert net.config.backend == "auto" and not net.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in net.parameters())
    assert acc._head_weight.dtype == torch.float32
    out = acc.step(torch.rand(1, 3, SIZE, SIZE))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert acc.memory.features.dtype == torch.bfloat16


def test_fold_batchnorms_is_exact():
    torch.manual_seed(0)
    block = ConvBNReLU(8, 6, 3).eval()
    bn = block[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.2, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.normal_()
    x = torch.randn(2, 8, 9, 7)
    want = block(x)
    holder = nn.Sequential(block)
    assert fold_batchnorms(holder) == 1
    assert isinstance(block[1], nn.Identity) and block[0].bias is not None
    torch.testing.assert_close(block(x), want, atol=1e-5, rtol=1e-5)


def test_other_frame_sizes_are_resized(models):
    """A frame of another size runs at ``size`` and its logits come back at the frame's size."""
    model = models[1]
    frame = torch.rand(1, 3, 72, 88, generator=torch.Generator().manual_seed(3))
    out = accelerate(model, dtype=torch.float32).step(frame)
    assert out.shape == (1, 1, 72, 88)
    resized = F.interpolate(frame, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    at_size = accelerate(model, dtype=torch.float32).step(resized)
    want = F.interpolate(at_size, size=(72, 88), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, want)


def test_validation(models):
    model = models[1]
    with pytest.raises(TypeError, match="model"):
        accelerate(nn.Conv2d(3, 1, 1))
    with pytest.raises(ValueError, match="dtype"):
        accelerate(model, dtype=torch.float64)
    with pytest.raises(ValueError, match="batch_size"):
        accelerate(model, batch_size=0)
    with pytest.raises(ValueError, match="size"):
        accelerate(model, size=16)
    acc = accelerate(model, dtype=torch.float32, batch_size=2)
    with pytest.raises(ValueError, match="frame: expected batch size 2"):
        acc.step(torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="frame"):
        acc.step(torch.rand(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="frame"):
        acc.step(torch.rand(2, 4, SIZE, SIZE))
    with pytest.raises(TypeError, match="frame"):
        acc.step(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(TypeError, match="frame"):
        acc.step([[0.0]])
    assert acc.memory is None  # failed steps leave the bank alone


REAL_SIZE = 128
FRAMES = 4


@pytest.mark.skipif(not CVC612.is_dir(), reason=f"CVC-612 frames not found at {CVC612}")
def test_bf16_agrees_with_fp32_reference_on_real_frames():
    """bf16 accelerate vs the fp32 reference on CVC-612 frames (two videos as a batch of 2).

    What this shows, honestly: the model is randomly initialised (no trained weights in CI),
    so its logits carry no polyp information and are nearly flat; binarising both at 0 would
    compare noise around an arbitrary level. Instead both are binarised at the reference's
    per-frame median, a threshold through the bulk of the logit distribution where the most
    pixels are near it (harder than a trained model's well-separated logits), and the Dice of
    the two masks must be >= 0.99 per frame and video. The relative logit error (centred on the
    reference's mean, so a constant offset does not hide it) is also bounded, at 5e-2 (about
    1e-2 is typical; measured Dice 0.996-0.9997). It shows the bf16 path, with BatchNorm folding
    and the fp32 head, tracks fp32 through the bank over several frames, at 128x128 with C = 16.
    It does not show the issue's criterion for a trained model; at 352x352 with C = 96 this
    proxy is tighter for bf16 (see test_gpu_accelerate.py, which also runs the CUDA graphs).
    """
    from hfsti.data.sunseg import load_frame
    from hfsti.segment import frame_to_tensor

    model = small_model(1, size=REAL_SIZE)
    cpu = torch.device("cpu")
    videos = []
    for seq in ("seq01", "seq05"):
        paths = sorted((CVC612 / "Frame" / seq).glob("*.png"))[:FRAMES]
        videos.append([frame_to_tensor(load_frame(p), REAL_SIZE, cpu) for p in paths])
    acc, ref = accelerate(model, batch_size=2), VideoSegmenter(model)
    for t in range(FRAMES):
        frame = torch.cat([v[t] for v in videos])
        out, want = acc.step(frame), ref.step(frame)
        for b in range(2):
            thr = want[b].median()
            mo, mr = out[b] > thr, want[b] > thr
            dice = (2 * (mo & mr).sum() / (mo.sum() + mr.sum())).item()
            err = rel_err(out[b] - want[b].mean(), want[b] - want[b].mean())
            print(f"frame {t} video {b}: dice {dice:.4f} centred rel logit error {err:.2e}")
            assert dice >= 0.99, f"frame {t} video {b}: dice {dice:.4f} < 0.99"
            assert err < 5e-2, f"frame {t} video {b}: relative logit error {err:.2e}"
