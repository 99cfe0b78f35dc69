"""The CUDA build: every csrc kernel source compiled by NVRTC (sm_90 PTX, the CuPy path's
compiler) and by nvcc (sm_80, sm_90), the host-emulator extension, launches through
``hfsti_kernels.cuda.runtime`` with typed arguments, and the installed package's sources.

No GPU is needed: NVRTC comes from PyPI (the ``test`` extra), nvcc checks skip without nvcc, and
launches run in the host emulator (tests/cuda/build_smoke.cu is a trivial test kernel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import run_sanitized

from hfsti_kernels._backend import select_backend
from hfsti_kernels.cuda import build, nvrtc, sources
from hfsti_kernels.cuda import runtime as rt

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "cuda" / "build_smoke.cu"
KERNEL_FILES = sources.kernel_files()
NVCC = shutil.which("nvcc")
FILE_IDS = [p.name for p in KERNEL_FILES]


def test_every_kernel_source_follows_the_contract():
    assert KERNEL_FILES, "no csrc/*.cu found"
    seen: dict[str, Path] = {}
    for path in KERNEL_FILES:
        text = path.read_text()
        first = re.search(r"^#include\s+(\S+)", text, re.MULTILINE)
        assert first and first.group(1) == '"hfsti/runtime.h"', (
            f"{path.name}: include runtime.h first"
        )
        names = sources.registrations(path)
        assert names, f"{path.name}: registers no kernel"
        for name in names:
            assert name not in seen, f"{name}: registered by {seen.get(name)} and {path.name}"
            seen[name] = path
    assert seen == sources.kernel_index()


# ---- NVRTC: the CuPy path's compiler, without a GPU --------------------------------------------
@pytest.mark.parametrize("path", KERNEL_FILES, ids=FILE_IDS)
def test_nvrtc_compiles_every_kernel_to_sm90_ptx(path):
    ptx, lowered = nvrtc.compile_file(path, "compute_90")
    text = ptx.decode()
    assert ".target sm_90" in text
    assert set(lowered) == set(sources.registrations(path))
    for name, mangled in lowered.items():
        assert re.search(rf"\.entry\s+{re.escape(mangled)}\s*\(", text), f"{name}: not in the PTX"


def test_nvrtc_reports_errors_naming_the_file(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text(SMOKE.read_text().replace("__syncthreads();", "__syncthreads()"))
    with pytest.raises(nvrtc.NvrtcError, match=r"NVRTC failed on .*bad\.cu: .*error"):
        nvrtc.compile_file(bad)


# ---- nvcc: sm_80 and sm_90 -------------------------------------------------------------------
def _built_from_this_tree(arch: str) -> bool:
    """Whether the installed extension was compiled by nvcc from exactly these sources for
    ``arch`` (then it already is the compile check)."""
    ext = rt.extension()
    if ext is None:
        return False
    stamp = re.search(r"archs (\S+), sources ([0-9a-f]+)", ext.build_info)
    archs = stamp and {
        a.replace(".", "").upper().removesuffix("+PTX") for a in re.split(r"[;,]", stamp.group(1))
    }
    return bool(stamp) and stamp.group(2) == sources.tree_hash() and arch[3:] in archs


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_every_kernel(arch, tmp_path):
    if _built_from_this_tree(arch):
        assert set(rt.extension().kernels()) == set(sources.kernel_index())
        return
    inc = f"-I{sources.include_dir()}"

    def compile_one(path):
        cmd = [NVCC, "-std=c++17", "-O3", inc, f"-arch={arch}", "-c", str(path), "-o", os.devnull]
        return path, subprocess.run(cmd, capture_output=True, text=True)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for path, res in pool.map(compile_one, KERNEL_FILES):
            assert res.returncode == 0, f"{path.name} ({arch}): {res.stderr[-2000:]}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_the_install_built_the_extension_from_these_sources():
    if os.environ.get("HFSTI_SKIP_CUDA_BUILD") == "1":
        pytest.skip("HFSTI_SKIP_CUDA_BUILD=1")
    ext = rt.extension()
    assert ext is not None, (
        "nvcc is on PATH but hfsti_kernels._cuda is not built: pip install -v -e . shows why"
    )
    assert f"sources {sources.tree_hash()}" in ext.build_info, "csrc/ changed: pip install -e ."
    assert set(ext.kernels()) == set(sources.kernel_index())


# ---- the host emulator and runtime.launch --------------------------------------------------------
@pytest.fixture(scope="module")
def smoke():
    return build.load(kernels=[SMOKE], module="_cuda_emu_smoke")


@pytest.fixture
def emulated(monkeypatch, smoke):
    """runtime.launch on CPU tensors, executing the smoke kernels."""
    monkeypatch.setenv(rt.EMULATE_ENV, "1")
    monkeypatch.setattr(build, "load", lambda *a, **k: smoke)
    return smoke


def _rotate_args(x, y, n, *, a=1.5, b=-0.25, shift=5):
    return [rt.ptr(x), rt.ptr(y), rt.f32(a), rt.f64(b), rt.i32(n), rt.i64(shift)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 37, 64])
def test_launch_runs_the_kernel_on_cpu_tensors(emulated, dtype, n):
    x = torch.randn(n, dtype=dtype)
    y = torch.full_like(x, float("nan"))
    name = rt.kernel_name("hfsti_test_rotate", dtype)
    rt.launch(name, (1,), (64,), n * 4, _rotate_args(x, y, n), device_tensor=x)
    expected = (1.5 * torch.roll(x.float(), -5 % n) - 0.25).to(dtype)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)


def test_argument_kinds_are_checked_against_the_kernel(emulated):
    x = torch.randn(8)
    y = torch.empty_like(x)
    args = _rotate_args(x, y, 8)
    wrong = [*args[:4], rt.i64(8), args[5]]
    with pytest.raises(
        TypeError, match=r"^hfsti_test_rotate<float>: argument 4: expected i32, got i64$"
    ):
        rt.launch("hfsti_test_rotate<float>", (1,), (8,), 32, wrong, x)
    with pytest.raises(
        TypeError, match=r"^hfsti_test_rotate<float>: argument 2: expected f32, got f64$"
    ):
        rt.launch("hfsti_test_rotate<float>", (1,), (8,), 32, [*args[:2], rt.f64(1), *args[3:]], x)
    with pytest.raises(TypeError, match=r"^hfsti_test_rotate<float>: expected 6 arguments, got 5$"):
        rt.launch("hfsti_test_rotate<float>", (1,), (8,), 32, args[:5], x)
    with pytest.raises(KeyError, match="no CUDA kernel named 'hfsti_test_rotate<int>'"):
        rt.launch("hfsti_test_rotate<int>", (1,), (8,), 32, args, x)
    assert emulated.signature("hfsti_test_rotate<double>") == [
        "ptr",
        "ptr",
        "f32",
        "f64",
        "i32",
        "i64",
    ]


def test_launch_limits_are_enforced_and_name_the_kernel(emulated):
    x = torch.randn(8)
    y = torch.empty_like(x)  # held: a typed pointer does not keep its tensor alive
    args = _rotate_args(x, y, 8)
    with pytest.raises(RuntimeError, match=r"^hfsti_test_rotate<float>: "):
        rt.launch("hfsti_test_rotate<float>", (1,), (2048,), 32, args, x)
    with pytest.raises(TypeError, match=r"hfsti_test_rotate<float>: block\[1\]: expected >= 1"):
        rt.launch("hfsti_test_rotate<float>", (1,), (8, 0), 32, args, x)
    # Over 48 KB of dynamic shared memory needs the opt-in, which launch makes ...
    rt.launch("hfsti_test_rotate<float>", (1,), (8,), 100 * 1024, args, x)
    # ... and without it the emulator refuses, like a GPU.
    with pytest.raises(RuntimeError, match=r"^hfsti_test_rotate<double>: "):
        xd = x.double()
        emulated.launch(
            "hfsti_test_rotate<double>", [1], [8], 100 * 1024, 0, _rotate_args(xd, xd.clone(), 8)
        )
    with pytest.raises(RuntimeError, match=r"^hfsti_test_rotate<float>: "):  # over sm_90's 227 KB
        rt.launch("hfsti_test_rotate<float>", (1,), (8,), 228 * 1024, args, x)


def test_typed_argument_constructors():
    assert rt.i32(-(2**31)).value == -(2**31) and rt.i64(2**40).kind == rt.I64
    with pytest.raises(ValueError, match="i32: 2147483648 does not fit in 32 bits"):
        rt.i32(2**31)
    with pytest.raises(TypeError, match="i64: expected an integer, got float"):
        rt.i64(1.5)
    with pytest.raises(TypeError, match="ptr: expected a tensor or None, got int"):
        rt.ptr(1234)
    assert rt.ptr(None).value == 0 and rt.f32(2).value == 2.0
    assert rt.kernel_name("hfsti_ma_fwd", torch.bfloat16, 64) == "hfsti_ma_fwd<hfsti::bf16_t, 64>"
    assert rt.kernel_name("k", torch.float16) == "k<hfsti::half_t>"
    with pytest.raises(TypeError, match="dtype: CUDA kernels take"):
        rt.cpp_type(torch.int32)


def test_the_product_emulator_build_has_every_registered_kernel():
    mod = build.load()
    assert set(mod.kernels()) == set(sources.kernel_index())
    assert mod.build_info.startswith("emulator (release)")


def test_tsan_variant_runs_in_a_preloaded_process(tmp_path):
    runtime_lib = build._hostbuild.tsan_runtime()
    if not os.path.isabs(runtime_lib):
        pytest.skip("the compiler has no ThreadSanitizer runtime")
    path = build.build("tsan", kernels=[SMOKE], module="_cuda_emu_smoke")
    script = f"""
