"""The `hfsti` command line: the main job on the built-in default and on real frames."""

import errno
import os
import tempfile

import cv2
import numpy as np
import pytest
import torch
from helpers import CVC612
from PIL import Image

from hfsti.cli import build_parser, main, usable_backends
from hfsti.data import synthetic_clip


def test_segment_synthetic_default(tmp_path, capsys):
    assert main(["segment", "--out", str(tmp_path), "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "weights are RANDOM" in out
    assert "frames: 2  resolution: 352x352" in out and "device: cpu" in out
    assert "frames/s" in out
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [m.stem for m in masks] == ["000000", "000001"]
    assert Image.open(masks[0]).mode == "L" and Image.open(masks[0]).size == (352, 352)
    assert len(list((tmp_path / "overlays").glob("*.jpg"))) == 2


@pytest.mark.skipif(not CVC612.is_dir(), reason="../shared/data/cvc612 is absent")
def test_segment_real_sequence(tmp_path, capsys):
    seq = CVC612 / "Frame" / "seq10"  # the shortest sequence: 6 frames of 384x288
    assert main(["segment", str(seq), "--out", str(tmp_path), "--no-overlays"]) == 0
    assert "frames: 6  resolution: 384x288" in capsys.readouterr().out
    masks = sorted(p.stem for p in (tmp_path / "masks").glob("*.png"))
    assert masks == sorted(p.stem for p in seq.glob("*.png"))
    assert Image.open(tmp_path / "masks" / f"{masks[0]}.png").size == (384, 288)
    assert not (tmp_path / "overlays").exists()


def test_segment_mp4(tmp_path, capsys):
    frames, _ = synthetic_clip(3, 48, 64, seed=3)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    assert main(["segment", str(video), "--out", str(tmp_path / "out")]) == 0
    assert "frames: 3  resolution: 64x48" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "overlays").glob("*.jpg"))) == 3


def test_info_reports_size(capsys):
    assert main(["info", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "28.15 M parameters" in out and "G MACs" in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "input does not exist" in capsys.readouterr().err
    assert main(["segment", "--out", str(tmp_path), "--weights", str(tmp_path / "w")]) == 2
    assert "weights: no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad arguments: one line naming the argument, exit status 2, no traceback
# --------------------------------------------------------------------------------------------
def _one_error(capsys, arg: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hfsti ")]
    assert len(lines) == 1 and "error:" in lines[0] and arg in lines[0], err
    return lines[0]


@pytest.mark.parametrize("device", ["gpu", "mps", "meta", "cuda:x"])
def test_bad_device(tmp_path, capsys, device):
    assert main(["segment", "--out", str(tmp_path), "--device", device]) == 2
    assert "expected cpu, cuda or cuda:N" in _one_error(capsys, "--device")
    assert not (tmp_path / "masks").exists()  # refused before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    assert main(["segment", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error(capsys, "--device")


def test_segment_out_is_a_file_or_read_only(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["segment", "--out", str(tmp_path / "file"), "--frames", "1"]) == 2
    assert "is a file" in _one_error(capsys, "--out")
    assert main(["segment", "--out", str(tmp_path / "file" / "sub"), "--frames", "1"]) == 2
    _one_error(capsys, "--out")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # root ignores chmod
    assert main(["segment", "--out", str(tmp_path / "ro"), "--frames", "1"]) == 2
    assert "Permission denied" in _one_error(capsys, "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_segment_out_read_only_folder(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["segment", "--out", str(tmp_path / "ro"), "--frames", "1"]) == 2
    _one_error(capsys, "--out")


@pytest.mark.parametrize("frames", ["-3", "0"])
def test_bad_frames(tmp_path, capsys, frames):
    assert main(["segment", "--out", str(tmp_path), "--frames", frames]) == 2
    assert "positive" in _one_error(capsys, "--frames")


# --------------------------------------------------------------------------------------------
# --backend: only what runs here is offered
# --------------------------------------------------------------------------------------------
def test_backend_cuda_not_offered_until_it_works(tmp_path, capsys, monkeypatch):
    import hfsti_kernels._backend as backend

    if "cuda" in usable_backends():
        pytest.skip("the CUDA backend is usable here")
    assert usable_backends()[0] == "reference" and "triton" in usable_backends()
    for command in (["segment", "--out", str(tmp_path)], ["eval"], ["train", "--out", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--backend", "cuda"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "argument --backend: 'cuda' is not usable here" in err and "Traceback" not in err
        assert "choose from reference" in err
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "cuda" not in capsys.readouterr().out.split("--backend")[1].split("\n")[0]

    real = backend.check_backend  # once hfsti_kernels reports an executor, it is offered
    monkeypatch.setattr(
        backend, "check_backend", lambda name: name if name == "cuda" else real(name)
    )
    assert "cuda" in usable_backends()
    assert build_parser().parse_args(["eval", "--backend", "cuda"]).backend == "cuda"
