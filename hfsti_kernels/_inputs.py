"""Random inputs for the six ops, shared by the kernel tests and the benchmarks (not public API).

Every factory draws from its own seeded generator, in float64, then casts: the same seed gives
the same values in every dtype, so a low-precision run can be compared with the float64
reference on the very same (rounded) inputs. Values are never all zero (which can hide unwritten
outputs) and parameters come at the scales a trained model has.
"""

from __future__ import annotations

import torch

FFT_OPS = ("fft_channel_attention", "fourier_unit", "gated_fusion")
ATTENTION_BIASES = ("none", "full", "bcast_b", "bcast_h")


def _randn(g: torch.Generator, device, dtype):
    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=g, dtype=torch.float64, device=g.device) * scale
        return t.to(device=device, dtype=dtype)

    return rnd


def fft_op_inputs(op, B, C, H, W, dtype, seed=0, c_out=2, device="cpu") -> list[torch.Tensor]:
    """The tensor arguments of an FFT op (``FFT_OPS``) on (B, C, H, W) planes.

    fourier_unit maps C to ``c_out`` channels (gated_fusion keeps C); weights are scaled by
    1 / sqrt(fan-in) and the depthwise conv by 1/3.
    """
    rnd = _randn(torch.Generator().manual_seed(seed), device, dtype)
    if op == "fft_channel_attention":
        return [rnd(B, C, H, W) for _ in range(3)]
    if op == "fourier_unit":
        return [rnd(B, C, H, W), rnd(2 * c_out, 2 * C, scale=(2 * C) ** -0.5), rnd(2 * c_out)]
    if op != "gated_fusion":
        raise ValueError(f"op: expected one of {FFT_OPS}, got {op!r}")
    return [rnd(B, C, H, W) for _ in range(3)] + [
        rnd(2 * C, 2 * C, scale=(2 * C) ** -0.5),
        rnd(2 * C, scale=0.3),
        rnd(C, 1, 3, 3, scale=1 / 3),
        rnd(C, scale=0.3),
    ]


def attention_inputs(
    shape, dtype, bias="none", seed=0, q_mult=1.0, device="cpu", token_major=False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q (B, h, Nq, d), k, v (B, h, Nk, d) and key_bias for ``shape = (B, h, Nq, Nk, d)``.

    bias: "none" (None), "full" (B, h, Nk), "bcast_b" (1, h, Nk) or "bcast_h" (B, 1, Nk).
    token_major: q, k, v are (B, N, h, d) tensors viewed as (B, h, N, d), as the model builds
    them (non-contiguous). q is scaled by ``q_mult`` (large values: peaked softmax rows).
    """
    B, h, n_q, n_k, d = shape
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    rnd = _randn(g, dev, dtype)
    if token_major:
        q, k, v = (rnd(B, n, h, d).transpose(1, 2) for n in (n_q, n_k, n_k))
        q = q * q_mult if q_mult != 1.0 else q
    else:
        q = rnd(B, h, n_q, d, scale=q_mult)
        k = rnd(B, h, n_k, d)
        v = rnd(B, h, n_k, d)
    bias_shape = {"none": None, "full": (B, h, n_k), "bcast_b": (1, h, n_k), "bcast_h": (B, 1, n_k)}
    key_bias = None if bias_shape[bias] is None else rnd(*bias_shape[bias])
    return q, k, v, key_bias


def loss_target(shape, kind: str, g: torch.Generator) -> torch.Tensor:
    """A float64 target (B, 1, H, W): "binary" elliptic blobs (one per image) or "soft" values
    in [0, 1]; drawn from ``g`` on its device."""
    B, _, H, W = shape
    dev = g.device
    if kind == "soft":
        return torch.rand(shape, generator=g, dtype=torch.float64, device=dev)
    rows = torch.arange(H, dtype=torch.float64, device=dev)[:, None]
    cols = torch.arange(W, dtype=torch.float64, device=dev)[None, :]
    out = torch.zeros(shape, dtype=torch.float64, device=dev)
    size = torch.tensor([H, W], dtype=torch.float64, device=dev)
    for b in range(B):
        cy, cx = torch.rand(2, generator=g, dtype=torch.float64, device=dev) * size
        ry, rx = 1 + torch.rand(2, generator=g, dtype=torch.float64, device=dev) * size / 2
        out[b, 0] = (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1).double()
    return out


def loss_inputs(shape, kind="binary", scale=3.0, seed=0, device="cpu"):
    """(logits, target), float64, for ``shape = (B, 1, H, W)``: Gaussian logits times ``scale``
    and a :func:`loss_target` of ``kind``."""
    g = torch.Generator(device=torch.device(device)).manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64, device=g.device) * scale
    return logits, loss_target(shape, kind, g)


def prediction_inputs(shape, seed=0, device="cpu"):
    """(logits, target), float64: smooth logits of a plausible prediction of a binary blob
    target (one disc per image), plus noise; the loss values of a model in training."""
    B, _, H, W = shape
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    rows = torch.linspace(-1, 1, H, device=dev, dtype=torch.float64)[:, None]
    cols = torch.linspace(-1, 1, W, device=dev, dtype=torch.float64)[None, :]
    centre = torch.rand(B, 2, generator=g, device=dev, dtype=torch.float64) - 0.5
    radius = 0.2 + 0.4 * torch.rand(B, generator=g, device=dev, dtype=torch.float64)
    dist = (rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2
    target = (dist < radius[:, None, None] ** 2).double()[:, None]
    noise = torch.randn(shape, generator=g, device=dev, dtype=torch.float64)
    logits = 6 * (radius[:, None, None, None] ** 2 - dist[:, None]) / radius[:, None, None, None]
    return logits * 4 + 2 * noise, target
