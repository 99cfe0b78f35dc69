"""Launching the CUDA kernels of ``csrc/`` from Python, on whichever executor exists.

A launch plan (kernel name expression, grid, block, dynamic shared memory, typed arguments) is
computed once by an op module and executed by one of three executors (docs/kernels.md, "CUDA
backend"):

- ``"nvcc"``: the extension ``hfsti_kernels._cuda`` that setup.py builds when nvcc is found;
  CUDA tensors; asynchronous on torch's current stream (CUDA-graph safe).
- ``"cupy"``: the same ``.cu`` compiled at run time by NVRTC through CuPy's ``RawModule`` (the
  ``cupy`` extra), when the extension is absent; CUDA tensors, torch's current stream.
- ``"emulator"``: the g++ host build under the SIMT emulator (hfsti_kernels/cuda/build.py); CPU
  tensors, only with ``HFSTI_CUDA_EMULATE=1`` (read at call time); synchronous.

Arguments are typed here (:func:`ptr`, :func:`i32`, :func:`i64`, :func:`f32`, :func:`f64`); the
nvcc and emulator executors check each kind against the kernel's C++ parameter type and raise a
``TypeError`` naming the kernel and the argument. CuPy packs them as given, which is why every
plan also runs under the emulator in CI. Dynamic shared memory above 48 KB is opted in here,
once per kernel, device and size, before the launch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import warnings
from typing import NamedTuple

import torch

from hfsti_kernels.cuda import sources

EMULATE_ENV = "HFSTI_CUDA_EMULATE"
PTR, I32, I64, F32, F64 = range(5)  # the kind codes of csrc/include/hfsti/kernel_table.h
KIND_NAMES = ("ptr", "i32", "i64", "f32", "f64")
DEFAULT_SMEM = 48 * 1024  # above this a kernel must be opted in (CUDA's rule)

_CPP_TYPES = {
    torch.float64: "double",
    torch.float32: "float",
    torch.float16: "hfsti::half_t",
    torch.bfloat16: "hfsti::bf16_t",
}
_EXT = "the nvcc-built extension hfsti_kernels._cuda (pip install -e . with nvcc on PATH)"
_CUPY = "CuPy (pip install 'hfsti-kernels[cupy]')"
_EMU = "HFSTI_CUDA_EMULATE=1 (the host emulator, needs g++)"
_NO_PATH = f"backend: 'cuda' needs, on CUDA tensors, {_EXT} or {_CUPY}"
_NO_EMULATION = (
    f"backend: 'cuda' needs {_EMU} to run on CPU tensors; on CUDA tensors it runs with the "
    "nvcc-built extension or CuPy"
)
_NO_DEVICE = (
    f"backend: 'cuda' needs a CUDA device with {_EXT} or {_CUPY}, or for CPU tensors {_EMU}"
)


class Arg(NamedTuple):
    """One typed kernel argument: a kind code and its value (an address for pointers)."""

    kind: int
    value: int | float

    def __repr__(self) -> str:
        return f"{KIND_NAMES[self.kind]}({self.value})"


class _TensorArg(Arg):
    """A pointer argument that also holds its tensor (still a (kind, value) pair to the
    launchers), so that a temporary passed straight into an argument list lives until the
    launch has been issued."""

    def __new__(cls, t: torch.Tensor):
        arg = super().__new__(cls, PTR, t.data_ptr())
        arg.tensor = t
        return arg


def ptr(t: torch.Tensor | None) -> Arg:
    """The address of ``t``'s first element (``None``: a null pointer). Strides are not
    passed along: give the kernel contiguous tensors or their strides as integers. The
    argument holds ``t``, so ``ptr(x.contiguous())`` is safe while the argument list lives."""
    if t is None:
        return Arg(PTR, 0)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"ptr: expected a tensor or None, got {type(t).__name__}")
    return _TensorArg(t)


def _int(kind: int, bits: int, v) -> Arg:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{KIND_NAMES[kind]}: expected an integer, got {type(v).__name__}")
    v = int(v.__index__())
    if not -(2 ** (bits - 1)) <= v < 2 ** (bits - 1):
        raise ValueError(f"{KIND_NAMES[kind]}: {v} does not fit in {bits} bits")
    return Arg(kind, v)


def i32(v: int) -> Arg:
    return _int(I32, 32, v)


def i64(v: int) -> Arg:
    return _int(I64, 64, v)


def f32(v: float) -> Arg:
    return Arg(F32, float(v))


def f64(v: float) -> Arg:
    return Arg(F64, float(v))


def cpp_type(dtype: torch.dtype) -> str:
    """The kernels' C++ storage type for ``dtype`` (``torch.float16`` -> ``hfsti::half_t``)."""
    if dtype not in _CPP_TYPES:
        raise TypeError(f"dtype: CUDA kernels take float64/32/16 or bfloat16, got {dtype}")
    return _CPP_TYPES[dtype]


