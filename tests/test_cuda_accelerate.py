"""``accelerate(model, backend="cuda")`` on CPU: the accelerated streaming path on the CUDA
backend, its kernels run by the host SIMT emulator (``HFSTI_CUDA_EMULATE=1``, set per test).

The fp32 segmenter (fused copy on the CUDA kernels, BatchNorms folded) must give the reference
``VideoSegmenter``'s logits and memory bank frame by frame, with the tolerances of
``test_accelerate.py``, through the first frame, the filling of the bank and a full bank that
shifts; a launch spy shows that all four CUDA ops ran (no silent fallback to the reference or
Triton). The CUDA graphs of this path need a GPU: ``test_gpu_cuda_backend.py``. Each emulated
thread is an OS thread, so the model is small (C = 16, 64x64, one frame of memory, 3 frames).
"""

from __future__ import annotations

import pytest
import torch
from helpers import NEEDS_CXX, small_model

from hfsti import VideoSegmenter
from hfsti_kernels.accelerate import accelerate
from hfsti_kernels.cuda import runtime as rt

pytestmark = NEEDS_CXX

SIZE = 64
# Kernel-name prefixes of the four CUDA ops (csrc/*.cu), as passed to runtime.launch.
OP_PREFIXES = {
    "fft_channel_attention": "hfsti_fca_",
    "fourier_unit": "hfsti_fu_",
    "gated_fusion": "hfsti_gf_",
    "memory_attention": "hfsti_ma_",
}


@pytest.fixture(autouse=True)
def _emulate(monkeypatch):
    monkeypatch.setenv(rt.EMULATE_ENV, "1")


def test_fp32_streaming_matches_reference(launches):
    """fp32 accelerate on the CUDA backend == the reference VideoSegmenter: logits and bank,
    frame by frame (k = 0, a filling bank, a full bank shifting); every CUDA op launched."""
    model = small_model(memory_frames=1)
    acc = accelerate(model, dtype=torch.float32, backend="cuda")
    assert acc.backend == "cuda" and acc.model.config.backend == "cuda" and not acc.graphed
    assert model.config.backend == "reference"  # the user's model is untouched
    ref = VideoSegmenter(model)
    video = torch.rand(3, 1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    for t, frame in enumerate(video):
        out, want = acc.step(frame), ref.step(frame)
        assert out.dtype == torch.float32 and out.shape == (1, 1, SIZE, SIZE)
        print(f"frame {t}: max |logit difference| {(out - want).abs().max().item():.2e}")
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
        mem, mem_ref = acc.memory, ref.memory
        assert mem.features.shape == mem_ref.features.shape
        torch.testing.assert_close(mem.features, mem_ref.features, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mem.masks, mem_ref.masks, atol=1e-5, rtol=1e-4)
    missing = [op for op, p in OP_PREFIXES.items() if not any(n.startswith(p) for n in launches)]
    assert not missing, f"no CUDA kernel of {missing} ran (launched: {sorted(set(launches))})"


def test_backend_is_checked(monkeypatch):
    """An unknown backend, and "cuda" with no executor for the model's device, are one-line
    errors naming ``backend`` before any work."""
    model = small_model()
    with pytest.raises(ValueError, match=r"^backend: expected one of"):
        accelerate(model, dtype=torch.float32, backend="cudnn")
    monkeypatch.delenv(rt.EMULATE_ENV)  # a CPU model then has no executor, GPU or not
    with pytest.raises(ValueError, match=r"^backend: 'cuda' needs") as info:
        accelerate(model, dtype=torch.float32, backend="cuda")
    assert "\n" not in str(info.value) and rt.EMULATE_ENV in str(info.value)
