"""The main job: stream a video through the model, write masks and overlays, summarise."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hfsti.data import FrameSource, write_mask, write_overlay
from hfsti.data.atomic import TEMP_SUFFIX
from hfsti.model import HFSTINet
from hfsti.stream import VideoSegmenter


@dataclass
class SegmentSummary:
    frames: int
    resolution: tuple[int, int]  # (width, height) of the input frames (the largest, if they vary)
    model_size: int
    seconds: float  # wall time of the whole job, reading and writing included
    model_seconds: float  # time spent in the model (synchronised on GPU)
    device: str
    precision: str  # "fp32 reference", or e.g. "fp16 fused (Triton) + CUDA graphs"
    # every distinct (width, height) met, smallest to largest pixel count
    resolutions: tuple[tuple[int, int], ...] = ()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds else float("nan")

    def __str__(self) -> str:
        w, h = self.resolution
        res = f"{w}x{h}"
        if len(self.resolutions) > 1:
            (w0, h0), (w1, h1) = self.resolutions[0], self.resolutions[-1]
            res = f"{w0}x{h0} to {w1}x{h1} ({len(self.resolutions)} sizes)"
        return (
            f"frames: {self.frames}  resolution: {res} (model at {self.model_size}x"
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


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def owned_files(out_dir: str | Path) -> list[Path]:
    """The files of ``out_dir`` that :func:`segment` writes: ``masks/*.png``,
    ``overlays/*.jpg`` and temporary files an interrupted write left there."""
    out_dir = Path(out_dir)
    found = []
    for sub, pattern in (("masks", "*.png"), ("overlays", "*.jpg")):
        if (out_dir / sub).is_dir():
            found += sorted((out_dir / sub).glob(pattern))
            found += sorted((out_dir / sub).glob(f".*{TEMP_SUFFIX}"))
    return [p for p in found if p.is_file()]


def prepare_output(
    out_dir: str | Path, overlays: bool = True, overwrite: bool = False, arg: str = "out_dir"
) -> Path:
    """Check ``out_dir`` and create ``masks/`` (and ``overlays/``) in it, so one run's files are
    never mixed with another's: a folder that holds :func:`owned_files` of an earlier run is
    refused unless ``overwrite``, which removes those files first (nothing else in the folder is
    touched). Raises a one-line ValueError starting with ``arg`` when ``out_dir`` is a file, cannot
    be created or written, or holds an earlier run's output."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{arg}: {out_dir} is a file, expected a folder for masks/ and overlays/")
    old = owned_files(out_dir)
    if old and not overwrite:
        raise ValueError(
            f"{arg}: {out_dir} already holds {len(old)} mask/overlay file(s) of an earlier run "
            f"(e.g. {old[0]}); choose another folder, or overwrite (hfsti segment --overwrite) "
            "to remove them first"
        )
    for path in old:
        try:
            path.unlink()
        except OSError as e:
            raise ValueError(f"{arg}: cannot remove {path}: {_reason(e)}") from e
    for sub in ("masks", "overlays") if overlays else ("masks",):
        folder = out_dir / sub
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):  # writable? (cheap, removed at once)
                pass
        except OSError as e:
            raise ValueError(f"{arg}: cannot write into {folder}: {_reason(e)}") from e
    return out_dir


def segment(
    model: HFSTINet,
    source: FrameSource,
    out_dir: str | Path,
    overlays: bool = True,
    threshold: float = 0.5,
    progress: bool = True,
    accelerate_dtype: torch.dtype | None = None,
    cuda_graphs: bool = True,
    overwrite: bool = False,
) -> SegmentSummary:
    """Segment every frame of ``source`` in order, with memory carried from frame to frame.

    Writes ``out_dir/masks/<name>.png`` (8-bit probability at the frame's resolution) and, with
    ``overlays``, ``out_dir/overlays/<name>.jpg`` (the mask above ``threshold`` drawn on the
    frame), each atomically (a failed write, e.g. a full disk, leaves no truncated image and
    raises a ValueError naming the file). An ``out_dir`` holding an earlier run's masks or
    overlays is refused unless ``overwrite`` (see :func:`prepare_output`). With
    ``accelerate_dtype``, frames run through ``hfsti_kernels.accelerate`` in that dtype: on a
    CUDA model fused ops and CUDA graphs (the CUDA backend's kernels for a model on
    ``backend="cuda"``, else Triton's), on CPU the same path eagerly with the reference ops;
    otherwise through the model as it is.
    """
    out_dir = prepare_output(out_dir, overlays=overlays, overwrite=overwrite)
    device = model.mean.device
    size = model.config.input_size
    if accelerate_dtype is not None:
        from hfsti_kernels import accelerate  # hfsti_kernels imports hfsti: import late

        backend = "cuda" if model.config.backend == "cuda" else "auto"
        segmenter = accelerate(
            model, dtype=accelerate_dtype, cuda_graphs=cuda_graphs, size=size, backend=backend
        )
        # Name the ops that really run: accelerate's "auto" is Triton on CUDA, the reference
        # on CPU; "cuda" is the CUDA kernels on either (emulated on CPU).
        ops = "CUDA kernels" if backend == "cuda" else "Triton" if device.type == "cuda" else None
        precision = str(accelerate_dtype).removeprefix("torch.")
        precision += f" fused ({ops})" if ops else " accelerated (reference ops)"
        precision += " + CUDA graphs" if segmenter.graphed else ""
    else:
        segmenter = VideoSegmenter(model.eval())
        precision = f"{str(model.mean.dtype).removeprefix('torch.')} {model.config.backend}"
    count, sizes, model_seconds = 0, set(), 0.0
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
        count = count + 1
        sizes.add((w, h))
    resolutions = tuple(sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh)))
    return SegmentSummary(
        frames=count,
        resolution=resolutions[-1] if resolutions else (0, 0),
        resolutions=resolutions,
        model_size=size,
        seconds=time.perf_counter() - start,
        model_seconds=model_seconds,
        device=str(device),
        precision=precision,
    )
