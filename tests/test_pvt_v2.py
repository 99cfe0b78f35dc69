"""Tests of the PVTv2 backbone and its weight loader (CPU, a few seconds)."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from hfsti.model.pvt_v2 import (
    PyramidVisionTransformerV2,
    convert_timm_to_official,
    load_pvt_v2_weights,
    pvt_v2_b2,
)

# Tiny config with b2's structure (SR 8/4/2/1, >= 3 blocks in stage 1 for the timm table).
TINY = dict(
    embed_dims=(8, 16, 24, 32),
    num_heads=(1, 2, 3, 4),
    mlp_ratios=(2, 2, 2, 2),
    depths=(3, 2, 2, 2),
    sr_ratios=(8, 4, 2, 1),
)


def tiny(seed: int, **kw) -> PyramidVisionTransformerV2:
    torch.manual_seed(seed)
    return PyramidVisionTransformerV2(**{**TINY, **kw}).eval()


def official_to_timm(sd: dict) -> dict:
    """Official -> timm names, written after timm's own `_checkpoint_filter_fn`."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed1\.", "patch_embed.", k)
        k = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", k)
        k = k.replace("mlp.dwconv.dwconv.", "mlp.dwconv.")
        k = re.sub(r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.", k)
        k = re.sub(r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", k)
        out[k] = v
    return out


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def assert_same(a, b):
    assert len(a) == len(b) == 4
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)


@pytest.mark.parametrize("hw", [(64, 96), (70, 45), (32, 33)])
def test_shapes_any_size(hw):
    h, w = hw
    feats = outputs(tiny(0), torch.randn(2, 3, h, w))
    for f, c, s in zip(feats, TINY["embed_dims"], (4, 8, 16, 32)):
        # Each stage ceils: the padded convs keep the last partial window.
        assert f.shape == (2, c, -(-h // s), -(-w // s))
        assert torch.isfinite(f).all()


def test_b2_param_count_and_forward():
    model = pvt_v2_b2().eval()
    assert sum(p.numel() for p in model.parameters()) == 24_849_856
    # Official eps: 1e-6 for block and stage norms, the LayerNorm default for embed/SR norms.
    assert model.block1[0].norm1.eps == model.norm4.eps == 1e-6
    assert model.patch_embed1.norm.eps == model.block1[0].attn.norm.eps == 1e-5
    assert not hasattr(model.block4[0].attn, "sr")  # SR ratio 1: plain attention
    feats = outputs(model, torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 16, 16),
        (1, 128, 8, 8),
        (1, 320, 4, 4),
        (1, 512, 2, 2),
    ]


def test_drop_path_only_in_training():
    model = tiny(0, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    assert_same(outputs(model, x), outputs(model, x))
    model.train()
    torch.manual_seed(1)
    first = outputs(model, x)
    torch.manual_seed(2)
    assert not torch.equal(first[3], outputs(model, x)[3])


def test_official_round_trip_ignores_head(tmp_path):
    src = tiny(0)
    sd = dict(src.state_dict())
    sd["head.weight"], sd["head.bias"] = torch.randn(10, 32), torch.randn(10)
    path = tmp_path / "pvt.pth"
    torch.save({"state_dict": sd}, path)
    dst = tiny(1)
    x = torch.randn(1, 3, 64, 96)
    assert not torch.equal(outputs(src, x)[0], outputs(dst, x)[0])
    load_pvt_v2_weights(dst, path)
    assert_same(outputs(src, x), outputs(dst, x))


# Known timm names (timm/models/pvt_v2.py) and their official counterparts.
TIMM_TABLE = {
    "patch_embed.proj.weight": "patch_embed1.proj.weight",
    "patch_embed.norm.bias": "patch_embed1.norm.bias",
    "stages.1.downsample.proj.weight": "patch_embed2.proj.weight",
    "stages.3.downsample.norm.weight": "patch_embed4.norm.weight",
    "stages.0.blocks.2.attn.kv.weight": "block1.2.attn.kv.weight",
    "stages.0.blocks.0.attn.sr.weight": "block1.0.attn.sr.weight",
    "stages.2.blocks.1.attn.norm.bias": "block3.1.attn.norm.bias",
    "stages.1.blocks.0.mlp.dwconv.weight": "block2.0.mlp.dwconv.dwconv.weight",
    "stages.3.blocks.1.mlp.fc2.bias": "block4.1.mlp.fc2.bias",
    "stages.2.norm.weight": "norm3.weight",
    "head.weight": "head.weight",
}


def test_timm_names_key_by_key():
    converted = convert_timm_to_official({k: torch.zeros(1) for k in TIMM_TABLE})
    assert list(converted) == list(TIMM_TABLE.values())
    official = set(tiny(0).state_dict())
    timm_keys = set(official_to_timm(dict.fromkeys(official)))
    for timm_name, official_name in TIMM_TABLE.items():
        if timm_name != "head.weight":
            assert official_name in official and timm_name in timm_keys


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_round_trip(tmp_path, suffix):
    src = tiny(0)
    sd = official_to_timm(src.state_dict())
    sd["head.weight"], sd["head.bias"] = torch.randn(10, 32), torch.randn(10)
    assert convert_timm_to_official(sd).keys() == {*src.state_dict(), "head.weight", "head.bias"}
    path = tmp_path / f"pvt{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"model": sd}, path)
    dst = tiny(1)
    load_pvt_v2_weights(dst, path)
    x = torch.randn(1, 3, 64, 96)
    assert_same(outputs(src, x), outputs(dst, x))


def corrupt_missing(sd):
    del sd["block2.1.mlp.fc1.weight"]
    return "block2.1.mlp.fc1.weight"


def corrupt_extra(sd):
    sd["block1.0.attn.qq.weight"] = sd.pop("block1.0.attn.q.weight")
    return "block1.0.attn.qq.weight"


def corrupt_shape(sd):
    sd["norm3.weight"] = torch.ones(25)
    return "norm3.weight"


@pytest.mark.parametrize("corrupt", [corrupt_missing, corrupt_extra, corrupt_shape])
def test_bad_file_names_the_key(tmp_path, corrupt):
    sd = dict(tiny(0).state_dict())
    key = corrupt(sd)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        load_pvt_v2_weights(tiny(1), path)
    assert str(path) in str(info.value)


def test_non_strict_still_rejects_shapes(tmp_path):
    sd = dict(tiny(0).state_dict())
    del sd["norm4.bias"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    load_pvt_v2_weights(tiny(1), path, strict=False)
    corrupt_shape(sd)
    torch.save(sd, path)
    with pytest.raises(ValueError, match="norm3.weight"):
        load_pvt_v2_weights(tiny(1), path, strict=False)


@pytest.mark.parametrize(
    "x", [torch.randn(3, 64, 64), torch.randn(1, 4, 64, 64), torch.randn(1, 3, 16, 64)]
)
def test_bad_input_names_x(x):
    with pytest.raises(ValueError, match=r"^x: "):
        tiny(0)(x)
