"""Streaming inference: one frame in, one mask out, memory carried between calls."""

from __future__ import annotations

import torch

from hfsti.model import HFSTINet, Memory


class VideoSegmenter:
    """Runs an :class:`HFSTINet` frame by frame over a batch of independent videos.

    ``step(frame)`` returns the level-1 logits of that frame; the memory bank is carried to the
    next call and cleared by ``reset()`` (call it between videos). Streaming over a clip gives
    the same level-1 logits as ``model(frames)`` on that clip. Steps run without autograd.
    """

    def __init__(self, model: HFSTINet) -> None:
        if not isinstance(model, HFSTINet):
            raise TypeError(f"model: expected an HFSTINet, got {type(model).__name__}")
        self.model = model
        self.memory: Memory | None = None

    def reset(self) -> None:
        """Forget the memory: the next frame starts a new video."""
        self.memory = None

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """frame (B, 3, H, W) RGB in [0, 1] -> level-1 logits (B, 1, H, W)."""
        logits, self.memory = self.model.step(frame, self.memory)
        return logits[:, :1]
