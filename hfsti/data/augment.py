"""Training augmentation applied identically to every frame of a clip.

One set of random parameters is drawn per clip (flip, rotation, scale, colour jitter), so the
motion between frames stays the real motion. Parameters come from an explicit
``torch.Generator``, so a training run is reproducible and resumable to the bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ClipAugment:
    """Random flip, rotation, scale and colour jitter, the same for all T frames of a clip.

    Attributes:
        flip: probability of each of a horizontal and a vertical flip.
        degrees: rotation drawn uniformly from [-degrees, degrees].
        scale: zoom factor range (> 1 zooms in).
        brightness, contrast, saturation: jitter strengths (factor in [1 - s, 1 + s]).
    """

    flip: float = 0.5
    degrees: float = 15.0
    scale: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(
        self, frames: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (T, 3, H, W) in [0, 1], masks (T, 1, H, W) in {0, 1} -> the same, augmented."""

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * torch.rand((), generator=generator).item()

        if uniform(0, 1) < self.flip:
            frames, masks = frames.flip(-1), masks.flip(-1)
        if uniform(0, 1) < self.flip:
            frames, masks = frames.flip(-2), masks.flip(-2)
        angle = math.radians(uniform(-self.degrees, self.degrees))
        zoom = uniform(*self.scale)
        frames, masks = _rotate_scale(frames, masks, angle, zoom)
        frames = _colour_jitter(
            frames,
            uniform(1 - self.brightness, 1 + self.brightness),
            uniform(1 - self.contrast, 1 + self.contrast),
            uniform(1 - self.saturation, 1 + self.saturation),
        )
        return frames, masks


def _rotate_scale(
    frames: torch.Tensor, masks: torch.Tensor, angle: float, zoom: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by ``angle`` radians and zoom by ``zoom`` about the centre; zero fill outside."""
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = frames.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(frames.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    frames = F.grid_sample(frames, grid, mode="bilinear", align_corners=False)
    # Masks are resampled bilinearly then re-binarised: nearest would jag the boundary.
    masks = F.grid_sample(masks, grid, mode="bilinear", align_corners=False)
    return frames, (masks > 0.5).to(masks.dtype)


def _grey(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) -> (T, 1, H, W) luma (ITU-R 601 weights)."""
    return (frames * frames.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, True)


def _colour_jitter(
    frames: torch.Tensor, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """Scale brightness, then contrast about the mean luma, then saturation about the luma."""
    frames = frames * brightness
    mean = _grey(frames).mean((-2, -1), keepdim=True)
    frames = mean + contrast * (frames - mean)
    grey = _grey(frames)
    return (grey + saturation * (frames - grey)).clamp(0, 1)
