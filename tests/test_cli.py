"""The `hfsti` command line: the main job on the built-in default and on real frames."""

import cv2
import numpy as np
import pytest
from helpers import CVC612
from PIL import Image

from hfsti.cli import main
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
