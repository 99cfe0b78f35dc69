"""``ptxas -v`` figures of every csrc CUDA kernel, without a GPU: the CUDA part of the static
compile report (``compile_report.py`` covers the Triton kernels).

    python benchmarks/compile_report_csrc.py [--arch 90] [--files a.cu,b.cu] [--jobs N] [--out DIR]

Each ``csrc/*.cu`` is compiled by nvcc as setup.py builds it (``-O3``, one architecture) with
``-Xptxas -v``; every registered kernel instantiation gets a row: registers, static shared memory,
stack, spill stores/loads, barriers, and the most threads a block can have at that register count
(65536 registers an SM, allocated per warp in units of 8 a thread). Dynamic shared memory is not
a compile-time figure: the op modules size it per launch (at most 227 KB on sm_90). Compiler
figures, not timings.

Writes ``csrc_report.json`` and ``csrc_report.md`` to DIR (default
``benchmarks/results/static-sm<arch>/``), each by a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hfsti_kernels.cuda import sources  # noqa: E402

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
_PROPS = re.compile(
    r"Function properties for (\w+)\s+(\d+) bytes stack frame, (\d+) bytes spill stores, "
    r"(\d+) bytes spill loads"
)
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:.*?(\d+) bytes smem)?")


def max_threads(registers: int) -> int:
    """The largest block (a multiple of 32, at most 1024) that fits an SM's register file."""
    per_warp = max(-(-registers // 8) * 8, 8) * 32
    return min(1024, 65536 // per_warp * 32)


def parse(log: str) -> dict[str, dict]:
    """``ptxas -v`` output -> {mangled entry name: figures}."""
    rows: dict[str, dict] = {}
    props: dict[str, tuple[int, int, int]] = {
        m.group(1): tuple(map(int, m.group(2, 3, 4))) for m in _PROPS.finditer(log)
    }
    current = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = m.group(1)
        elif current and (m := _USED.search(line)):
            stack, st, ld = props.get(current, (0, 0, 0))
            regs = int(m.group(1))
            rows[current] = {
                "registers": regs,
                "barriers": int(m.group(2) or 0),
                "static_smem_bytes": int(m.group(3) or 0),
                "stack_bytes": stack,
                "spill_store_bytes": st,
                "spill_load_bytes": ld,
                "max_threads": max_threads(regs),
            }
            current = None
    return rows


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> name expression (``hfsti_fca_fwd<float>``), through c++filt."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    result = {}
    for mangled, full in zip(names, out.splitlines()):
        m = re.match(r"void (.+?)\(", full)
        result[mangled] = sources.normalise(m.group(1)) if m else full
    return result


def compile_file(nvcc: str, path: Path, arch: int) -> list[dict]:
    cmd = [nvcc, "-std=c++17", "-O3", f"-I{sources.include_dir()}", f"-arch=sm_{arch}",
           "-Xptxas", "-v", "-c", str(path), "-o", os.devnull]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{path.name}: nvcc failed: {res.stderr.strip()[-500:]}")
    rows = parse(res.stderr + res.stdout)
    names = demangle(list(rows))
    registered = sources.registrations(path)
    order = {n: i for i, n in enumerate(registered)}
    out = [{"kernel": names[m], "file": path.name, "mangled": m, **r} for m, r in rows.items()]
    missing = set(registered) - {r["kernel"] for r in out}
    if missing:
        raise RuntimeError(f"{path.name}: no ptxas figures for {sorted(missing)}")
    return sorted(out, key=lambda r: order.get(r["kernel"], len(order)))


def markdown(report: dict) -> str:
    lines = [
        f"# Static compile report, CUDA kernels (csrc/): sm_{report['arch']}",
        "",
        f"Made by `python benchmarks/compile_report_csrc.py` with {report['nvcc']}, on a machine "
        "without a GPU: `ptxas -v` figures, not measurements. One row per registered kernel "
        "instantiation. Dynamic shared memory is sized per launch by the op modules (not a "
        "compile-time figure); `max threads` is the largest block the register count allows.",
        "",
        "| kernel | file | regs | max threads | static smem B | stack B | spill st/ld B | "
        "barriers | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["kernels"]:
        spills = r["spill_store_bytes"] + r["spill_load_bytes"]
        lines.append(
            f"| `{r['kernel']}` | {r['file']} | {r['registers']} | {r['max_threads']} | "
            f"{r['static_smem_bytes']} | {r['stack_bytes']} | "
            f"{r['spill_store_bytes']}/{r['spill_load_bytes']} | {r['barriers']} | "
            f"{'spills' if spills else ''} |"
        )
    n = len(report["kernels"])
    spilling = sum(r["spill_store_bytes"] + r["spill_load_bytes"] > 0 for r in report["kernels"])
    lines += ["", f"{n} kernels, {spilling} with spills."]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--files", help="comma-separated csrc/*.cu names (default: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        ap.error("nvcc not found on PATH")
    files = sources.kernel_files()
    if args.files:
        wanted = args.files.split(",")
        unknown = sorted(set(wanted) - {f.name for f in files})
        if unknown:
            ap.error(f"--files: unknown {unknown}; expected names of csrc/*.cu")
        files = [f for f in files if f.name in wanted]
    with ThreadPoolExecutor(args.jobs) as pool:
        per_file = list(pool.map(lambda f: compile_file(nvcc, f, args.arch), files))
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release ([\d.]+)", version)
    report = {
        "arch": args.arch,
        "nvcc": f"nvcc {release.group(1) if release else '?'}",
        "kernels": [r for rows in per_file for r in rows],
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"static-sm{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "csrc_report.json", json.dumps(report, indent=1) + "\n")
    _write(out / "csrc_report.md", markdown(report))
    print(f"{len(report['kernels'])} kernels -> {out}/csrc_report.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        sys.exit(f"compile_report_csrc: {e}")
