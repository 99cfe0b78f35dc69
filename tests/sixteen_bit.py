"""Test helper: 16-bit copies of 8-bit images and SUN-SEG trees (in tmp_path, never the data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def write_png16(path: Path, image8: np.ndarray) -> None:
    """Write the 8-bit gray (H, W) or RGB (H, W, 3) ``image8`` as a 16-bit PNG of ``257 v`` (the
    same fractions of full scale)."""
    deep = image8.astype(np.uint16) * 257
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), deep if deep.ndim == 2 else np.ascontiguousarray(deep[..., ::-1]))


def copy_tree_16bit(src: Path, dst: Path) -> Path:
    """Copy a folder tree, writing every PNG as 16 bits per channel (gray images as 16-bit gray),
    other files as they are."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix.lower() == ".png":
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
            gray = (image == image[..., :1]).all()  # R = G = B (masks): one 16-bit channel
            write_png16(target, image[..., 0] if gray else image)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return dst
