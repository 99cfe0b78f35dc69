"""Whole-model checkpoints: safetensors weights with the config in the file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hfsti.model import HFSTIConfig, HFSTINet

FORMAT = "hfsti-net"


def save_checkpoint(model: HFSTINet, path: str | Path, metadata: dict | None = None) -> None:
    """Write the model's weights and config (plus optional string ``metadata``) to ``path``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint, without loading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> HFSTINet:
    """Rebuild the model a checkpoint was saved from; errors name missing/unexpected keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file {path}")
    try:
        meta = read_metadata(path)
    except Exception as err:  # safetensors raises several types for a foreign file
        raise ValueError(f"weights: {path} is not a safetensors checkpoint ({err})") from err
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(
            f"weights: {path} is not an HFSTI-Net checkpoint (no '{FORMAT}' config in its "
            "metadata); backbone-only files load with hfsti.model.pvt_v2.load_pvt_v2_weights"
        )
    model = HFSTINet(HFSTIConfig.from_dict(json.loads(meta["config"])))
    state = load_file(str(path), device=str(map_location))
    load_state_dict_strict(model, state, str(path))
    return model.to(map_location)


def load_state_dict_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """``load_state_dict`` whose error lists the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise ValueError(f"weights: {source} does not fit the model; " + "; ".join(problems))
    model.load_state_dict(state)
