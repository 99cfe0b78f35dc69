"""The csrc part of the static compile report: ``ptxas -v`` parsing, and one real compile of a
small test kernel when nvcc is present (no GPU needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import compile_report_csrc as report
import pytest

SMOKE = Path(__file__).resolve().parents[1] / "tests" / "cuda" / "build_smoke.cu"

LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kIfEvPT_' for 'sm_90'
ptxas info    : Function properties for _Z1kIfEvPT_
    48 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 48 bytes cumulative stack size, 1024 bytes smem
ptxas info    : Function properties for __internal_trig_reduction_slowpathd
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z1gv' for 'sm_90'
ptxas info    : Function properties for _Z1gv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers
"""


def test_parse_ptxas_output():
    rows = report.parse(LOG)
    assert rows == {
        "_Z1kIfEvPT_": {"registers": 168, "barriers": 1, "static_smem_bytes": 1024,
                        "stack_bytes": 48, "spill_store_bytes": 8, "spill_load_bytes": 12,
                        "max_threads": 384},
        "_Z1gv": {"registers": 8, "barriers": 0, "static_smem_bytes": 0, "stack_bytes": 0,
                  "spill_store_bytes": 0, "spill_load_bytes": 0, "max_threads": 1024},
    }  # fmt: skip


def test_max_threads_follows_the_register_file():
    assert [report.max_threads(r) for r in (32, 64, 65, 128, 255)] == [1024, 1024, 896, 512, 256]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_compile_a_kernel_file():
    rows = report.compile_file(shutil.which("nvcc"), SMOKE, 90)
    assert [r["kernel"] for r in rows] == ["hfsti_test_rotate<float>", "hfsti_test_rotate<double>"]
    for r in rows:
        assert 0 < r["registers"] <= 255 and r["barriers"] == 1 and r["file"] == SMOKE.name
    assert "| `hfsti_test_rotate<float>` |" in report.markdown(
        {"arch": 90, "nvcc": "n", "kernels": rows}
    )
