"""The ``hfsti`` command line: ``segment`` (the main job) and ``info``."""

from __future__ import annotations

import argparse
import sys

import torch

from hfsti.checkpoint import load_checkpoint
from hfsti.complexity import count_macs, count_parameters
from hfsti.data import FrameSource
from hfsti.model import HFSTIConfig, HFSTINet
from hfsti.segment import segment


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device: {name} requested but CUDA is not available")
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
    source = FrameSource(args.input, num_frames=args.frames)
    device = _device(args.device)
    model = _model(args.weights, args.backend, device)
    print(f"input: {source.description}")
    summary = segment(model, source, args.out, overlays=not args.no_overlays)
    print(summary)
    print(
        f"masks: {args.out}/masks"
        + ("" if args.no_overlays else f", overlays: {args.out}/overlays")
    )
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
    p.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument(
        "--backend",
        default="reference",
        choices=["reference", "auto", "triton", "cuda"],
        help="op implementation (default: reference)",
    )
    p.add_argument("--frames", type=int, default=16, help="length of the synthetic clip")
    p.add_argument("--no-overlays", action="store_true", help="write the masks only")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("info", help="parameters and MACs of the model")
    p.add_argument("--size", type=int, default=352, help="input side (default 352)")
    p.add_argument("--channels", type=int, default=HFSTIConfig.channels, help="neck width C")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"hfsti {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
