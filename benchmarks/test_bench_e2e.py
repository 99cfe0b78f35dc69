"""End-to-end benchmarks: streaming frames/s (batch 1 and a large batch), a training step, and
peak GPU memory, for the reference model and its accelerated variants.

Providers: ``eager_fp32`` (the reference model), ``patched_fp32`` (``hfsti_kernels.patch``,
Triton ops), ``compile`` (``torch.compile`` of the reference ``model.step``), ``accelerated``
(``hfsti_kernels.accelerate``, bf16 with CUDA graphs; skipped while that module is absent) and
``accelerated_cuda`` (the same on the CUDA backend, ``backend="cuda"``: the csrc kernels on the
nvcc extension or CuPy; skipped without CUDA, as the host emulator would take minutes a frame).
Training runs as ``hfsti train`` does: AdamW, bf16 autocast on a GPU; providers ``eager``,
``patched`` (Triton ops) and ``patched_cuda`` (the CUDA backend's ops; the losses, which have no
CUDA kernel, run Triton's).
"""

from __future__ import annotations

import importlib

import _timing
import pytest
import torch

from hfsti import HFSTIConfig, HFSTINet, HybridLoss, VideoSegmenter

# compile last: it is slowest
STREAM = ("eager_fp32", "patched_fp32", "accelerated", "accelerated_cuda", "compile")
TRAIN = ("eager", "patched", "patched_cuda")


def _model(cfg) -> HFSTINet:
    torch.manual_seed(0)
    return HFSTINet(HFSTIConfig(input_size=cfg.e2e_size)).to(cfg.device)


def _triton_ok(cfg) -> None:
    from hfsti_kernels._backend import interpreter_enabled

    if not (cfg.cuda or interpreter_enabled()):
        pytest.skip("Triton ops need CUDA")


def _cuda_kernels_ok(cfg) -> None:
    from hfsti_kernels.cuda import runtime

    if not cfg.cuda:
        pytest.skip("CUDA backend: needs CUDA (emulated, the model takes minutes a frame)")
    try:
        runtime.require(torch.empty(0, device=cfg.device))
    except ValueError as err:
        pytest.skip(f"CUDA backend: {err}")


def _segmenter(provider: str, batch: int, cfg):
    if provider == "patched_fp32":
        _triton_ok(cfg)
        import hfsti_kernels

        return VideoSegmenter(hfsti_kernels.patch(_model(cfg).eval(), "triton"))
    if provider == "compile":
        if not cfg.cuda:
            pytest.skip("compile: the whole model takes minutes to compile on the CPU")
        model = _model(cfg).eval()
        model.step = torch.compile(model.step, dynamic=False)
        return VideoSegmenter(model)
    if provider in ("accelerated", "accelerated_cuda"):
        try:
            accelerate = importlib.import_module("hfsti_kernels.accelerate").accelerate
        except (ImportError, AttributeError) as err:
            pytest.skip(f"{provider}: hfsti_kernels.accelerate is not available ({err})")
        backend = "auto"
        if provider == "accelerated_cuda":
            _cuda_kernels_ok(cfg)
            backend = "cuda"
        # On the CPU "accelerated" runs eagerly, with the reference ops: wiring only.
        return accelerate(
            _model(cfg), torch.bfloat16, cuda_graphs=True, batch_size=batch, backend=backend
        )
    return VideoSegmenter(_model(cfg).eval())


def _reset_peak(cfg) -> None:
    if cfg.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(cfg) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if cfg.cuda else None


@pytest.mark.parametrize("provider", STREAM)
@pytest.mark.parametrize("kind", ["stream_b1", "batch"])
def test_stream(kind, provider, benchmark, cfg) -> None:
    """Steady-state frames/s: the memory bank is full before timing starts."""
    batch = 1 if kind == "stream_b1" else cfg.e2e_batch
    _reset_peak(cfg)
    seg = _segmenter(provider, batch, cfg)
    frame = torch.rand(batch, 3, cfg.e2e_size, cfg.e2e_size, device=cfg.device)
    seg.reset()
    for _ in range(3):  # first frame (empty memory), then steady state; compiles and captures
        seg.step(frame)
    benchmark.group = f"e2e {kind}"
    stats = _timing.run(benchmark, lambda: seg.step(frame), cfg)
    benchmark.extra_info.update(
        e2e=kind, provider=provider, batch=batch, size=cfg.e2e_size,
        fps=batch * 1e3 / stats["median_ms"], peak_mem_mb=_peak_mb(cfg),
    )  # fmt: skip


@pytest.mark.parametrize("provider", TRAIN)
def test_train_step(provider, benchmark, cfg) -> None:
    """One optimizer step on a batch of clips: forward, hybrid loss, backward, AdamW."""
    if provider == "patched":
        _triton_ok(cfg)
    if provider == "patched_cuda":
        _cuda_kernels_ok(cfg)
    _reset_peak(cfg)
    model, loss_fn = _model(cfg).train(), HybridLoss()
    if provider != "eager":
        import hfsti_kernels

        backend = "cuda" if provider == "patched_cuda" else "triton"
        hfsti_kernels.patch(model, backend)
        hfsti_kernels.patch(loss_fn, backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    shape = (cfg.train_clips, cfg.train_frames)
    frames = torch.rand(*shape, 3, cfg.e2e_size, cfg.e2e_size, generator=g).to(cfg.device)
    target = (torch.rand(*shape, 1, cfg.e2e_size, cfg.e2e_size, generator=g) > 0.5).float()
    target = target.to(cfg.device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(cfg.device.type, torch.bfloat16, enabled=cfg.cuda):
            loss = loss_fn(model(frames), target)
        loss.backward()
        opt.step()

    step()
    benchmark.group = "e2e train_step"
    stats = _timing.run(benchmark, step, cfg)
    benchmark.extra_info.update(
        e2e="train_step", provider=provider, batch=cfg.train_clips, frames=cfg.train_frames,
        size=cfg.e2e_size, clips_per_s=cfg.train_clips * 1e3 / stats["median_ms"],
        peak_mem_mb=_peak_mb(cfg),
    )  # fmt: skip
