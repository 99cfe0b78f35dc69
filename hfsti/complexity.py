"""Parameter and multiply-accumulate counts of the model."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from hfsti.model import HFSTINet


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: HFSTINet, size: int = 352) -> int:
    """MACs of one frame (the first of a video) at ``size`` x ``size``.

    Counted by PyTorch's FLOP counter (matrix products, convolutions, attention) as FLOPs / 2.
    FFTs are not counted: at the model's sizes they are under 0.1 % of the total.
    """
    frame = torch.zeros(1, 1, 3, size, size, device=model.mean.device, dtype=model.mean.dtype)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(frame)
    model.train(was_training)
    return counter.get_total_flops() // 2
