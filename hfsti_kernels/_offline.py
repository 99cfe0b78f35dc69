"""Drive the kernels' GPU code path on a machine without a GPU: compile only, never launch.

Triton asks its active driver for the target; :class:`TargetDriver` names one (sm_90 by
default) and has no device. :class:`LaunchRecorder` replaces every kernel launch with a compile
for that target (``mode="compile"``: PTX, cubin and shared-memory size, what
``benchmarks/compile_report.py`` reports) or with nothing at all (``mode="skip"``: only which
kernels were launched, for tracing tests). Outputs of the ops are then uninitialised memory:
only the code path, the launch arguments and what torch.compile traces are meaningful.

Use in a process of its own, started without ``TRITON_INTERPRET=1`` (the kernels must be
``triton.jit`` functions): it patches Triton process-wide.
"""

from __future__ import annotations

import dataclasses
import importlib

from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

from hfsti_kernels._backend import interpreter_enabled
from hfsti_kernels._registry import OPS


class TargetDriver:
    """Stands in for the CUDA driver: names the target, has no device to launch on."""

    def __init__(self, arch: int = 90) -> None:
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target


@dataclasses.dataclass
class Launch:
    kernel: str  # the kernel function's name
    tag: str  # LaunchRecorder.tag when it was first launched
    constexprs: dict  # keyword launch arguments that are constants (incl. num_warps)
    compiled: object  # CompiledKernel (or FutureKernel under AsyncCompileMode); None if skipped


class LaunchRecorder:
    """Context manager: every JIT launch is compiled (``"compile"``) or skipped (``"skip"``),
    and recorded once per distinct compiled kernel (compile) or kernel and constexprs (skip)."""

    def __init__(self, mode: str = "compile") -> None:
        if mode not in ("compile", "skip"):
            raise ValueError(f"mode: expected 'compile' or 'skip', got {mode!r}")
        self.mode = mode
        self.tag = ""
        self.launches: dict[object, Launch] = {}
        self._run = JITFunction.run

    def __enter__(self) -> LaunchRecorder:
        recorder = self

        def run(fn, *args, grid, warmup, **kwargs):
            consts = {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, str))}
            if recorder.mode == "skip":
                key, handle = (fn.fn.__name__, tuple(sorted(consts.items()))), None
            else:
                handle = recorder._run(fn, *args, grid=grid, warmup=True, **kwargs)
                key = id(handle)
            if key not in recorder.launches:
                recorder.launches[key] = Launch(fn.fn.__name__, recorder.tag, consts, handle)
            return handle

        JITFunction.run = run
        return self

    def __exit__(self, *exc) -> None:
        JITFunction.run = self._run


def use_target(arch: int = 90) -> None:
    """Make Triton compile for sm_<arch> with no GPU present."""
    if interpreter_enabled():
        raise RuntimeError(
            "hfsti_kernels._offline: TRITON_INTERPRET=1 is set; the kernels are interpreted "
            "functions, not GPU code. Run in a process started without it."
        )
    driver.set_active(TargetDriver(arch))


def route_ops_to_triton() -> None:
    """Send the public ops to their kernels for CPU tensors too (launches are recorded)."""
    for name in OPS:
        module = importlib.import_module(f"hfsti_kernels.ops.{name}")
        module.select_backend = lambda backend, x: "triton"
