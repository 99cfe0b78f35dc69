"""The host build of the CUDA kernels: ``csrc/*.cu`` compiled by g++ as C++ under the SIMT
emulator (``-DHFSTI_CUDA_EMULATE``, ``csrc/include/hfsti/emulate.h``) together with the binding
(``csrc/binding.cpp``) into the extension ``_cuda_emu``, the executor of ``backend="cuda"`` on
CPU tensors (docs/kernels.md).

Built on first use and cached by :mod:`hfsti_kernels.cuda._hostbuild`: one object a source,
compiled in parallel, then linked (each file's name carries a hash of its sources and headers, the
flags and the compiler's version, so editing one kernel recompiles only that file; a build is
renamed into place under a file lock, so concurrent processes neither repeat it nor load a
half-written library). The cache is ``$HFSTI_HOSTBUILD_CACHE`` or
``~/.cache/hfsti_kernels/hostbuild``. The
``tsan`` variant (ThreadSanitizer) is for race tests, the ``asan`` one (AddressSanitizer) for
memory errors; load them only in a process started with ``LD_PRELOAD`` set to
``_hostbuild.tsan_runtime()`` or ``_hostbuild.asan_preload()``.

``python -m hfsti_kernels.cuda.build`` builds it and prints the path or the first compiler
error, ``--tsan`` / ``--asan`` a sanitizer variant, ``--nvrtc [FILE...]`` compiles kernel sources
to PTX with NVRTC instead (the CuPy path's compiler, hfsti_kernels/cuda/nvrtc.py).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hfsti_kernels.cuda import _hostbuild, sources

MODULE = "_cuda_emu"
VARIANTS = {
    "release": ("-O2",),
    # -O1 keeps TSan's slow-down (~10x) bearable and its reports readable.
    "tsan": ("-O1", "-g", "-fsanitize=thread"),
    # AddressSanitizer: out-of-bounds and use-after-free accesses, as a launch on a freed tensor.
    "asan": ("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"),
}
_FLAGS = ("-fvisibility=hidden", "-DHFSTI_CUDA_EMULATE")
_LOADED: dict[str, object] = {}


def build(
    variant: str = "release", kernels: list[Path] | None = None, module: str = MODULE
) -> Path:
    """Build (or find in the cache) the emulator extension and return its path.

    ``kernels``: the ``.cu`` files to include (default: every ``csrc/*.cu``); ``module``: the
    Python module name it defines (tests build their own kernels under another name). Raises
    ``_hostbuild.HostBuildError`` naming the first compiler error.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    try:
        import pybind11
    except ImportError:
        msg = "CUDA emulator: needs pybind11 (pip install pybind11)"
        raise _hostbuild.HostBuildError(msg) from None
    kernels = sources.kernel_files() if kernels is None else [Path(k) for k in kernels]
    info = f"emulator ({variant}), {_hostbuild.compiler()}"
    flags = (*VARIANTS[variant], *_FLAGS, f"-DHFSTI_MODULE_NAME={module}",
             f'-DHFSTI_BUILD_INFO="{info}"')  # fmt: skip
    includes = [sources.include_dir(), pybind11.get_include(), sysconfig.get_paths()["include"]]

    def compile_one(src: Path) -> Path:
        return _hostbuild.build(f"{module}-{variant}-{src.stem}", [src], kind="object",
                                include_dirs=includes, flags=flags)  # fmt: skip

    # One object a source, compiled in parallel (the kernels are template-heavy), then linked.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, [*kernels, sources.binding_file()]))
    return _hostbuild.build(f"{module}-{variant}", objects, flags=VARIANTS[variant])


def load(variant: str = "release", kernels: list[Path] | None = None, module: str = MODULE):
    """Build if needed and import the emulator extension (once per process and module name)."""
    if module not in _LOADED:
        path = build(variant, kernels, module)
        loader = importlib.machinery.ExtensionFileLoader(module, str(path))
        spec = importlib.util.spec_from_file_location(module, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        _LOADED[module] = mod
    return _LOADED[module]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["--nvrtc"]:
            from hfsti_kernels.cuda import nvrtc

            for file in args[1:] or map(str, sources.kernel_files()):
                ptx, names = nvrtc.compile_file(Path(file))
                print(f"{file}: NVRTC ok, {len(names)} kernels, {len(ptx)} bytes of PTX")
            return 0
        variant = next((a[2:] for a in args if a in ("--tsan", "--asan")), "release")
        print(build(variant))
    except (RuntimeError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
