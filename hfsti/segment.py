"""The main job: stream a video through the model, write masks and overlays, summarise."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hfsti.data import FrameSource, write_mask, write_overlay
from hfsti.model import HFSTINet
from hfsti.stream import VideoSegmenter


@dataclass
class SegmentSummary:
    frames: int
    resolution: tuple[int, int]  # (width, height) of the input frames
    model_size: int
    seconds: float  # wall time of the whole job, reading and writing included
    model_seconds: float  # time spent in the model (synchronised on GPU)
    device: str
    precision: str  # "fp32 reference", or e.g. "fp16 fused + CUDA graphs"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds else float("nan")

    def __str__(self) -> str:
        w, h = self.resolution
        return (
            f"frames: {self.frames}  resolution: {w}x{h} (model at {self.model_size}x"
            f"{self.model_size})  device: {self.device}  precision: {self.precision}\n"
            f"speed: {self.fps:.1f} frames/s end to end, {self.model_fps:.1f} frames/s in the model"
        )


def frame_to_tensor(rgb: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, size, size) RGB in [0, 1] (antialiased bilinear)."""
    x = torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp_(0, 1)


def probability_map(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Level-1 logits (1, 1, h, w) -> float32 mask probability (H, W) at ``size`` on the host
    (the copy synchronises the device)."""
    prob = torch.sigmoid(F.interpolate(logits.float(), size=size, mode="bilinear"))
    return prob[0, 0].cpu().numpy()


def segment(
    model: HFSTINet,
    source: FrameSource,
    out_dir: str | Path,
    overlays: bool = True,
    threshold: float = 0.5,
    progress: bool = True,
    accelerate_dtype: torch.dtype | None = None,
    cuda_graphs: bool = True,
) -> SegmentSummary:
    """Segment every frame of ``source`` in order, with memory carried from frame to frame.

    Writes ``out_dir/masks/<name>.png`` (8-bit probability at the frame's resolution) and, with
    ``overlays``, ``out_dir/overlays/<name>.jpg`` (the mask above ``threshold`` drawn on the
    frame). With ``accelerate_dtype`` on a CUDA model, frames run through
    ``hfsti_kernels.accelerate`` (fused ops in that dtype, CUDA graphs); otherwise through the
    model as it is.
    """
    out_dir = Path(out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    if overlays:
        (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    device = model.mean.device
    size = model.config.input_size
    if accelerate_dtype is not None and device.type == "cuda":
        from hfsti_kernels import accelerate  # hfsti_kernels imports hfsti: import late

        segmenter = accelerate(model, dtype=accelerate_dtype, cuda_graphs=cuda_graphs, size=size)
        precision = f"{str(accelerate_dtype).removeprefix('torch.')} fused"
        precision += " + CUDA graphs" if segmenter.graphed else ""
    else:
        segmenter = VideoSegmenter(model.eval())
        precision = f"{str(model.mean.dtype).removeprefix('torch.')} {model.config.backend}"
    count, resolution, model_seconds = 0, (0, 0), 0.0
    start = time.perf_counter()
    try:
        total = len(source)
    except TypeError:  # a video whose container does not record its frame count
        total = None
    for name, rgb in tqdm(source, total=total, desc="segment", unit="frame", disable=not progress):
        h, w = rgb.shape[:2]
        tick = time.perf_counter()
        prob = probability_map(segmenter.step(frame_to_tensor(rgb, size, device)), (h, w))
        model_seconds += time.perf_counter() - tick
        write_mask(out_dir / "masks" / f"{name}.png", prob)
        if overlays:
            write_overlay(out_dir / "overlays" / f"{name}.jpg", rgb, prob > threshold)
        count, resolution = count + 1, (w, h)
    return SegmentSummary(
        frames=count,
        resolution=resolution,
        model_size=size,
        seconds=time.perf_counter() - start,
        model_seconds=model_seconds,
        device=str(device),
        precision=precision,
    )
