"""Compile every Triton kernel of the op suite for a GPU architecture, without a GPU.

    python benchmarks/compile_report.py [--arch 90] [--quick] [--ops a,b] [--dtypes bf16,fp32]
                                        [--jobs N] [--out DIR]

What it answers, before any GPU time is spent: does each kernel, at each shape the benchmarks
use, fit the target's shared memory (227 KB per block on sm_90), how many registers does it
take, and does it spill to local memory? These are the compiler's own figures (``ptxas -v`` on
the PTX Triton generates, and Triton's shared-memory allocation); they are not timings, and they
say nothing about speed beyond where the obvious cliffs are.

How: the op suite's ``triton`` cases (``_cases.py``, at the GPU configuration's shapes) run
forward and backward on CPU tensors under ``hfsti_kernels._offline``: Triton compiles for the
target and every launch becomes a compile-only ``warmup``, so the launchers pick the same
specialisations, constexprs and launch options as on a GPU (outputs stay uninitialised, which is
harmless since nothing reads them). Each distinct compiled kernel is then passed to ``ptxas -v``.

Writes ``compile_report.json`` and ``compile_report.md`` to DIR (default
``benchmarks/results/static-sm<arch>/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, never interpret

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.runtime._async_compile import AsyncCompileMode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import _cases  # noqa: E402
import _config  # noqa: E402

from hfsti_kernels import _offline as offline  # noqa: E402

SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 89: 99 * 1024, 100: 227 * 1024}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# ptxas -v lines (the same flags Triton's own make_cubin passes).
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def _row(launch: offline.Launch, ptxas: str) -> dict:
    meta = launch.compiled.metadata
    stack = _STACK.search(ptxas)
    regs = _REGS.search(ptxas)
    frame, spill_st, spill_ld = map(int, stack.groups()) if stack else (0, 0, 0)
    return {
        "kernel": launch.kernel,
        "case": launch.tag,
        "num_warps": meta.num_warps,
        "num_stages": meta.num_stages,
        "shared_bytes": meta.shared,
        "registers": int(regs.group(1)) if regs else None,
        "stack_bytes": frame,
        "spill_store_bytes": spill_st,
        "spill_load_bytes": spill_ld,
        "constexprs": launch.constexprs,
    }


def _launch_case(case: _cases.Case) -> None:
    import hfsti_kernels

    args, diff = _cases.inputs(case, torch.device("cpu"))
    out = getattr(hfsti_kernels, case.op)(*args, backend="triton")
    first = out[0] if isinstance(out, tuple) else out
    if diff:
        torch.autograd.backward(first, torch.ones_like(first))


def _ptxas(arch: int, ptx: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2"]
        cmd += [f"--gpu-name=sm_{arch}a" if arch >= 90 else f"--gpu-name=sm_{arch}"]
        result = subprocess.run(
            [*cmd, str(src), "-o", str(Path(tmp, "k.o"))], capture_output=True, text=True
        )
    return result.stderr


def collect(arch: int, quick: bool, ops, dtypes, jobs: int) -> list[dict]:
    """Compile the cases' kernels for sm_<arch>; one row per distinct compiled kernel."""
    cfg = dataclasses.replace(_config._gpu(quick), device=torch.device("cpu"), dtypes=dtypes)
    selected = [
        c
        for c in _cases.cases(cfg)
        if c.provider == "triton" and c.mode == "fwd_bwd" and c.op in ops
    ]
    offline.use_target(arch)
    offline.route_ops_to_triton()
    with ThreadPoolExecutor(jobs) as pool, offline.LaunchRecorder() as rec, AsyncCompileMode(pool):
        for case in selected:
            rec.tag = case.id.removesuffix("-fwd_bwd-triton")
            _launch_case(case)
        launches = list(rec.launches.values())
        for launch in launches:
            if hasattr(launch.compiled, "result"):  # a FutureKernel
                launch.compiled = launch.compiled.result()
    with ThreadPoolExecutor(jobs) as pool:
        logs = list(pool.map(lambda launch: _ptxas(arch, launch.compiled.asm["ptx"]), launches))
    rows, seen = [], set()
    for launch, log in zip(launches, logs):
        row = _row(launch, log)
        # Specialisations that differ only in integer divisibility (batch) and compile alike
        # are listed once, under the first case.
        key = json.dumps({k: v for k, v in row.items() if k != "case"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def markdown(rows: list[dict], arch: int, command: str) -> str:
    limit = SMEM_LIMIT.get(arch)
    lines = [
        f"# Static compile report: sm_{arch}",
        "",
        f"Made by `{command}` with torch {torch.__version__}, triton {triton.__version__}, on a "
        "machine without a GPU: compiler figures (Triton's shared-memory allocation, `ptxas -v`), "
        "not measurements. Each row is one distinct compiled kernel, named with the first "
        "benchmark case (op-shape-dtype) that launched it.",
        "",
        "| kernel | first case | warps | stages | shared KB | regs | stack B | spill st/ld B "
        "| note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        notes = ["staged branch"] if r["constexprs"].get("IS_STAGED") else []
        if limit and r["shared_bytes"] > limit:
            notes.append(f"shared > {limit // 1024} KB: cannot launch")
        if r["spill_store_bytes"]:
            notes.append("spills")
        lines.append(
            f"| `{r['kernel']}` | {r['case']} | {r['num_warps']} | {r['num_stages']} | "
            f"{r['shared_bytes'] / 1024:.1f} | {r['registers']} | {r['stack_bytes']} | "
            f"{r['spill_store_bytes']}/{r['spill_load_bytes']} | {', '.join(notes)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--quick", action="store_true", help="the quick GPU configuration")
    parser.add_argument("--ops", default=",".join(_cases.OPS), help="comma-separated ops")
    parser.add_argument("--dtypes", default="bf16,fp32,fp16", help="of " + ",".join(DTYPES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    ops = args.ops.split(",")
    unknown = sorted(set(ops) - set(_cases.OPS))
    if unknown:
        parser.error(f"--ops: unknown {unknown}; expected some of {list(_cases.OPS)}")
    try:
        dtypes = tuple(DTYPES[d] for d in args.dtypes.split(","))
    except KeyError as e:
        parser.error(f"--dtypes: unknown {e}; expected some of {list(DTYPES)}")
    rows = collect(args.arch, args.quick, ops, dtypes, args.jobs)
    out = args.out or ROOT / "benchmarks" / "results" / f"static-sm{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/compile_report.py " + " ".join(argv or sys.argv[1:])
    meta = {"arch": args.arch, "torch": torch.__version__, "triton": triton.__version__}
    (out / "compile_report.json").write_text(json.dumps({**meta, "kernels": rows}, indent=1))
    (out / "compile_report.md").write_text(markdown(rows, args.arch, command.strip()))
    print(markdown(rows, args.arch, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
