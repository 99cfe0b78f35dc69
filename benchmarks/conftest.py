"""Benchmark-wide options and fixtures.

``--bench-quick`` picks the GPU's first-pass configuration, ``--bench-tiny`` forces the CPU's
tiny one on a GPU machine; without CUDA the tiny one always runs (see _config.py). The Triton
interpreter stays off: the CPU configuration times the reference providers only.
"""

from __future__ import annotations

import os
import platform

import _config
import _timing
import pytest
import torch
import triton


def pytest_addoption(parser) -> None:
    group = parser.getgroup("hfsti benchmarks")
    group.addoption("--bench-quick", action="store_true", help="GPU first pass: fewer cases")
    group.addoption("--bench-tiny", action="store_true", help="tiny CPU-sized configuration")


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    """Make the raw JSON self-describing, so reports regenerate from it alone."""
    cuda = torch.cuda.is_available()
    machine_info["gpu"] = torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})"
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    machine_info["bench_config"] = _config.load(config).name
    machine_info["command"] = os.environ.get("HFSTI_BENCH_COMMAND", "")


@pytest.fixture(scope="session")
def cfg(request) -> _config.BenchConfig:
    return _config.load(request.config)


@pytest.fixture(scope="session")
def ceilings(cfg) -> dict:
    """Bandwidth and matrix throughput, measured once per session."""
    return _timing.ceilings(cfg)
