"""The real-data check: train on CVC-612 sequences 1-15, evaluate on 16-20, same seed for the
reference model and the fused one, and write the curves and metrics.

    python benchmarks/cvc612_check.py --out results/cvc612/<device> [--steps N] [--size S]

Writes under --out: ``<backend>/log.csv`` (the training logs), ``metrics.json``
(``{backend: {"before": {...}, "after": {...}}}``, SUN-SEG metrics over sequences 16-20 before
and after training), ``loss.png`` (the loss curves overlaid) and ``summary.md``. The fused
model runs where its kernels run natively (CUDA); on CPU only the reference trains, because
the Triton interpreter is far too slow for a whole training run (the tests compare fused and
reference training step by step on CPU instead).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import torch

from hfsti import HFSTIConfig, HFSTINet, load_checkpoint
from hfsti.evaluate import evaluate_model
from hfsti.metrics import METRIC_KEYS
from hfsti.train import TrainConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cvc612"
TRAIN = [f"seq{i:02d}" for i in range(1, 16)]
TEST = [f"seq{i:02d}" for i in range(16, 21)]


def run(backend: str, args: argparse.Namespace, out: Path) -> dict:
    config = HFSTIConfig(input_size=args.size, backend=backend)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)  # the seed train() starts from: the same initial weights
    before = evaluate_model(HFSTINet(config).to(device), DATA, TEST, progress=False)
    cfg = TrainConfig(
        out=str(out / backend),
        data=[str(DATA)],
        cases=TRAIN,
        size=args.size,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        warmup=args.steps // 10,
        seed=args.seed,
        workers=args.workers,
        save_every=args.steps,
        log_every=1,
    )
    model = load_checkpoint(train(cfg, config)).to(device)
    after = evaluate_model(model, DATA, TEST, progress=False)
    return {"before": before["overall"], "after": after["overall"]}


def read_loss(path: Path) -> tuple[list[int], list[float]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def plot(out: Path, backends: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for backend in backends:
        steps, loss = read_loss(out / backend / "log.csv")
        ax.plot(steps, loss, label=backend, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (hybrid + spectral)")
    ax.set_title("CVC-612 seq01-15")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)


def summary(out: Path, results: dict, args: argparse.Namespace) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    lines = [
        "# CVC-612 real-data check",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Device: {device or 'cpu'}; torch {torch.__version__}; {args.steps} steps, "
        f"batch {args.batch_size} clips of 3 frames at {args.size}x{args.size}, lr {args.lr}, "
        f"seed {args.seed}, random-init backbone (no ImageNet weights offline).",
        "",
        "SUN-SEG metrics over sequences 16-20 (5 cases, 111 frames), before -> after training "
        "on sequences 1-15:",
        "",
        "| backend | " + " | ".join(METRIC_KEYS) + " |",
        "|---|" + "---|" * len(METRIC_KEYS),
    ]
    for backend, r in results.items():
        cells = [f"{r['before'][k]:.3f} -> {r['after'][k]:.3f}" for k in METRIC_KEYS]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", "Training loss, mean of the first and last 10 logged steps:", ""]
    for backend in results:
        _, loss = read_loss(out / backend / "log.csv")
        first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
        lines.append(f"- {backend}: {first:.4f} -> {last:.4f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    out = Path(args.out)
    backends = ["reference", "auto"] if torch.cuda.is_available() else ["reference"]
    results = {backend: run(backend, args, out) for backend in backends}
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(out, backends)
    (out / "summary.md").write_text(summary(out, results, args))
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
