"""Installs ``hfsti`` (the reference system) and ``hfsti_kernels`` (the fused kernels)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hfsti-kernels",
    version="0.1.0",
    description="HFSTI-Net video polyp segmentation: PyTorch reference and fused Triton kernels",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hfsti", "hfsti.*", "hfsti_kernels", "hfsti_kernels.*"]),
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
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "pysodmetrics", "scipy", "ruff"],
    },
    entry_points={"console_scripts": ["hfsti = hfsti.cli:main"]},
)
