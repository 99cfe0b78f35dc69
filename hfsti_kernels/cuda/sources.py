"""Where the CUDA sources are, and which kernels each one registers.

``csrc/`` lives at the repository root; setup.py ships it as the data package
``hfsti_kernels.csrc``, so an installed wheel finds it next to this package and an editable
install (or a plain checkout) finds it at the root. The kernels a file registers are read from
its ``HFSTI_REGISTER_KERNEL(<name expression>);`` and
``HFSTI_REGISTER_KERNEL_FOR_DTYPES(<kernel>);`` lines (csrc/include/hfsti/kernel_table.h), the
one list that the nvcc build, the NVRTC/CuPy path and the reports share.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

_REGISTRATION = re.compile(r"^\s*HFSTI_REGISTER_KERNEL(_FOR_DTYPES)?\((.+)\)\s*;", re.MULTILINE)
# The storage types HFSTI_REGISTER_KERNEL_FOR_DTYPES registers a kernel for, in its order
# (csrc/include/hfsti/kernel_table.h).
DTYPES = ("double", "float", "hfsti::half_t", "hfsti::bf16_t")


@functools.cache
def csrc_dir() -> Path:
    """The folder holding ``binding.cpp``, the kernel ``.cu`` files and ``include/``."""
    try:
        spec = importlib.util.find_spec("hfsti_kernels.csrc")
    except ImportError:
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "binding.cpp").exists():
            return Path(loc)
    root = Path(__file__).resolve().parents[2] / "csrc"
    if (root / "binding.cpp").exists():
        return root
    raise FileNotFoundError("hfsti_kernels.csrc: the CUDA sources are not installed")


def include_dir() -> str:
    return str(csrc_dir() / "include")


def kernel_files() -> list[Path]:
    """Every kernel source (``csrc/*.cu``; test kernels live under ``csrc/tests/``)."""
    return sorted(csrc_dir().glob("*.cu"))


def binding_file() -> Path:
    return csrc_dir() / "binding.cpp"


def headers() -> list[Path]:
    return sorted((csrc_dir() / "include").rglob("*.h"))


def normalise(expr: str) -> str:
    """A name expression as the launch table stores it (whitespace runs collapsed)."""
    return " ".join(expr.split())


def registrations(path: Path) -> list[str]:
    """The kernel name expressions that the source ``path`` registers, in order."""
    text = Path(path).read_text(encoding="utf-8")
    names = []
    for m in _REGISTRATION.finditer(text):
        names += _for_dtypes(m.group(2)) if m.group(1) else [normalise(m.group(2))]
    return names


def _for_dtypes(args: str) -> list[str]:
    """The names ``HFSTI_REGISTER_KERNEL_FOR_DTYPES(args)`` registers: ``kernel<T>``, or
    ``kernel<T, v>`` for each trailing value v, for each storage type T in turn."""
    kernel, *values = (normalise(a) for a in args.split(","))
    tails = [f", {v}" for v in values] or [""]
    return [f"{kernel}<{t}{tail}>" for t in DTYPES for tail in tails]


@functools.cache
def kernel_index() -> dict[str, Path]:
    """Kernel name expression -> the ``csrc/*.cu`` file that defines it."""
    return {name: path for path in kernel_files() for name in registrations(path)}


def tree_hash(root: Path | None = None) -> str:
    """A short hash of the sources the extension is built from (kernels, binding, headers) under
    ``root`` (default: :func:`csrc_dir`); setup.py stamps it into the extension's build info."""
    root = Path(root) if root is not None else csrc_dir()
    files = [*root.glob("*.cu"), root / "binding.cpp", *(root / "include").rglob("*.h")]
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
