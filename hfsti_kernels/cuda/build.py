"""The host build of the CUDA kernels: ``csrc/*.cu`` compiled by g++ as C++ under the SIMT
emulator (``-DHFSTI_CUDA_EMULATE``, ``csrc/include/hfsti/emulate.h``) into the extension
``_cuda_emu``, the executor of ``backend="cuda"`` on CPU tensors (docs/kernels.md).

Built on first use and cached: the file name carries a hash of every source and header, the
flags, the compiler's version and the Python ABI, so any change rebuilds and an unchanged tree
loads at once. The cache lives in ``$HFSTI_CUDA_EMU_CACHE`` or ``~/.cache/hfsti_kernels``. A
build writes into a private temporary folder and renames the finished library into place, and a
file lock makes a second process wait for the first one's build instead of repeating it, so no
process ever loads a half-written library. The ``tsan`` variant (ThreadSanitizer) is for race
tests; it must be loaded into a process started with ``libtsan`` preloaded
(:func:`tsan_runtime`).

``python -m hfsti_kernels.cuda.build`` builds (and reports errors), ``--tsan`` the TSan variant,
``--nvrtc FILE...`` compiles kernel sources to PTX with NVRTC instead (hfsti_kernels/cuda/nvrtc.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hfsti_kernels.cuda import sources

CACHE_ENV = "HFSTI_CUDA_EMU_CACHE"
MODULE = "_cuda_emu"
VARIANTS = {
    "release": ["-O2"],
    # -O1 keeps TSan's reports readable and its slow-down (~10x) bearable.
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
_COMMON = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-pthread", "-DHFSTI_CUDA_EMULATE"]
_LOADED: dict[tuple[str, str], object] = {}


class BuildError(RuntimeError):
    """The host build failed; the message is one line naming the file and the first error."""


def cache_dir() -> Path:
    """Where built emulator libraries are kept."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "hfsti_kernels"


def compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++``."""
    return os.environ.get("CXX", "g++")


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"CUDA emulator: C++ compiler {cxx!r} not usable ({e})") from None
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _includes() -> list[str]:
    import pybind11

    return [sources.include_dir(), pybind11.get_include(), sysconfig.get_paths()["include"]]


def _key(files: list[Path], flags: list[str], cxx: str) -> str:
    h = hashlib.sha256()
    for part in (_compiler_version(cxx), sysconfig.get_config_var("EXT_SUFFIX") or "", *flags):
        h.update(part.encode() + b"\0")
    for path in sorted(set(files) | set(sources.headers())):
        h.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _compile(cmd: list[str], source: Path) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        log = out.stderr or out.stdout
        first = next((ln for ln in log.splitlines() if "error" in ln), log.strip()[:300])
        raise BuildError(f"CUDA emulator build failed in {source}: {first.strip()}")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(
    variant: str = "release",
    kernels: list[Path] | None = None,
    module: str = MODULE,
    jobs: int | None = None,
) -> Path:
    """Build (or find in the cache) the emulator extension and return its path.

    ``kernels``: the ``.cu`` files to include (default: every ``csrc/*.cu``); ``module``: the
    Python module name it defines (tests build their own kernels under another name).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    cxx = compiler()
    kernels = sources.kernel_files() if kernels is None else [Path(k) for k in kernels]
    units = [*kernels, sources.binding_file()]
    flags = [*_COMMON, *VARIANTS[variant], f"-DHFSTI_MODULE_NAME={module}"]
    key = _key(units, flags, cxx)
    target = cache_dir() / f"{module}-{variant}-{key}.so"
    if target.exists():
        return target
    with _locked(cache_dir() / f".{module}-{variant}-{key}.lock"):
        if target.exists():  # another process built it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{module}-", dir=cache_dir()))
        try:
            includes = [f"-I{d}" for d in _includes()]
            info = f'-DHFSTI_BUILD_INFO="emulator ({variant}), {_compiler_version(cxx)}"'
            objects, cmds = [], []
            for i, src in enumerate(units):
                obj = tmp / f"{i}-{src.stem}.o"
                objects.append(obj)
                lang = ["-x", "c++"] if src.suffix == ".cu" else []
                cmds.append(([cxx, *flags, *includes, info, *lang, "-c", str(src), "-o", str(obj)],
                             src))  # fmt: skip
            with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
                for fut in [pool.submit(_compile, cmd, src) for cmd, src in cmds]:
                    fut.result()
            so = tmp / "out.so"
            link = [cxx, *flags, "-shared", *map(str, objects), "-o", str(so)]
            _compile(link, Path(f"{module} (link)"))
            os.replace(so, target)  # atomic: readers see no file or the whole one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load(variant: str = "release", kernels: list[Path] | None = None, module: str = MODULE):
    """Build if needed and import the emulator extension (once per process and module)."""
    if (module, variant) not in _LOADED:
        path = build(variant, kernels, module)
        loader = importlib.machinery.ExtensionFileLoader(module, str(path))
        spec = importlib.util.spec_from_file_location(module, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        _LOADED[module, variant] = mod
    return _LOADED[module, variant]


def tsan_runtime() -> str | None:
    """The ThreadSanitizer runtime to preload (``LD_PRELOAD``) for the ``tsan`` variant."""
    try:
        out = subprocess.run([compiler(), "-print-file-name=libtsan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out if os.path.isabs(out) and os.path.exists(out) else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["--nvrtc"]:
            from hfsti_kernels.cuda import nvrtc

            for file in args[1:] or map(str, sources.kernel_files()):
                ptx, names = nvrtc.compile_file(Path(file))
                print(f"{file}: NVRTC ok, {len(names)} kernels, {len(ptx)} bytes of PTX")
            return 0
        variant = "tsan" if "--tsan" in args else "release"
        print(build(variant))
    except (BuildError, RuntimeError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
