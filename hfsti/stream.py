"""Streaming inference: one frame in, one mask out, memory carried between calls."""

from __future__ import annotations

import torch
from torch import nn

from hfsti.model import HFSTINet, Memory


class VideoSegmenter:
    """Runs an :class:`HFSTINet` frame by frame over a batch of independent videos.

    ``step(frame)`` returns the level-1 logits of that frame; the memory bank is carried to the
    next call and cleared by ``reset()`` (call it between videos). Streaming over a clip gives
    the same level-1 logits as ``model(frames)`` on that clip. Steps run without autograd.
    The frames of one video share one size: a frame of another size before ``reset()`` is an
    error (the memory is a grid of the first frame's size).

    Compiling. ``torch.compile(model)`` compiles ``model.forward``, but streaming runs
    ``model.step``, so the segmenter compiles that itself: pass ``compile=True`` (torch.compile's
    defaults) or a dict of ``torch.compile`` options, e.g. ``{"mode": "max-autotune"}``. A
    compiled model (``torch.compile(model)``) is accepted too and implies ``compile=True``; its
    own options are not carried over (pass them as ``compile``). The step compiles once per
    memory fill level (the first frame of a video, then 1 .. ``memory_frames`` remembered
    frames) and never again for the rest of the stream or for later videos of the same size:
    the memory bank is always contiguous (``Memory.push``), so its strides never change.

    Args:
        model: an ``HFSTINet``, or ``torch.compile(HFSTINet)``.
        compile: False (eager), True, or a dict of ``torch.compile`` keyword arguments.
    """

    def __init__(self, model: nn.Module, compile: bool | dict = False) -> None:
        net = getattr(model, "_orig_mod", model)  # torch.compile(module) wraps it in _orig_mod
        if not isinstance(net, HFSTINet):
            raise TypeError(f"model: expected an HFSTINet, got {type(model).__name__}")
        if not isinstance(compile, (bool, dict)):
            raise TypeError(
                f"compile: expected a bool or a dict of torch.compile options, got {compile!r}"
            )
        if net is not model and compile is False:
            compile = True
        self.model = net
        self.compiled = compile is not False
        options = compile if isinstance(compile, dict) else {}
        self._step = torch.compile(net.step, **options) if self.compiled else net.step
        self.memory: Memory | None = None
        self._size: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the memory: the next frame starts a new video."""
        self.memory = None
        self._size = None

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """frame (B, 3, H, W) RGB in [0, 1] -> level-1 logits (B, 1, H, W)."""
        size = tuple(frame.shape[-2:]) if isinstance(frame, torch.Tensor) else None
        if self.memory is not None and size is not None and size != self._size:
            raise ValueError(
                f"frame: size {size} differs from this video's {self._size}; call reset() "
                "before a video of another size"
            )
        logits, self.memory = self._step(frame, self.memory)
        self._size = size
        return logits[:, :1]
