"""SUN-SEG-layout video polyp data: case listing, image loading and a clip dataset.

Layout (SUN-SEG, also used by the CVC-612 copy in ``shared/data/cvc612``)::

    root/Frame/<case>/<stem>.<jpg|png|...>     RGB frames
    root/GT/<case>/<stem>.png                  masks (0/255, possibly anti-aliased)

A frame and its mask are matched by file stem; the frames of a case are ordered by the natural
order of their stems ("2" < "10"). Images are read at their stored depth (8 or 16 bits, by
``load_image``, the one reader). Masks are binarised as the SUN-SEG / VPS evaluation toolbox
does: luminance (PIL ``convert("L")``, ITU-R 601) ``> 128`` of 255, and at 16 bits the same
fraction of full scale (``> 32896`` of 65535). For the usual gray masks (R = G = B) the luminance
is exactly that value.

The public names are re-exported, and listed, by ``hfsti.data``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Foreground threshold on the 0..255 luminance, as in the SUN-SEG evaluation toolbox.
MASK_THRESHOLD = 128

Pair = tuple[Path, Path]
Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def natural_key(text: str) -> tuple:
    """Sort key for natural order: digit runs compare as numbers ("2" < "10").

    Ties (e.g. "01" and "1") fall back to the plain string so the order is total.
    """
    parts = re.split(r"(\d+)", text)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p)
    return key + ((2, 0, text),)


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension, case-insensitive) directly in ``folder``, in natural stem order.

    Raises ValueError when two files share a stem (e.g. ``1.jpg`` and ``1.png``), because
    matching frames to masks by stem would then be ambiguous.
    """
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise ValueError(
                f"{folder}: two images share the stem {p.stem!r}: {seen[p.stem].name}, {p.name}"
            )
        seen[p.stem] = p
    return sorted(files, key=lambda p: natural_key(p.stem))


def list_cases(root: str | Path) -> dict[str, list[Pair]]:
    """Map each case of a SUN-SEG-layout ``root`` to its (frame, mask) paths.

    Returns ``{case: [(frame_path, mask_path), ...]}`` with cases and frames in natural order.
    Case folders without any image are skipped with a warning naming them. Raises ValueError
    naming the offending path when the root, ``Frame/`` or ``GT/`` is missing, when no case has
    frames, when a case has no GT folder, or when a frame has no mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root does not exist or is not a folder: {root}")
    frame_dir, gt_dir = root / "Frame", root / "GT"
    for d in (frame_dir, gt_dir):
        if not d.is_dir():
            raise ValueError(f"{root}: expected a SUN-SEG layout with Frame/ and GT/; missing {d}")
    cases: dict[str, list[Pair]] = {}
    empty = []
    for case_dir in sorted(
        (d for d in frame_dir.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name)
    ):
        frames = list_images(case_dir)
        if not frames:
            empty.append(case_dir.name)  # reported below; an entirely empty root is an error
            continue
        case_gt = gt_dir / case_dir.name
        if not case_gt.is_dir():
            raise ValueError(
                f"case {case_dir.name!r} has frames in {case_dir} but no GT folder {case_gt}"
            )
        masks = {p.stem: p for p in list_images(case_gt)}
        pairs = []
        for f in frames:
            if f.stem not in masks:
                raise ValueError(f"frame {f} has no mask with stem {f.stem!r} in {case_gt}")
            pairs.append((f, masks[f.stem]))
        cases[case_dir.name] = pairs
    if not cases:
        raise ValueError(
            f"{root}: no frames found under {frame_dir} (expected Frame/<case>/<image>)"
        )
    if empty:
        warnings.warn(
            f"skipped {len(empty)} empty case folder(s) of {frame_dir} (no images): "
            + ", ".join(empty),
            stacklevel=2,
        )
    return cases


def load_image(path: str | Path) -> np.ndarray:
    """Read an image at its stored depth: uint8 or uint16, gray (H, W) or RGB (H, W, 3).

    The one image reader of the package: frames, masks and predicted maps all come through it, so
    8- and 16-bit files (PNG, TIFF) are read by their real range everywhere. Alpha is dropped;
    1-bit, palette and other 8-bit modes become 8-bit gray or RGB. Raises ValueError naming the
    file when it is missing, cannot be decoded, or has a depth other than 8 or 16 bits.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            # PIL decodes 16-bit-per-channel colour to 8 bits: such files are read with OpenCV
            rawmode = str(im.tile[0].args) if im.tile else ""
            deep_colour = im.mode in ("LA", "RGB", "RGBA") and ";16" in rawmode
            im.load()  # decode now, so truncated files fail here and not later
            im = im.copy()
    except FileNotFoundError:
        raise ValueError(f"image file does not exist: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if deep_colour:
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR(A), or gray + alpha
        if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3:
            raise ValueError(f"cannot read the 16-bit image {path}")
        return np.ascontiguousarray(bgr[..., 2::-1] if bgr.shape[2] >= 3 else bgr[..., 0])
    if im.mode.startswith("I"):  # 16-bit gray ("I;16", "I;16B", ...) or 32-bit integer "I"
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"image {path}: values outside 0..65535 (expected 8 or 16 bits)")
        return arr.astype(np.uint16)
    if im.mode == "F":
        raise ValueError(f"image {path}: floating-point pixels (expected 8 or 16 bits)")
    gray = im.mode in ("1", "L", "LA")
    return np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8).copy()


