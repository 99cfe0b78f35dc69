"""spectral_correlation_loss's Triton kernels against the reference (docs/ops.md,
spectral_correlation_loss): the checks both losses pass (``loss_suite``), run for this loss.
"""

from __future__ import annotations

import pytest
from helpers import INTERPRETER_ONLY
from loss_suite import *  # noqa: F403 (the shared loss tests, run for the loss fixture below)

pytestmark = INTERPRETER_ONLY


@pytest.fixture
def loss():
    return "spectral_correlation_loss"
