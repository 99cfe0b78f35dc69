"""The six reference ops of docs/ops.md, in plain PyTorch.

These functions are the oracle: every kernel in ``hfsti_kernels`` is tested against them
(evaluated in float64) and benchmarked against them. They run on any device and any floating
dtype; float16/bfloat16 inputs are computed in float32 (``torch.fft`` has no half-precision
transforms at these sizes) and cast back, so the output dtype is always the input dtype.
Under ``torch.autocast`` each op first casts its inputs by the rule of :func:`autocast_policy`
(the feature ops to the autocast dtype, the losses to float32), as the kernels do.

The model never calls these names directly: each module holds an :class:`OpSet` (``module.ops``)
resolved from the config's ``backend``, so a kernel backend replaces an op everywhere by
swapping that one object (see :func:`resolve_backend`, ``hfsti_kernels.patch``).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hfsti._checks import (
    check_like,
    check_nonempty,
    check_same,
    check_shape,
    check_tensor,
    check_unit_range,
    compute_dtype,
)

__all__ = [
    "check_fft_channel_attention_inputs",
    "check_fourier_unit_inputs",
    "check_gated_fusion_inputs",
    "check_memory_attention_inputs",
    "key_bias_grad",
    "rebase_key_bias",
    "attention_scale",
    "check_loss_inputs",
    "fft_channel_attention",
    "fourier_unit",
    "gated_fusion",
    "memory_attention",
    "structure_loss",
    "spectral_correlation_loss",
    "irfft2_strict",
    "autocast_policy",
    "OpSet",
    "REFERENCE",
    "register_backend",
    "BACKEND_ENV_VAR",
    "default_backend",
    "resolve_backend",
    "use_backend",
]


def _upcast(*tensors: Tensor) -> list[Tensor]:
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


# --------------------------------------------------------------------------- autocast

AUTOCAST_RULES = ("lower", "fp32")


def autocast_policy(rule: str) -> Callable[[Callable], Callable]:
    """Decorator: what an op does inside ``torch.autocast`` (docs/ops.md, "Autocast").

    Autocast casts the inputs of torch's own ops but knows nothing of these six, so without a
    rule a model under autocast hands them half-precision activations beside fp32 weights.
    When autocast is enabled for the device type of the op's first tensor argument, every
    floating tensor argument other than float64 (which autocast leaves alone too) is cast:

    - ``"lower"``: to the autocast dtype (``torch.get_autocast_dtype``). The four feature ops:
      they compute in fp32 internally anyway, so half inputs only halve the memory traffic.
    - ``"fp32"``: to float32. The two losses, as torch's autocast does for its own losses.

    The op then runs with autocast disabled, so its output has the cast dtype. The casts are
    differentiable ``.to`` calls, so each argument's gradient comes back in that argument's
    own dtype (fp32 parameters get fp32 gradients). Outside autocast the call is unchanged.
    """
    if rule not in AUTOCAST_RULES:
        raise ValueError(f"rule: expected one of {AUTOCAST_RULES}, got {rule!r}")

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
            device = tensors[0].device.type if tensors else None
            if (
                device is None
                or not torch.amp.is_autocast_available(device)
                or not torch.is_autocast_enabled(device)
            ):
                return fn(*args, **kwargs)
            dtype = torch.get_autocast_dtype(device) if rule == "lower" else torch.float32

            def cast(a):
                eligible = isinstance(a, Tensor) and a.is_floating_point()
                return a.to(dtype) if eligible and a.dtype != torch.float64 else a

            with torch.autocast(device, enabled=False):
                return fn(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})

        return wrapper

    return decorate


# --------------------------------------------------------------------------- 1.1


def check_fft_channel_attention_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Validate the arguments of :func:`fft_channel_attention`."""
    check_tensor("q", q, ndim=4)
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    check_same(("q", "k", "v"), (q, k, v))
    check_nonempty("q", q, "(B, C, H, W)")