def _full_scale(image: np.ndarray) -> int:
    """255 for 8-bit images, 65535 for 16-bit ones (the value of white)."""
    return 65535 if image.dtype == np.uint16 else 255


def load_frame(path: str | Path) -> np.ndarray:
    """Read an image as RGB: uint8 array (H, W, 3). Gray images are repeated over the channels;
    16-bit images are scaled to 8 bits by their full range (``round(v / 257)``)."""
    img = load_image(path)
    if img.dtype == np.uint16:  # 65535 = 255 * 257: 8-bit v stored as 16 bits is v * 257
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img)


def luminance(image: np.ndarray) -> np.ndarray:
    """Gray (H, W) of a gray or RGB image at its own depth: ITU-R 601 luminance, computed as PIL's
    ``convert("L")`` does (so identical to it on 8-bit images); gray images are returned as is."""
    if image.ndim == 2:
        return image
    r, g, b = (image[..., c].astype(np.int64) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).astype(image.dtype)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Foreground of a gray or RGB mask (H, W[, 3]) as bool (H, W).

    The rule, one for every depth: luminance above 128/255 of full scale, i.e. ``> 128`` for
    8-bit masks (the SUN-SEG rule) and ``> 32896`` (= 128 * 257) for 16-bit ones, so a mask
    stored at either depth binarises alike. Bool masks are returned as they are.
    """
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask
    return luminance(mask) > MASK_THRESHOLD * (_full_scale(mask) // 255)


def load_mask(path: str | Path) -> np.ndarray:
    """Read a mask as bool (H, W) by :func:`binarize_mask` (8- or 16-bit, gray, RGB, palette or
    1-bit). Luminance, not the first channel, matches the SUN-SEG evaluation toolbox; for gray
    masks stored as RGB (R = G = B, as in CVC-612) both agree."""
    return binarize_mask(load_image(path))


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size: expected a positive int or (height, width), got {size}")
    return size


def resize_clip(
    frames: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    size: int | Sequence[int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a clip to model tensors at ``size``.

    frames: T arrays uint8 (H, W, 3); masks: T arrays bool (H, W) (each frame may have its own
    size). Returns frames float32 (T, 3, h, w) in [0, 1] and masks float32 (T, 1, h, w) in {0, 1}.

    Frames: bilinear with antialias (a triangle filter when shrinking, so no aliasing).
    Masks: the binary mask goes through the same antialiased bilinear filter and is thresholded
    at > 0.5, i.e. a majority vote of the covered source pixels. Unlike nearest neighbour this
    keeps the boundary where it is (no half-pixel shift, no dropped rows) and stays binary.
    ``size=None`` keeps the original size (all frames must then share it).
    """
    hw = _as_size(size)
    out_f, out_m = [], []
    for frame, mask in zip(frames, masks):
        f = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255.0)
        m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None]
        if hw is not None and tuple(f.shape[-2:]) != hw:
            f = F.interpolate(
                f[None], size=hw, mode="bilinear", align_corners=False, antialias=True
            )[0]
            f = f.clamp_(0.0, 1.0)
            m = F.interpolate(
                m[None], size=hw, mode="bilinear", align_corners=False, antialias=True
            )[0]
            m = (m > 0.5).float()
        out_f.append(f)
        out_m.append(m)
    return torch.stack(out_f), torch.stack(out_m)


