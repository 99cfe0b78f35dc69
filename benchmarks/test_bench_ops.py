"""Per-op benchmarks: every op x shape x dtype x mode x provider of the configuration.

Each test records in ``extra_info`` its median (the figure of record), the op's floor
``max(min bytes / bandwidth, FLOPs / matrix throughput)`` and the achieved fraction of it.
"""

from __future__ import annotations

import _cases
import _config
import _timing
import torch
from _providers import implementation


def pytest_generate_tests(metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = _cases.cases(_config.load(metafunc.config))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _floor(case, args, diff, outs, ceilings) -> dict:
    """Minimum bytes: every input read once, every output written once (and in fwd_bwd every
    output gradient read and every input gradient written once)."""
    nbytes = sum(t.nbytes for t in (*args, *outs))
    if case.mode == "fwd_bwd":
        nbytes += sum(t.nbytes for t in (*outs, *diff))
    n_flops = _cases.flops(case)
    memory_ms = nbytes / ceilings["bandwidth_gbs"] / 1e6
    # The op's FLOPs (transforms counted as FFTs, _cases.flops) at the dtype's tensor-core GEMM
    # rate (TF32 for fp32), the fastest this GPU computes: a lower bound for every provider,
    # which leaves the FFT ops bound by the bytes they must move.
    rate = ceilings["gemm_tflops"]["tf32" if case.dtype == torch.float32 else case.dtype_name]
    compute_ms = n_flops / rate / 1e9
    return {
        "bytes": nbytes,
        "flops": n_flops,
        "floor_ms": max(memory_ms, compute_ms),
        "bound": "memory" if memory_ms >= compute_ms else "compute",
    }


def test_op(case, benchmark, cfg, ceilings) -> None:
    fn = implementation(case, cfg)
    args, diff = _cases.inputs(case, cfg.device)
    if case.mode == "fwd":
        call = torch.no_grad()(lambda: fn(*args))
        outs = _as_tuple(call())  # the first call compiles where the provider does
    else:
        outs = tuple(o.detach() for o in _as_tuple(fn(*args)))
        grads = [torch.randn_like(o) for o in outs]

        def call():
            # autograd.grad returns fresh gradients: no accumulation into .grad between calls
            return torch.autograd.grad(_as_tuple(fn(*args)), diff, grads)

    benchmark.group = f"{case.op} {case.shape} {case.dtype_name} {case.mode}"
    benchmark.extra_info.update(
        op=case.op, shape=case.shape, dtype=case.dtype_name, mode=case.mode,
        provider=case.provider,
    )  # fmt: skip
    stats = _timing.run(benchmark, call, cfg)
    floor = _floor(case, args, diff, outs, ceilings)
    floor["floor_fraction"] = floor["floor_ms"] / stats["median_ms"]
    benchmark.extra_info.update(floor, **ceilings)
    assert stats["median_ms"] > 0
    for out in outs:
        assert torch.isfinite(out).all(), "non-finite output"
