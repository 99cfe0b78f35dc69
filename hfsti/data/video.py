"""Reading what users have (a folder of frames, a video file, or nothing) and writing results."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .atomic import write_atomic
from .sunseg import IMAGE_EXTENSIONS, list_images, load_frame
from .synthetic import synthetic_clip

__all__ = ["VIDEO_EXTENSIONS", "FrameSource", "write_mask", "write_overlay"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")

_JPEG = {".jpg", ".jpeg"}


class FrameSource:
    """Frames of one video, in order: iterate to get ``(name, rgb)``, rgb uint8 (H, W, 3).

    ``source`` is one of
      - a folder of images (jpg/jpeg/png/bmp/tif/tiff), natural order of the stems; name = stem;
      - a single image file (a one-frame video); name = stem;
      - a video file (mp4/avi/mov/mkv, or anything else OpenCV can open), decoded with
        ``cv2.VideoCapture`` and converted BGR -> RGB; name = zero-padded index "000000";
      - ``None`` or ``"synthetic"``: ``synthetic_clip(num_frames, height, width, seed=seed)``;
        name = zero-padded index.
    ``fps`` is the video's frame rate (None for images and synthetic); ``len()`` the frame count
    (for a video the container's count, which may be approximate; TypeError when unknown, which
    tqdm treats as "no total"); ``description`` a one-line summary. Every pass re-reads the source.
    Raises ValueError for a missing path, a folder without images, a video OpenCV cannot open, and
    (while iterating) an unreadable image, each naming the file. A video that ends before the
    frame count its container claims gives a warning with both counts when the pass ends.
    """

    def __init__(
        self,
        source: str | Path | None = None,
        num_frames: int = 16,
        height: int = 352,
        width: int = 352,
        seed: int = 0,
    ) -> None:
        self.fps: float | None = None
        self._count: int | None = None
        self._files: list[Path] = []
        self._synthetic: tuple[int, int, int, int] | None = None
        if source is None or (isinstance(source, str) and source.lower() == "synthetic"):
            if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
                raise ValueError(f"num_frames: expected an int >= 1, got {num_frames!r}")
            self.kind, self.path = "synthetic", None
            self._synthetic = (num_frames, height, width, seed)
            self._count = num_frames
            self.description = (
                f"synthetic clip ({num_frames} frames, {height}x{width}, seed {seed})"
            )
            return
        path = Path(source)
        self.path = path
        if not path.exists():
            raise ValueError(f"input does not exist: {path}")
        if path.is_dir():
            self.kind = "folder"
            self._files = list_images(path)
            if not self._files:
                raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
            self._count = len(self._files)
            self.description = f"folder {path} ({self._count} images)"
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            self.kind = "image"
            self._files = [path]
            self._count = 1
            self.description = f"image {path}"
        else:
            self.kind = "video"
            cap = self._open(path)
            try:
                fps = cap.get(cv2.CAP_PROP_FPS)
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
                h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            finally:
                cap.release()
            # containers without the information report 0 (or garbage): treat as unknown
            self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
            self._count = count if count > 0 else None
            parts = [f"{count} frames" if self._count else "frame count unknown"]
            parts += [f"{self.fps:g} fps"] if self.fps else []
            parts += [f"{w}x{h}"] if w > 0 and h > 0 else []
            self.description = f"video {path} ({', '.join(parts)})"

    @staticmethod
    def _open(path: Path) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise ValueError(
                f"OpenCV cannot open video {path} (supported: {', '.join(VIDEO_EXTENSIONS)} and "
                f"images {', '.join(IMAGE_EXTENSIONS)}, or a folder of images)"
            )
        return cap

    def __len__(self) -> int:
        if self._count is None:
            raise TypeError(f"the frame count of {self.path} is unknown")
        return self._count

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self._synthetic is not None:
            n, h, w, seed = self._synthetic
            frames, _ = synthetic_clip(n, h, w, num_polyps=1, seed=seed)
            for i, frame in enumerate(frames):
                yield f"{i:06d}", frame
        elif self.kind in ("folder", "image"):
            for f in self._files:
                yield f.stem, load_frame(f)  # ValueError naming f when unreadable
        else:
            cap = self._open(self.path)
            try:
                i = 0
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    yield f"{i:06d}", np.ascontiguousarray(bgr[..., ::-1])
                    i += 1
            finally:
                cap.release()
            if i == 0:
                raise ValueError(f"no frame could be decoded from video {self.path}")
            if self._count is not None and i < self._count:
                warnings.warn(
                    f"video {self.path}: decoded {i} frames, but its container claims "
                    f"{self._count} (a truncated or damaged file?)",
                    stacklevel=2,
                )

    def __repr__(self) -> str:
        return f"FrameSource({self.description})"


def _save(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 (H, W) or (H, W, 3) with PIL, format from the suffix, atomically (see
    ``write_atomic``: a failed write leaves no truncated file); creates parent folders. Raises a
    ValueError naming ``path`` when it cannot be written."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write image {path}: unknown image extension {path.suffix!r}")
    kwargs = {"quality": 95} if path.suffix.lower() in _JPEG else {}
    return write_atomic(path, lambda f: Image.fromarray(image).save(f, format=fmt, **kwargs))


def write_mask(path: str | Path, prob: np.ndarray) -> Path:
    """Write a probability map float (H, W) in [0, 1] as 8-bit gray ``round(prob * 255)``.

    Use a ``.png`` path (lossless). Bool masks are accepted (0 / 255). Values outside [0, 1] are
    clipped; NaN is rejected. Written atomically (no truncated file on failure, a ValueError
    naming the path instead). Returns the path.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob: expected a 2-D (H, W) array, got shape {prob.shape}")
    prob = prob.astype(np.float64)
    if not np.isfinite(prob).all():
        raise ValueError("prob: contains NaN or Inf")
    return _save(path, np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8))


def write_overlay(
    path: str | Path,
    rgb: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.45,
) -> Path:
    """Write ``rgb`` uint8 (H, W, 3) with ``mask`` (H, W) blended in ``color`` and outlined.

    Inside the mask: ``(1 - alpha) * rgb + alpha * color``; the mask's contours (outer and holes)
    are drawn in ``color`` at full strength, about 1/250 of the image size thick (>= 1 px). A
    non-bool mask is thresholded at > 0.5. Format from the suffix (PNG or JPG). Returns the path.
    """
    rgb = np.asarray(rgb)
    mask = np.asarray(mask)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask: expected shape {rgb.shape[:2]} (that of rgb), got {mask.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    mask = mask if mask.dtype == bool else mask > 0.5
    col = np.asarray(color, dtype=np.float32).reshape(3)
    out = rgb.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * col
    out = np.rint(out).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(rgb.shape[:2]) / 250))
    # cv2 draws channel-agnostic: passing the RGB colour to an RGB array keeps the colour right
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in col), thickness)
    return _save(path, out)
