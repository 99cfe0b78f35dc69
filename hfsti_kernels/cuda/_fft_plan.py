"""Launch plans shared by the CUDA FFT ops (fft_channel_attention, fourier_unit, gated_fusion).

Every FFT kernel in ``csrc/`` runs one thread block per (b, c) plane (a grid-stride loop over
planes) with a block workspace laid out as ``hfsti/fft.h`` says: twiddle tables of W and H
complex values, then ``nbuf`` buffers of :func:`plane_elems` complex values, in the compute type
(float64 for float64 inputs, else float32). The workspace is dynamic shared memory when it fits
in :data:`SMEM_LIMIT`; otherwise the kernels take a global scratch array of one such slice per
block, and the grid is capped at :data:`WORKSPACE_GRID` blocks to bound that scratch (e.g. the
fp64 backward of fft_channel_attention at 88x88 needs 253 KB a plane).
"""

from __future__ import annotations

import torch

from hfsti._checks import compute_dtype
from hfsti_kernels.cuda import runtime as rt

# sm_90's largest dynamic shared memory per block (after the opt-in), in bytes.
SMEM_LIMIT = 227 * 1024
# Grid caps: planes beyond them are looped over inside each block.
SMEM_GRID = 65535
WORKSPACE_GRID = 264  # two blocks per SM of an H100/H200 (132 SMs)


def plane_elems(H: int, W: int) -> int:
    """Complex values per workspace buffer: max(ceil(H/2) * W, H * (W//2 + 1))."""
    return max((H + 1) // 2 * W, H * (W // 2 + 1))


def threads(H: int, W: int) -> int:
    """Threads per block: about 8 pixels a thread, a multiple of 32 in [32, 512] (the kernels'
    ``__launch_bounds__``)."""
    return min(512, max(32, (H * W // 8 + 31) // 32 * 32))


def launch(
    name: str,
    x: torch.Tensor,
    args: list,
    planes: int,
    H: int,
    W: int,
    nbuf: int,
    static_smem: int = 0,
) -> None:
    """Launch ``name``'s instantiation for ``x.dtype`` over ``planes`` planes of H x W.

    ``args`` are the kernel's leading typed arguments; the common tail
    ``(int planes, int H, int W, acc* ws)`` is appended here, ``ws`` a global scratch array when
    the workspace does not fit in shared memory beside the kernel's ``static_smem`` bytes of
    static shared memory (else null).
    """
    if planes == 0:
        return
    acc = compute_dtype(x.dtype)
    per_block = W + H + nbuf * plane_elems(H, W)  # complex values
    nbytes = 2 * per_block * torch.finfo(acc).bits // 8
    if nbytes + static_smem <= SMEM_LIMIT:
        grid, smem, ws = min(planes, SMEM_GRID), nbytes, None
    else:
        grid, smem = min(planes, WORKSPACE_GRID), 0
        ws = torch.empty(2 * grid * per_block, dtype=acc, device=x.device)
    rt.launch(
        rt.kernel_name(name, x.dtype),
        grid=(grid,),
        block=(threads(H, W),),
        smem=smem,
        args=[*args, rt.i32(planes), rt.i32(H), rt.i32(W), rt.ptr(ws)],
        device_tensor=x,
    )
