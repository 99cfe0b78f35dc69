"""Compile a kernel source to PTX with NVRTC, as the CuPy path does at run time.

Uses NVIDIA's ``cuda-bindings`` with the ``nvidia-cuda-nvrtc`` wheel (the ``test`` extra), which
need no GPU and no driver, so CI checks that every ``csrc/*.cu`` compiles for the CuPy path:
host code hidden behind ``__CUDACC_RTC__``, no standard headers in device code, every
registered template instantiation reachable as a name expression.
"""

from __future__ import annotations

from pathlib import Path

from hfsti_kernels.cuda import sources

# The options the CuPy path passes too (hfsti_kernels/cuda/runtime.py), less the -arch CuPy adds.
OPTIONS = ("-std=c++17",)


class NvrtcError(RuntimeError):
    """NVRTC rejected a source; the message names the file and NVRTC's first error."""


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        raise NvrtcError(
            "NVRTC: needs cuda-bindings and nvidia-cuda-nvrtc (pip install -e '.[test]')"
        ) from None
    return nvrtc


def _ok(nvrtc, result, what: str) -> None:
    err = result[0] if isinstance(result, tuple) else result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NvrtcError(f"NVRTC: {what}: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")


def version() -> tuple[int, int]:
    nvrtc = _nvrtc()
    res = nvrtc.nvrtcVersion()
    _ok(nvrtc, res, "version")
    return res[1], res[2]


def compile_file(
    path: Path, arch: str = "compute_90", names: list[str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """Compile ``path`` for ``arch``; returns (PTX, {name expression: lowered (mangled) name}).

    ``names`` defaults to the file's registered kernels.
    """
    nvrtc = _nvrtc()
    path = Path(path)
    names = sources.registrations(path) if names is None else names
    res = nvrtc.nvrtcCreateProgram(path.read_bytes(), path.name.encode(), 0, [], [])
    _ok(nvrtc, res, f"creating the program for {path}")
    prog = res[1]
    try:
        for name in names:
            _ok(nvrtc, nvrtc.nvrtcAddNameExpression(prog, name.encode()), f"{path}: {name}")
        opts = [f"-arch={arch}", *OPTIONS, f"-I{sources.include_dir()}"]
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        err = result[0] if isinstance(result, tuple) else result
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            log = _log(nvrtc, prog)
            first = next((ln for ln in log.splitlines() if "error" in ln), log.strip()[:300])
            raise NvrtcError(f"NVRTC failed on {path}: {first.strip()}")
        res = nvrtc.nvrtcGetPTXSize(prog)
        _ok(nvrtc, res, "PTX size")
        ptx = b" " * res[1]
        _ok(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx), "PTX")
        lowered = {}
        for name in names:
            res = nvrtc.nvrtcGetLoweredName(prog, name.encode())
            _ok(nvrtc, res, f"{path}: lowered name of {name}")
            lowered[name] = res[1].decode()
        return ptx.rstrip(b"\0"), lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _log(nvrtc, prog) -> str:
    res = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * res[1]
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\0").decode(errors="replace")
