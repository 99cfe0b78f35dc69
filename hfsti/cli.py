"""The ``hfsti`` command line: ``segment`` (the main job), ``train``, ``eval`` and ``info``."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from hfsti.checkpoint import load_checkpoint
from hfsti.complexity import count_macs, count_parameters
from hfsti.data import FrameSource
from hfsti.model import HFSTIConfig, HFSTINet
from hfsti.segment import prepare_output, segment


def _kernel_backends():
    """``hfsti_kernels``' backend names and checker, or the reason it cannot be imported (the
    reference backend, in ``hfsti`` itself, must work even then)."""
    try:
        from hfsti_kernels._backend import BACKENDS, check_backend
    except Exception as e:  # noqa: BLE001 - any import failure: report it, keep "reference"
        return (), None, f"hfsti_kernels cannot be imported: {type(e).__name__}: {e}"
    return BACKENDS, check_backend, None


def usable_backends() -> list[str]:
    """The ``--backend`` choices: the backends of ``hfsti_kernels`` that can run in this process.

    "cuda" is among them only once ``hfsti_kernels`` reports an executor for its kernels (so it
    appears without an edit here when the CUDA backend lands)."""
    names, check, _ = _kernel_backends()
    usable = ["reference"]
    for name in names:
        try:
            if name != "reference":
                usable.append(check(name))
        except ValueError:
            continue
    return usable


def _backend_arg(name: str) -> str:
    """argparse ``type`` of ``--backend``: a usable backend, else a one-line error saying why."""
    usable = usable_backends()
    if name in usable:
        return name
    names, check, why = _kernel_backends()
    if name in names:
        try:
            check(name)
        except ValueError as e:
            why = str(e).removeprefix("backend: ")
    raise argparse.ArgumentTypeError(
        f"{name!r} is not usable here{f' ({why})' if why else ''}; choose from " + ", ".join(usable)
    )


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    usable = usable_backends()
    p.add_argument(
        "--backend",
        default="reference",
        type=_backend_arg,
        metavar="{" + ",".join(usable) + "}",
        help="op implementation (default: reference)",
    )


def _device(name: str | None) -> torch.device:
    """The ``--device`` option: cpu, cuda or cuda:N (default: cuda when available)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device: {name} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device: {name} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return device


def _model(weights: str | None, backend: str, device: torch.device) -> HFSTINet:
    if weights:
        model = load_checkpoint(weights)
        print(f"weights: {weights}")
    else:
        torch.manual_seed(0)
        model = HFSTINet(HFSTIConfig())
        print(
            "weights: none given, so the weights are RANDOM and the masks are meaningless; "
            "pass --weights FILE (a checkpoint from `hfsti train`) for real predictions"
        )
    return model.set_backend(backend).to(device).eval()


