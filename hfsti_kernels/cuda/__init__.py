"""The CUDA backend (``backend="cuda"``): hand-written kernels from ``csrc/``.

Each op module here registers its public op's ``"cuda"`` implementation with
``hfsti_kernels._registry``; :mod:`hfsti_kernels.cuda.runtime` launches the kernels on the nvcc
extension, CuPy or the host emulator. Importing this package never fails: an op module that is
absent is skipped, and one that fails to import is reported by a warning and in
:data:`IMPORT_ERRORS` (its op then falls back to the Triton implementation, as the losses do).
"""

import importlib
import importlib.util
import warnings

OP_MODULES = ("fft_channel_attention", "fourier_unit", "gated_fusion", "memory_attention")
IMPORT_ERRORS: dict[str, str] = {}

for _name in OP_MODULES:
    _module = f"{__name__}.{_name}"
    if importlib.util.find_spec(_module) is None:
        continue
    try:
        importlib.import_module(_module)
    except Exception as _e:  # a broken op module must not break ``import hfsti_kernels``
        IMPORT_ERRORS[_name] = f"{type(_e).__name__}: {_e}"
        warnings.warn(f"{_module} not loaded ({IMPORT_ERRORS[_name]})", stacklevel=2)
