"""PVTv2 backbone (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer").

A feature-pyramid version of the classifier: no head, and ``forward`` returns the four stage
outputs F1..F4 (NCHW, strides 4/8/16/32). Parameter names follow the official release
(``pvt_v2_b2.pth`` from github.com/whai362/PVT) so its state dict loads as is;
``load_pvt_v2_weights`` also accepts timm's naming.

LayerNorm eps: the blocks' ``norm1``/``norm2`` and the stage norms ``norm{i}`` use ``norm_eps``
(1e-6 for the released models), while the patch embeddings' and the spatial-reduction norms keep
PyTorch's default 1e-5, because the official code builds those with a bare ``nn.LayerNorm`` and
the released weights were trained that way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from hfsti._checks import check_shape, check_tensor

__all__ = [
    "PyramidVisionTransformerV2",
    "convert_timm_to_official",
    "load_pvt_v2_weights",
    "pvt_v2_b2",
]

# The official code builds these two norms with nn.LayerNorm's default eps.
_EMBED_NORM_EPS = 1e-5
_SR_NORM_EPS = 1e-5
# Smallest input side: the deepest stage has stride 32 (and b2's SR convs need >= 29).
_MIN_SIDE = 32


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``p`` in training.

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity in eval.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> same shape."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv (padding k // 2), then LayerNorm on tokens."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dim, eps=_EMBED_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """x: (B, C_in, H_in, W_in) -> (tokens (B, H*W, C), H, W)."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class DWConv(nn.Module):
    """Depthwise 3x3 conv applied to a token sequence viewed as its (H, W) map.

    Its own module only so that the parameter is named ``mlp.dwconv.dwconv`` as in the release.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Convolutional feed-forward: fc1 -> depthwise 3x3 conv -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Attention(nn.Module):
    """Multi-head attention with spatial reduction (SRA) of the keys and values.

    With ``sr_ratio > 1`` the keys/values come from the token map reduced by a conv with
    kernel = stride = ``sr_ratio``, then LayerNorm; otherwise from the full token sequence.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=_SR_NORM_EPS)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w))
            x = self.norm(x.flatten(2).transpose(1, 2))
        # kv's output is [k | v], each split into heads: (2, B, heads, Nk, d).
        kv = self.kv(x).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        qkv_bias: bool,
        norm_eps: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, sr_ratio, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class PyramidVisionTransformerV2(nn.Module):
    """PVTv2 feature pyramid (no classification head), official parameter names.

    Stage i (1..4) = ``patch_embed{i}`` (7x7/s4 for stage 1, 3x3/s2 after), the blocks
    ``block{i}.{j}``, and the LayerNorm ``norm{i}``. Per-stage sequences have 4 entries.
    ``drop_path_rate`` rises linearly from 0 over all blocks, as in the official code.

    Weight init (the official scheme): Linear weights trunc-normal std 0.02 with zero bias,
    LayerNorm ones/zeros, convs normal(0, sqrt(2 / fan_out)) with
    fan_out = k_h * k_w * out_channels / groups, zero bias.
    """

    def __init__(
        self,
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        mlp_ratios: Sequence[float],
        depths: Sequence[int],
        sr_ratios: Sequence[int],
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        stage_args = (embed_dims, num_heads, mlp_ratios, depths, sr_ratios)
        if any(len(a) != 4 for a in stage_args):
            raise ValueError(
                "embed_dims, num_heads, mlp_ratios, depths, sr_ratios: expected 4 entries "
                f"each, got lengths {[len(a) for a in stage_args]}"
            )
        self.in_chans = in_chans
        self.embed_dims = tuple(embed_dims)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        prev = in_chans
        for i in range(4):
            first = i == 0
            embed = OverlapPatchEmbed(
                prev, embed_dims[i], patch_size=7 if first else 3, stride=4 if first else 2
            )
            start = sum(depths[:i])
            blocks = nn.ModuleList(
                Block(
                    embed_dims[i],
                    num_heads[i],
                    mlp_ratios[i],
                    sr_ratios[i],
                    qkv_bias,
                    norm_eps,
                    rates[start + j],
                )
                for j in range(depths[i])
            )
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=norm_eps))
            prev = embed_dims[i]
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W), H, W >= 32 -> [F1..F4], Fi: (B, embed_dims[i], ~H/s, ~W/s).

        The strides s are 4, 8, 16, 32; each side is ceil'ed by the convs' padding.
        """
        check_tensor("x", x, ndim=4)
        check_shape("x", x, (None, self.in_chans, None, None))
        if min(x.shape[-2:]) < _MIN_SIDE:
            raise ValueError(f"x: expected H, W >= {_MIN_SIDE}, got shape {tuple(x.shape)}")
        feats = []
        for i in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                tokens = blk(tokens, h, w)
            tokens = getattr(self, f"norm{i}")(tokens)
            x = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            feats.append(x)
        return feats


def _init_weights(m: nn.Module) -> None:
    """The official PVTv2 init for one module (see ``PyramidVisionTransformerV2``)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def pvt_v2_b2(**overrides: object) -> PyramidVisionTransformerV2:
    """PVTv2-b2 without its head (24,849,856 parameters); ``overrides`` replace constructor args."""
    args: dict[str, object] = dict(
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        depths=(3, 4, 6, 3),
        sr_ratios=(8, 4, 2, 1),
        qkv_bias=True,
        norm_eps=1e-6,
    )
    args.update(overrides)
    return PyramidVisionTransformerV2(**args)


