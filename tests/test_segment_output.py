"""`segment` output is never a mix of two runs or a torn file; short videos and mixed frame sizes
are reported (tiny model, small frames)."""

from __future__ import annotations

import errno
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from hfsti import HFSTIConfig, HFSTINet, save_checkpoint
from hfsti.cli import main
from hfsti.data import FrameSource, synthetic_clip
from hfsti.segment import segment


@pytest.fixture(scope="module")
def model() -> HFSTINet:
    torch.manual_seed(0)
    return HFSTINet(HFSTIConfig(channels=8, rmp_heads=2, input_size=32)).eval()


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_checkpoint(model, path)
    return str(path)


def _frames(folder, sizes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        frame, _ = synthetic_clip(1, h, w, seed=i)
        Image.fromarray(frame[0]).save(folder / f"{i}.png")


def _messages(err: str) -> list[str]:
    """The CLI's own stderr lines (the progress bar shares stderr); never a traceback."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("hfsti ")]


def _all_decode(out) -> list[str]:
    names = []
    for path in sorted(out.rglob("*")):
        if path.is_file():
            assert not path.name.startswith("."), f"temporary file left behind: {path}"
            with Image.open(path) as im:
                im.load()  # a truncated image fails here
            names.append(f"{path.parent.name}/{path.name}")
    return names


def test_second_run_refused_then_overwrite_replaces(tmp_path, weights, capsys):
    _frames(tmp_path / "a", [(40, 30)] * 3)
    _frames(tmp_path / "b", [(40, 30)] * 2)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "a"), "--out", str(out), "--weights", weights]) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    args = ["segment", str(tmp_path / "b"), "--out", str(out), "--weights", weights]
    assert main(args) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "--out" in err[0] and "--overwrite" in err[0], err
    assert len(list((out / "masks").glob("*.png"))) == 3  # untouched
    (out / "masks" / ".0.png.dead.tmp").write_bytes(b"half")  # an interrupted write's leftover
    assert main([*args, "--overwrite", "--no-overlays"]) == 0
    assert _all_decode(out / "masks") == ["masks/0.png", "masks/1.png"]
    assert not list((out / "overlays").glob("*"))  # the old overlays are gone too
    assert (out / "notes.txt").read_text() == "mine"  # not segment's: left alone


def test_full_disk_leaves_no_torn_file_and_names_it(tmp_path, weights, monkeypatch, capsys):
    _frames(tmp_path / "f", [(40, 30)] * 4)
    real_save, calls = Image.Image.save, []

    def save_until_full(self, fp, *args, **kwargs):
        calls.append(1)
        if len(calls) < 4:  # masks and overlays of frames 0 and 1 go through
            return real_save(self, fp, *args, **kwargs)
        buf = io.BytesIO()
        real_save(self, buf, *args, **kwargs)
        fp.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the bytes, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "f"), "--out", str(out), "--weights", weights]
    assert main(args) == 2
    err = _messages(capsys.readouterr().err)
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert str(out / "overlays" / "1.jpg") in err[0]  # the file that failed
    assert _all_decode(out) == ["masks/0.png", "masks/1.png", "overlays/0.jpg"]


def test_short_video_warns_with_both_counts(tmp_path, weights, capsys):
    frames, _ = synthetic_clip(10, 48, 64, seed=1)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.7)])  # the header still says 10 frames
    src = FrameSource(video)
    assert len(src) == 10
    with pytest.warns(UserWarning, match=r"decoded (\d) frames, but its container claims 10"):
        n = len(list(src))
    assert 0 < n < 10
    args = ["segment", str(video), "--out", str(tmp_path / "out"), "--weights", weights]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"warning: video {video}: decoded {n} frames, but its container claims 10" in (
        captured.err
    )
    assert f"frames: {n} " in captured.out


def test_summary_gives_the_range_of_resolutions(tmp_path, model):
    _frames(tmp_path / "f", [(50, 50), (64, 48), (40, 30)])
    summary = segment(model, FrameSource(tmp_path / "f"), tmp_path / "out", progress=False)
    assert summary.resolutions == ((40, 30), (50, 50), (64, 48))
    assert "resolution: 40x30 to 64x48 (3 sizes)" in str(summary)
    _frames(tmp_path / "g", [(40, 30)] * 2)
    summary = segment(model, FrameSource(tmp_path / "g"), tmp_path / "out2", progress=False)
    assert "resolution: 40x30 (model at 32x32)" in str(summary)
    for name in ("0", "1", "2"):  # every mask at its own frame's size
        size = Image.open(tmp_path / "f" / f"{name}.png").size
        assert Image.open(tmp_path / "out" / "masks" / f"{name}.png").size == size
