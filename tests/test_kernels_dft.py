"""The DFT matrices and their cache (``hfsti_kernels.dft``), and where the staged path starts
(``hfsti_kernels._staged``), shared by the three FFT ops.
"""

from __future__ import annotations

import pytest
import torch
from fft_op_suite import check_against_reference
from helpers import INTERPRETER_ONLY, TOLERANCE, assert_rel_close
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

from hfsti_kernels import _staged, dft
from hfsti_kernels._inputs import fft_op_inputs

pytestmark = INTERPRETER_ONLY


def test_staged_threshold_at_model_sizes():
    assert _staged.is_staged(88, 88) and _staged.is_staged(65, 20) and _staged.is_staged(11, 100)
    assert not _staged.is_staged(44, 44) and not _staged.is_staged(64, 64)
    assert not _staged.is_staged(11, 11)


# --------------------------------------------------------------------------- DFT matrices


@pytest.mark.parametrize("H, W", [(5, 7), (6, 8), (1, 1), (11, 13)])
def test_dft_matrices_give_rfft2(H, W):
    fh, fw = dft.dft_matrices(H, W, torch.float64, torch.device("cpu"))
    F = torch.complex(fh[0], fh[1])[:H, :H]
    G = torch.complex(fw[0], fw[1])[:W, : W // 2 + 1]
    x = torch.randn(H, W, dtype=torch.float64).to(torch.complex128)
    assert_rel_close(
        torch.view_as_real(F @ x @ G),
        torch.view_as_real(torch.fft.rfft2(x.real, norm="ortho")),
        1e-13,
        "dft",
    )
    # Hermitian weights: the inverse dropped bins are exactly real.
    assert torch.all(fw[1, :, 0] == 0) and (W % 2 or torch.all(fw[1, :, W // 2] == 0))
    assert dft.dft_matrices(H, W, torch.float64, torch.device("cpu"))[0] is fh  # cached


def test_dft_cache_never_holds_fake_tensors():
    dft._CACHE.clear()
    with FakeTensorMode():
        fh, _ = dft.dft_matrices(9, 10, torch.float32, torch.device("cpu"))
    assert is_fake(fh)
    assert not dft._CACHE
    fh, _ = dft.dft_matrices(9, 10, torch.float32, torch.device("cpu"))
    assert not is_fake(fh) and len(dft._CACHE) == 1


def test_dft_matrices_in_inference_mode_stay_usable_for_autograd():
    dft._CACHE.clear()
    with torch.inference_mode():
        dft.dft_matrices(5, 7, torch.float64, torch.device("cpu"))
    check_against_reference(
        "fft_channel_attention",
        fft_op_inputs("fft_channel_attention", 1, 1, 5, 7, torch.float64),
        TOLERANCE[torch.float64],
    )
