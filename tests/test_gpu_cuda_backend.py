"""The CUDA backend (``backend="cuda"``, the kernels of csrc/) on a GPU; skipped without a CUDA
device, or without an executor for CUDA tensors (the nvcc extension or CuPy; the reason says).

- Ops at the model's shapes, real CUDA tensors: the three FFT ops at C = 96 on the four level
  planes (88, 44, 22, 11; batch 2) and memory attention on the 11x11 F4 grid (121 queries, 1 or
  4 memory frames, d = 24; TAM without and MAM with the (B, 1, Nk) key bias), fp32/fp16/bf16:
  forward and every gradient vs ``hfsti.ops`` in float64 (docs/ops.md, Tolerances).
- Each op's forward + backward captured in a CUDA graph: replays on new data equal eager runs.
- ``accelerate(model, backend="cuda")`` at 352x352 with the default model (C = 96): CUDA graphs
  are captured and replayed (no Python launch during a graphed step), replay equals the eager
  path of the same segmenter, fp32 matches the reference ``VideoSegmenter``, and fp16/bf16 agree
  with the fp32 reference on CVC-612 frames as the Triton backend's path must
  (``test_gpu_accelerate.py``: same proxy, same thresholds).

On CPU the same ops and the streaming path run in the host emulator (``test_cuda_*.py``).
"""

from __future__ import annotations

import functools

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from hfsti_kernels.cuda import runtime as rt  # noqa: E402

try:
    rt.require(torch.empty(0, device="cuda"))
except ValueError as _e:
    pytest.skip(str(_e), allow_module_level=True)

from cvc_streaming import check_agreement, check_replay_equals_eager, cvc_videos  # noqa: E402
from fft_op_suite import KERNEL, OPS, check_against_reference  # noqa: E402
from helpers import CVC612, TOLERANCE, assert_rel_close, graph_replays, rel_err  # noqa: E402

import hfsti_kernels  # noqa: E402
from hfsti import HFSTIConfig, HFSTINet, VideoSegmenter  # noqa: E402
from hfsti.ops import memory_attention as reference_attention  # noqa: E402
from hfsti_kernels import _registry  # noqa: E402
from hfsti_kernels._inputs import attention_inputs, fft_op_inputs  # noqa: E402
from hfsti_kernels.accelerate import accelerate  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = torch.device("cuda")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
B, C, PLANES = 2, 96, (88, 44, 22, 11)
# (B, h, Nq, Nk, d): TAM/MAM of the model at 352x352 (C = 96 over 4 heads), T_m = 1 and 4.
ATTENTION = [(8, 4, 121, 121, 24), (8, 4, 121, 484, 24)]
SIZE = 352


@pytest.fixture(autouse=True)
def _cuda_kernels_registered():
    """A failed import of a CUDA op module would make backend="cuda" run Triton silently."""
    for op in (*OPS, "memory_attention"):
        fn = _registry.implementation(op, "cuda")
        assert fn is not _registry.implementation(op, "triton"), f"{op}: no CUDA implementation"


# --------------------------------------------------------------------------- ops


def fft_inputs(op, size, dtype, seed=0):
    return fft_op_inputs(op, B, C, size, size, dtype, seed=seed, c_out=C, device=DEV)


def attn_inputs(shape, dtype, bias, seed=0):
    """Token-major (B, N, h, d) views as the model builds them; MAM's (B, 1, Nk) key bias."""
    kind = "bcast_h" if bias else "none"
    return attention_inputs(shape, dtype, kind, seed, device=DEV, token_major=True)


