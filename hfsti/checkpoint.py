"""Whole-model checkpoints: safetensors weights with the config in the file's metadata.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash or a full disk never leaves a torn checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hfsti.model import HFSTIConfig, HFSTINet

FORMAT = "hfsti-net"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary name beside ``path`` to write to; on success it replaces ``path``.

    On any error the temporary file is removed, so ``path`` is either the old file or the
    complete new one. Nested uses rename innermost first, within microseconds of each other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: HFSTINet, path: str | Path, metadata: dict | None = None) -> None:
    """Write the model's weights and config (plus optional string ``metadata``) to ``path``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint, without loading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _target_device(map_location: str | torch.device) -> torch.device:
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"map_location: not a device: {map_location!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"map_location: {map_location} requested but CUDA is not available")
    return device


def read_config(path: str | Path) -> HFSTIConfig:
    """The model config stored in an HFSTI-Net checkpoint; errors name the file."""
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
    try:
        values = json.loads(meta["config"])
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got {type(values).__name__}")
        return HFSTIConfig.from_dict(values)
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"weights: {path} has an invalid model config: {err}") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> HFSTINet:
    """Rebuild the model a checkpoint was saved from; errors name missing/unexpected keys."""
    device = _target_device(map_location)
    model = HFSTINet(read_config(path))
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # a truncated or damaged tensor section
        raise ValueError(f"weights: cannot read the tensors of {path} ({err})") from err
    load_state_dict_strict(model, state, str(path))
    return model.to(device)


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
