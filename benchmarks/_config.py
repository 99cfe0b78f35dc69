"""Which benchmark configuration runs: full or quick on a GPU, tiny on the CPU.

The tiny configuration exists so that CI exercises every suite in seconds and the suites never
rot: tiny shapes, fp32 only, two timed calls, host-clock timing. Its numbers mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BenchConfig:
    name: str  # "full", "quick" or "tiny"
    device: torch.device
    dtypes: tuple[torch.dtype, ...]
    # Tiers of (batches, channels): a deadline cuts later tiers first (see _deadline.py).
    tiers: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    maps: tuple[int, ...]  # H = W of the four levels
    mem_heads: int
    mem_dim: int
    mem_frames: tuple[int, ...]  # memory frames; Nk = frames * Nq
    mem_grid: int  # the F4 grid side: Nq = grid^2
    loss_size: int
    e2e_size: int
    e2e_batch: int  # the "large batch" of the batch-throughput figure
    train_clips: int
    train_frames: int
    warmup_ms: float  # do_bench warm-up and repeat budgets (GPU)
    rep_ms: float
    cpu_rounds: int  # timed calls per measurement on the CPU
    compile_backend: str  # torch.compile backend of the "compile" peers

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def _gpu(quick: bool) -> BenchConfig:
    b8_96, b1_96 = ((8,), (96,)), ((1,), (96,))  # the model's C = 96 first
    return BenchConfig(
        name="quick" if quick else "full",
        device=torch.device("cuda"),
        dtypes=(torch.bfloat16, torch.float32)
        if quick
        else (torch.bfloat16, torch.float32, torch.float16),
        tiers=(b8_96, b1_96) if quick else (b8_96, b1_96, ((8, 1), (64,))),
        maps=(88, 44, 22, 11),
        mem_heads=4,
        mem_dim=24,
        mem_frames=(1, 4),
        mem_grid=11,
        loss_size=352,
        e2e_size=352,
        e2e_batch=32,
        train_clips=4,
        train_frames=3,
        warmup_ms=10 if quick else 25,
        rep_ms=40 if quick else 100,
        cpu_rounds=0,
        compile_backend="inductor",
    )


TINY = BenchConfig(
    name="tiny",
    device=torch.device("cpu"),
    dtypes=(torch.float32,),
    tiers=(((2,), (4,)),),
    maps=(12, 5),  # one even, one odd size
    mem_heads=2,
    mem_dim=8,
    mem_frames=(1, 2),
    mem_grid=3,
    loss_size=24,
    e2e_size=64,
    e2e_batch=2,
    train_clips=1,
    train_frames=2,
    warmup_ms=0,
    rep_ms=0,
    cpu_rounds=2,
    # Inductor compiles for ~20 s per graph on the CPU; dynamo alone still checks the tracing.
    compile_backend="eager",
)

_CACHE: dict[tuple[bool, bool], BenchConfig] = {}


def load(pytest_config) -> BenchConfig:
    """The configuration for this session, from ``--bench-quick``/``--bench-tiny`` and CUDA."""
    quick = pytest_config.getoption("--bench-quick")
    tiny = pytest_config.getoption("--bench-tiny") or not torch.cuda.is_available()
    key = (quick, tiny)
    if key not in _CACHE:
        _CACHE[key] = TINY if tiny else _gpu(quick)
        if tiny:
            # Tiny ops gain nothing from threads, and a busy CI box makes OpenMP spin (50x slower).
            torch.set_num_threads(1)
    return _CACHE[key]
