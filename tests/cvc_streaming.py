"""CVC-612 videos, the reduced-precision agreement proxy and the graph-replay-vs-eager check of
the GPU streaming tests.

Not a test module: tests/test_gpu_accelerate.py (whose notes explain the proxy and its
thresholds) and tests/test_gpu_cuda_backend.py import it.
"""

from __future__ import annotations

import torch
from helpers import CVC612, rel_err

from hfsti.data.sunseg import load_frame
from hfsti.segment import frame_to_tensor

SIZE = 352
FRAMES = 4


def cvc_videos(batch: int, first: int = 1, frames: int = FRAMES, device="cuda") -> torch.Tensor:
    """(frames, batch, 3, SIZE, SIZE): the first ``frames`` frames of ``batch`` sequences."""
    seqs = [f"seq{first + i:02d}" for i in range(batch)]
    video = []
    for seq in seqs:
        paths = sorted((CVC612 / "Frame" / seq).glob("*.png"))[:frames]
        video.append(torch.cat([frame_to_tensor(load_frame(p), SIZE, device) for p in paths]))
    return torch.stack(video, dim=1)


# (minimum Dice per frame, maximum centred relative logit error), see test_gpu_accelerate.py.
AGREEMENT = {torch.float16: (0.99, 1e-2), torch.bfloat16: (0.98, 3e-2)}


def check_agreement(out: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, where: str) -> None:
    min_dice, max_err = AGREEMENT[dtype]
    for b in range(out.shape[0]):
        thr = want[b].median()
        mo, mr = out[b] > thr, want[b] > thr
        dice = (2 * (mo & mr).sum() / (mo.sum() + mr.sum())).item()
        err = rel_err(out[b] - want[b].mean(), want[b] - want[b].mean())
        print(f"{where} video {b}: dice {dice:.4f}, centred relative logit error {err:.2e}")
        assert dice >= min_dice, f"{where} video {b}: dice {dice:.4f} < {min_dice}"
        assert err < max_err, f"{where} video {b}: relative logit error {err:.2e} >= {max_err}"


def check_replay_equals_eager(graphed, eager, tol: float, steps=None) -> None:
    """A graphed and an eager ``accelerate`` segmenter of one model, frame by frame over two rounds
    of random frames with a reset between them (first frame, filling and full memory bank each
    time): outputs and memory banks agree within ``tol``. ``steps(frame)`` returns (graphed
    output, eager output), for a test that checks more around each step."""
    steps = steps or (lambda frame: (graphed.step(frame), eager.step(frame)))
    T, shape = graphed.memory_frames, (graphed.batch_size, 3, SIZE, SIZE)
    g = torch.Generator(device=graphed.device).manual_seed(1)
    for _ in range(2):
        graphed.reset()
        eager.reset()
        for t in range(T + 2):
            frame = torch.rand(shape, device=graphed.device, generator=g)
            out, want = steps(frame)
            err = rel_err(out, want)
            print(f"{graphed.dtype} T_m={T} frame {t}: replay vs eager rel error {err:.2e}")
            assert err <= tol
            assert rel_err(graphed.memory.features, eager.memory.features) <= tol
