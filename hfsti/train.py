"""Training: clips of T frames, AdamW, mixed precision, deep supervision, exact resume, DDP.

One code path serves one process and many: data order always comes from a
``DistributedSampler`` (one replica when not launched by ``torchrun``), so a single-process
run is the world-size-1 case of the distributed one. Launched by ``torchrun``, every rank
trains on its shard under ``DistributedDataParallel`` and rank 0 alone logs and saves.

Resume is exact: the data order of an epoch is a function of (seed, epoch), each clip's
augmentation a function of (seed, epoch, index), and the optimizer, scheduler, gradient scaler
and RNG states are saved with every checkpoint, so stopping at step k and resuming gives the
same weights as never stopping (bitwise on CPU).

The run folder ``out`` never loses work or good weights:

- Resume: rerun the same command. ``last.safetensors`` (weights) and ``last_state.pt``
  (optimizer, scheduler, scaler, RNG) must both be there and come from the same step, else the
  run refuses, naming the files; ``restart`` (``--restart``) starts over in the folder (its
  checkpoint is replaced at the first save) and ``init_from`` (``--init-from FILE``) starts a
  run from a checkpoint's weights with a fresh optimizer. Only ``--steps``, ``--workers``,
  ``--save-every``, ``--log-every`` and the model's ``backend`` may differ from the stored
  settings (``--backbone`` and ``--init-from``, which only initialise, may also be omitted); any
  other difference is an error naming the options. A new ``--steps`` stretches the cosine
  schedule to the new total. ``log.csv`` is cut back to the resumed step.
- The state file holds only tensors and plain containers and is read with
  ``torch.load(weights_only=True)``: a file carrying other pickled objects is refused, so no
  code from a run folder is ever executed.
- A non-finite loss, or non-finite gradients, stop the run with ``TrainingDiverged`` naming
  the step, before the optimizer step; weights (and buffers) are checked before every save,
  so a checkpoint never holds non-finite values and the last good one survives. Under fp16
  the GradScaler's skipped steps (non-finite *scaled* gradients) are normal and go on; the run
  stops only when a step is skipped at a loss scale <= 1, i.e. the unscaled gradients overflow
  too. A non-finite loss stops under every precision: the scale acts on the backward only.
- SIGINT / SIGTERM: the current step finishes, the checkpoint is saved at that step and
  ``TrainingInterrupted`` is raised (the CLI prints one line and exits 128 + the signal).
- One run per folder: ``out/train.lock`` (created with ``O_EXCL``, holding pid and host); a
  lock whose process is dead is stale and taken over.
- ``data`` empty trains on synthetic clips; an empty root name is an error. Every frame and
  mask is checked before the first step (``scan_images``: it opens, PNG CRCs hold, frame and
  mask sizes agree); a bad file is an error naming it (a JPEG damaged past its header is found
  only when decoded, mid-run, and then also named; the last checkpoint stands).
- Checkpoints, the final model and ``loss.png`` are written to a temporary name and renamed;
  ``log.csv`` is rewritten so when a run starts, then appended to one row at a time.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from hfsti.checkpoint import (
    atomic_path,
    load_checkpoint,
    save_checkpoint,
)
from hfsti.data import SUNSEGClips, SyntheticClips
from hfsti.data.augment import ClipAugment
from hfsti.losses import HybridLoss
from hfsti.model import HFSTIConfig, HFSTINet
from hfsti.model.pvt_v2 import load_pvt_v2_weights
from hfsti.train_guards import (
    RunLock,
    StopSignals,
    TrainLog,
    first_line,
    ignore_stop_signals,
    scan_images,
)
from hfsti.train_state import (
    TrainingDiverged,
    check_finite,
    check_model_config,
    last_good,
    metadata,
    restore,
    resumable,
    save,
    write_or_fail,
)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after saving it; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainConfig:
    """A training run. ``data`` empty trains on synthetic clips (smoke tests, demos)."""

    out: str
    data: list[str] = field(default_factory=list)
    cases: list[str] | None = None
    clip_len: int = 3
    size: int = 352
    batch_size: int = 4
    steps: int = 20000
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: int = 500
    grad_clip: float = 0.5
    lambda_spec: float = 0.1
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "fp16", "off"
    augment: bool = True
    seed: int = 0
    workers: int = 2
    save_every: int = 1000
    log_every: int = 10
    backbone: str | None = None  # PVTv2-b2 ImageNet weights (official or timm naming)
    synthetic_clips: int = 64
    init_from: str | None = None  # start from this HFSTI-Net checkpoint's weights (step 0)
    restart: bool = False  # start over in ``out`` even if it holds a checkpoint

    def __post_init__(self) -> None:
        if not str(self.out).strip():
            raise ValueError("out: expected a folder, got an empty name")
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        if any(not str(root).strip() for root in self.data):
            raise ValueError(
                f"data: empty dataset root in {list(self.data)}; give SUN-SEG-layout folders, "
                "or no data at all to train on synthetic clips"
            )
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp: expected auto, bf16, fp16 or off, got {self.amp!r}")
        for name in ("clip_len", "size", "batch_size", "steps", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name}: expected a finite number > 0, got {getattr(self, name)}")
        if self.warmup < 0 or self.workers < 0:
            raise ValueError(
                f"warmup and workers: expected >= 0, got {self.warmup}, {self.workers}"
            )


class AugmentedClips(Dataset):
    """Wraps a clip dataset; item i of epoch e is augmented by a generator seeded (seed, e, i)."""

    def __init__(self, clips: Dataset, augment: ClipAugment | None, seed: int) -> None:
        self.clips, self.augment, self.seed, self.epoch = clips, augment, seed, 0

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        item = self.clips[index]
        if self.augment is not None:
            # A tuple of ints hashes the same in every process (only str hashing is salted).
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & (2**63 - 1))
            item["frames"], item["masks"] = self.augment(item["frames"], item["masks"], g)
        return {"frames": item["frames"], "masks": item["masks"]}


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def _lr_lambda(warmup: int, steps: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_dataset(cfg: TrainConfig) -> Dataset:
    if cfg.data:
        return SUNSEGClips(cfg.data, clip_len=cfg.clip_len, size=cfg.size, cases=cfg.cases)
    return SyntheticClips(cfg.synthetic_clips, cfg.clip_len, cfg.size, seed=cfg.seed)


def train(cfg: TrainConfig, model_config: HFSTIConfig | None = None) -> Path:
    """Train (or resume, if ``cfg.out`` holds a checkpoint) to ``cfg.steps``; return the final
    checkpoint's path. When resuming or starting from ``cfg.init_from`` the model config comes
    from that checkpoint (``model_config``, if given, must agree with it, ``backend`` aside).

    Raises ValueError (a one-line message naming the option or file) on bad settings, data or
    run folder, ``TrainingDiverged`` (a ValueError) on non-finite values and
    ``TrainingInterrupted`` after saving on SIGINT/SIGTERM; see the module docstring.
    """
    rank, world = _distributed()
    device = _device(rank)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file, expected a folder for the run")
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"out: cannot create {out} ({err.strerror or err})") from None
    with RunLock(out, enabled=rank == 0), StopSignals() as stop:
        return _run(cfg, model_config, rank, world, device, out, stop)


def _run(cfg, model_config, rank, world, device, out, stop) -> Path:
    last, state_path = out / "last.safetensors", out / "last_state.pt"
    if cfg.backbone and not Path(cfg.backbone).is_file():
        raise FileNotFoundError(f"backbone: no such file {cfg.backbone}")
    torch.manual_seed(cfg.seed)
    resume = None if cfg.restart else resumable(cfg, model_config, out, last, state_path)
    if resume is not None:
        model, state = resume
    else:
        model, state = _fresh_model(cfg, model_config), None
        if rank == 0:  # the old weights stay until the first save replaces them
            state_path.unlink(missing_ok=True)
    model.to(device).train()
    criterion = HybridLoss(cfg.lambda_spec, ops=model.rmp.ops)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup, cfg.steps))
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = 0
    if state is not None:
        step = restore(state, state_path, optimizer, scheduler, scaler)
    saved = step if state is not None else None
    net = DistributedDataParallel(model) if world > 1 else model

    clips = build_dataset(cfg)
    if rank == 0 and isinstance(clips, SUNSEGClips):
        scan_images(dict.fromkeys(pair for _, pairs in clips.clips for pair in pairs))
    data = AugmentedClips(clips, ClipAugment() if cfg.augment else None, cfg.seed)
    sampler = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    per_epoch = len(sampler) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(
            f"batch_size: {cfg.batch_size} clips per rank, but each of {world} rank(s) "
            f"gets only {len(sampler)} clips per epoch"
        )

    log = TrainLog(out / "log.csv", enabled=rank == 0, resume_step=saved)
    with tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=rank != 0) as bar:
        tick = time.perf_counter()
        while step < cfg.steps:
            epoch, skip = divmod(step, per_epoch)
            sampler.set_epoch(epoch)
            data.epoch = epoch
            order = list(sampler)[skip * cfg.batch_size : per_epoch * cfg.batch_size]
            batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            loader = DataLoader(
                data,
                batch_sampler=batches,
                num_workers=cfg.workers,
                worker_init_fn=ignore_stop_signals,
            )
            for batch in loader:
                frames = batch["frames"].to(device, non_blocking=True)
                masks = batch["masks"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(frames)
                loss = criterion(logits.float(), masks)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                loss_bad, grad_bad, stopping = _step_flags(loss, grad_norm, stop, world)
                problem = _nonfinite(loss_bad, grad_bad, loss, grad_norm, scaler)
                if problem:
                    raise TrainingDiverged(
                        f"step {step + 1}: {problem}; stopped before the optimizer step, "
                        + last_good(last, saved)
                        + f"; try a lower lr (now {cfg.lr:g}) or check the data"
                    )
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                bar.update()
                if step % cfg.log_every == 0 or step == cfg.steps:
                    mean_loss = loss.detach()
                    if world > 1:  # every rank reaches this step: log the loss over all ranks
                        dist.all_reduce(mean_loss)
                        mean_loss = mean_loss / world
                    lr, seconds = scheduler.get_last_lr()[0], time.perf_counter() - tick
                    log.write(step, epoch, mean_loss.item(), lr, grad_norm.item(), seconds)
                    bar.set_postfix(loss=f"{mean_loss.item():.4f}", lr=f"{lr:.2e}")
                if step % cfg.save_every == 0 or step == cfg.steps or (stopping and step != saved):
                    if rank == 0:
                        parts = (model, optimizer, scheduler, scaler)
                        save(*parts, step, cfg, last, state_path, saved)
                    saved = step
                if stopping and step < cfg.steps:
                    signum = stop.signum or signal.SIGTERM
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} at step {step}: saved {last}; "
                        "to resume, rerun the same command"
                        + (" without --restart" if cfg.restart else ""),
                        signum,
                    )
                if step >= cfg.steps:
                    break
    final = out / "model.safetensors"
    if rank == 0:
        check_finite(model, step, last, saved)
        write_or_fail(final, lambda: save_checkpoint(model, final, metadata(step, cfg)))
        with atomic_path(out / "loss.png") as tmp:
            plot_log(log.path, tmp)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _fresh_model(cfg: TrainConfig, model_config: HFSTIConfig | None) -> HFSTINet:
    """A new model: random (the backbone from ``cfg.backbone`` if given) or ``cfg.init_from``."""
    if cfg.init_from:
        try:
            model = load_checkpoint(cfg.init_from)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"init_from: {err}") from None
        if model_config is not None:
            check_model_config(model.config, model_config, f"init_from: {cfg.init_from}")
            model.set_backend(model_config.backend)
        return model
    model = HFSTINet(model_config or HFSTIConfig())
    if cfg.backbone:
        try:
            load_pvt_v2_weights(model.backbone, cfg.backbone)
        except Exception as err:  # torch.load and safetensors raise many types for junk
            raise ValueError(
                f"backbone: {cfg.backbone} is not a PVTv2-b2 weights file ({first_line(err)})"
            ) from None
    return model


def _step_flags(loss, grad_norm, stop, world) -> list[bool]:
    """[loss non-finite, gradients non-finite, stop requested], over all ranks: one sync a
    step (one all-reduce under DDP, so that every rank decides alike)."""
    flags = torch.stack(
        [
            ~torch.isfinite(loss.detach()),
            ~torch.isfinite(grad_norm),
            torch.tensor(stop.signum is not None, device=grad_norm.device),
        ]
    ).float()
    if world > 1:
        dist.all_reduce(flags)
    return (flags > 0).tolist()


def _nonfinite(loss_bad, grad_bad, loss, grad_norm, scaler) -> str | None:
    """Why a step must not be taken, or None. Non-finite fp16 *scaled* gradients are the
    GradScaler's business (it skips the step and lowers the scale) until the scale is <= 1,
    where the unscaled gradients themselves overflow."""
    if loss_bad:
        return f"non-finite loss ({loss.item()})"
    if grad_bad and not scaler.is_enabled():
        return f"non-finite gradients (norm {grad_norm.item()})"
    if grad_bad and scaler.get_scale() <= 1.0:
        return f"non-finite gradients even at fp16 loss scale {scaler.get_scale():g}"
    return None


def plot_log(csv_path: Path, png_path: Path) -> None:
    """Plot loss and learning rate against step from a training log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(csv_path).open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [float(r["loss"]) for r in rows], color="tab:red", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [float(r["lr"]) for r in rows], color="tab:blue", alpha=0.5, label="lr")
    lr_ax.set_ylabel("learning rate")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120, format="png")
    plt.close(fig)