@autocast_policy("lower")
def fft_channel_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Frequency-domain channel attention of FFB: ``irfft2(rfft2(q) * rfft2(k) * rfft2(v))``.

    Args:
        q, k, v: (B, C, H, W), same shape, dtype and device.
    Returns:
        y: (B, C, H, W), equal to ``(q (*) k (*) v) / (H * W)`` per plane, where ``(*)`` is
        2-D circular convolution (all transforms ``norm="ortho"``).
    """
    check_fft_channel_attention_inputs(q, k, v)
    H, W = q.shape[-2:]
    qc, kc, vc = _upcast(q, k, v)
    spec = torch.fft.rfft2(qc, norm="ortho") * torch.fft.rfft2(kc, norm="ortho")
    spec = spec * torch.fft.rfft2(vc, norm="ortho")
    return torch.fft.irfft2(spec, s=(H, W), norm="ortho").to(q.dtype)


# --------------------------------------------------------------------------- 1.2


def irfft2_strict(spec: Tensor, width: int) -> Tensor:
    """Inverse real 2-D transform of a half spectrum that need not be Hermitian.

    Inverse complex FFT along H, then the imaginary parts of the bins that a real signal
    forces to be real (column 0, and column W/2 for even W) are zeroed explicitly, then a C2R
    transform along W. This pins down what cuFFT and pocketfft would otherwise disagree on.

    Args:
        spec: complex (..., H, W//2+1).
        width: W, the output's last size.
    Returns:
        real (..., H, W).
    """
    t = torch.fft.ifft(spec, dim=-2, norm="ortho")
    keep_imag = torch.ones(t.shape[-1], dtype=t.real.dtype, device=t.device)
    keep_imag[0] = 0
    if width % 2 == 0:
        keep_imag[width // 2] = 0
    t = torch.complex(t.real, t.imag * keep_imag)
    return torch.fft.irfft(t, n=width, dim=-1, norm="ortho")


def check_fourier_unit_inputs(x: Tensor, weight: Tensor, bias: Tensor) -> None:
    """Validate the arguments of :func:`fourier_unit`."""
    check_tensor("x", x, ndim=4)
    check_tensor("weight", weight, ndim=2)
    check_tensor("bias", bias, ndim=1)
    check_nonempty("x", x, "(B, C, H, W)")
    C = x.shape[1]
    if weight.shape[1] != 2 * C or weight.shape[0] % 2 or weight.shape[0] == 0:
        raise ValueError(
            f"weight: expected shape (2C', 2C) = (even >= 2, {2 * C}) for x with C={C}, "
            f"got {tuple(weight.shape)}"
        )
    check_shape("bias", bias, (weight.shape[0],))
    check_like("weight", weight, "x", x)
    check_like("bias", bias, "x", x)


@autocast_policy("lower")
def fourier_unit(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Fourier unit (FFC/LaMa): a 1x1 conv + ReLU on the stacked real/imag spectrum.

    Args:
        x: (B, C, H, W).
        weight: (2C', 2C), acting on ``cat([Re X, Im X], dim=1)`` (block layout).
        bias: (2C',).
    Returns:
        y: (B, C', H, W), ``irfft2_strict`` of ``complex(Z'[:, :C'], Z'[:, C':])``.
    """
    check_fourier_unit_inputs(x, weight, bias)
    H, W = x.shape[-2:]
    xc, wc, bc = _upcast(x, weight, bias)
    spec = torch.fft.rfft2(xc, norm="ortho")
    z = torch.cat([spec.real, spec.imag], dim=1)
    z = torch.relu(torch.einsum("oc,bchw->bohw", wc, z) + bc[:, None, None])
    c_out = weight.shape[0] // 2
    y = irfft2_strict(torch.complex(z[:, :c_out], z[:, c_out:]), W)
    return y.to(x.dtype)


# --------------------------------------------------------------------------- 1.3


def check_gated_fusion_inputs(
    x_f: Tensor, x_s: Tensor, x_0: Tensor,
    fu_weight: Tensor, fu_bias: Tensor,
    dw_weight: Tensor, dw_bias: Tensor,
) -> None:  # fmt: skip
    """Validate the arguments of :func:`gated_fusion`."""
    check_tensor("x_f", x_f, ndim=4)
    check_tensor("x_s", x_s, ndim=4)
    check_tensor("x_0", x_0, ndim=4)
    check_same(("x_f", "x_s", "x_0"), (x_f, x_s, x_0))
    check_nonempty("x_f", x_f, "(B, C, H, W)")
    C = x_f.shape[1]
    params = (
        ("fu_weight", fu_weight, (2 * C, 2 * C)),
        ("fu_bias", fu_bias, (2 * C,)),
        ("dw_weight", dw_weight, (C, 1, 3, 3)),
        ("dw_bias", dw_bias, (C,)),
    )
    for name, t, shape in params:
        check_tensor(name, t, ndim=len(shape))
        check_shape(name, t, shape)
        check_like(name, t, "x_f", x_f)


@autocast_policy("lower")
def gated_fusion(
    x_f: Tensor, x_s: Tensor, x_0: Tensor,
    fu_weight: Tensor, fu_bias: Tensor,
    dw_weight: Tensor, dw_bias: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Core of the Intertwined Fusion Block.

    Args:
        x_f, x_s, x_0: (B, C, H, W): frequency, spatial and early features.
        fu_weight: (2C, 2C), fu_bias: (2C,): the Fourier unit (FFT gating).
        dw_weight: (C, 1, 3, 3), dw_bias: (C,): the depthwise 3x3 conv (spatial gating).
    Returns:
        x_c = x_f + x_s + x_0, and
        x_fs = gelu(fourier_unit(x_c)) * dwconv3x3(x_c), both (B, C, H, W).
    """
    check_gated_fusion_inputs(x_f, x_s, x_0, fu_weight, fu_bias, dw_weight, dw_bias)
    C = x_f.shape[1]
    x_c = x_f + x_s + x_0
    gate_f = F.gelu(fourier_unit(x_c, fu_weight, fu_bias).to(compute_dtype(x_c.dtype)))
    xc, dww, dwb = _upcast(x_c, dw_weight, dw_bias)
    gate_s = F.conv2d(xc, dww, dwb, padding=1, groups=C)
    return x_c, (gate_f * gate_s).to(x_f.dtype)


# --------------------------------------------------------------------------- 1.4


def check_memory_attention_inputs(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None, scale: float | None = None
) -> None:
    """Validate the arguments of :func:`memory_attention`."""
    check_tensor("q", q, ndim=4)
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    B, h, _, d = q.shape
    check_shape("k", k, (B, h, None, d))
    check_shape("v", v, k.shape)
    check_like("k", k, "q", q)
    check_like("v", v, "q", q)
    check_nonempty("q", q, "(B, h, Nq, d)")
    check_nonempty("k", k, "(B, h, Nk, d)")
    Nk = k.shape[2]
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale: expected a positive float or None, got {scale!r}")
    if key_bias is not None:
        check_tensor("key_bias", key_bias, ndim=3)
        if key_bias.shape[0] not in (1, B) or key_bias.shape[1] not in (1, h):
            raise ValueError(
                f"key_bias: expected shape ({B} or 1, {h} or 1, {Nk}), got {tuple(key_bias.shape)}"
            )
        check_shape("key_bias", key_bias, (None, None, Nk))
        check_like("key_bias", key_bias, "q", q)


def attention_scale(scale: float | None, head_dim: int) -> float:
    """The logit scale of :func:`memory_attention`: ``scale``, by default ``head_dim ** -0.5``."""
    return float(scale) if scale is not None else head_dim**-0.5


def key_bias_grad(grad: Tensor, key_bias: Tensor) -> Tensor:
    """The gradient of a (B, h, Nk) ``grad`` of the broadcast bias, taken back to ``key_bias``'s
    shape and dtype: summed (deterministically, by torch) over the size-1 dims it broadcasts
    along. For kernels that write the full-size bias gradient."""
    dims = [i for i in (0, 1) if key_bias.shape[i] == 1 and grad.shape[i] != 1]
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    return grad.to(key_bias.dtype)


# A (b, head) whose largest finite key bias is below this is rebased (see rebase_key_bias): at
# |logit| >= 1024 an fp32 logit keeps under 1e-4 of absolute precision.
REBASE_BELOW = -1024.0


def rebase_key_bias(key_bias: Tensor) -> Tensor:
    """key_bias less, per (b, head), its largest finite value when that is below REBASE_BELOW.

    Softmax is unchanged by a constant added to a row, and a (b, head)'s bias shifts all its
    rows alike, so this is exact maths; but a fill value on every key (-1e9, -1e30, or finfo.min
    as attention masks often use) then no longer swamps the scores, and the result is the
    softmax of the scores rather than a uniform average (or, in the kernels, wrong gradients).
    Other biases, -inf included, come back unchanged. The shift takes no gradient.
    """
    top = key_bias.detach().amax(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(top) & (top < REBASE_BELOW), top, torch.zeros_like(top))
    return key_bias - shift


@autocast_policy("lower")
def memory_attention(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Multi-head cross-attention with an additive per-key bias (the mask prior of MAM).

    Args:
        q: (B, h, Nq, d).
        k, v: (B, h, Nk, d).
        key_bias: None or (B, h, Nk); size-1 B or h broadcast.
        scale: logit scale, default ``d ** -0.5``.
    Returns:
        o: (B, h, Nq, d), ``softmax(scale * q @ k^T + key_bias[..., None, :]) @ v``; a query
        row for which every key's bias is -inf gets 0 (and no gradient), not NaN. Biases that
        are huge and negative on every key of a head are rebased first (:func:`rebase_key_bias`).
    """
    check_memory_attention_inputs(q, k, v, key_bias, scale)
    qc, kc, vc = _upcast(q, k, v)
    logits = attention_scale(scale, q.shape[-1]) * qc @ kc.transpose(-1, -2)
    if key_bias is None:
        return (torch.softmax(logits, dim=-1) @ vc).to(q.dtype)
    logits = logits + rebase_key_bias(key_bias.to(qc.dtype))[..., None, :]
    # A row whose every key is masked out (bias -inf) attends to nothing: output 0, gradients 0,
    # as in the kernels' online softmax (docs/ops.md, memory_attention), instead of 0/0 = NaN.
    dead = torch.isneginf(logits).all(dim=-1, keepdim=True)
    p = torch.softmax(logits.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return (p @ vc).to(q.dtype)


# --------------------------------------------------------------------------- losses


def check_loss_inputs(logits: Tensor, target: Tensor) -> None:
    """Validate the (logits, target) pair of the two losses: non-empty, target in [0, 1]
    (checked with one ``aminmax``, a host sync; skipped for meta/fake tensors and while
    torch.compile traces)."""
    check_tensor("logits", logits, ndim=4)
    check_shape("logits", logits, (None, 1, None, None))
    check_tensor("target", target, ndim=4)
    if target.shape != logits.shape:
        raise ValueError(
            f"target: expected the shape of logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target: expected device {logits.device}, got {target.device}")
    check_nonempty("logits", logits, "(B, 1, H, W)")
    check_unit_range("target", target, " (a 0/255 mask? divide it by 255)")


@autocast_policy("fp32")
def structure_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel-weighted BCE + weighted IoU of PraNet/Polyp-PVT (docs/ops.md, structure_loss).

    Args:
        logits: (B, 1, H, W).
        target: (B, 1, H, W) in [0, 1] (else ValueError); data, not a variable: it gets no
            gradient even if it requires one (every backend treats it so).
    Returns:
        A scalar: mean over the batch of wbce + wiou. Boundary pixels (where the 31x31 box mean
        of the target differs from the target) weigh up to 6x.
    """
    check_loss_inputs(logits, target)
    x, t = _upcast(logits, target.detach().to(logits.dtype))
    w = 1 + 5 * (F.avg_pool2d(t, 31, stride=1, padding=15, count_include_pad=True) - t).abs()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    wbce = (w * bce).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
    p = torch.sigmoid(x)
    inter = (p * t * w).sum(dim=(2, 3))
    union = ((p + t) * w).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean().to(logits.dtype)


@autocast_policy("fp32")
def spectral_correlation_loss(logits: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """One minus the mean Pearson correlation of spectral magnitudes.

    Defined in docs/ops.md, spectral_correlation_loss.

    Args:
        logits: (B, 1, H, W).
        target: (B, 1, H, W) in [0, 1] (else ValueError); data, not a variable: it gets no
            gradient even if it requires one (every backend treats it so).
        eps: smooths the magnitude at zero (keeps the gradient finite) and the denominator.
    Returns:
        A scalar in [0, 2].
    """
    check_loss_inputs(logits, target)
    x, t = _upcast(logits, target.detach().to(logits.dtype))
    P = torch.sqrt(torch.fft.fft2(torch.sigmoid(x), norm="ortho").abs().square() + eps**2)
    G = torch.sqrt(torch.fft.fft2(t, norm="ortho").abs().square() + eps**2)
    P = P.flatten(1)
    G = G.flatten(1)
    Pc = P - P.mean(dim=1, keepdim=True)
    Gc = G - G.mean(dim=1, keepdim=True)
    r = (Pc * Gc).sum(1) / (Pc.square().sum(1).sqrt() * Gc.square().sum(1).sqrt() + eps)
    return (1 - r.mean()).to(logits.dtype)


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class OpSet:
    """One implementation of each op; modules call ops only through one of these."""

    name: str
    fft_channel_attention: Callable[..., Tensor]
    fourier_unit: Callable[..., Tensor]
    gated_fusion: Callable[..., tuple[Tensor, Tensor]]
    memory_attention: Callable[..., Tensor]
    structure_loss: Callable[..., Tensor]
    spectral_correlation_loss: Callable[..., Tensor]


REFERENCE = OpSet(
    name="reference",
    fft_channel_attention=fft_channel_attention,
    fourier_unit=fourier_unit,
    gated_fusion=gated_fusion,
    memory_attention=memory_attention,
    structure_loss=structure_loss,
    spectral_correlation_loss=spectral_correlation_loss,
)

_BACKENDS: dict[str, Callable[[], OpSet]] = {"reference": lambda: REFERENCE}
# Backends that live in other packages register themselves on import.
_PROVIDERS = {"auto": "hfsti_kernels", "triton": "hfsti_kernels", "cuda": "hfsti_kernels"}


BACKEND_ENV_VAR = "HFSTI_BACKEND"


def default_backend() -> str:
    """The backend a new model uses: ``HFSTI_BACKEND`` if set, else "reference"."""
    name = os.environ.get(BACKEND_ENV_VAR, "reference")
    known = set(_BACKENDS) | set(_PROVIDERS)
    if name not in known:
        raise ValueError(
            f"{BACKEND_ENV_VAR} environment variable: expected one of {sorted(known)}, got {name!r}"
        )
    return name


def register_backend(name: str, factory: Callable[[], OpSet]) -> None:
    """Make ``resolve_backend(name)`` return ``factory()``."""
    _BACKENDS[name] = factory


def use_backend(module: torch.nn.Module, backend: str | OpSet) -> OpSet:
    """Make every submodule that holds an ``ops`` :class:`OpSet` use ``backend``'s."""
    ops = resolve_backend(backend)
    for m in module.modules():
        if isinstance(getattr(m, "ops", None), OpSet):
            m.ops = ops
    return ops


def resolve_backend(backend: str | OpSet) -> OpSet:
    """The :class:`OpSet` for a backend name ("reference", "auto", "triton", "cuda")."""
    if isinstance(backend, OpSet):
        return backend
    if backend not in _BACKENDS and backend in _PROVIDERS:
        try:
            importlib.import_module(_PROVIDERS[backend])
        except ImportError as err:
            raise ValueError(
                f"backend: {backend!r} needs the package {_PROVIDERS[backend]!r} ({err})"
            ) from err
    if backend not in _BACKENDS:
        known = sorted(set(_BACKENDS) | set(_PROVIDERS))
        raise ValueError(f"backend: expected one of {known}, got {backend!r}")
    return _BACKENDS[backend]()