def cmd_segment(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ValueError(f"--frames: expected a positive number of frames, got {args.frames}")
    source = FrameSource(args.input, num_frames=args.frames)
    device = _device(args.device)
    out = prepare_output(args.out, not args.no_overlays, args.overwrite, arg="--out")
    model = _model(args.weights, args.backend, device)
    print(f"input: {source.description}")
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    precision = args.precision or ("fp16" if device.type == "cuda" else None)
    summary = segment(
        model,
        source,
        out,
        overlays=not args.no_overlays,
        accelerate_dtype=half.get(precision),
        cuda_graphs=not args.no_cuda_graphs,
    )
    print(summary)
    print(
        f"masks: {args.out}/masks"
        + ("" if args.no_overlays else f", overlays: {args.out}/overlays")
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hfsti.train import TrainConfig, TrainingInterrupted, train

    if args.data is not None and not args.data:
        raise ValueError("--data: expected one or more roots; omit --data for synthetic clips")
    # The train options are named as TrainConfig's fields; two are spelled otherwise.
    same = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig(**same | {"data": args.data or [], "augment": not args.no_augment})
    config = HFSTIConfig(
        channels=args.channels,
        memory_frames=args.memory_frames,
        input_size=args.size,
        backend=args.backend,
    )
    try:
        final = train(cfg, config)
    except TrainingInterrupted as stop:  # saved; one line, the shell's code for the signal
        print(f"hfsti train: {stop}", file=sys.stderr)
        return 128 + stop.signum
    print(f"model: {final}\nlog: {args.out}/log.csv, curve: {args.out}/loss.png")
    return 0


def _check_output_file(path: str, arg: str) -> None:
    """A one-line error naming ``arg`` when ``path`` cannot become a file: it is a folder, or
    some folder above it is a file."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{arg}: {p} is a folder, expected a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{arg}: cannot write {p}: {parent} is a file, not a folder")
            break


def cmd_eval(args: argparse.Namespace) -> int:
    from hfsti.evaluate import evaluate_model, format_table, write_json
    from hfsti.metrics import score_folders

    if args.json:
        _check_output_file(args.json, "--json")  # before the work, not after it
    if args.pred_root:
        if not args.gt_root:
            raise ValueError("--gt-root: required with --pred-root")
        results = score_folders(
            args.pred_root, args.gt_root, cases=args.cases, drop_ends=args.drop_ends
        )
    else:
        if not (args.weights and args.data):
            raise ValueError("--weights and --data: both required unless --pred-root is given")
        model = _model(args.weights, args.backend, _device(args.device))
        results = evaluate_model(
            model, args.data, args.cases, args.save_preds, drop_ends=args.drop_ends
        )
    print(format_table(results))
    if args.json:
        write_json(results, args.json)
        print(f"json: {args.json}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    model = HFSTINet(HFSTIConfig(channels=args.channels))
    params = count_parameters(model)
    macs = count_macs(model, args.size)
    print(f"HFSTI-Net (C={args.channels}): {params / 1e6:.2f} M parameters (paper: 28.53 M)")
    print(
        f"at {args.size}x{args.size}: {macs / 1e9:.2f} G MACs = {2 * macs / 1e9:.2f} GFLOPs "
        "per frame (paper: 46.77 G)"
    )
    try:  # which CUDA-kernel paths exist (extension, CuPy, emulator); never fails the command
        from hfsti_kernels.cuda.runtime import describe

        print(describe())
    except Exception as e:  # noqa: BLE001
        print(f"CUDA kernels: hfsti_kernels cannot be imported: {type(e).__name__}: {e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfsti", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment a colonoscopy video (the main job)")
    p.add_argument(
        "input",
        nargs="?",
        default=None,
        help="a folder of frames, an image, or a video file (mp4, avi, mov, mkv); "
        "omitted: a built-in synthetic clip",
    )
    p.add_argument("--out", required=True, help="output folder for masks/ and overlays/")
    p.add_argument("--weights", help="an HFSTI-Net checkpoint (.safetensors) from `hfsti train`")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_backend_option(p)
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        help="run the accelerated path in this precision (on a GPU fused kernels + CUDA "
        "graphs, on CPU eagerly; default fp16 on GPU, on CPU the model as loaded, in fp32)",
    )
    p.add_argument("--no-cuda-graphs", action="store_true", help="accelerated path, eagerly")
    p.add_argument("--frames", type=int, default=16, help="length of the synthetic clip")
    p.add_argument("--no-overlays", action="store_true", help="write the masks only")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="--out may hold an earlier run's masks/overlays: remove them first (without it, "
        "such a folder is refused; other files in it are never touched)",
    )
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "train",
        help="train on SUN-SEG-layout roots (torchrun for multi-GPU)",
        description="Train, or resume the run in --out: rerun the same command (without "
        "--restart). On resume only --steps, --workers, --save-every, --log-every and --backend "
        "may differ; --backbone and --init-from may be left out. --data omitted trains on "
        "synthetic clips. Ctrl-C / SIGTERM saves at the current step and exits 130 / 143; a "
        "non-finite loss or gradient stops with an error, keeping the last good checkpoint.",
    )
    p.add_argument("--data", nargs="*", help="SUN-SEG-layout roots; omitted: synthetic clips")
    p.add_argument("--cases", nargs="*", help="train on these cases only (e.g. seq01 seq02)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, loss.png")
    p.add_argument("--steps", type=int, default=20000, help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=4, help="clips per step per process")
    p.add_argument("--clip-len", type=int, default=3, help="frames per clip (T)")
    p.add_argument("--size", type=int, default=352, help="training resolution")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--backbone", help="PVTv2-b2 ImageNet weights (official or timm naming)")
    p.add_argument("--channels", type=int, default=HFSTIConfig.channels, help="neck width C")
    p.add_argument("--memory-frames", type=int, default=1, help="memory bank size T_m")
    p.add_argument(
        "--init-from", help="start from this checkpoint's weights (step 0, new optimizer)"
    )
    p.add_argument(
        "--restart", action="store_true", help="start over in --out, replacing its checkpoint"
    )
    _add_backend_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="score a checkpoint, or a folder of predicted masks")
    p.add_argument("--weights", help="checkpoint to run over --data")
    p.add_argument("--data", help="SUN-SEG-layout root (Frame/, GT/)")
    p.add_argument("--cases", nargs="*", help="evaluate these cases only")
    p.add_argument("--save-preds", help="also write the predicted masks here")
    p.add_argument("--pred-root", help="score existing predictions <case>/<frame>.png ...")
    p.add_argument("--gt-root", help="... against this GT root")
    p.add_argument("--json", help="write the metrics here as JSON")
    p.add_argument(
        "--drop-ends",
        action="store_true",
        help="leave the first and last frame of each case unscored (the SUN-SEG toolbox's rule)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_backend_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="parameters and MACs of the model")
    p.add_argument("--size", type=int, default=352, help="input side (default 352)")
    p.add_argument("--channels", type=int, default=HFSTIConfig.channels, help="neck width C")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"hfsti {args.command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show  # one line per warning, no source location
        try:
            return args.func(args)
        except (ValueError, TypeError, OSError) as err:
            print(f"hfsti {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
