"""HFSTI-Net: PVTv2-b2 -> (levels 1-3: 1x1 reduction | level 4: MFE -> RMP) -> HFSI -> decoder.

Everything that does not depend on the memory (backbone, levels 1-3 with their HFSI, MFE) runs
on all frames of a clip in one batch; only RMP, level 4's HFSI and the decoder run frame by
frame, because frame t's predicted mask enters the memory that frame t+1 reads. Results for
frame t therefore depend only on frames <= t.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from hfsti._checks import check_shape, check_tensor, check_unit_range
from hfsti.model.decoder import Decoder
from hfsti.model.hfsi import HFSI
from hfsti.model.layers import ConvBNReLU
from hfsti.model.mfe import MFE
from hfsti.model.pvt_v2 import pvt_v2_b2
from hfsti.model.rmp import RMP, Memory, mask_to_grid
from hfsti.ops import OpSet, default_backend, resolve_backend, use_backend

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class HFSTIConfig:
    """Every choice of the model, stored beside the weights in checkpoints.

    The default (C = 96) has 28.15 M parameters, within 2 % of the paper's 28.53 M; C = 64
    would give 26.7 M, outside the 5 % bound we hold it to (docs/model.md, Size and cost).

    Attributes:
        channels: neck width C, shared by all four levels.
        rmp_heads: attention heads of RMP (head width C / heads = 24 by default).
        rmp_mlp_ratio: TAM's MLP hidden width in multiples of C.
        memory_frames: T_m, frames the memory bank keeps (paper default 1).
        drop_path_rate: stochastic depth of the backbone (training regulariser).
        input_size: side of the square frames the model is trained and run at.
        backend: which implementation of the fused ops the modules call: "reference"
            (``hfsti.ops``), or "auto"/"triton"/"cuda" from ``hfsti_kernels``. Defaults to
            the ``HFSTI_BACKEND`` environment variable, else "reference", read when the config
            is made, so ``HFSTI_BACKEND=cuda`` puts every model built afterwards on that backend.
    """

    channels: int = 96
    rmp_heads: int = 4
    rmp_mlp_ratio: int = 4
    memory_frames: int = 1
    drop_path_rate: float = 0.0
    input_size: int = 352
    backend: str = field(default_factory=default_backend)

    def __post_init__(self) -> None:
        for name in ("channels", "rmp_heads", "rmp_mlp_ratio", "memory_frames", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.channels % self.rmp_heads:
            raise ValueError(
                f"rmp_heads: must divide channels={self.channels}, got {self.rmp_heads}"
            )
        if self.input_size < 32:
            raise ValueError(f"input_size: expected >= 32, got {self.input_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> HFSTIConfig:
        """Build from a dict, rejecting keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class HFSTINet(nn.Module):
    """The reference HFSTI-Net.

    Input frames are RGB in [0, 1] (values outside are refused with a ValueError naming the
    argument); ImageNet normalisation happens inside the model.
    ``model(frames)`` with frames (B, T, 3, H, W) returns logits (B, T, 4, H, W): per frame the
    four deep-supervision predictions at input resolution, level 1 (the prediction) first, with
    the memory carried from frame to frame inside the clip. H, W >= 32.
    """

    def __init__(self, config: HFSTIConfig | None = None, **overrides) -> None:
        super().__init__()
        config = dataclasses.replace(config or HFSTIConfig(), **overrides)
        self.config = config
        C = config.channels
        ops = resolve_backend(config.backend)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.backbone = pvt_v2_b2(drop_path_rate=config.drop_path_rate)
        dims = self.backbone.embed_dims
        self.reduce = nn.ModuleList(ConvBNReLU(d, C, 1) for d in dims[:3])
        self.mfe = MFE(dims[3], C)
        self.rmp = RMP(C, config.rmp_heads, config.rmp_mlp_ratio, ops)
        self.hfsi = nn.ModuleList(HFSI(C, ops) for _ in range(4))
        self.decoder = Decoder(C)

    # ----------------------------------------------------------------- backend

    def set_backend(self, backend: str | OpSet) -> HFSTINet:
        """Make every module call the ops of ``backend``; parameters are untouched."""
        self.config.backend = use_backend(self, backend).name
        return self

    # ----------------------------------------------------------------- pieces

    def encode(
        self, frames: torch.Tensor, normalized: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The memory-free part, for any number of frames at once.

        Args:
            frames: (N, 3, H, W) RGB in [0, 1].
            normalized: True if the caller has already applied the ImageNet normalisation
                (``hfsti_kernels.accelerate`` does it in fp32).
        Returns:
            ([chi_1, chi_2, chi_3] each (N, C, h_i, w_i), M (N, C, h_4, w_4)).
        """
        feats = self.backbone(frames if normalized else (frames - self.mean) / self.std)
        chis = [hfsi(red(f)) for hfsi, red, f in zip(self.hfsi[:3], self.reduce, feats[:3])]
        return chis, self.mfe(feats[3])

    def decode_step(
        self,
        chis: list[torch.Tensor],
        m: torch.Tensor,
        memory: Memory | None,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, Memory]:
        """One frame through RMP, level 4's HFSI and the decoder; updates the memory.

        Args:
            chis: levels 1-3 of this frame, (B, C, h_i, w_i).
            m: this frame's MFE features (B, C, h_4, w_4).
            memory: the bank of earlier frames, or None for the first frame of a video.
            size: input (H, W), the resolution of the returned logits.
        Returns:
            logits (B, 4, H, W) and the memory including this frame.
        """
        if memory is not None and memory.features.shape[-2:] != m.shape[-2:]:
            raise ValueError(
                f"memory: holds a {tuple(memory.features.shape[-2:])} feature grid, this frame "
                f"gives {tuple(m.shape[-2:])}: the frames of one video must share a size "
                "(start a new memory for frames of another size)"
            )
        logits = self.decoder([*chis, self.level4(m, memory)], size)
        prob = mask_to_grid(torch.sigmoid(logits[:, :1]).detach(), m.shape[-2:])
        if memory is None:
            return logits, Memory.start(m, prob.to(m.dtype))
        return logits, memory.push(m, prob.to(m.dtype), self.config.memory_frames)

    def level4(self, m: torch.Tensor, memory: Memory | None) -> torch.Tensor:
        """chi_4 (B, C, h_4, w_4) of a frame: RMP reads the bank (for the first frame of a video,
        memory None: the frame's own M with an all-zero mask), then level 4's HFSI."""
        if memory is None:
            memory = Memory(m[:, None], m.new_zeros(m.shape[0], 1, 1, *m.shape[-2:]))
        return self.hfsi[3](self.rmp(m, memory))

    def step(
        self, frame: torch.Tensor, memory: Memory | None = None
    ) -> tuple[torch.Tensor, Memory]:
        """Stream one frame per video: frame (B, 3, H, W) -> (logits (B, 4, H, W), memory)."""
        check_tensor("frame", frame, ndim=4)
        self._check_frames("frame", frame)
        if memory is not None and memory.features.shape[0] != frame.shape[0]:
            raise ValueError(
                f"memory: holds {memory.features.shape[0]} videos, frame has {frame.shape[0]}"
            )
        chis, m = self.encode(frame)
        return self.decode_step(chis, m, memory, frame.shape[-2:])

    def forward(self, frames: torch.Tensor, memory: Memory | None = None) -> torch.Tensor:
        """frames (B, T, 3, H, W) RGB in [0, 1] -> logits (B, T, 4, H, W)."""
        check_tensor("frames", frames, ndim=5)
        self._check_frames("frames", frames)
        B, T = frames.shape[:2]
        chis, m = self.encode(frames.flatten(0, 1))
        chis = [c.unflatten(0, (B, T)) for c in chis]
        m = m.unflatten(0, (B, T))
        outputs = []
        for t in range(T):
            logits, memory = self.decode_step(
                [c[:, t] for c in chis], m[:, t], memory, frames.shape[-2:]
            )
            outputs.append(logits)
        return torch.stack(outputs, dim=1)

    def _check_frames(self, name: str, x: torch.Tensor) -> None:
        """Shape, device, dtype, and values in [0, 1]: frames outside it (0..255 pixels, or
        already normalised ones) are refused, not clamped, because the model would silently
        predict from a wrong input. The range check is one ``aminmax`` (a host sync per call),
        skipped while torch.compile traces."""
        check_shape(name, x, (*[None] * (x.dim() - 3), 3, None, None))
        if 0 in x.shape[:-3]:
            lead = "(B, T, 3, H, W) with B, T" if x.dim() == 5 else "(B, 3, H, W) with B"
            raise ValueError(f"{name}: expected {lead} >= 1, got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"{name}: expected H, W >= 32, got {tuple(x.shape[-2:])}")
        if x.device != self.mean.device:
            raise ValueError(f"{name}: expected device {self.mean.device}, got {x.device}")
        if x.dtype != self.mean.dtype:
            raise TypeError(f"{name}: expected the model's dtype {self.mean.dtype}, got {x.dtype}")
        check_unit_range(name, x, " (RGB in [0, 1]: divide 8-bit pixels by 255)")