def kernel_name(base: str, *template_args: torch.dtype | int | str) -> str:
    """The name expression of an instantiation: ``kernel_name("hfsti_ma_fwd", torch.float32,
    64)`` -> ``"hfsti_ma_fwd<float, 64>"``; no template arguments: ``base`` itself."""
    if not template_args:
        return base
    parts = [cpp_type(a) if isinstance(a, torch.dtype) else str(a) for a in template_args]
    return f"{base}<{', '.join(parts)}>"


def emulation_enabled() -> bool:
    return os.environ.get(EMULATE_ENV, "0") == "1"


@functools.cache
def extension():
    """The nvcc-built module ``hfsti_kernels._cuda``, or None when it was not built."""
    try:
        mod = importlib.import_module("hfsti_kernels._cuda")
    except ImportError:
        return None
    stamp = f"sources {sources.tree_hash()}"
    if stamp not in mod.build_info:  # an editable install whose csrc/ changed since the build
        warnings.warn(
            f"hfsti_kernels._cuda was built from other csrc/ sources ({mod.build_info}, now "
            f"{stamp}); rebuild it with pip install -e .",
            stacklevel=2,
        )
    return mod


def cupy_installed() -> bool:
    return importlib.util.find_spec("cupy") is not None


def executor(x: torch.Tensor | None) -> str:
    """``"nvcc"``, ``"cupy"`` or ``"emulator"``: what runs the kernels on ``x``'s device
    (``None``: on some device of this process, the first that can); raises a one-line
    ``ValueError`` naming the ways to get one."""
    if x is None:
        if torch.cuda.is_available() and extension() is not None:
            return "nvcc"
        if torch.cuda.is_available() and cupy_installed():
            return "cupy"
        if emulation_enabled():
            return "emulator"
        raise ValueError(_NO_DEVICE)
    if x.is_cuda:
        if extension() is not None:
            return "nvcc"
        if cupy_installed():
            return "cupy"
        raise ValueError(_NO_PATH)
    if x.device.type != "cpu":
        raise ValueError(f"backend: 'cuda' needs CUDA or CPU tensors, got device {x.device}")
    if not emulation_enabled():
        raise ValueError(_NO_EMULATION)
    return "emulator"


def available(x: torch.Tensor | None) -> bool:
    """Whether :func:`launch` can run kernels on ``x``'s device."""
    try:
        executor(x)
    except ValueError:
        return False
    return True


def require(x: torch.Tensor | None) -> None:
    """Raise the one-line ``ValueError`` of :func:`executor` unless a path exists."""
    executor(x)


