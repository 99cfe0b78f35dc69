"""The report regenerates from a pytest-benchmark JSON on the CPU.

The numbers here are synthetic, written to a tmp dir and never committed.
"""

from __future__ import annotations

import json

import report


def _bench(extra: dict) -> dict:
    return {"name": "x", "stats": {"median": 1.0}, "extra_info": extra}


def _write(path, machine, records) -> None:
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": list(map(_bench, records))}))


def test_regenerate(tmp_path) -> None:
    machine = {"gpu": "Synthetic GPU", "torch": "t", "triton": "tr", "command": "cmd"}
    key = {"op": "fourier_unit", "shape": "8x96x44x44", "dtype": "bfloat16", "mode": "fwd_bwd"}
    ops = [
        {**key, "provider": p, "median_ms": ms, "floor_ms": 0.01}
        for p, ms in (("triton", 0.1), ("eager", 0.5), ("compile", 0.3))
    ]
    e2e = [
        {"e2e": "stream_b1", "provider": "eager_fp32", "batch": 1, "median_ms": 20.0, "fps": 50.0},
        {"e2e": "batch", "provider": "eager_fp32", "batch": 32, "median_ms": 320.0, "fps": 100.0},
        {"e2e": "train_step", "provider": "eager", "batch": 4, "median_ms": 90.0,
         "clips_per_s": 44.4, "peak_mem_mb": 1234.0},
    ]  # fmt: skip
    _write(tmp_path / "ops.json", machine, ops)
    _write(tmp_path / "e2e.json", machine, e2e)
    tests = {"gpu_tests": {"passed": 1, "failed": 1, "skipped": 0, "cases": [
        {"name": "t::a", "outcome": "failed", "message": "boom"}]}}  # fmt: skip
    (tmp_path / "tests.json").write_text(json.dumps(tests))

    summary = report.regenerate(tmp_path)

    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary) == {"gpu", "torch", "triton", "e2e", "ops"}
    assert summary["gpu"] == "Synthetic GPU"
    fps = {"stream_b1_fps": {"eager_fp32": 50.0}, "batch_fps": {"eager_fp32": 100.0}}
    assert summary["e2e"] == fps
    assert len(summary["ops"]) == 3
    assert set(summary["ops"][0]) == {*key, "provider", "median_ms", "floor_ms", "floor_fraction"}
    assert [round(r["floor_fraction"], 6) for r in summary["ops"]] == [0.1, 0.02, 0.033333]
    md = (tmp_path / "summary.md").read_text()
    assert "5.00x" in md and "3.00x (compile)" in md  # vs eager, vs the best peer
    assert "0.1 (0.10)" in md and "0.5 (0.02)" in md  # every provider's fraction of the floor
    assert "FAILED `t::a`: boom" in md and "cmd" in md
    assert (tmp_path / "speedup.png").read_bytes()[:4] == b"\x89PNG"


def test_junit_results(tmp_path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="m" name="ok"/>'
        '<testcase classname="m" name="bad"><failure message="no"/></testcase>'
        '<testcase classname="m" name="sk"><skipped message="why"/></testcase>'
        "</testsuite></testsuites>"
    )
    res = report.junit_results(xml)
    assert (res["passed"], res["failed"], res["skipped"]) == (1, 1, 1)
    assert res["cases"][1] == {"name": "m::bad", "outcome": "failed", "message": "no"}
