"""torch.compile every op's GPU path on a machine without a GPU; print what the graphs hold.

    python tests/offline_trace.py      (without TRITON_INTERPRET; run by test_kernels_compile.py)

The ops run as ``triton_op``s (their GPU registration) through Dynamo and AOT autograd with
``fullgraph=True``, under ``hfsti_kernels._offline`` (Triton targets sm_90, launches skipped):
the graphs are real, the outputs are not. Prints one JSON object: per op and dynamic setting,
the Triton kernels in the forward and backward graphs and the ATen ops beside them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfsti_kernels import _offline as offline  # noqa: E402

offline.use_target(90)
offline.route_ops_to_triton()

import hfsti_kernels  # noqa: E402


def _inputs(op: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).requires_grad_()

    B, C, H, W = 2, 3, 11, 13
    if op == "fft_channel_attention":
        return [rnd(B, C, H, W) for _ in range(3)]
    if op == "fourier_unit":
        return [rnd(B, C, H, W), rnd(2 * C, 2 * C), rnd(2 * C)]
    if op == "gated_fusion":
        return [rnd(B, C, H, W) for _ in range(3)] + [
            rnd(2 * C, 2 * C), rnd(2 * C), rnd(C, 1, 3, 3), rnd(C)
        ]  # fmt: skip
    if op == "memory_attention":
        return [rnd(B, 2, 9, 8), rnd(B, 2, 19, 8), rnd(B, 2, 19, 8), rnd(B, 2, 19)]
    return [rnd(B, 1, H, W), (torch.rand(B, 1, H, W, generator=g) > 0.5).float()]


def _summary(graphs: list[torch.fx.GraphModule]) -> dict[str, list[str]]:
    kernels, aten = set(), set()
    for gm in graphs:
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
                kernels.add(kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__)
            else:
                aten.add(str(node.target))
    return {"kernels": sorted(kernels), "aten": sorted(aten)}


def trace(op: str, dynamic: bool) -> dict:
    fwd, bwd = [], []

    def compiler(store):
        def compile_graph(gm, _example_inputs):
            store.append(gm)
            return make_boxed_func(gm.forward)

        return compile_graph

    backend = aot_autograd(fw_compiler=compiler(fwd), bw_compiler=compiler(bwd))
    fn = torch.compile(getattr(hfsti_kernels, op), backend=backend, fullgraph=True, dynamic=dynamic)
    inputs = _inputs(op)
    with offline.LaunchRecorder(mode="skip"):
        out = fn(*inputs, backend="triton")
        outs = (out,) if isinstance(out, torch.Tensor) else out
        sum(o.sum() for o in outs).backward()
    return {"forward": _summary(fwd), "backward": _summary(bwd)}


if __name__ == "__main__":
    torch._dynamo.config.cache_size_limit = 64
    result = {f"{op}/{'dynamic' if dyn else 'static'}": trace(op, dyn)
              for op in offline.OPS for dyn in (False, True)}  # fmt: skip
    print(json.dumps(result))
