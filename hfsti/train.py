"""Training: clips of T frames, AdamW, mixed precision, deep supervision, exact resume, DDP.

One code path serves one process and many: data order always comes from a
``DistributedSampler`` (one replica when not launched by ``torchrun``), so a single-process
run is the world-size-1 case of the distributed one. Launched by ``torchrun``, every rank
trains on its shard under ``DistributedDataParallel`` and rank 0 alone logs and saves.

Resume is exact: the data order of an epoch is a function of (seed, epoch), each clip's
augmentation a function of (seed, epoch, index), and the optimizer, scheduler, gradient scaler
and RNG states are saved with every checkpoint, so stopping at step k and resuming gives the
same weights as never stopping (bitwise on CPU).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from hfsti.checkpoint import load_checkpoint, save_checkpoint
from hfsti.data import SUNSEGClips, SyntheticClips
from hfsti.data.augment import ClipAugment
from hfsti.losses import HybridLoss
from hfsti.model import HFSTIConfig, HFSTINet
from hfsti.model.pvt_v2 import load_pvt_v2_weights


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

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp: expected auto, bf16, fp16 or off, got {self.amp!r}")
        for name in ("clip_len", "size", "batch_size", "steps", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")


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
    checkpoint's path. The model config is taken from the checkpoint when resuming."""
    rank, world = _distributed()
    device = _device(rank)
    out = Path(cfg.out)
    last, state_path = out / "last.safetensors", out / "last_state.pt"
    resuming = last.is_file() and state_path.is_file()

    torch.manual_seed(cfg.seed)
    if resuming:
        model = load_checkpoint(last)
    else:
        model = HFSTINet(model_config or HFSTIConfig())
        if cfg.backbone:
            load_pvt_v2_weights(model.backbone, cfg.backbone)
    model.to(device).train()
    criterion = HybridLoss(cfg.lambda_spec, ops=model.rmp.ops)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup, cfg.steps))
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = 0
    if resuming:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    net = DistributedDataParallel(model) if world > 1 else model

    data = AugmentedClips(build_dataset(cfg), ClipAugment() if cfg.augment else None, cfg.seed)
    sampler = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    per_epoch = len(sampler) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(
            f"batch_size: {cfg.batch_size} clips per rank, but each of {world} rank(s) "
            f"gets only {len(sampler)} clips per epoch"
        )

    log = _Log(out / "log.csv", enabled=rank == 0, append=resuming)
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=rank != 0)
    tick = time.perf_counter()
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        data.epoch = epoch
        order = list(sampler)[skip * cfg.batch_size : per_epoch * cfg.batch_size]
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        loader = DataLoader(data, batch_sampler=batches, num_workers=cfg.workers)
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
            if rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps):
                _save(model, optimizer, scheduler, scaler, step, cfg, last, state_path)
            if step >= cfg.steps:
                break
    bar.close()
    if rank == 0:
        final = out / "model.safetensors"
        save_checkpoint(model, final, metadata={"step": step, "train": _describe(cfg)})
        log.plot(out / "loss.png")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out / "model.safetensors"


def _describe(cfg: TrainConfig) -> str:
    return repr(dataclasses.asdict(cfg))


def _save(model, optimizer, scheduler, scaler, step, cfg, last, state_path) -> None:
    """Weights (safetensors, config included) and the resumable training state; both are
    written to temporary names first so a crash never leaves a torn checkpoint."""
    tmp_model, tmp_state = last.with_suffix(".tmp"), state_path.with_suffix(".tmp")
    save_checkpoint(model, tmp_model, metadata={"step": step, "train": _describe(cfg)})
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
        },
        tmp_state,
    )
    tmp_model.replace(last)
    tmp_state.replace(state_path)


class _Log:
    """CSV of (step, epoch, loss, lr, grad_norm, seconds) and its plotted curve."""

    FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "seconds")

    def __init__(self, path: Path, enabled: bool, append: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (append and path.is_file()):
                with path.open("w", newline="") as f:
                    csv.writer(f).writerow(self.FIELDS)

    def write(self, *row) -> None:
        if self.enabled:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow(row)

    def plot(self, path: Path) -> None:
        plot_log(self.path, path)


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
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
