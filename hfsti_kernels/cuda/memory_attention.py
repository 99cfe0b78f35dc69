"""CUDA backend of ``memory_attention``: ``o = softmax(scale q k^T + key_bias) v``.

The kernels are ``csrc/memory_attention.cu`` (design, limits and the cost of its FMA path in
its header): a flash-attention forward saving the base-2 row log-sum-exp, and a two-kernel
backward (dq with the row sums delta, then dk, dv and the key-bias gradient per key tile), every
reduction in a fixed order, so all gradients are bitwise reproducible. Two ``torch.library``
ops, ``hfsti_cuda::memory_attention_fwd`` and ``hfsti_cuda::memory_attention_bwd``, with fake
rules and autograd; registered as the ``"cuda"`` implementation of the public op.

Inputs are read through their strides (no copies; a size-1 B or h of key_bias is a zero
stride). The head dim d is padded to a tile of 32, 64 or 128 (the kernel template).
"""

import torch
from torch import Tensor

from hfsti._checks import check_head_dim, compute_dtype
from hfsti.ops import attention_scale, key_bias_grad, rebase_key_bias
from hfsti_kernels._registry import kernel_op, register_implementation
from hfsti_kernels.cuda import runtime as rt

__all__ = ["memory_attention", "MAX_HEAD_DIM"]

MAX_HEAD_DIM = 128
LOG2E = 1.4426950408889634
THREADS = 128  # csrc/memory_attention.cu: kThreads
BLOCK_M = BLOCK_N = 32  # kBM, kBN
_LDS = BLOCK_N + 1  # row stride of a score tile


def _head_tile(d: int) -> int:
    """The padded head-dim tile D of the kernel template (32, 64 or 128)."""
    return 32 if d <= 32 else 64 if d <= 64 else 128


def _smem(kernel: str, D: int, dtype: torch.dtype) -> int:
    """Dynamic shared memory in bytes, the layout carved at the top of each kernel."""
    ld = D + 1
    elems = {
        "fwd": (BLOCK_M + 2 * BLOCK_N) * ld + BLOCK_M * _LDS + BLOCK_N + 3 * BLOCK_M,
        "dq": 2 * (BLOCK_M + BLOCK_N) * ld + BLOCK_M * _LDS + BLOCK_N + 2 * BLOCK_M,
        "dkdv": 2 * (BLOCK_M + BLOCK_N) * ld + 2 * BLOCK_M * _LDS + BLOCK_N + 2 * BLOCK_M,
    }[kernel]
    return elems * torch.finfo(compute_dtype(dtype)).bits // 8


def _strided(t: Tensor) -> list:
    """A 4-D tensor as kernel arguments: its pointer and its four strides."""
    return [rt.ptr(t), *(rt.i64(s) for s in t.stride())]


def _bias_args(key_bias: Tensor | None) -> list:
    """key_bias's pointer and (B, h, Nk) strides; a broadcast dim gets stride 0, None a null."""
    if key_bias is None:
        return [rt.ptr(None), rt.i64(0), rt.i64(0), rt.i64(0)]
    sb, sh, sn = key_bias.stride()
    sb = 0 if key_bias.shape[0] == 1 else sb
    sh = 0 if key_bias.shape[1] == 1 else sh
    return [rt.ptr(key_bias), rt.i64(sb), rt.i64(sh), rt.i64(sn)]


def _launch(kernel: str, q: Tensor, blocks: int, args: list, sizes: tuple, scales) -> None:
    """Launch ``kernel``'s instantiation for q's dtype and head tile over ``blocks`` blocks;
    ``sizes`` = (H, nq, nk, d), ``scales`` the trailing acc_t scalars."""
    D = _head_tile(q.shape[-1])
    scalar = rt.f64 if q.dtype == torch.float64 else rt.f32
    rt.launch(
        rt.kernel_name(f"hfsti_ma_{kernel}", q.dtype, D),
        grid=(blocks,),
        block=(THREADS,),
        smem=_smem(kernel.removeprefix("bwd_"), D, q.dtype),
        args=[*args, *(rt.i32(n) for n in sizes), *(scalar(s) for s in scales)],
        device_tensor=q,
    )


