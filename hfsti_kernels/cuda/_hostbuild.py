"""Compile C++ / CUDA sources with the host compiler into a cached shared object or executable.

A small generic helper for host builds that are not the ``_cuda_emu`` extension (which
``hfsti_kernels/cuda/build.py`` builds): the emulator's test kernels (``csrc/tests/*.cu``, driven
through ctypes) and standalone ThreadSanitizer programs. ``.cu`` files are compiled as C++
(``-x c++``); pass ``-DHFSTI_CUDA_EMULATE`` to run them on the host SIMT emulator
(``csrc/include/hfsti/emulate.h``, see docs/kernels.md).

The output's name carries a hash of the sources, every header under the include folders, the
flags and the compiler's version, so any change rebuilds and an unchanged tree is found at once.
Builds write a temporary file beside the target and rename it into place under a file lock, so
concurrent processes never see a half-written file. The cache is ``$HFSTI_HOSTBUILD_CACHE`` or
``~/.cache/hfsti_kernels/hostbuild``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE_ENV = "HFSTI_HOSTBUILD_CACHE"
BASE_FLAGS = ("-std=c++20", "-pthread")
_KIND_FLAGS = {"shared": ("-shared", "-fPIC"), "executable": (), "object": ("-c", "-fPIC")}
_SUFFIX = {"shared": ".so", "object": ".o"}


class HostBuildError(RuntimeError):
    """The compiler failed; ``log`` holds its full output, the message its first error line."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "hfsti_kernels" / "hostbuild"


def compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++``."""
    return os.environ.get("CXX", "g++")


@functools.cache
def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise HostBuildError(f"host build: C++ compiler {cxx!r} not usable ({e})") from None
    return out.stdout.splitlines()[0] if out.stdout else cxx


def runtime_library(name: str) -> str:
    """Path of the compiler's runtime library ``name`` (e.g. "libtsan.so"), as the compiler
    prints it: a bare name when it has none."""
    out = subprocess.run(
        [compiler(), f"-print-file-name={name}"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def tsan_runtime() -> str:
    """Path of the compiler's ThreadSanitizer runtime (to LD_PRELOAD for a TSan ``.so``)."""
    return runtime_library("libtsan.so")


def asan_preload() -> str:
    """``LD_PRELOAD`` for a process that loads an ASan ``.so``: the AddressSanitizer runtime,
    then the C++ runtime (so that ASan sees the extension's operator new/delete), or "" when
    the compiler has no ASan runtime."""
    libs = [runtime_library("libasan.so"), runtime_library("libstdc++.so")]
    return " ".join(libs) if all(os.path.isabs(lib) for lib in libs) else ""


def _key(sources: Sequence[Path], includes: Sequence[Path], flags: Sequence[str], kind: str) -> str:
    h = hashlib.sha256()
    for part in (_compiler_version(compiler()), kind, *flags):
        h.update(part.encode() + b"\0")
    headers = sorted(
        {p for d in includes for p in Path(d).rglob("*") if p.suffix in (".h", ".hpp")}
    )
    for path in [*sources, *headers]:
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def build(
    name: str,
    sources: Sequence[str | os.PathLike],
    *,
    kind: str = "shared",
    include_dirs: Sequence[str | os.PathLike] = (),
    flags: Sequence[str] = ("-O2",),
) -> Path:
    """Build ``sources`` into ``<cache>/<name>-<hash>.so`` (``kind="shared"``), an executable
    (``kind="executable"``) or the object file of one source (``kind="object"``, ``.o``; objects
    may be sources of a later build, so several can compile in parallel) and return its path; a
    cached build is returned at once.

    ``flags`` are added to ``-std=c++20 -pthread`` (and ``-shared -fPIC`` for shared objects,
    ``-c -fPIC`` for objects); raises :class:`HostBuildError` naming the first compiler error.
    """
    if kind not in _KIND_FLAGS:
        raise ValueError(f"kind: expected one of {tuple(_KIND_FLAGS)}, got {kind!r}")
    if kind == "object" and len(sources) != 1:
        raise ValueError(f"host build {name}: an object is built from one source")
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise FileNotFoundError(f"host build {name}: source {s} does not exist")
    incs = [Path(d).resolve() for d in include_dirs]
    all_flags = [*BASE_FLAGS, *_KIND_FLAGS[kind], *flags]
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / (f"{name}-{_key(srcs, incs, all_flags, kind)}" + _SUFFIX.get(kind, ""))
    if target.exists():
        return target
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # built by another process while we waited
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=root)
        os.close(fd)
        try:
            cmd = [compiler(), *all_flags, *(f"-I{d}" for d in incs)]
            lang = "none"  # an explicit "-x none" before objects only would drop libstdc++
            for s in srcs:
                want = "c++" if s.suffix == ".cu" else "none"
                cmd += [*(["-x", want] if want != lang else []), str(s)]
                lang = want
            out = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True)
            if out.returncode != 0:
                log = out.stderr or out.stdout
                first = next((ln for ln in log.splitlines() if "error" in ln), log.strip()[:300])
                raise HostBuildError(f"host build {name} failed: {first.strip()}", log)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target
