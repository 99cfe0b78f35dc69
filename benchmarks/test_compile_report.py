"""The static compile report runs on a machine without a GPU (compile only, ``ptxas -v``).

It patches Triton's driver and launcher for the whole process, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import compile_report

SCRIPT = Path(compile_report.__file__)


def test_compile_report_structure_loss(tmp_path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--quick", "--ops", "structure_loss", "--dtypes", "fp32"]
    subprocess.run([*cmd, "--out", str(tmp_path)], check=True, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "compile_report.json").read_text())
    assert report["arch"] == 90
    rows = {r["kernel"]: r for r in report["kernels"]}
    assert set(rows) == {"_sl_partial_kernel", "_sl_finalize_kernel", "_sl_bwd_kernel"}
    for row in rows.values():
        assert 0 < row["registers"] <= 255, row
        assert row["shared_bytes"] <= compile_report.SMEM_LIMIT[90], row
        assert row["num_warps"] >= 1 and row["case"].startswith("structure_loss-"), row
    table = (tmp_path / "compile_report.md").read_text()
    assert "| `_sl_bwd_kernel` |" in table and "sm_90" in table


def test_unknown_op_is_named(tmp_path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--ops", "fft", "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--ops: unknown ['fft']" in result.stderr