def run_attention(fn, q, k, v, key_bias, do):
    """(o, dq, dk, dv[, dkey_bias]) of ``fn`` for the output gradient ``do``."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if key_bias is not None:
        leaves.append(key_bias.detach().clone().requires_grad_())
    o = fn(*leaves[:3], leaves[3] if key_bias is not None else None)
    return (o, *torch.autograd.grad(o, leaves, do.to(o.dtype)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", PLANES)
@pytest.mark.parametrize("op", OPS)
def test_fft_ops_match_reference(op, size, dtype, launches):
    fn = functools.partial(KERNEL[op], backend="cuda")
    check_against_reference(op, fft_inputs(op, size, dtype), TOLERANCE[dtype], fn=fn)
    assert launches, "no CUDA kernel ran"


@pytest.mark.parametrize("bias", [False, True], ids=["tam", "mam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ATTENTION, ids=str)
def test_memory_attention_matches_reference(shape, dtype, bias, launches):
    q, k, v, key_bias = attn_inputs(shape, dtype, bias)
    do = torch.randn(q.shape, device=DEV, dtype=torch.float64)
    fn = functools.partial(hfsti_kernels.memory_attention, backend="cuda")
    got = run_attention(fn, q, k, v, key_bias, do)
    as64 = [t.double() if t is not None else None for t in (q, k, v, key_bias)]
    want = run_attention(reference_attention, *as64, do)
    for name, a, b in zip(["o", "dq", "dk", "dv", "dkey_bias"], got, want):
        assert a.dtype == dtype, name
        assert_rel_close(a, b, TOLERANCE[dtype], f"{name} {dtype}")
    assert any(n.startswith("hfsti_ma_") for n in launches), "no CUDA kernel ran"


@pytest.mark.parametrize("op", [*OPS, "memory_attention"])
def test_ops_capture_in_cuda_graphs(op):
    """Replays equal eager runs: bitwise where only csrc kernels run; fourier_unit and
    gated_fusion mix channels with torch matmuls, which cuBLAS may run with another (not
    bitwise-identical) algorithm inside a capture, hence 1e-6 for those."""
    if op == "memory_attention":
        fn = functools.partial(hfsti_kernels.memory_attention, backend="cuda")

        def fresh(seed):
            return [t.contiguous() for t in attn_inputs(ATTENTION[1], torch.float32, True, seed)]
    else:
        fn = functools.partial(KERNEL[op], backend="cuda")

        def fresh(seed):
            return fft_inputs(op, 44, torch.float32, seed)

    static = [t.requires_grad_() for t in fresh(0)]
    for got, want in graph_replays(fn, static, (1, 2), fresh):
        for i, (a, b) in enumerate(zip(got, want)):
            if op in ("fft_channel_attention", "memory_attention"):
                assert torch.equal(a, b), f"{op} result {i}: replay != eager"
            else:
                assert_rel_close(a, b, 1e-6, f"{op} result {i} (replay vs eager)")


# --------------------------------------------------------------------------- accelerate


def make_model(memory_frames: int) -> HFSTINet:
    torch.manual_seed(0)
    return HFSTINet(HFSTIConfig(memory_frames=memory_frames)).to(DEV).eval()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("memory_frames", [1, 2])
def test_accelerate_cuda_backend_replay_equals_eager(memory_frames, dtype, tol, launches):
    """The CUDA backend's steps are captured: a graphed step launches nothing from Python and
    equals the eager path of the same code, frame by frame (first frame, filling and full
    bank) and across a reset; the tolerance only allows cuBLAS/cuDNN choosing another
    algorithm inside a capture (as test_gpu_accelerate.py)."""
    model = make_model(memory_frames)
    graphed = accelerate(model, dtype=dtype, batch_size=2, backend="cuda")
    eager = accelerate(model, dtype=dtype, batch_size=2, cuda_graphs=False, backend="cuda")
    assert graphed.graphed and not eager.graphed and graphed.backend == "cuda"

    def steps(frame):
        before = len(launches)
        out = graphed.step(frame)
        assert len(launches) == before, "a graphed step launched kernels from Python"
        want = eager.step(frame)
        assert len(launches) > before, "the eager step ran no CUDA kernel"
        return out, want

    check_replay_equals_eager(graphed, eager, tol, steps)


def test_accelerate_cuda_backend_fp32_matches_reference():
    """fp32, graphed, CUDA backend vs the reference model, frame by frame."""
    model = make_model(2)
    acc, ref = accelerate(model, dtype=torch.float32, backend="cuda"), VideoSegmenter(model)
    assert acc.graphed
    g = torch.Generator(device=DEV).manual_seed(2)
    for t in range(4):
        frame = torch.rand(1, 3, SIZE, SIZE, device=DEV, generator=g)
        err = rel_err(acc.step(frame), ref.step(frame))
        print(f"frame {t}: rel error vs reference {err:.2e}")
        assert err < 1e-3


@pytest.mark.skipif(not CVC612.is_dir(), reason=f"CVC-612 not found at {CVC612}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_accelerate_cuda_backend_reduced_precision_on_real_frames(dtype):
    """fp16/bf16 graphed streaming on the CUDA backend vs the fp32 reference, two videos as a
    batch, with test_gpu_accelerate.py's agreement proxy and thresholds (see its notes)."""
    model = make_model(1)
    acc, ref = accelerate(model, dtype=dtype, batch_size=2, backend="cuda"), VideoSegmenter(model)
    video = cvc_videos(2)
    for t in range(video.shape[0]):
        out, want = acc.step(video[t]), ref.step(video[t])
        assert out.dtype == torch.float32 and out.shape == want.shape
        check_agreement(out, want, dtype, f"cuda {dtype} frame {t}")
