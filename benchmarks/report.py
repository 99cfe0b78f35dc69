"""Regenerate ``summary.json``, ``summary.md`` and ``speedup.png`` from a results folder.

Runs anywhere (no GPU): ``python benchmarks/report.py benchmarks/results/<gpu>``. The folder
holds what ``run_gpu.py`` wrote: ``ops.json`` and ``e2e.json`` (raw pytest-benchmark JSON,
whose ``extra_info`` carries the figures of record) and ``tests.json`` (pass/fail per test).
"""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

KEY = ("op", "shape", "dtype", "mode")


def load(path: Path) -> tuple[dict, list[dict]]:
    """(machine_info, the extra_info of every benchmark) of a pytest-benchmark JSON."""
    if not path.exists():
        return {}, []
    data = json.loads(path.read_text())
    return data.get("machine_info", {}), [b["extra_info"] for b in data.get("benchmarks", [])]


def junit_results(xml_path: Path) -> dict:
    """Pass/fail/skip per test from a junit XML file (no pytest plugin needed)."""
    cases = []
    for tc in ET.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = tc.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "")[:300]
                break
        cases.append({"name": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome,
                      "message": message})  # fmt: skip
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {**counts, "cases": cases}


def summarise(machine: dict, ops: list[dict], e2e: list[dict]) -> dict:
    """The summary.json of issue 5: e2e frames/s per provider and every op median with its floor."""
    fps = {"stream_b1_fps": {}, "batch_fps": {}}
    for r in e2e:
        if r.get("e2e") == "stream_b1":
            fps["stream_b1_fps"][r["provider"]] = r["fps"]
        elif r.get("e2e") == "batch":
            fps["batch_fps"][r["provider"]] = r["fps"]
    return {
        "gpu": machine.get("gpu", "unknown"),
        "torch": machine.get("torch", "unknown"),
        "triton": machine.get("triton", "unknown"),
        "e2e": fps,
        "ops": [
            {
                **{k: r[k] for k in (*KEY, "provider", "median_ms", "floor_ms")},
                "floor_fraction": r["floor_ms"] / r["median_ms"],
            }
            for r in ops
        ],
    }


def _rows(ops: list[dict]) -> dict[tuple, dict[str, dict]]:
    rows: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in ops:
        rows[tuple(r[k] for k in KEY)][r["provider"]] = r
    return rows


def speedups(ops: list[dict]) -> dict[tuple[str, str, str], list[float]]:
    """(op, mode, peer) -> [peer_ms / triton_ms for every shape and dtype both ran]."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (op, _, _, mode), by in _rows(ops).items():
        if "triton" in by:
            for peer, r in by.items():
                if peer != "triton":
                    out[op, mode, peer].append(r["median_ms"] / by["triton"]["median_ms"])
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def markdown(summary: dict, machine: dict, ops: list[dict], e2e: list[dict], tests: dict) -> str:
    providers = sorted({r["provider"] for r in ops}, key=lambda p: (p != "triton", p))
    lines = [
        f"# Benchmarks on {summary['gpu']}",
        "",
        f"torch {summary['torch']}, triton {summary['triton']}, "
        f"configuration `{machine.get('bench_config', '?')}`.",
        f"Made by: `{machine.get('command') or '?'}`",
        "",
        "Medians in ms (`triton.testing.do_bench`, L2 flushed per call), each with its fraction "
        "of the op's floor in brackets (floor / median; 1 = at the floor). Speed-ups are of "
        "triton. floor = max(min bytes / bandwidth, FLOPs / GEMM rate), the FFT ops' transforms "
        "counted as FFTs (5 N log2 N per complex transform).",
        "",
        "## Ops",
        "",
        "| op | shape | dtype | mode | "
        + " | ".join(providers)
        + " | vs eager | vs best peer | floor ms |",
        "|" + " --- |" * (len(providers) + 7),
    ]
    for (op, shape, dtype, mode), by in _rows(ops).items():
        tri = by.get("triton", {}).get("median_ms")
        peers = {p: r["median_ms"] for p, r in by.items() if p != "triton"}
        best = min(peers, key=peers.get) if peers else None
        eager = peers.get("eager")
        floor = next(iter(by.values()))["floor_ms"]
        cells = [
            f"{_fmt(by[p]['median_ms'])} ({floor / by[p]['median_ms']:.2f})" if p in by else "-"
            for p in providers
        ]
        cells += [
            f"{eager / tri:.2f}x" if tri and eager else "-",
            f"{peers[best] / tri:.2f}x ({best})" if tri and best else "-",
            _fmt(floor),
        ]
        lines.append(f"| {op} | {shape} | {dtype} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "## End to end", "", "| what | provider | batch | median ms | rate | peak MiB |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in e2e:
        rate = f"{r['fps']:.1f} frames/s" if "fps" in r else f"{r['clips_per_s']:.2f} clips/s"
        lines.append(f"| {r['e2e']} | {r['provider']} | {r['batch']} | {_fmt(r['median_ms'])} | "
                     f"{rate} | {_fmt(r.get('peak_mem_mb'), 5)} |")  # fmt: skip
    for title, key in (("GPU tests", "gpu_tests"), ("Benchmark runs", "benchmarks")):
        res = tests.get(key)
        if not res:
            continue
        late = sum("deadline" in c["message"] for c in res["cases"])
        counts = f"{res['passed']} passed, {res['failed']} failed, {res['skipped']} skipped"
        counts += f" ({late} not reached before the deadline)." if late else "."
        lines += ["", f"## {title}", "", counts]
        lines += [f"- FAILED `{c['name']}`: {c['message']}" for c in res["cases"]
                  if c["outcome"] == "failed"]  # fmt: skip
        if "run" in res:
            lines.append(f"\nCommand: `{res['run']}`, exit status {res.get('returncode')}.")
    return "\n".join(lines) + "\n"


def plot(ops: list[dict], path: Path) -> None:
    """Geometric-mean speed-up of triton over each peer, per op, one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = speedups(ops)
    modes = sorted({m for _, m, _ in ratios}) or ["fwd_bwd"]
    fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        keys = [k for k in ratios if k[1] == mode]
        op_names = sorted({k[0] for k in keys})
        peers = sorted({k[2] for k in keys})
        width = 0.8 / max(len(peers), 1)
        for j, peer in enumerate(peers):
            xs, ys = [], []
            for i, op in enumerate(op_names):
                vals = ratios.get((op, mode, peer))
                if vals:
                    xs.append(i + j * width)
                    ys.append(math.exp(sum(map(math.log, vals)) / len(vals)))
            ax.bar(xs, ys, width, label=peer)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(op_names))])
        ax.set_xticklabels(op_names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("triton speed-up (geomean over shapes, dtypes)")
        ax.set_title(mode)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def regenerate(out_dir: Path | str) -> dict:
    """Write summary.json, summary.md and speedup.png from the raw files in ``out_dir``."""
    out_dir = Path(out_dir)
    machine, ops = load(out_dir / "ops.json")
    machine_e2e, e2e = load(out_dir / "e2e.json")
    machine = machine or machine_e2e
    tests_path = out_dir / "tests.json"
    tests = json.loads(tests_path.read_text()) if tests_path.exists() else {}
    summary = summarise(machine, ops, e2e)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "summary.md").write_text(markdown(summary, machine, ops, e2e, tests))
    plot(ops, out_dir / "speedup.png")
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/report.py RESULTS_DIR")
    regenerate(sys.argv[1])