class SUNSEGClips(Dataset):
    """Clips of ``clip_len`` consecutive frames from one or more SUN-SEG-layout roots.

    Every window of ``clip_len`` consecutive frames of a case is a clip; windows start every
    ``stride`` frames, so a case of n frames gives ``(n - clip_len) // stride + 1`` clips (none
    when ``n < clip_len``: such cases are skipped with a warning; an entirely empty dataset is a
    ValueError). ``cases`` restricts to those case names (across all roots).

    Item ``i`` is a dict:
      - ``"frames"``: float32 (T, 3, h, w), RGB in [0, 1], NOT mean/std normalised (the model
        normalises internally);
      - ``"masks"``: float32 (T, 1, h, w) in {0, 1};
      - ``"case"``: str; ``"names"``: list of T frame stems.
    ``size`` is an int (square) or (h, w), or None for the native size; see ``resize_clip`` for
    the resizing. ``transform(frames, masks) -> (frames, masks)`` is applied to the resized
    tensors of the whole clip, so one random draw augments every frame of the clip alike.
    """

    def __init__(
        self,
        roots: str | Path | Sequence[str | Path],
        clip_len: int = 3,
        size: int | Sequence[int] | None = 352,
        cases: Sequence[str] | None = None,
        stride: int = 1,
        transform: Transform | None = None,
    ) -> None:
        if isinstance(roots, (str, Path)):
            roots = [roots]
        roots = [Path(r) for r in roots]
        if not roots:
            raise ValueError("roots: expected at least one dataset root")
        if not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"clip_len: expected an int >= 1, got {clip_len!r}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride: expected an int >= 1, got {stride!r}")
        self.size = _as_size(size)
        self.clip_len = clip_len
        self.stride = stride
        self.transform = transform

        found: list[tuple[str, list[Pair]]] = []
        for root in roots:
            found.extend(list_cases(root).items())
        if cases is not None:
            if isinstance(cases, str):
                cases = [cases]
            available = sorted({name for name, _ in found}, key=natural_key)
            unknown = [c for c in cases if c not in set(available)]
            if unknown:
                raise ValueError(f"unknown case(s) {unknown}; available: {available}")
            wanted = set(cases)
            found = [(name, pairs) for name, pairs in found if name in wanted]

        self.case_frames: dict[str, int] = {}
        self.clips: list[tuple[str, tuple[Pair, ...]]] = []
        short = []
        for name, pairs in found:
            self.case_frames[name] = self.case_frames.get(name, 0) + len(pairs)
            if len(pairs) < clip_len:
                short.append(f"{name} ({len(pairs)})")
                continue
            for start in range(0, len(pairs) - clip_len + 1, stride):
                self.clips.append((name, tuple(pairs[start : start + clip_len])))
        if short:
            warnings.warn(
                f"cases shorter than clip_len={clip_len} give no clip: {', '.join(short)}",
                stacklevel=2,
            )
        if not self.clips:
            raise ValueError(
                f"no clip of {clip_len} frames in {[str(r) for r in roots]}"
                + (f" for cases {list(cases)}" if cases is not None else "")
            )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        case, pairs = self.clips[index]
        frames, masks = [], []
        for frame_path, mask_path in pairs:
            frame, mask = load_frame(frame_path), load_mask(mask_path)
            if frame.shape[:2] != mask.shape:
                raise ValueError(
                    f"mask {mask_path} has size {mask.shape[1]}x{mask.shape[0]} but frame "
                    f"{frame_path} has {frame.shape[1]}x{frame.shape[0]} (width x height)"
                )
            frames.append(frame)
            masks.append(mask)
        if self.size is None and len({f.shape for f in frames}) > 1:
            raise ValueError(
                f"size=None needs equal frame sizes within a clip: {pairs[0][0].parent}"
            )
        x, y = resize_clip(frames, masks, self.size)
        if self.transform is not None:
            x, y = self.transform(x, y)
        return {"frames": x, "masks": y, "case": case, "names": [f.stem for f, _ in pairs]}
