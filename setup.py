"""Installs ``hfsti`` (the reference system) and ``hfsti_kernels`` (the fused kernels).

When nvcc is found (``$CUDA_HOME/bin``, ``/usr/local/cuda/bin`` or ``PATH``) this also builds the
CUDA extension ``hfsti_kernels._cuda`` from ``csrc/`` (every ``csrc/*.cu`` plus the pybind11
binding; cudart linked statically, so importing it needs no driver). Architectures:
``HFSTI_CUDA_ARCHS`` (default ``"8.0;9.0+PTX"``: SASS for sm_80 and sm_90 plus sm_90 PTX);
``HFSTI_SKIP_CUDA_BUILD=1`` skips the build. The CUDA build never fails the install: without
nvcc, or if it fails, a warning is printed and the package installs without the extension (the
CUDA backend then uses CuPy, docs/kernels.md). ``csrc/`` ships as the data package
``hfsti_kernels.csrc`` for the CuPy path and the host emulator.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _gencode(spec: str) -> list[str]:
    """``"8.0;9.0+PTX"`` (also ``80,90``) -> nvcc ``-gencode`` flags."""
    flags = []
    for item in filter(None, re.split(r"[;,\s]+", spec)):
        ptx = item.upper().endswith("+PTX")
        num = item[: -len("+PTX")] if ptx else item
        if not re.fullmatch(r"\d+(\.\d)?[af]?", num):
            raise ValueError(f"HFSTI_CUDA_ARCHS: expected e.g. '8.0;9.0+PTX', got {item!r}")
        sm = num.replace(".", "")
        flags.append(f"-gencode=arch=compute_{sm},code=sm_{sm}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{sm},code=compute_{sm}")
    return flags


def _tree_hash() -> str:
    """hfsti_kernels.cuda.sources.tree_hash of csrc/, loaded by path (setup.py cannot import
    the package); tests/test_cuda_build.py compares it with the current tree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_sources", ROOT / "hfsti_kernels/cuda/sources.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tree_hash(CSRC)


def _warn(msg: str) -> None:
    print(f"WARNING: hfsti_kernels._cuda: {msg}", file=sys.stderr, flush=True)


class BuildCuda(build_ext):
    """Builds the CUDA extension with nvcc, one process per source; skips it with a warning
    rather than fail."""

    def run(self):
        self._skipped = []
        if os.environ.get("HFSTI_SKIP_CUDA_BUILD") == "1":
            _warn("HFSTI_SKIP_CUDA_BUILD=1: not built")
            self.extensions = []
        elif _nvcc() is None:
            _warn("nvcc not found: not built (the CUDA backend can use CuPy instead)")
            self.extensions = []
        super().run()

    def build_extensions(self):
        for ext in list(self.extensions):
            start = time.monotonic()
            try:
                self._build(ext)
            except Exception as e:  # never fail the install because of the CUDA build
                _warn(f"build failed, installing without it: {e}")
                self.extensions.remove(ext)
            else:
                print(f"hfsti_kernels._cuda: built in {time.monotonic() - start:.0f} s")

    def _build(self, ext: Extension) -> None:
        import pybind11

        nvcc = _nvcc()
        out = Path(self.get_ext_fullpath(ext.name))
        tmp = Path(self.build_temp) / "cuda"
        tmp.mkdir(parents=True, exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        release = re.search(r"release ([\d.]+)", version)
        archs = os.environ.get("HFSTI_CUDA_ARCHS", "8.0;9.0+PTX")
        info = f"nvcc {release.group(1) if release else '?'}, archs {archs}, sources {_tree_hash()}"
        common = [
            "-std=c++17", "-O3", "-lineinfo", "-Xcompiler=-fPIC,-fvisibility=hidden",
            f"-I{CSRC / 'include'}", f"-I{pybind11.get_include()}",
            f"-I{sysconfig.get_paths()['include']}",
        ]  # fmt: skip
        jobs = []
        for src in map(Path, ext.sources):
            obj = tmp / (src.stem + ".o")
            if src.suffix == ".cu":
                cmd = [nvcc, *common, *_gencode(archs), "-c", str(src), "-o", str(obj)]
            else:
                cmd = [nvcc, *common, f'-DHFSTI_BUILD_INFO="{info}"',
                       "-DHFSTI_MODULE_NAME=_cuda", "-c", str(src), "-o", str(obj)]  # fmt: skip
            jobs.append((cmd, src, obj))
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for fut in [pool.submit(_run, cmd, src) for cmd, src, _ in jobs]:
                fut.result()
        link = [nvcc, "-shared", "-cudart=static", *(str(o) for *_, o in jobs)]
        _run([*link, "-o", str(out)], out)


def _run(cmd: list[str], what: Path) -> None:
    print(f"nvcc: {what.name}", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        log = (res.stderr or res.stdout).strip()
        first = next((ln for ln in log.splitlines() if "error" in ln), log[:300])
        raise RuntimeError(f"{what.name}: {first.strip()}")


setup(
    name="hfsti-kernels",
    version="0.1.0",
    description="HFSTI-Net video polyp segmentation: PyTorch reference and fused Triton kernels",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=[
        *find_packages(include=["hfsti", "hfsti.*", "hfsti_kernels", "hfsti_kernels.*"]),
        "hfsti_kernels.csrc",
    ],
    package_dir={"hfsti_kernels.csrc": "csrc"},
    package_data={"hfsti_kernels.csrc": ["*.cu", "*.cpp", "include/hfsti/*.h"]},
    ext_modules=[
        Extension(
            "hfsti_kernels._cuda",
            sources=[
                *(str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.cu"))),
                "csrc/binding.cpp",
            ],
        )
    ],
    cmdclass={"build_ext": BuildCuda},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "triton>=3.2; platform_system == 'Linux'",
        "numpy",
        "pillow",
        "opencv-python-headless",
        "tqdm",
        "safetensors",
        "matplotlib",
        "pybind11>=2.12",  # headers for the CUDA host emulator's build (HFSTI_CUDA_EMULATE=1)
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-benchmark",
            "pysodmetrics",
            "scipy",
            "ruff",
            # NVRTC without a GPU: CI compiles every csrc kernel to PTX (tests/test_cuda_build.py)
            "nvidia-cuda-nvrtc>=13,<14",
            "cuda-bindings>=13,<14",
        ],
        "cupy": ["cupy-cuda13x"],
    },
    entry_points={"console_scripts": ["hfsti = hfsti.cli:main"]},
)
