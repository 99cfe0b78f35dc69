"""Comparison helpers shared by the tests: the relative-error tolerances of docs/ops.md,
Tolerances."""

from __future__ import annotations

from pathlib import Path

import torch

# Relative error ||out - ref|| / ||ref|| against the float64 reference (docs/ops.md, Tolerances).
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

CVC612 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cvc612"


def rel_err(out: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """||out - ref|| / max(||ref||, floor) in float64 (absolute error when both are zero).

    ``floor`` keeps a tensor that is zero in exact arithmetic (only rounding noise on both
    sides) from being judged relative to its own noise.
    """
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    den = max(ref.norm().item(), floor)
    return (out - ref).norm().item() / (den if den > 0 else 1.0)


def assert_rel_close(
    out: torch.Tensor, ref: torch.Tensor, tol: float, name: str, floor: float = 0.0
) -> None:
    """Fail with where and by how much ``out`` differs from ``ref``; NaN/Inf never pass."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).nonzero()[:5].tolist()
        raise AssertionError(f"{name}: non-finite values at {bad}")
    err = rel_err(out, ref, floor)
    if err > tol:
        diff = (out.detach().double().cpu() - ref.detach().double().cpu()).abs()
        worst = torch.unravel_index(diff.argmax(), diff.shape)
        idx = tuple(int(i) for i in worst)
        raise AssertionError(
            f"{name}: relative error {err:.3e} > {tol:.1e}; worst at index {idx}: "
            f"out={out[idx].item():.6g} ref={ref[idx].item():.6g}"
        )
