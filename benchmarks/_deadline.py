"""pytest plugin: ``--deadline EPOCH_SECONDS`` skips every test that would start after it.

``run_gpu.py`` loads it (``-p _deadline``) so that a suite always ends inside the device's
per-call limit and still writes its JSON and junit XML, rather than being killed with nothing
written. Cases are ordered most important first, so a deadline cuts the least important.
"""

from __future__ import annotations

import time

import pytest


def pytest_addoption(parser) -> None:
    parser.addoption("--deadline", type=float, default=None, help="skip tests starting later")


def pytest_runtest_setup(item) -> None:
    deadline = item.config.getoption("--deadline")
    if deadline is not None and time.time() > deadline:
        pytest.skip("deadline reached")
