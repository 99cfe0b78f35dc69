"""Timing (the figure of record) and the two ceilings the floors are made of.

GPU: ``triton.testing.do_bench``, CUDA events around each call, the L2 cache flushed before
each call (so repeated calls on one input set do not time the cache), warm-up first so that
compilation and autotuning stay out, and the median of the repeats. CPU (tiny configuration):
the host clock around ``cpu_rounds`` calls after one warm-up call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from _config import BenchConfig

QUANTILES = (0.5, 0.2, 0.8)


def measure(fn: Callable[[], object], cfg: BenchConfig) -> dict:
    """Time ``fn()``: {"median_ms", "p20_ms", "p80_ms"}."""
    if cfg.cuda:
        from triton.testing import do_bench

        med, p20, p80 = do_bench(
            fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms, quantiles=list(QUANTILES)
        )
    else:
        fn()
        times = []
        for _ in range(max(cfg.cpu_rounds, 1)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        med, p20, p80 = statistics.median(times), min(times), max(times)
    return {"median_ms": med, "p20_ms": p20, "p80_ms": p80}


def synced(fn: Callable[[], object], cfg: BenchConfig) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation, for pytest-benchmark's host clock."""

    def call() -> None:
        fn()
        if cfg.cuda:
            torch.cuda.synchronize()

    return call


def run(benchmark, fn: Callable[[], object], cfg: BenchConfig) -> dict:
    """Measure ``fn`` for the record and let pytest-benchmark time it too.

    ``extra_info["median_ms"]`` (do_bench on GPU) is the figure of record. pytest-benchmark's
    own statistics time a few synchronised calls on the host clock: a cross-check that includes
    launch and synchronisation overhead, cheap because its rounds are few.
    """
    stats = measure(fn, cfg)
    benchmark.pedantic(synced(fn, cfg), rounds=3 if cfg.cuda else 1, warmup_rounds=1)
    benchmark.extra_info.update(stats)
    return stats


_GEMMS = (
    ("float32", torch.float32),
    ("tf32", torch.float32),
    ("bfloat16", torch.bfloat16),
    ("float16", torch.float16),
)


def ceilings(cfg: BenchConfig) -> dict:
    """Measured memory bandwidth (GB/s) and matrix throughput per dtype (TFLOP/s).

    Bandwidth: a device-to-device copy, bytes read plus bytes written. Matrix throughput: a
    square product of random matrices per dtype; "float32" with TF32 off (IEEE) and "tf32"
    with it on (the rate the kernels' fp32 products run at: TF32 or 3xTF32 tensor-core dots).
    """
    n_copy, n_mm = (2**28, 8192) if cfg.cuda else (2**20, 256)
    src = torch.rand(n_copy, device=cfg.device)
    dst = torch.empty_like(src)
    copy_ms = measure(lambda: dst.copy_(src), cfg)["median_ms"]
    gemm = {}
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        for name, dtype in _GEMMS:
            torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
            n = n_mm // 2 if name == "float32" else n_mm  # IEEE fp32 is ~15x slower
            a = torch.randn(n, n, device=cfg.device, dtype=dtype)
            b = torch.randn(n, n, device=cfg.device, dtype=dtype)
            ms = measure(lambda a=a, b=b: a @ b, cfg)["median_ms"]
            gemm[name] = 2 * n**3 / ms / 1e9
    finally:
        torch.set_float32_matmul_precision(previous)
    return {"bandwidth_gbs": 2 * src.nbytes / copy_ms / 1e6, "gemm_tflops": gemm}
