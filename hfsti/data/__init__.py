"""Data: SUN-SEG-layout clips, synthetic clips, and video/frame-folder input and output."""

from .sunseg import (
    IMAGE_EXTENSIONS,
    SUNSEGClips,
    binarize_mask,
    list_cases,
    list_images,
    load_frame,
    load_image,
    load_mask,
    luminance,
    natural_key,
    resize_clip,
)
from .synthetic import SyntheticClips, synthetic_clip
from .video import VIDEO_EXTENSIONS, FrameSource, write_mask, write_overlay

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameSource",
    "SUNSEGClips",
    "SyntheticClips",
    "binarize_mask",
    "list_cases",
    "list_images",
    "load_frame",
    "load_image",
    "load_mask",
    "luminance",
    "natural_key",
    "resize_clip",
    "synthetic_clip",
    "write_mask",
    "write_overlay",
]