def describe() -> str:
    """One line for ``hfsti info``: which CUDA paths this installation has."""
    ext = extension()
    parts = [f"nvcc extension: built ({ext.build_info})" if ext else "nvcc extension: not built"]
    if not torch.cuda.is_available():
        parts[0] += " [no CUDA device here]"
    if cupy_installed():
        import importlib.metadata as md

        names = [d.metadata["Name"] for d in md.distributions() if "cupy" in d.metadata["Name"]]
        parts.append(f"CuPy: installed ({', '.join(sorted(set(names))) or 'cupy'})")
    else:
        parts.append("CuPy: not installed (pip install 'hfsti-kernels[cupy]')")
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    state = "on" if emulation_enabled() else f"off (set {EMULATE_ENV}=1)"
    parts.append(f"emulator: {state}, {'g++ found' if cxx else 'no C++ compiler'}")
    return "CUDA kernels: " + "; ".join(parts)


# (executor, device index, kernel) -> the dynamic shared memory it is opted in to
_SMEM: dict[tuple[str, int, str], int] = {}


def _opt_in(key: tuple[str, int, str], smem: int, set_limit) -> None:
    if smem > max(_SMEM.get(key, 0), DEFAULT_SMEM):
        set_limit(smem)
        _SMEM[key] = smem


def launch(
    name: str,
    grid: tuple[int, ...],
    block: tuple[int, ...],
    smem: int,
    args: list[Arg],
    device_tensor: torch.Tensor,
) -> None:
    """Launch kernel ``name`` (a registered name expression) on ``grid`` x ``block`` threads
    with ``smem`` bytes of dynamic shared memory; the executor and stream follow
    ``device_tensor`` (see the module docstring). Never allocates, never synchronises."""
    how = executor(device_tensor)
    grid, block, smem = [int(g) for g in grid], [int(b) for b in block], int(smem)
    if how == "emulator":
        from hfsti_kernels.cuda import build

        mod = build.load()
        _opt_in((how, -1, name), smem, lambda n: mod.set_max_dynamic_smem(name, n))
        mod.launch(name, grid, block, smem, 0, args)
        return
    index = device_tensor.device.index
    if index is None:
        index = torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    if how == "nvcc":
        mod = extension()
        _opt_in((how, index, name), smem, lambda n: mod.set_max_dynamic_smem(name, n, index))
        mod.launch(name, grid, block, smem, stream.cuda_stream, args, index)
    else:
        _cupy_launch(name, grid, block, smem, args, index, stream)


_NUMPY_KINDS = ("uint64", "int32", "int64", "float32", "float64")


@functools.cache
def _cupy_module(path, index: int):
    """The NVRTC RawModule of one source on one device, with every kernel it registers."""
    import cupy

    # CuPy's compile cache keys on the code alone: stamp it with the headers it includes.
    stamp = hashlib.sha256(b"".join(h.read_bytes() for h in sources.headers())).hexdigest()
    code = f'// headers {stamp}\n#line 1 "{path.name}"\n' + path.read_text(encoding="utf-8")
    from hfsti_kernels.cuda.nvrtc import OPTIONS

    with cupy.cuda.Device(index):
        return cupy.RawModule(
            code=code,
            options=(*OPTIONS, f"-I{sources.include_dir()}"),
            name_expressions=sources.registrations(path),
        )


def _cupy_launch(name, grid, block, smem, args, index, stream) -> None:
    import cupy
    import numpy as np

    path = sources.kernel_index().get(name)
    if path is None:
        raise KeyError(f"no CUDA kernel named '{name}' is registered in csrc/")
    if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy >= 14: the CUDA stream protocol
        cp_stream = cupy.cuda.Stream.from_external(stream)
    else:
        cp_stream = cupy.cuda.ExternalStream(stream.cuda_stream, index)
    with cupy.cuda.Device(index), cp_stream:
        fn = _cupy_module(path, index).get_function(name)

        def set_limit(n):
            fn.max_dynamic_shared_size_bytes = n

        _opt_in(("cupy", index, name), smem, set_limit)
        packed = tuple(getattr(np, _NUMPY_KINDS[a.kind])(a.value) for a in args)
        try:
            fn(tuple(grid), tuple(block), packed, shared_mem=smem)
        except cupy.cuda.driver.CUDADriverError as e:
            raise RuntimeError(f"{name}: launch failed: {e}") from None
