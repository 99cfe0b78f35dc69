"""Progressive decoder with four deep-supervision heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfsti.model.layers import ConvBNReLU


class Decoder(nn.Module):
    """``D_4 = chi_4``; ``D_i = CBR3x3(cat(chi_i, up(D_{i+1})))`` for i = 3, 2, 1;
    ``P^i = upsample_to_input(Conv1x1(D_i -> 1))``.

    Upsampling is bilinear to the next level's exact size (not a blind x2), so inputs whose
    sides are not multiples of 32 decode without off-by-one shapes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fuse = nn.ModuleList(ConvBNReLU(2 * channels, channels, 3) for _ in range(3))
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(4))

    def decode(self, chis: list[torch.Tensor]) -> list[torch.Tensor]:
        """chis: [chi_1..chi_4] -> [D_1..D_4], each (B, C, h_i, w_i), before the heads."""
        d = chis[3]
        decoded = [d]
        for i in (2, 1, 0):
            up = F.interpolate(d, size=chis[i].shape[-2:], mode="bilinear", align_corners=False)
            d = self.fuse[i](torch.cat([chis[i], up], dim=1))
            decoded.insert(0, d)
        return decoded

    def forward(self, chis: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """chis: [chi_1..chi_4], (B, C, h_i, w_i) at strides 4..32; size: input (H, W).

        Returns logits (B, 4, H, W): P^1 (the prediction) first, P^4 last.
        """
        decoded = self.decode(chis)
        preds = [
            F.interpolate(head(d), size=size, mode="bilinear", align_corners=False)
            for head, d in zip(self.heads, decoded)
        ]
        return torch.cat(preds, dim=1)
