"""Tests of hfsti.data: synthetic clips, the SUN-SEG clip dataset, frame sources and writers."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from sixteen_bit import copy_tree_16bit, write_png16

from hfsti.data import (
    FrameSource,
    SUNSEGClips,
    SyntheticClips,
    list_cases,
    load_frame,
    load_image,
    load_mask,
    luminance,
    natural_key,
    synthetic_clip,
    write_mask,
    write_overlay,
)

CVC612 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cvc612"

# ---------------------------------------------------------------------------------------------
# synthetic clips


@pytest.fixture(scope="module")
def clip8():
    return synthetic_clip(num_frames=8, height=96, width=128, num_polyps=1, seed=3)


def test_synthetic_shapes_dtypes(clip8):
    frames, masks = clip8
    assert frames.shape == (8, 96, 128, 3) and frames.dtype == np.uint8
    assert masks.shape == (8, 96, 128) and masks.dtype == bool


def test_synthetic_deterministic_and_seed_dependent(clip8):
    frames, masks = clip8
    f2, m2 = synthetic_clip(num_frames=8, height=96, width=128, num_polyps=1, seed=3)
    assert np.array_equal(frames, f2) and np.array_equal(masks, m2)
    f3, m3 = synthetic_clip(num_frames=8, height=96, width=128, num_polyps=1, seed=4)
    assert not np.array_equal(masks, m3)
    assert np.abs(frames.astype(int) - f3.astype(int)).mean() > 5
    # a shorter clip is a prefix of a longer one with the same seed
    f4, m4 = synthetic_clip(num_frames=3, height=96, width=128, num_polyps=1, seed=3)
    assert np.array_equal(f4, frames[:3]) and np.array_equal(m4, masks[:3])


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("num_polyps", [1, 3])
def test_synthetic_masks_and_motion(seed, num_polyps):
    frames, masks = synthetic_clip(8, 96, 96, num_polyps=num_polyps, seed=seed)
    frac = masks.mean(axis=(1, 2))
    assert (frac > 0.005).all() and (frac < 0.6).all(), frac
    centroids = np.array([np.argwhere(m).mean(0) for m in masks])
    assert np.linalg.norm(centroids[-1] - centroids[0]) > 0.5  # the polyp moves
    assert not np.array_equal(masks[0], masks[-1])
    # the background is textured, not flat
    bg = frames[0][~masks[0]].astype(float)
    assert bg.std(axis=0).min() > 5
    # the polyp differs in appearance from the background around it
    assert np.abs(frames[0][masks[0]].mean(0) - bg.mean(0)).max() > 3


def test_synthetic_zero_polyps_and_errors():
    _, masks = synthetic_clip(2, 32, 32, num_polyps=0)
    assert not masks.any()
    with pytest.raises(ValueError, match="num_frames"):
        synthetic_clip(0)
    with pytest.raises(ValueError, match="seed"):
        synthetic_clip(2, 32, 32, seed=-1)


def test_synthetic_fast():
    synthetic_clip(1, 32, 32)
    # CPU time, not wall time, so a busy machine does not fail it; typically ~0.2 s
    t0 = time.process_time()
    synthetic_clip(8, 352, 352)
    assert time.process_time() - t0 < 3.0


def test_synthetic_clips_dataset():
    ds = SyntheticClips(length=3, clip_len=2, size=(48, 64), seed=1)
    assert len(ds) == 3
    item = ds[1]
    assert item["frames"].shape == (2, 3, 48, 64) and item["frames"].dtype == torch.float32
    assert item["masks"].shape == (2, 1, 48, 64) and item["masks"].dtype == torch.float32
    assert item["frames"].min() >= 0 and item["frames"].max() <= 1
    assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}
    assert item["case"] == "synth00001" and item["names"] == ["000", "001"]
    assert torch.equal(ds[1]["frames"], item["frames"])
    assert not torch.equal(ds[0]["frames"], item["frames"])
    with pytest.raises(IndexError):
        ds[3]


# ---------------------------------------------------------------------------------------------
# SUN-SEG layout on a small tree


def _write_case(root: Path, case: str, stems, size=(40, 30), ext=".png", seed=0) -> None:
    """Frames (RGB, ext) and masks (RGB PNG, 0..255 with a soft edge) of size (W, H)."""
    rng = np.random.default_rng(seed)
    (root / "Frame" / case).mkdir(parents=True, exist_ok=True)
    (root / "GT" / case).mkdir(parents=True, exist_ok=True)
    w, h = size
    for i, stem in enumerate(stems):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(frame).save(root / "Frame" / case / f"{stem}{ext}")
        mask = np.zeros((h, w), np.uint8)
        mask[5 : 15 + i, 8:20] = 255
        mask[4, 8:20] = 100  # anti-aliased edge: below the threshold
        mask[15 + i, 8:20] = 200  # above the threshold
        Image.fromarray(np.repeat(mask[..., None], 3, -1)).save(root / "GT" / case / f"{stem}.png")


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "sunseg"
    _write_case(root, "case2", ["1", "2", "10", "3"])  # natural order: 1 2 3 10
    _write_case(root, "case1", ["a_0001", "a_0002", "a_0003", "a_0004", "a_0005"], ext=".jpg")
    _write_case(root, "case10", ["5", "6"])
    return root


def test_natural_key():
    assert sorted(["10", "2", "1", "a10", "a2"], key=natural_key) == ["1", "2", "10", "a2", "a10"]


def test_list_cases(tree):
    cases = list_cases(tree)
    assert list(cases) == ["case1", "case2", "case10"]
    assert [f.stem for f, _ in cases["case2"]] == ["1", "2", "3", "10"]
    for pairs in cases.values():
        for f, m in pairs:
            assert f.stem == m.stem and f.parent.name == m.parent.name
    assert cases["case1"][0][0].suffix == ".jpg" and cases["case1"][0][1].suffix == ".png"


@pytest.mark.parametrize(("clip_len", "stride"), [(1, 1), (3, 1), (2, 2), (3, 2), (4, 3)])
def test_clip_counts(tree, clip_len, stride):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SUNSEGClips(tree, clip_len=clip_len, size=32, stride=stride)
    n = {"case1": 5, "case2": 4, "case10": 2}
    want = {c: (k - clip_len) // stride + 1 if k >= clip_len else 0 for c, k in n.items()}
    got = {c: sum(1 for name, _ in ds.clips if name == c) for c in n}
    assert got == want and len(ds) == sum(want.values())


def test_short_case_warns(tree):
    with pytest.warns(UserWarning, match="case10"):
        SUNSEGClips(tree, clip_len=3, size=32)


def test_clip_items(tree):
    ds = SUNSEGClips(tree, clip_len=3, size=(24, 36), cases=["case2"])
    assert len(ds) == 2
    for i, names in enumerate([["1", "2", "3"], ["2", "3", "10"]]):
        item = ds[i]
        assert item["case"] == "case2" and item["names"] == names
        x, y = item["frames"], item["masks"]
        assert x.shape == (3, 3, 24, 36) and x.dtype == torch.float32
        assert y.shape == (3, 1, 24, 36) and y.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.1  # not normalised
        assert set(y.unique().tolist()) == {0.0, 1.0}


def test_native_size_values(tree):
    ds = SUNSEGClips(tree, clip_len=2, size=None, cases=["case2"])
    item = ds[0]
    frame = load_frame(tree / "Frame" / "case2" / "1.png")
    assert torch.equal(item["frames"][0], torch.from_numpy(frame).permute(2, 0, 1) / 255.0)
    m = np.zeros((30, 40), bool)
    m[5:16, 8:20] = True  # rows 5..14 at 255, row 15 at 200 (> 128); row 4 at 100 is background
    assert np.array_equal(item["masks"][0, 0].numpy() > 0.5, m)


def test_transform_applies_to_whole_clip(tree):
    def flip(x, y):
        return x.flip(-1), y.flip(-1)

    plain = SUNSEGClips(tree, clip_len=3, size=32, cases=["case1"])[0]
    flipped = SUNSEGClips(tree, clip_len=3, size=32, cases=["case1"], transform=flip)[0]
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))


def test_error_missing_gt_frame(tree):
    (tree / "GT" / "case2" / "10.png").unlink()
    with pytest.raises(ValueError, match=r"10\.png"):
        list_cases(tree)
    with pytest.raises(ValueError, match=r"10\.png"):
        SUNSEGClips(tree)


def test_error_missing_gt_case(tree):
    _write_case(tree, "case3", ["1"])
    import shutil

    shutil.rmtree(tree / "GT" / "case3")
    with pytest.raises(ValueError, match="case3"):
        list_cases(tree)


def test_error_mask_wrong_size(tree):
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(tree / "GT" / "case2" / "2.png")
    ds = SUNSEGClips(tree, clip_len=2, size=32, cases=["case2"])
    with pytest.raises(ValueError, match=r"GT.case2.2\.png.*Frame.case2.2\.png"):
        ds[0]


def test_error_roots(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list_cases(tmp_path / "nope")
    with pytest.raises(ValueError, match="Frame"):
        list_cases(tmp_path)
    (tmp_path / "Frame").mkdir()
    (tmp_path / "GT").mkdir()
    with pytest.raises(ValueError, match="no frames"):
        list_cases(tmp_path)
    with pytest.raises(ValueError, match="no frames"):
        SUNSEGClips(tmp_path)
    (tmp_path / "Frame" / "empty_case").mkdir()
    with pytest.raises(ValueError, match="no frames"):
        list_cases(tmp_path)


def test_error_all_cases_too_short(tree):
    with pytest.raises(ValueError, match="no clip"), pytest.warns(UserWarning):
        SUNSEGClips(tree, clip_len=6)


def test_error_unreadable_image(tree):
    bad = tree / "Frame" / "case2" / "3.png"
    bad.write_bytes(b"this is not a png" * 10)
    with pytest.raises(ValueError, match=r"3\.png"):
        load_frame(bad)
    ds = SUNSEGClips(tree, clip_len=2, size=32, cases=["case2"])
    ds[0]  # frames 1, 2: fine
    with pytest.raises(ValueError, match=r"Frame.case2.3\.png"):
        ds[1]
    truncated = tree / "GT" / "case2" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"1\.png"):
        load_mask(truncated)


def test_error_unknown_case(tree):
    with pytest.raises(ValueError, match=r"seq99.*case1.*case2.*case10"):
        SUNSEGClips(tree, cases=["case1", "seq99"])


def test_load_mask_modes(tmp_path):
    gray = np.array([[0, 128, 129, 255]], np.uint8)
    want = np.array([[False, False, True, True]])
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(gray > 128).save(tmp_path / "one.png")
    for name in ["l.png", "rgb.png", "one.png"]:
        m = load_mask(tmp_path / name)
        assert m.dtype == bool and np.array_equal(m, want), name


def test_16bit_frames_read_by_their_range(tmp_path):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    write_png16(tmp_path / "rgb16.png", rgb)
    write_png16(tmp_path / "gray16.png", rgb[..., 1])
    assert load_image(tmp_path / "rgb16.png").dtype == np.uint16
    assert np.array_equal(load_frame(tmp_path / "rgb16.png"), rgb)  # RGB order, 8-bit values
    assert np.array_equal(load_frame(tmp_path / "gray16.png"), np.repeat(rgb[..., 1:2], 3, -1))
    mid = np.full((4, 4), 30000, np.uint16)  # 46% of full scale: a mid gray, not white
    cv2.imwrite(str(tmp_path / "mid.png"), mid)
    assert np.all(load_frame(tmp_path / "mid.png") == round(30000 / 257))
    src = FrameSource(tmp_path / "mid.png")  # what segment reads
    assert np.all(next(iter(src))[1] == 117)


def test_mask_rule_is_one_for_8_and_16_bit(tmp_path):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "m8.png")
    write_png16(tmp_path / "m16.png", values)
    write_png16(tmp_path / "m16rgb.png", np.repeat(values[..., None], 3, -1))
    want = values > 128
    for name in ("m8.png", "m16.png", "m16rgb.png"):
        assert np.array_equal(load_mask(tmp_path / name), want), name
    rim = np.zeros((8, 8), np.uint16)
    rim[2:6, 2:6] = 20000  # a gray anti-aliased rim, 31% of full scale: background
    rim[3:5, 3:5] = 65535
    cv2.imwrite(str(tmp_path / "rim.png"), rim)
    assert load_mask(tmp_path / "rim.png").sum() == 4
    edge = np.array([[128 * 257, 128 * 257 + 1]], np.uint16)  # the 16-bit threshold
    cv2.imwrite(str(tmp_path / "edge.png"), edge)
    assert load_mask(tmp_path / "edge.png").tolist() == [[False, True]]


def test_luminance_is_pils():
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(luminance(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_16bit_tree_trains_like_the_8bit_one(tree, tmp_path):
    deep = copy_tree_16bit(tree, tmp_path / "deep")
    assert load_image(deep / "GT" / "case2" / "1.png").dtype == np.uint16
    a = SUNSEGClips(tree, clip_len=2, size=24, cases=["case2", "case1"])
    b = SUNSEGClips(deep, clip_len=2, size=24, cases=["case2", "case1"])
    for i in range(len(a)):
        assert torch.equal(a[i]["frames"], b[i]["frames"])
        assert torch.equal(a[i]["masks"], b[i]["masks"])


def test_empty_case_folders_are_reported(tree):
    (tree / "Frame" / "case7").mkdir()
    with pytest.warns(UserWarning, match=r"skipped 1 empty case folder.*: case7"):
        assert "case7" not in list_cases(tree)


def test_multiple_roots(tree, tmp_path):
    other = tmp_path / "other"
    _write_case(other, "caseX", ["1", "2", "3"], size=(50, 20))
    ds = SUNSEGClips([tree, other], clip_len=3, size=16, cases=["caseX", "case1"])
    assert sorted({c for c, _ in ds.clips}) == ["case1", "caseX"] and len(ds) == 4


# ---------------------------------------------------------------------------------------------
# the real CVC-612 data (SUN-SEG layout), read in place


@pytest.fixture(scope="module")
def cvc():
    if not (CVC612 / "Frame").is_dir():
        pytest.skip(f"real data not found at {CVC612}")
    return list_cases(CVC612)


def test_cvc612_listing(cvc):
    assert len(cvc) == 20
    assert sum(len(p) for p in cvc.values()) == 428
    assert len(cvc["seq01"]) == 25
    assert list(cvc)[:2] == ["seq01", "seq02"]
    assert [f.stem for f, _ in cvc["seq10"]] == ["200", "201", "202", "203", "204", "205"]


def test_cvc612_clip(cvc):
    ds = SUNSEGClips(CVC612, clip_len=3, size=352, cases=["seq01"])
    assert len(ds) == 23
    item = ds[0]
    assert item["frames"].shape == (3, 3, 352, 352) and item["masks"].shape == (3, 1, 352, 352)
    assert item["names"] == ["001", "002", "003"]
    assert set(item["masks"].unique().tolist()) == {0.0, 1.0}
    frac = item["masks"].mean(dim=(1, 2, 3))
    assert ((frac > 0.005) & (frac < 0.6)).all(), frac
    # the resized mask keeps the polyp fraction of the native mask closely
    native = load_mask(cvc["seq01"][0][1]).mean()
    assert abs(frac[0].item() - native) < 0.01


def test_cvc612_binarisation(cvc):
    path = cvc["seq01"][0][1]
    raw = _read(path)
    assert raw.ndim == 3 and len(np.unique(raw)) > 2  # RGB, anti-aliased: not strictly binary
    assert np.array_equal(load_mask(path), raw[..., 0] > 128)
    frame = load_frame(cvc["seq01"][0][0])
    assert frame.shape == (288, 384, 3) and frame.dtype == np.uint8


# ---------------------------------------------------------------------------------------------
# frame sources and writers


def _read(path: Path, mode: str | None = None) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode) if mode else im).copy()


def _write_folder(folder: Path, frames, stems) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, stem in zip(frames, stems):
        Image.fromarray(frame).save(folder / f"{stem}.png")


def test_frame_source_folder(tmp_path, clip8):
    frames, _ = clip8
    _write_folder(tmp_path / "f", frames[:3], ["10", "2", "1"])
    (tmp_path / "f" / "notes.txt").write_text("ignored")
    src = FrameSource(tmp_path / "f")
    assert len(src) == 3 and src.fps is None and "3 images" in src.description
    got = list(src)
    assert [n for n, _ in got] == ["1", "2", "10"]
    assert np.array_equal(got[0][1], frames[2]) and np.array_equal(got[2][1], frames[0])
    assert len(list(src)) == 3  # iterable more than once


def test_frame_source_video(tmp_path):
    frames, _ = synthetic_clip(6, 48, 64, seed=2)
    # saturated colour patches make the RGB/BGR order unambiguous despite the lossy codec
    frames[:, :24, :32] = (230, 40, 40)
    frames[:, 24:, 32:] = (40, 40, 230)
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))  # VideoWriter wants BGR
    writer.release()
    src = FrameSource(path)
    assert src.fps == pytest.approx(12.0) and len(src) == 6
    assert "video" in src.description and "12 fps" in src.description
    got = list(src)
    assert [n for n, _ in got] == [f"{i:06d}" for i in range(6)]
    for (_, rgb), ref in zip(got, frames):
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        assert np.abs(rgb.astype(float).mean((0, 1)) - ref.astype(float).mean((0, 1))).max() < 12
        red, blue = rgb[4:20, 4:28].mean((0, 1)), rgb[28:44, 36:60].mean((0, 1))
        assert red[0] > red[2] + 100 and blue[2] > blue[0] + 100


def test_frame_source_synthetic():
    for src in (
        FrameSource(None, num_frames=4, height=40, width=56),
        FrameSource("synthetic", 4, 40, 56),
    ):
        assert len(src) == 4 and src.fps is None and "synthetic" in src.description
        got = list(src)
        assert [n for n, _ in got] == ["000000", "000001", "000002", "000003"]
        ref, _ = synthetic_clip(4, 40, 56)
        assert all(np.array_equal(rgb, r) for (_, rgb), r in zip(got, ref))


def test_frame_source_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        FrameSource(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        FrameSource(tmp_path / "empty")
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match=r"broken\.mp4"):
        FrameSource(bad_video)
    folder = tmp_path / "frames"
    _write_folder(folder, [np.zeros((8, 8, 3), np.uint8)], ["1"])
    (folder / "2.png").write_bytes(b"garbage")
    src = FrameSource(folder)
    it = iter(src)
    assert next(it)[0] == "1"
    with pytest.raises(ValueError, match=r"2\.png"):
        next(it)


def test_write_mask(tmp_path):
    prob = np.linspace(0, 1, 12 * 10).reshape(12, 10)
    path = write_mask(tmp_path / "out" / "m.png", prob)
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (10, 12)
    assert np.array_equal(_read(path), np.rint(prob * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        write_mask(tmp_path / "x.png", np.zeros((2, 3, 4)))


def test_write_overlay(tmp_path):
    rgb = np.full((40, 50, 3), 100, np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 15:35] = True
    path = write_overlay(tmp_path / "o.png", rgb, mask, color=(0, 255, 0), alpha=0.5)
    out = _read(path, "RGB")
    assert out.shape == (40, 50, 3)
    assert np.array_equal(out[0, 0], [100, 100, 100])  # outside: untouched
    assert np.array_equal(out[20, 25], [50, 178, 50])  # inside: blended
    assert np.array_equal(out[10, 25], [0, 255, 0])  # contour: full colour
    jpg = write_overlay(tmp_path / "o.jpg", rgb, mask)
    assert _read(jpg).shape == (40, 50, 3)
    with pytest.raises(ValueError, match="mask"):
        write_overlay(tmp_path / "bad.png", rgb, mask[:-1])
