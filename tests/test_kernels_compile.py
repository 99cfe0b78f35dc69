"""torch.compile traces through every op to its Triton kernels (GPU registration, no GPU).

``offline_trace.py`` runs in its own process without the interpreter (the kernels must be
``triton.jit`` functions, registered as ``triton_op``s as on a GPU) and compiles each op with
Dynamo + AOT autograd, ``fullgraph=True``, static and dynamic shapes. Each forward and backward
graph must hold the op's own kernels and none of the reference's FFTs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("offline_trace.py")
EXPECTED = {
    "fft_channel_attention": ({"_fca_fwd_kernel"}, {"_fca_bwd_kernel"}),
    "fourier_unit": (
        {"_mix_kernel", "_fu_fwd_kernel"},
        {"_fu_bwd_kernel", "_mix_dx_kernel", "_mix_dw_kernel", "_mix_sum_batch_kernel"},
    ),
    "gated_fusion": (
        {"_mix_kernel", "_gf_fwd_kernel"},
        {"_gf_bwd_kernel", "_mix_dx_kernel", "_mix_dw_kernel", "_mix_sum_batch_kernel"},
    ),
    "memory_attention": (
        {"_ma_fwd_kernel"},
        {"_ma_bwd_delta_kernel", "_ma_bwd_dkdv_kernel", "_ma_bwd_dq_kernel"},
    ),
    "structure_loss": ({"_sl_partial_kernel", "_sl_finalize_kernel"}, {"_sl_bwd_kernel"}),
    "spectral_correlation_loss": (
        {"_scc_fwd_kernel", "_scc_finalize_kernel"},
        {"_scc_bwd_kernel"},
    ),
}


@pytest.fixture(scope="module")
def traced() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
@pytest.mark.parametrize("op", list(EXPECTED))
def test_compiled_graphs_hold_the_kernels(traced, op, shapes):
    graphs = traced[f"{op}/{shapes}"]
    for (name, graph), expected in zip(graphs.items(), EXPECTED[op]):
        kernels = set(graph["kernels"])
        assert kernels == expected, f"{op} {shapes} {name}: kernels {sorted(kernels)}"
        ffts = [a for a in graph["aten"] if "fft" in a]
        assert not ffts, f"{op} {shapes} {name}: reference FFTs in the graph: {ffts}"