import importlib.machinery, importlib.util, torch
path = {str(path)!r}
loader = importlib.machinery.ExtensionFileLoader("_cuda_emu_smoke", path)
spec = importlib.util.spec_from_file_location("_cuda_emu_smoke", path, loader=loader)
mod = importlib.util.module_from_spec(spec)
loader.exec_module(mod)
x = torch.arange(40.0)
y = torch.empty_like(x)
args = [(0, x.data_ptr()), (0, y.data_ptr()), (3, 1.0), (4, 0.0), (1, 40), (2, 1)]
mod.launch("hfsti_test_rotate<float>", [1], [64], 160, 0, args)
assert torch.equal(y, torch.roll(x, -1)), y
print("ok")
"""
    run_sanitized(script, "tsan", timeout=300)


# ---- choosing an executor --------------------------------------------------------------------
def test_executor_follows_the_device_and_the_environment(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv(rt.EMULATE_ENV, "0")
    with pytest.raises(
        ValueError, match=r"^backend: 'cuda' needs HFSTI_CUDA_EMULATE=1 .* to run on CPU tensors"
    ):
        select_backend("cuda", x)
    monkeypatch.setenv(rt.EMULATE_ENV, "1")
    assert select_backend("cuda", x) == "cuda" and rt.executor(x) == "emulator"
    assert select_backend("auto", x) == "reference"  # "auto" never picks the CUDA kernels

    fake_cuda = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))
    monkeypatch.setattr(rt, "extension", lambda: None)
    monkeypatch.setattr(rt, "cupy_installed", lambda: False)
    with pytest.raises(ValueError) as err:
        rt.require(fake_cuda)
    msg = str(err.value)
    assert "\n" not in msg and "pip install -e ." in msg and "hfsti-kernels[cupy]" in msg
    monkeypatch.setattr(rt, "cupy_installed", lambda: True)
    assert rt.executor(fake_cuda) == "cupy"
    monkeypatch.setattr(rt, "extension", lambda: types.SimpleNamespace(build_info="nvcc test"))
    assert rt.executor(fake_cuda) == "nvcc"
    assert rt.describe().startswith("CUDA kernels: nvcc extension: built (nvcc test)")
    assert "; CuPy: installed" in rt.describe()


def test_cupy_executor_compiles_the_source_and_packs_the_plan(monkeypatch):
    """CuPy cannot compile without a driver, so a stand-in records what the executor asks."""
    import contextlib

    import numpy as np

    seen = {}

    class Kernel:
        max_dynamic_shared_size_bytes = 0

        def __call__(self, grid, block, args, shared_mem=0):
            seen["call"] = (grid, block, args, shared_mem, self.max_dynamic_shared_size_bytes)

    class RawModule:
        def __init__(self, code, options, name_expressions):
            seen["module"] = (code, options, name_expressions)

        def get_function(self, name):
            seen["name"] = name
            return Kernel()

    null = contextlib.nullcontext
    cuda = types.SimpleNamespace(
        Device=lambda i: null(),
        Stream=types.SimpleNamespace(from_external=lambda s: null(s)),
        driver=types.SimpleNamespace(CUDADriverError=RuntimeError),
    )
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda, RawModule=RawModule))
    monkeypatch.setattr(rt, "extension", lambda: None)
    monkeypatch.setattr(rt, "cupy_installed", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "current_stream", lambda i: types.SimpleNamespace(cuda_stream=7)
    )
    rt._cupy_module.cache_clear()
    path, name = KERNEL_FILES[0], sources.registrations(KERNEL_FILES[0])[0]
    x = torch.zeros(4)
    args = [rt.ptr(x), rt.i32(-3), rt.i64(2**40), rt.f32(0.5), rt.f64(0.25)]
    fake_cuda = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))
    try:
        rt.launch(name, (5, 2), (128,), 64 * 1024, args, device_tensor=fake_cuda)
    finally:
        rt._cupy_module.cache_clear()
    code, options, names = seen["module"]
    assert code.endswith(path.read_text()) and f'#line 1 "{path.name}"' in code
    assert "-std=c++17" in options and f"-I{sources.include_dir()}" in options
    assert names == sources.registrations(path) and seen["name"] == name
    grid, block, packed, smem, limit = seen["call"]
    assert (grid, block, smem, limit) == ((5, 2), (128,), 64 * 1024, 64 * 1024)
    assert [type(a) for a in packed] == [np.uint64, np.int32, np.int64, np.float32, np.float64]
    assert [a.item() for a in packed] == [x.data_ptr(), -3, 2**40, 0.5, 0.25]


# ---- the sources ship with the package ---------------------------------------------------------
def test_a_wheel_ships_the_sources_and_finds_them(tmp_path):
    env = {**os.environ, "HFSTI_SKIP_CUDA_BUILD": "1"}
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
           "-w", str(tmp_path), str(ROOT)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"hfsti_kernels/csrc/{p.relative_to(sources.csrc_dir()).as_posix()}"
                for p in [*KERNEL_FILES, sources.binding_file(), *sources.headers()]}  # fmt: skip
    assert expected <= names, sorted(expected - names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "from hfsti_kernels.cuda import sources; print(sources.csrc_dir())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=site,
                         env={**os.environ, "PYTHONPATH": str(site)}, check=True)  # fmt: skip
    assert Path(out.stdout.strip()) == site / "hfsti_kernels" / "csrc"
