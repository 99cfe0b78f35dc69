"""The Triton losses on a GPU, at the model's shapes (skipped without CUDA).

Loss and logits gradient of structure_loss and spectral_correlation_loss against ``hfsti.ops``
evaluated in float64, in fp32/fp16/bf16 at the tolerances of docs/ops.md, at 352x352 (the
model's prediction size) and 88x88; torch.compile (inductor, fullgraph); CUDA-graph capture
and replay; bitwise determinism.
"""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from helpers import TOLERANCE, assert_rel_close  # noqa: E402

from hfsti import ops as ref  # noqa: E402
from hfsti_kernels._inputs import prediction_inputs  # noqa: E402
from hfsti_kernels.ops.spectral_correlation_loss import spectral_correlation_loss  # noqa: E402
from hfsti_kernels.ops.structure_loss import structure_loss  # noqa: E402

pytestmark = pytest.mark.gpu

KERNEL = {"structure_loss": structure_loss, "spectral_correlation_loss": spectral_correlation_loss}
REFERENCE = {
    "structure_loss": ref.structure_loss,
    "spectral_correlation_loss": ref.spectral_correlation_loss,
}
LOSSES = tuple(KERNEL)
SHAPES = [(8, 1, 352, 352), (8, 1, 88, 88)]


def make_inputs(shape, seed=0):
    """Smooth logits of a plausible prediction and a binary blob target, in float64 on CUDA."""
    return prediction_inputs(shape, seed, device="cuda")


def loss_and_grad(fn, logits, target):
    x = logits.detach().requires_grad_()
    out = fn(x, target)
    (dx,) = torch.autograd.grad(out, x)
    return out, dx


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(loss, shape, dtype):
    logits, target = make_inputs(shape)
    x, t = logits.to(dtype), target.to(dtype)
    out, dx = loss_and_grad(lambda a, b: KERNEL[loss](a, b, backend="triton"), x, t)
    assert out.dtype == dtype and dx.dtype == dtype
    r_out, r_dx = loss_and_grad(REFERENCE[loss], x.double(), t.double())
    assert_rel_close(out, r_out, TOLERANCE[dtype], f"{loss} {dtype} forward")
    assert_rel_close(dx, r_dx, TOLERANCE[dtype], f"{loss} {dtype} d/dlogits")


@pytest.mark.parametrize("loss", LOSSES)
def test_float64_through_triton(loss):
    logits, target = make_inputs((2, 1, 88, 88), seed=1)
    out, dx = loss_and_grad(lambda a, b: KERNEL[loss](a, b, backend="triton"), logits, target)
    r_out, r_dx = loss_and_grad(REFERENCE[loss], logits, target)
    assert_rel_close(out, r_out, TOLERANCE[torch.float64], f"{loss} float64 forward")
    assert_rel_close(dx, r_dx, TOLERANCE[torch.float64], f"{loss} float64 d/dlogits")


@pytest.mark.parametrize("loss", LOSSES)
def test_deterministic(loss):
    logits, target = make_inputs((8, 1, 352, 352), seed=2)
    fn = lambda a, b: KERNEL[loss](a, b, backend="triton")  # noqa: E731
    a = loss_and_grad(fn, logits.float(), target.float())
    b = loss_and_grad(fn, logits.float(), target.float())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"{loss}: runs differ"


@pytest.mark.parametrize("loss", LOSSES)
def test_compile_inductor_fullgraph(loss):
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: KERNEL[loss](a, b, backend="triton"), fullgraph=True)
    logits, target = make_inputs((4, 1, 88, 88), seed=3)
    out, dx = loss_and_grad(compiled, logits.float(), target.float())
    r_out, r_dx = loss_and_grad(REFERENCE[loss], logits, target)
    assert_rel_close(out, r_out, 1e-5, f"{loss} compiled forward")
    assert_rel_close(dx, r_dx, 1e-5, f"{loss} compiled d/dlogits")


@pytest.mark.parametrize("loss", LOSSES)
def test_cuda_graph_capture(loss):
    logits, target = make_inputs((2, 1, 352, 352), seed=4)
    x = logits.float().requires_grad_()
    t = target.float()
    fn = KERNEL[loss]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up: compile kernels, fill the DFT cache
        for _ in range(2):
            (dx,) = torch.autograd.grad(fn(x, t, backend="triton"), x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(x, t, backend="triton")
        (dx,) = torch.autograd.grad(out, x)
    new_logits, new_target = make_inputs((2, 1, 352, 352), seed=5)
    with torch.no_grad():
        x.copy_(new_logits.float())
        t.copy_(new_target.float())
    graph.replay()
    torch.cuda.synchronize()
    r_out, r_dx = loss_and_grad(REFERENCE[loss], x.double(), t.double())
    assert_rel_close(out, r_out, 1e-5, f"{loss} graph replay forward")
    assert_rel_close(dx, r_dx, 1e-5, f"{loss} graph replay d/dlogits")
