"""``hfsti.metrics`` against pysodmetrics (an independent oracle) on real CVC-612 masks, plus
hand-checked cases, the per-case aggregation and ``score_folders``.

The CVC-612 masks are read from ``../shared/data/cvc612`` (never copied into the repository); the
tests that need them skip when it is absent, those that need pysodmetrics skip without it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hfsti import metrics as M

CVC612 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cvc612"
# The two implementations agree to float rounding (~1e-15); the acceptance bound is 1e-4.
ATOL = 1e-9
N_REAL_FRAMES = 10


# --------------------------------------------------------------------------------------------
# Fixtures: real masks and realistic predictions
# --------------------------------------------------------------------------------------------
def _read_gt(path: Path) -> np.ndarray:
    """A CVC-612 GT as stored (RGB PNG, anti-aliased 0..255): its first (R) channel, uint8."""
    with Image.open(path) as im:
        img = np.asarray(im)
    return np.ascontiguousarray(img[..., 0] if img.ndim == 3 else img, dtype=np.uint8)


@pytest.fixture(scope="module")
def real_gts() -> list[tuple[str, np.ndarray]]:
    gt_dir = CVC612 / "GT"
    if not gt_dir.is_dir():
        pytest.skip(f"CVC-612 data not found at {CVC612}")
    files = sorted(gt_dir.glob("seq*/*.png"))
    if len(files) < N_REAL_FRAMES:
        pytest.skip(f"too few CVC-612 masks under {gt_dir}")
    step = len(files) // N_REAL_FRAMES
    picked = files[::step][:N_REAL_FRAMES]
    return [(f"{f.parent.name}/{f.name}", _read_gt(f)) for f in picked]


def _soft(gt8: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur((gt8 > 128).astype(np.float64), (0, 0), sigma)


def _predictions(gt8: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Realistic and degenerate predictions for one GT (uint8 maps unless said otherwise)."""
    h, w = gt8.shape
    noisy = np.clip(_soft(gt8, 5.0) + rng.normal(0.0, 0.08, gt8.shape), 0.0, 1.0)
    smooth = 0.15 + 0.7 * _soft(np.roll(gt8, (4, 6), axis=(0, 1)), 8.0)
    soft = _soft(np.roll(gt8, (-5, 3), axis=(0, 1)), 3.0) + 0.05 * rng.random(gt8.shape)
    soft = (soft - soft.min()) / (soft.max() - soft.min())  # exactly spans [0, 1]
    return {
        "blur_noise": (noisy * 255).astype(np.uint8),
        "shifted": np.roll(gt8, (9, -13), axis=(0, 1)),
        "smooth_offset": (smooth * 255).astype(np.uint8),
        "zeros": np.zeros_like(gt8),
        "ones": np.full_like(gt8, 255),
        "random": rng.integers(0, 256, gt8.shape, dtype=np.uint8),
        "half_size": cv2.resize((noisy * 255).astype(np.uint8), (w // 2, h // 2)),
        "float_soft": soft,
    }


# --------------------------------------------------------------------------------------------
# The pysodmetrics oracle
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def psm():
    return pytest.importorskip("py_sod_metrics")


class _Oracle:
    """pysodmetrics evaluators for one case; ``results()`` in hfsti's key set plus maxSen."""

    def __init__(self, psm) -> None:
        self.sm = psm.Smeasure(alpha=0.5)
        self.em = psm.Emeasure()
        self.wfm = psm.WeightedFmeasure(beta=1)
        self.mae = psm.MAE()
        self.fm = psm.FmeasureV2(
            metric_handlers={
                "dice": psm.DICEHandler(with_dynamic=True, with_adaptive=False),
                "sen": psm.TPRHandler(with_dynamic=True, with_adaptive=False),
            }
        )

    def step(self, pred: np.ndarray, gt8: np.ndarray) -> None:
        """``pred``: uint8 (normalised by pysodmetrics) or float already in [0, 1]."""
        if pred.shape != gt8.shape:  # what the toolbox does before scoring
            pred = cv2.resize(pred, (gt8.shape[1], gt8.shape[0]))
        if pred.dtype == np.uint8:
            kwargs, gt = {"normalize": True}, gt8
        else:
            kwargs, gt = {"normalize": False}, gt8 > 128
        for ev in (self.sm, self.em, self.wfm, self.mae, self.fm):
            ev.step(pred, gt, **kwargs)

    def curves(self) -> dict[str, np.ndarray]:
        fm = self.fm.get_results()
        # pysodmetrics orders its curves from threshold 255 down to 0; hfsti from 0 up to 255.
        return {
            "Em": self.em.get_results()["em"]["curve"][::-1],
            "Dice": fm["dice"]["dynamic"][::-1],
            "Sen": fm["sen"]["dynamic"][::-1],
        }

    def scalars(self) -> dict[str, float]:
        return {
            "Smeasure": float(self.sm.get_results()["sm"]),
            "adpEm": float(self.em.get_results()["em"]["adp"]),
            "wFmeasure": float(self.wfm.get_results()["wfm"]),
            "MAE": float(self.mae.get_results()["mae"]),
        }


def _summary(scalars: dict[str, float], curves: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        "Smeasure": scalars["Smeasure"],
        "meanEm": float(curves["Em"].mean()),
        "maxEm": float(curves["Em"].max()),
        "adpEm": scalars["adpEm"],
        "wFmeasure": scalars["wFmeasure"],
        "meanDice": float(curves["Dice"].mean()),
        "maxDice": float(curves["Dice"].max()),
        "meanSen": float(curves["Sen"].mean()),
        "maxSen": float(curves["Sen"].max()),
        "MAE": scalars["MAE"],
    }


def _assert_close(got: dict, ref: dict, where: str, atol: float = ATOL) -> None:
    bad = {k: (got[k], ref[k]) for k in ref if abs(got[k] - ref[k]) > atol}
    assert not bad, f"{where}: differs from pysodmetrics (hfsti, oracle): {bad}"


# --------------------------------------------------------------------------------------------
# Per-frame agreement with pysodmetrics
# --------------------------------------------------------------------------------------------
def test_frames_match_pysodmetrics(real_gts, psm):
    rng = np.random.default_rng(0)
    n_checked = 0
    for name, gt8 in real_gts:
        for kind, pred in _predictions(gt8, rng).items():
            oracle = _Oracle(psm)
            oracle.step(pred, gt8)
            ref = _summary(oracle.scalars(), oracle.curves())

            fs = M.score_frame(pred, gt8)
            for key, attr in (("Em", "em_curve"), ("Dice", "dice_curve"), ("Sen", "sen_curve")):
                ref_curve = oracle.curves()[key]
                msg = f"{name} / {kind}: {key} curve"
                np.testing.assert_allclose(getattr(fs, attr), ref_curve, 0, ATOL, err_msg=msg)
            seg = M.SegMetrics()
            seg.add(pred, gt8 > 128 if kind == "shifted" else gt8)  # bool GT is accepted too
            got = seg.results(include_max_sen=True)
            assert tuple(seg.results()) == M.METRIC_KEYS
            _assert_close(got, ref, f"{name} / {kind}")
            n_checked += 1
    assert n_checked == len(real_gts) * 8


def test_degenerate_gts_match_pysodmetrics(real_gts, psm):
    """Empty and full GTs take the special branches of S-, E- and weighted F-measure."""
    rng = np.random.default_rng(1)
    gt8 = real_gts[0][1]
    preds = _predictions(gt8, rng)
    for gt_kind, gt in (("empty", np.zeros_like(gt8)), ("full", np.full_like(gt8, 255))):
        for kind in ("blur_noise", "zeros", "ones", "random"):
            oracle = _Oracle(psm)
            oracle.step(preds[kind], gt)
            seg = M.SegMetrics()
            seg.add(preds[kind], gt)
            ref = _summary(oracle.scalars(), oracle.curves())
            _assert_close(seg.results(include_max_sen=True), ref, f"{gt_kind} GT / {kind}")


def test_case_aggregation_matches_pysodmetrics(real_gts, psm):
    """Two real 'cases' of different lengths: per-case and overall (toolbox) aggregation."""
    rng = np.random.default_rng(2)
    kinds = ("blur_noise", "shifted", "smooth_offset", "random", "float_soft")
    cases = {"a": real_gts[:3], "b": real_gts[3:8]}
    frames: dict[str, list] = {}
    oracles: dict[str, _Oracle] = {}
    for case, gts in cases.items():
        oracles[case] = _Oracle(psm)
        frames[case] = []
        for i, (_, gt8) in enumerate(gts):
            pred = _predictions(gt8, rng)[kinds[i % len(kinds)]]
            frames[case].append((pred, gt8))
            oracles[case].step(pred, gt8)

    out = M.evaluate_cases(frames, include_max_sen=True)
    assert list(out["cases"]) == ["a", "b"]
    for case, oracle in oracles.items():
        _assert_close(out["cases"][case], _summary(oracle.scalars(), oracle.curves()), case)
    # Toolbox: case curves averaged over cases, then mean / max of the averaged curve.
    scalars = {
        k: float(np.mean([o.scalars()[k] for o in oracles.values()]))
        for k in ("Smeasure", "adpEm", "wFmeasure", "MAE")
    }
    curves = {
        k: np.mean([o.curves()[k] for o in oracles.values()], axis=0) for k in ("Em", "Dice", "Sen")
    }
    _assert_close(out["overall"], _summary(scalars, curves), "overall")
    assert tuple(M.evaluate_cases(frames)["overall"]) == M.METRIC_KEYS


# --------------------------------------------------------------------------------------------
# The toolbox's own Dice / sensitivity thresholds
# --------------------------------------------------------------------------------------------
def _toolbox_dice_sen(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The toolbox's ``Medical`` test, threshold by threshold (returned for k = 0..255)."""
    n_obj = int(g.sum())
    dice, sen = [], []
    for t in np.linspace(1, 0, 256):
        b = p >= t
        tp = int(np.count_nonzero(b & g))
        dice.append(0.0 if tp == 0 else 2 * tp / (n_obj + int(b.sum())))
        sen.append(0.0 if tp == 0 else tp / n_obj)
    return np.array(dice[::-1]), np.array(sen[::-1])


def test_toolbox_thresholds_match_threshold_loop(real_gts):
    rng = np.random.default_rng(3)
    differs = False
    for _, gt8 in real_gts[:2]:
        for kind, pred in _predictions(gt8, rng).items():
            if kind in ("zeros", "ones"):
                continue
            p, g = M.prepare_frame(pred, gt8)
            dice, sen = M.dice_sensitivity_curves(p, g, toolbox_thresholds=True)
            ref_dice, ref_sen = _toolbox_dice_sen(p, g)
            np.testing.assert_allclose(dice, ref_dice, rtol=0, atol=1e-12, err_msg=kind)
            np.testing.assert_allclose(sen, ref_sen, rtol=0, atol=1e-12, err_msg=kind)
            fs = M.score_frame(pred, gt8, toolbox_thresholds=True)
            np.testing.assert_array_equal(fs.dice_curve, dice)
            floor_dice, _ = M.dice_sensitivity_curves(p, g)
            differs |= not np.array_equal(floor_dice, dice)
    assert differs, "the toolbox's float thresholds should differ somewhere on uint8 maps"


# --------------------------------------------------------------------------------------------
# Hand-checked cases
# --------------------------------------------------------------------------------------------
def _square_gt(h: int = 40, w: int = 50) -> np.ndarray:
    gt = np.zeros((h, w), np.uint8)
    gt[10:25, 12:30] = 255
    return gt


@pytest.mark.parametrize("as_float", [False, True])
def test_perfect_prediction(as_float):
    gt = _square_gt()
    pred = (gt > 128).astype(np.float32) if as_float else gt.copy()
    seg = M.SegMetrics()
    seg.add(pred, gt)
    r = seg.results(include_max_sen=True)
    n = gt.size
    assert r["Smeasure"] == pytest.approx(1.0, abs=1e-12)
    assert r["MAE"] == 0.0
    assert r["wFmeasure"] == pytest.approx(1.0, abs=1e-12)
    assert r["maxDice"] == pytest.approx(1.0, abs=1e-15)
    assert r["maxSen"] == pytest.approx(1.0, abs=1e-15)
    assert r["meanSen"] == pytest.approx(1.0, abs=1e-15)
    # E-measure divides by N - 1 (MATLAB code): a perfect map scores N / (N - 1).
    assert r["maxEm"] == pytest.approx(n / (n - 1), abs=1e-12)
    assert r["adpEm"] == pytest.approx(n / (n - 1), abs=1e-12)
    # Level 0 selects every pixel: Dice 2|G| / (N + |G|) there, 1 at the 255 other levels.
    n_fg = int((gt > 128).sum())
    assert r["meanDice"] == pytest.approx((2 * n_fg / (n + n_fg) + 255) / 256, abs=1e-15)


def test_inverse_prediction():
    gt = _square_gt()
    seg = M.SegMetrics()
    seg.add(255 - gt, gt)
    r = seg.results()
    assert r["MAE"] == 1.0
    assert r["wFmeasure"] == pytest.approx(0.0, abs=1e-12)
    assert r["Smeasure"] == pytest.approx(0.0, abs=1e-12)
    n, n_fg = gt.size, int((gt > 128).sum())
    assert r["maxDice"] == pytest.approx(2 * n_fg / (n + n_fg))  # only level 0 hits the GT
    assert r["meanSen"] == pytest.approx(1 / 256)


def test_prediction_normalisation():
    gt = _square_gt()
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 3.0, gt.shape) + 4.0 * (gt > 128)
    unit = (logits - logits.min()) / (logits.max() - logits.min())
    a, b = M.score_frame(logits, gt), M.score_frame(unit, gt)
    assert a.smeasure == b.smeasure and a.mae == b.mae
    np.testing.assert_array_equal(a.em_curve, b.em_curve)
    # uint8: /255 then min-max, so any contrast stretch of a uint8 map scores the same.
    u8 = (unit * 100 + 20).astype(np.uint8)
    stretched = ((u8.astype(np.float64) - 20) * 2.55).round().astype(np.uint8)
    assert M.score_frame(u8, gt).mae == pytest.approx(M.score_frame(stretched, gt).mae, abs=1e-2)
    # A constant uint8 map stays p / 255; a constant float map is clipped to [0, 1].
    p, _ = M.prepare_frame(np.full(gt.shape, 51, np.uint8), gt)
    assert np.all(p == 51 / 255)
    p, _ = M.prepare_frame(np.full(gt.shape, 7.5), gt)
    assert np.all(p == 1.0)
    p, _ = M.prepare_frame(np.full(gt.shape, 0.25, np.float32), gt)
    assert np.all(p == 0.25)
    # A smaller prediction is resized (bilinear) to the GT size.
    for small in (cv2.resize(gt, (25, 20)), cv2.resize(unit, (25, 20)).astype(np.float16)):
        p, g = M.prepare_frame(small, gt)
        assert p.shape == g.shape == gt.shape and p.dtype == np.float64
        assert p.min() == 0.0 and p.max() == 1.0


def test_input_validation():
    gt = _square_gt()
    with pytest.raises(ValueError, match="0/1 mask"):
        M.score_frame(gt, (gt > 128).astype(np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        M.score_frame(np.full(gt.shape, np.nan), gt)
    with pytest.raises(ValueError, match="HxW"):
        M.score_frame(np.zeros((2, 3, 4)), gt)
    with pytest.raises(ValueError, match="no frames"):
        M.SegMetrics().results()
    with pytest.raises(ValueError, match="no frames"):
        M.evaluate_cases({"a": []})
    # bool, 0/255 and float masks binarise alike; HxWx1 is accepted.
    ref = M.score_frame(gt, gt)
    for g in (gt > 128, (gt > 128).astype(np.float32), gt[..., None]):
        assert M.score_frame(gt, g).smeasure == ref.smeasure


# --------------------------------------------------------------------------------------------
# Aggregation, by hand
# --------------------------------------------------------------------------------------------
def _rows_gt() -> np.ndarray:
    gt = np.zeros((10, 10), np.uint8)
    gt[:2] = 255  # 20 foreground pixels of 100
    return gt


def test_two_case_aggregation_by_hand():
    gt = _rows_gt()
    over = np.zeros_like(gt)
    over[:4] = 255  # 40 predicted, 20 of them right
    zeros = np.zeros_like(gt)
    out = M.evaluate_cases({"A": [(gt, gt), (over, gt)], "B": [(zeros, gt)]}, include_max_sen=True)

    # Level 0 selects all 100 pixels: Dice 2*20/(100+20) = 1/3, sensitivity 1, for every frame.
    # Levels 1..255: A1 Dice 1; A2 Dice 2*20/(40+20) = 2/3; B1 (nothing predicted) Dice 0.
    a, b = out["cases"]["A"], out["cases"]["B"]
    assert a["MAE"] == pytest.approx(0.1)  # (0 + 20/100) / 2
    assert a["maxDice"] == pytest.approx(5 / 6)
    assert a["meanDice"] == pytest.approx((1 / 3 + 255 * 5 / 6) / 256)
    assert a["meanSen"] == pytest.approx(1.0)
    assert b["MAE"] == pytest.approx(0.2)
    assert b["maxDice"] == pytest.approx(1 / 3)
    assert b["meanDice"] == pytest.approx((1 / 3) / 256)
    assert b["meanSen"] == pytest.approx(1 / 256)
    assert b["maxSen"] == pytest.approx(1.0)

    o = out["overall"]
    assert o["MAE"] == pytest.approx(0.15)  # mean over cases, not over the 3 frames (0.1333)
    assert o["meanDice"] == pytest.approx((a["meanDice"] + b["meanDice"]) / 2)
    assert o["meanSen"] == pytest.approx((1 + 1 / 256) / 2)
    # Max of the case-averaged curve (level 0: 1/3, levels >= 1: (5/6 + 0) / 2 = 5/12), not the
    # mean of the case maxima (7/12).
    assert o["maxDice"] == pytest.approx(5 / 12)
    for key in ("Smeasure", "adpEm", "wFmeasure", "meanEm"):
        assert o[key] == pytest.approx((a[key] + b[key]) / 2)
    assert set(o) == set(M.METRIC_KEYS) | {"maxSen"}


def test_drop_ends():
    gt = _rows_gt()
    bad = 255 - gt
    frames = [(bad, gt), (gt, gt), (gt.copy(), gt), (bad, gt)]
    dropped = M.evaluate_cases({"c": frames}, drop_ends=True)["overall"]
    assert dropped == M.evaluate_cases({"c": frames[1:-1]})["overall"]
    assert dropped["MAE"] == 0.0
    assert M.evaluate_cases({"c": frames})["overall"]["MAE"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 3 frames"):
        M.evaluate_cases({"c": frames[:2]}, drop_ends=True)

    streaming = M.CaseMetrics(drop_ends=True)
    for pred, g in frames:
        streaming.add("c", pred, g)
    assert streaming.results()["overall"] == dropped


# --------------------------------------------------------------------------------------------
# score_folders
# --------------------------------------------------------------------------------------------
def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def folder_tree(tmp_path):
    """``data/GT/<case>/<n>.png`` and ``pred/<case>/<n>.png``; frame "2" is the only good one
    of case1 (natural order 1 < 2 < 10), so drop_ends keeps exactly it."""
    rng = np.random.default_rng(5)
    gt = _square_gt()
    arrays: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    layout = {"case1": ["1", "2", "10"], "case2": ["7", "8", "9", "11"]}
    for case, stems in layout.items():
        arrays[case] = []
        for stem in stems:
            good = case == "case2" or stem == "2"
            pred = gt.copy() if good else rng.integers(0, 256, gt.shape, dtype=np.uint8)
            _write(tmp_path / "data" / "GT" / case / f"{stem}.png", gt)
            _write(tmp_path / "pred" / case / f"{stem}.png", pred)
            arrays[case].append((pred, gt))
    return tmp_path, arrays


def test_score_folders(folder_tree):
    root, arrays = folder_tree
    expected = M.evaluate_cases(arrays)
    out = M.score_folders(root / "pred", root / "data")  # SUN-SEG root holding GT/
    assert list(out["cases"]) == ["case1", "case2"]
    assert out == expected
    assert M.score_folders(root / "pred", root / "data" / "GT") == expected  # the GT folder
    dropped = M.score_folders(root / "pred", root / "data", drop_ends=True)
    assert dropped["cases"]["case1"]["MAE"] == 0.0  # only frame "2" is left
    assert dropped == M.evaluate_cases(arrays, drop_ends=True)


def test_score_folders_mismatches(folder_tree, tmp_path):
    root, _ = folder_tree
    pred_root, gt_root = root / "pred", root / "data"
    missing = pred_root / "case2" / "8.png"
    missing.unlink()
    with pytest.raises(ValueError, match=r"no prediction for GT frame .*case2.8\.png"):
        M.score_folders(pred_root, gt_root)
    _write(missing, _square_gt())

    extra = pred_root / "case1" / "99.png"
    _write(extra, _square_gt())
    with pytest.raises(ValueError, match=r"prediction .*99\.png has no GT"):
        M.score_folders(pred_root, gt_root)
    extra.unlink()

    stray = pred_root / "case3" / "1.png"
    _write(stray, _square_gt())
    with pytest.raises(ValueError, match=r"prediction .*case3.1\.png has no GT"):
        M.score_folders(pred_root, gt_root)
    stray.unlink()

    assert M.score_folders(pred_root, gt_root)["cases"]  # intact again
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no GT frames"):
        M.score_folders(pred_root, empty)
    with pytest.raises(ValueError, match="no prediction"):
        M.score_folders(empty, gt_root)
    with pytest.raises(ValueError, match="not a directory"):
        M.score_folders(tmp_path / "nowhere", gt_root)


def test_score_folders_cases_and_empty_case_folders(folder_tree):
    root, arrays = folder_tree
    only = M.score_folders(root / "pred", root / "data", cases=["case2"])
    assert list(only["cases"]) == ["case2"]
    assert only == M.evaluate_cases({"case2": arrays["case2"]})
    with pytest.raises(ValueError, match=r"cases: 'case9' \(not in .*case1.*case2"):
        M.score_folders(root / "pred", root / "data", cases=["case9"])
    (root / "data" / "GT" / "case5").mkdir()  # an empty case folder
    with pytest.warns(UserWarning, match=r"skipped 1 empty case folder.*: case5"):
        assert list(M.score_folders(root / "pred", root / "data")["cases"]) == ["case1", "case2"]
    with pytest.raises(ValueError, match=r"'case5' \(no GT images in"):
        M.score_folders(root / "pred", root / "data", cases=["case5"])


def test_score_folders_16bit_by_the_one_mask_rule(tmp_path):
    gt16 = np.zeros((40, 50), np.uint16)
    gt16[8:27, 10:32] = 20000  # an outer anti-aliased rim: 31% of full scale, background
    gt16[9:26, 11:31] = 32950  # an inner rim: just above 128/255 of full scale, foreground
    gt16[10:25, 12:30] = 65535
    rng = np.random.default_rng(8)
    pred8 = np.clip(cv2.GaussianBlur((gt16 > 0).astype(np.float64), (0, 0), 3.0), 0, 1)
    pred8 = (255 * np.clip(pred8 + rng.normal(0, 0.05, pred8.shape), 0, 1)).astype(np.uint8)
    _write(tmp_path / "gt" / "c" / "1.png", gt16)
    _write(tmp_path / "p8" / "c" / "1.png", pred8)
    _write(tmp_path / "p16" / "c" / "1.png", pred8.astype(np.uint16) * 257)
    expected = M.evaluate_cases({"c": [(pred8, gt16 > 128 * 257)]})
    assert M.score_folders(tmp_path / "p8", tmp_path / "gt") == expected
    assert M.score_folders(tmp_path / "p16", tmp_path / "gt") == expected  # 257 v scores as v


def test_aspect_ratio_mismatch_warns(folder_tree):
    root, _ = folder_tree
    pred = root / "pred" / "case2" / "8.png"
    _write(pred, cv2.resize(_square_gt(), (25, 20)))  # half size, same aspect: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.score_folders(root / "pred", root / "data")
    _write(pred, cv2.resize(_square_gt(), (50, 25)))
    with pytest.warns(UserWarning, match=r"1 prediction\(s\) of .*case2 .* 8\.png is 50x25"):
        M.score_folders(root / "pred", root / "data")
    assert not M.aspect_ratio_differs((289, 385), (144, 192))  # rounding of a halved odd size
    assert M.aspect_ratio_differs((288, 384), (288, 352))


def test_e_measure_bound_is_documented_and_shared_with_pysodmetrics(psm):
    # The toolbox (and pysodmetrics) divide the enhanced-alignment sum by N - 1, not N: a
    # perfect map scores N / (N - 1) > 1. Kept for toolbox parity; the docs must say so.
    for doc in (M.__doc__, M.e_measure_curve.__doc__, M.adaptive_e_measure.__doc__):
        assert "N / (N - 1)" in doc
    gt = _square_gt()
    n = gt.size
    rng = np.random.default_rng(9)
    for pred in (gt, 255 - gt, rng.integers(0, 256, gt.shape, dtype=np.uint8)):
        fs = M.score_frame(pred, gt)
        assert fs.em_curve.min() >= 0 and fs.em_curve.max() <= n / (n - 1)
        assert 0 <= fs.adp_em <= n / (n - 1)
        em = psm.Emeasure()
        em.step(pred, gt)
        np.testing.assert_allclose(fs.em_curve, em.get_results()["em"]["curve"][::-1], atol=1e-12)
