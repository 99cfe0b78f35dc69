"""Fixed-order reductions of per-tile partial sums, shared by the loss kernels.

A loss's first pass writes one row of partial sums per (image, tile), a contiguous
(B, N_TILES, N_FIELDS) array; its one-program finalize kernel reduces each image's rows. The
order is fixed, so the result is bitwise reproducible without atomics: BLOCK_T lanes take tiles
t0 + lane for t0 = 0, BLOCK_T, ... in turn, then one tree reduction sums the lanes.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def program_row(PART_PTR, N_FIELDS: tl.constexpr):
    """Pointer to the first field of this program's row of PART_PTR (B, N_TILES, N_FIELDS) on
    a grid (B, tiles along H, tiles along W), N_TILES the product of the last two (tiles in
    row-major order)."""
    b_tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    return PART_PTR + (b_tile * tl.num_programs(2) + tl.program_id(2)) * N_FIELDS


@triton.jit
def tile_rows(PART_PTR, b, t0, N_TILES, N_FIELDS: tl.constexpr, BLOCK_T: tl.constexpr):
    """Pointers to the first field of the rows of tiles t0 .. t0 + BLOCK_T - 1 of image b in
    PART_PTR (B, N_TILES, N_FIELDS), and the mask of the tiles that exist."""
    t = t0 + tl.arange(0, BLOCK_T)
    return PART_PTR + (b * N_TILES + t) * N_FIELDS, t < N_TILES


@triton.jit
def column_sum(
    PART_PTR, b, N_TILES, N_FIELDS: tl.constexpr, COL: tl.constexpr, BLOCK_T: tl.constexpr
):
    """The sum over the tiles t of image b of PART_PTR[b, t, COL], in the fixed order above."""
    acc = tl.zeros((BLOCK_T,), dtype=PART_PTR.dtype.element_ty)
    for t0 in range(0, N_TILES, BLOCK_T):
        ptr, m = tile_rows(PART_PTR, b, t0, N_TILES, N_FIELDS, BLOCK_T)
        acc += tl.load(ptr + COL, mask=m, other=0.0)
    return tl.sum(acc, axis=0)
