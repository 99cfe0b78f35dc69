"""One command for a lent GPU session: GPU tests, benchmark suites, results and report.

    python benchmarks/run_gpu.py [--quick] [--budget-s 540] [--out DIR]
                                 [--skip tests,ops,e2e] [-k EXPR]

Steps, each a pytest run under a deadline (``_deadline.py``) so it ends in time and still
writes its files: ``tests/test_gpu_*.py`` (junit XML -> pass/fail per test), then the op suite
and the end-to-end suite (``--benchmark-json``). Then ``report.regenerate`` writes summary.json,
summary.md and speedup.png. DIR defaults to ``benchmarks/results/<gpu-name-slug>``; it receives
at most 7 files (ops.json, e2e.json, tests.json, summary.json, summary.md, speedup.png, run.log),
so ``--out $OUT`` fits the device tool's limit on returned files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# Shares of the budget; a step's unused time passes to the next ones.
SHARES = {"tests": 0.25, "ops": 0.45, "e2e": 0.30}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _pytest(args: list[str], deadline: float, log, hard_limit: float) -> int:
    """Run pytest with the deadline plugin; the hard limit only guards against a hung test."""
    cmd = [sys.executable, "-m", "pytest", "-p", "_deadline", f"--deadline={deadline}", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)])}
    log.write(f"\n$ {shlex.join(cmd)}\n")
    log.flush()
    try:
        return subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=hard_limit
        ).returncode
    except subprocess.TimeoutExpired:
        log.write(f"killed after {hard_limit:.0f} s\n")
        return -9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="first pass: C=96, bf16 and fp32")
    parser.add_argument("--budget-s", type=float, default=540, help="whole run, seconds")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--skip", default="", help="comma-separated steps: tests,ops,e2e")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k for the suites")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("run_gpu.py needs a CUDA device (the CPU suites: pytest benchmarks/)")
    gpu = torch.cuda.get_device_name()
    out = args.out or BENCH / "results" / slug(gpu)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/run_gpu.py", *(argv or sys.argv[1:])])
    os.environ["HFSTI_BENCH_COMMAND"] = command
    start, skip = time.time(), set(filter(None, args.skip.split(",")))
    steps = [s for s in SHARES if s not in skip]
    tests: dict = {}
    suite_opts = ["--bench-quick"] if args.quick else []
    suite_opts += ["-k", args.select] if args.select else []
    with open(out / "run.log", "w") as log, tempfile.TemporaryDirectory() as tmp:
        for i, step in enumerate(steps):
            left = args.budget_s - (time.time() - start)
            share = SHARES[step] / sum(SHARES[s] for s in steps[i:])
            deadline = time.time() + left * share
            xml = Path(tmp) / f"{step}.xml"
            common = ["-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
            if step == "tests":
                paths = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/test_gpu_*.py"))
                pytest_args = [*common, *paths]
            else:
                suite = f"benchmarks/test_bench_{step}.py"
                raw = f"--benchmark-json={out / f'{step}.json'}"
                pytest_args = [*common, *suite_opts, suite, raw]
            # A test started just before its deadline still runs: leave it 60 s beyond.
            rc = _pytest(pytest_args, deadline, log, hard_limit=left * share + 60)
            result = report.junit_results(xml) if xml.exists() else {}
            result.update(run=shlex.join(["pytest", *pytest_args[4:]]), returncode=rc)
            key = "gpu_tests" if step == "tests" else "benchmarks"
            if key in tests:  # ops and e2e share one entry
                for k in ("passed", "failed", "skipped"):
                    tests[key][k] += result.get(k, 0)
                tests[key]["cases"] += result.get("cases", [])
                tests[key]["run"] += f"; {result['run']}"
            else:
                tests[key] = {"passed": 0, "failed": 0, "skipped": 0, "cases": [], **result}
            print(f"{step}: exit {rc}, {time.time() - start:.0f} s elapsed", flush=True)
    (out / "tests.json").write_text(json.dumps(tests, indent=1) + "\n")
    summary = report.regenerate(out)
    print(f"results in {out} ({len(summary['ops'])} op timings)")
    print((out / "summary.md").read_text()[-6000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