# timm's names (timm/models/pvt_v2.py): the stage-1 embedding stays at the top level as
# `patch_embed`, later ones become `stages.{s}.downsample` (0-based stages s = 1..3), blocks live
# in `stages.{s}.blocks.{j}`, stage norms in `stages.{s}.norm`, and the MLP's official
# `dwconv.dwconv` is flattened to `dwconv`.
_TIMM_KEY = re.compile(r"^stages\.(\d+)\.(downsample|blocks|norm)\.(.+)$")
_OFFICIAL_PREFIX = {"downsample": "patch_embed{}.", "blocks": "block{}.", "norm": "norm{}."}


def _timm_key_to_official(key: str) -> str:
    """One timm key -> its official name; keys of no known form are returned unchanged."""
    if key.startswith("patch_embed."):
        return "patch_embed1." + key.removeprefix("patch_embed.")
    m = _TIMM_KEY.match(key)
    if not m:
        return key
    stage, kind, rest = int(m[1]) + 1, m[2], m[3]
    if kind == "blocks":
        rest = re.sub(r"^(\d+)\.mlp\.dwconv\.", r"\1.mlp.dwconv.dwconv.", rest)
    return _OFFICIAL_PREFIX[kind].format(stage) + rest


def convert_timm_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``pvt_v2`` state dict to the official naming.

    Keys of no known timm form (``head.*``, or anything unknown) keep their names, so the
    loader can ignore the head and report the rest as unexpected.
    """
    return {_timm_key_to_official(k): v for k, v in state_dict.items()}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` or torch file, unwrapping checkpoints."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        # Training checkpoints wrap the weights as {"state_dict": ...} or {"model": ...}.
        for wrapper in ("state_dict", "model"):
            if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
                sd = sd[wrapper]
                break
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: non-tensor entries {_list_keys(bad)}")
    return dict(sd)


def _list_keys(keys: Sequence[str], limit: int = 10) -> str:
    """``"N: a, b, ... (and M more)"`` for error messages."""
    shown = ", ".join(keys[:limit])
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)}: {shown}{more}"


def load_pvt_v2_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load PVTv2 weights from a local file into ``model`` (official parameter names).

    path: ``.pth``/``.pt`` (read with ``weights_only=True``, optionally wrapped in
    ``{"state_dict": ...}`` or ``{"model": ...}``) or ``.safetensors``; in the official or timm
    naming, detected from the keys. ``head.*`` (the classifier) is ignored. Raises ValueError
    naming the keys and the file on missing or unexpected keys (unless ``strict=False``) and,
    always, on shape mismatches.
    """
    path = Path(path)
    sd = _read_state_dict(path)
    if any(k.startswith(("stages.", "patch_embed.")) for k in sd):
        sd = convert_timm_to_official(sd)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}

    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if strict and missing:
        problems.append(f"missing keys {_list_keys(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_list_keys(unexpected)}")
    mismatched = [
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        problems.append(f"shape mismatches {_list_keys(mismatched)}")
    if problems:
        raise ValueError(f"{path}: cannot load PVTv2 weights: " + "; ".join(problems))
    model.load_state_dict(sd, strict=strict)
