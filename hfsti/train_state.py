"""The resumable checkpoint of a run folder: what ``hfsti.train`` saves, and every check made
before it resumes (used by ``hfsti.train``; its docstring gives the rules).

A checkpoint is a pair saved together at one step: ``last.safetensors`` (weights, model config,
step and the training settings as JSON) and ``last_state.pt`` (optimizer, scheduler, scaler and
RNG states, and the step), renamed into place within microseconds of each other.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import torch

from hfsti.checkpoint import (
    atomic_path,
    load_checkpoint,
    read_config,
    read_metadata,
    save_checkpoint,
)
from hfsti.model import HFSTIConfig
from hfsti.train_guards import first_line

STATE_FORMAT = "hfsti-train-state-v1"

# Settings that may differ between a run and its resumption; every other TrainConfig field, and
# every HFSTIConfig field but ``backend``, must equal the stored one, except that the two that
# only initialise a new run (INITIALISERS) may also be omitted (None) on resume.
MAY_CHANGE_ON_RESUME = ("steps", "workers", "save_every", "log_every")
INITIALISERS = ("backbone", "init_from")


class TrainingDiverged(ValueError):
    """A non-finite loss, gradient or weight; nothing non-finite was saved."""


def check_model_config(stored: HFSTIConfig, given: HFSTIConfig, source: str) -> None:
    differ = [
        f"{k} {v!r} (stored {stored.to_dict()[k]!r})"
        for k, v in given.to_dict().items()
        if k != "backend" and stored.to_dict()[k] != v
    ]
    if differ:
        raise ValueError(f"{source} has another model config: {', '.join(differ)}")


def resumable(cfg, model_config, out, last, state_path):
    """(model, state) of the run in ``out`` to resume, or None for a fresh start; refuses (one
    line naming the files and the way forward) any folder that cannot be resumed exactly."""
    final = out / "model.safetensors"
    if not last.exists() and not state_path.exists():
        if final.exists():
            raise ValueError(
                f"out: {out} holds {final.name} from an earlier run but no checkpoint to "
                "resume; choose another out, or pass --restart to overwrite it"
            )
        return None
    way = (
        "pass --restart to start over in this folder, or --restart --init-from "
        f"{last} to start a new run from those weights"
    )
    if not state_path.exists():
        raise ValueError(
            f"resume: {last} exists but {state_path} is missing, so the run cannot continue "
            f"exactly; {way}"
        )
    if not last.exists():
        raise ValueError(f"resume: {state_path} exists but {last} is missing; pass --restart")
    config = read_config(last)
    try:
        meta = read_metadata(last)
        weights_step = int(meta["step"])
        stored = json.loads(meta["train"])
        if not isinstance(stored, dict):
            raise TypeError("not a JSON object")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"resume: {last} lacks a readable step or training config ({first_line(err)}); {way}"
        ) from None
    state = load_state(state_path, way)
    if state["step"] != weights_step:
        raise ValueError(
            f"resume: {last} is at step {weights_step} but {state_path} at step {state['step']}"
            f"; both must come from one save; {way}"
        )
    given = json.loads(json.dumps(dataclasses.asdict(cfg)))
    defaults = json.loads(json.dumps(dataclasses.asdict(type(cfg)(out="."))))
    ignored = {"out", "restart", *MAY_CHANGE_ON_RESUME}
    differ = [
        f"{k} {v!r} (stored {stored.get(k, defaults[k])!r})"
        for k, v in given.items()
        if k not in ignored
        and stored.get(k, defaults[k]) != v
        and not (k in INITIALISERS and v is None)
    ]
    if model_config is not None:
        differ += [
            f"{k} {v!r} (stored {config.to_dict()[k]!r})"
            for k, v in model_config.to_dict().items()
            if k != "backend" and config.to_dict()[k] != v
        ]
    if differ:
        raise ValueError(
            f"resume: {out} holds a run with other settings: {', '.join(differ)}; resume with "
            f"the stored ones (only {', '.join(MAY_CHANGE_ON_RESUME)} and backend may change), "
            "or pass --restart, or use another out"
        )
    if weights_step > cfg.steps:
        raise ValueError(f"steps: the run in {out} is already at step {weights_step} > {cfg.steps}")
    model = load_checkpoint(last)
    if model_config is not None:
        model.set_backend(model_config.backend)
    return model, state


def load_state(path: Path, way: str) -> dict:
    """Read a training state with ``weights_only=True``: tensors and plain containers only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:  # random bytes read as a pickle
            raise ValueError(f"resume: {path} is not a readable training state; {way}") from None
        raise ValueError(
            f"resume: refused {path}: it asks for {found.group(1)}, but a training state holds "
            f"only tensors and plain containers (other objects could run code); {way}"
        ) from None
    except Exception as err:  # truncated, random or foreign bytes
        raise ValueError(
            f"resume: {path} is not a readable training state ({first_line(err)}); {way}"
        ) from None
    keys = ("format", "step", "optimizer", "scheduler", "scaler", "rng")
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or not all(k in state for k in keys)
        or not isinstance(state["step"], int)
        or not isinstance(state["rng"], torch.Tensor)
    ):
        raise ValueError(f"resume: {path} is not a training state of this version; {way}")
    return state


def restore(state: dict, path: Path, optimizer, scheduler, scaler) -> int:
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"resume: {path} does not fit this run's optimizer, scheduler or scaler "
            f"({first_line(err)}); pass --restart to start over"
        ) from None
    return state["step"]


def last_good(last: Path, saved: int | None) -> str:
    if saved is None:
        return "no checkpoint was written"
    return f"the last checkpoint ({last}, step {saved}) is intact"


def check_finite(model: torch.nn.Module, step: int, last: Path, saved: int | None) -> None:
    """Raise TrainingDiverged naming the non-finite weights or buffers, if any."""
    tensors = model.state_dict().items()
    bad = [k for k, v in tensors if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        names = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise TrainingDiverged(
            f"step {step}: non-finite weights ({names}), not saved; {last_good(last, saved)}"
        )


def metadata(step: int, cfg) -> dict:
    """The checkpoint metadata: the step and the training settings (JSON)."""
    return {"step": step, "train": json.dumps(dataclasses.asdict(cfg))}


def write_or_fail(path: Path, write) -> None:
    try:
        write()
    except OSError as err:
        raise ValueError(f"out: cannot write {path} ({err.strerror or err})") from None


def save(model, optimizer, scheduler, scaler, step, cfg, last, state_path, saved) -> None:
    """Weights (safetensors, config included) and the resumable training state, both written
    to temporary names and renamed together, so a crash never leaves a torn checkpoint; weights
    that are not finite are never written."""
    check_finite(model, step, last, saved)
    state = {
        "format": STATE_FORMAT,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
    }

    def write() -> None:
        with atomic_path(last) as tmp_model, atomic_path(state_path) as tmp_state:
            save_checkpoint(model, tmp_model, metadata=metadata(step, cfg))
            torch.save(state, tmp_state)

    write_or_fail(last, write)
