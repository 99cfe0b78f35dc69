"""``--backend cuda`` in the command line: ``hfsti segment`` and ``hfsti eval`` on real CVC-612
frames with the CUDA kernels run by the host SIMT emulator (``HFSTI_CUDA_EMULATE=1``) give the
reference backend's masks; ``train``, ``segment`` and ``eval`` offer "cuda" exactly when an
executor exists, and refuse it otherwise in one line.

The masks are 8-bit PNGs of the probability: fp32 kernels and the fp32 reference may round a
value lying near a grey-level boundary to neighbouring levels, so masks may differ by one grey
level (never more), and the test states how many pixels do. The model is small (a C = 16
checkpoint at 64x64, the CLI's ``--weights``), as each emulated CUDA thread is an OS thread; the
frames keep their real 384x288 size (the model resizes them). Skipped without CVC-612.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import CVC612, NEEDS_CXX
from PIL import Image

from hfsti import HFSTIConfig, HFSTINet, save_checkpoint
from hfsti.cli import build_parser, main, usable_backends
from hfsti_kernels.cuda import runtime as rt

pytestmark = NEEDS_CXX
needs_data = pytest.mark.skipif(not CVC612.is_dir(), reason=f"CVC-612 not found at {CVC612}")
SEQ, FRAMES = "seq10", ("200.png", "201.png")  # two consecutive frames: memory is used


@pytest.fixture
def emulate(monkeypatch):
    monkeypatch.setenv(rt.EMULATE_ENV, "1")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = HFSTINet(HFSTIConfig(channels=16, rmp_heads=2, memory_frames=1, input_size=64))
    path = tmp_path_factory.mktemp("weights") / "small.safetensors"
    save_checkpoint(model.eval(), path)
    return str(path)


def _mini_root(root):
    """A SUN-SEG-layout root holding the two frames of SEQ and their masks."""
    for kind in ("Frame", "GT"):
        (root / kind / SEQ).mkdir(parents=True)
        for name in FRAMES:
            shutil.copy(CVC612 / kind / SEQ / name, root / kind / SEQ / name)
    return root


def _read(folder) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder.glob("*.png"))}


def assert_masks_agree(got_dir, want_dir) -> None:
    """Same files, same sizes, every pixel within one grey level; the masks are not flat."""
    got, want = _read(got_dir), _read(want_dir)
    assert sorted(got) == sorted(want) and len(want) == len(FRAMES)
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape == (288, 384), name
        diff = np.abs(g - w)
        print(f"{name}: {(diff > 0).sum()} of {diff.size} pixels differ, by at most {diff.max()}")
        assert diff.max() <= 1, f"{name}: masks differ by {diff.max()} grey levels"
        assert w.max() > w.min(), f"{name}: the reference mask is flat (a vacuous comparison)"


@needs_data
def test_segment_cuda_gives_the_reference_masks(tmp_path, weights, emulate, launches, capsys):
    frames = _mini_root(tmp_path / "data") / "Frame" / SEQ
    for backend in ("reference", "cuda"):
        argv = ["segment", str(frames), "--out", str(tmp_path / backend), "--weights", weights]
        assert main([*argv, "--device", "cpu", "--backend", backend, "--no-overlays"]) == 0
        out = capsys.readouterr().out
        assert "frames: 2  resolution: 384x288" in out and f"float32 {backend}" in out, out
    assert any(n.startswith("hfsti_ma_") for n in launches), "no CUDA kernel ran"
    assert_masks_agree(tmp_path / "cuda" / "masks", tmp_path / "reference" / "masks")


@needs_data
def test_eval_cuda_gives_the_reference_scores(tmp_path, weights, emulate, launches, capsys):
    root = _mini_root(tmp_path / "data")
    scores = {}
    for backend in ("reference", "cuda"):
        run = tmp_path / backend
        argv = ["eval", "--weights", weights, "--data", str(root), "--device", "cpu"]
        argv += ["--backend", backend, "--save-preds", str(run), "--json", f"{run}.json"]
        assert main(argv) == 0, capsys.readouterr().err
        scores[backend] = json.loads((tmp_path / f"{backend}.json").read_text())["overall"]
    assert any(n.startswith("hfsti_fca_") for n in launches), "no CUDA kernel ran"
    assert_masks_agree(tmp_path / "cuda" / SEQ, tmp_path / "reference" / SEQ)
    assert scores["cuda"].keys() == scores["reference"].keys()
    for metric, want in scores["reference"].items():
        assert scores["cuda"][metric] == pytest.approx(want, rel=1e-3, abs=1e-4), metric


@pytest.mark.parametrize("command", ["segment", "train", "eval"])
def test_backend_cuda_offered_when_an_executor_exists(command, tmp_path, monkeypatch, capsys):
    """Emulated, "cuda" is a --backend choice of each command; with no executor (this CPU, the
    emulator off) it is refused at parse time, in one line that says how to get one."""
    argv = [command] + (["--out", str(tmp_path)] if command != "eval" else [])
    argv += ["--backend", "cuda"]
    monkeypatch.setenv(rt.EMULATE_ENV, "1")
    assert "cuda" in usable_backends()
    assert build_parser().parse_args(argv).backend == "cuda"
    monkeypatch.delenv(rt.EMULATE_ENV)
    if rt.available(None):
        pytest.skip("a CUDA device with an executor exists here: 'cuda' is always usable")
    assert "cuda" not in usable_backends()
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "error: argument --backend" in ln)
    assert "'cuda' is not usable here" in line and rt.EMULATE_ENV in line, err