def _tiles(n: int, block: int) -> int:
    return (n + block - 1) // block


def _fwd_outputs(q: Tensor) -> tuple[Tensor, Tensor]:
    """Empty o (B, h, Nq, d) and lse (B, h, Nq) in the accumulation dtype."""
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=compute_dtype(q.dtype))


def _fwd_fake(q, k, v, key_bias, scale):
    return _fwd_outputs(q)


@kernel_op("hfsti_cuda::memory_attention_fwd", fake=_fwd_fake)
def _fwd(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """o (B, h, Nq, d) and the base-2 log-sum-exp (B, h, Nq) saved for the backward."""
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    o, lse = _fwd_outputs(q)
    args = [*_strided(q), *_strided(k), *_strided(v), *_bias_args(key_bias), rt.ptr(o), rt.ptr(lse)]
    blocks = _tiles(n_q, BLOCK_M) * B * H
    _launch("fwd", q, blocks, args, (H, n_q, n_k, d), (scale * LOG2E,))
    return o, lse


def _bwd_fake(do, q, k, v, key_bias, o, lse, scale):
    dbias = key_bias.new_empty(key_bias.shape) if key_bias is not None else q.new_empty((0,))
    return q.new_empty(q.shape), k.new_empty(k.shape), k.new_empty(k.shape), dbias


@kernel_op("hfsti_cuda::memory_attention_bwd", fake=_bwd_fake)
def _bwd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None,
    o: Tensor, lse: Tensor, scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """dq, dk, dv and dkey_bias (key_bias's shape; an empty (0,) tensor without key_bias)."""
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    acc = compute_dtype(q.dtype)
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), k.new_empty(k.shape)
    has_bias = key_bias is not None
    dbias = q.new_empty((B, H, n_k) if has_bias else (0,), dtype=acc)
    delta = q.new_empty((B, H, n_q), dtype=acc)
    inputs = [*_strided(q), *_strided(k), *_strided(v), *_bias_args(key_bias)]
    sizes, scales = (H, n_q, n_k, d), (scale * LOG2E, scale)
    # dq first: it also writes delta, which the dk/dv kernel reads.
    args = [*inputs, *_strided(o), *_strided(do), rt.ptr(lse), rt.ptr(delta), rt.ptr(dq)]
    _launch("bwd_dq", q, _tiles(n_q, BLOCK_M) * B * H, args, sizes, scales)
    args = [*inputs, *_strided(do), rt.ptr(lse), rt.ptr(delta), rt.ptr(dk), rt.ptr(dv),
            rt.ptr(dbias if has_bias else None)]  # fmt: skip
    _launch("bwd_dkdv", q, _tiles(n_k, BLOCK_N) * B * H, args, sizes, scales)
    return dq, dk, dv, (key_bias_grad(dbias, key_bias) if has_bias else dbias)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, key_bias, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, key_bias, o, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do: Tensor, dlse: Tensor | None):
    q, k, v, key_bias, o, lse = ctx.saved_tensors
    dq, dk, dv, dbias = _bwd(do, q, k, v, key_bias, o, lse, ctx.scale)
    return dq, dk, dv, (dbias if key_bias is not None else None), None


_fwd.register_autograd(_backward, setup_context=_setup_context)


def memory_attention(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None = None, scale: float | None = None,
    *, fp32_precision: str = "tf32x3",
) -> Tensor:  # fmt: skip
    """:func:`hfsti.ops.memory_attention` in the CUDA kernels (arguments validated by the public
    op; any strides; d <= 128; a key_bias gradient keeps key_bias's shape). ``fp32_precision`` is
    accepted for the public signature: these kernels compute fp32 inputs with IEEE fp32 FMAs (no
    tensor cores), at least as accurate as "tf32x3". The backward is deterministic."""
    check_head_dim(q, MAX_HEAD_DIM, "the CUDA kernels")
    scale = attention_scale(scale, q.shape[-1])
    if key_bias is not None:
        key_bias = rebase_key_bias(key_bias)
    o, _ = _fwd(q, k, v, key_bias, scale)
    return o


register_implementation("memory_attention", "cuda", memory_attention)
