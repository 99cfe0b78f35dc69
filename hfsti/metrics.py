"""Video polyp segmentation metrics, as the SUN-SEG / VPS evaluation toolbox computes them.

Written from the published definitions in numpy + OpenCV (no scipy, no torch). The PyPI package
``pysodmetrics`` implements the same formulas and is used by the tests as an independent oracle.

Per frame
---------
* **GT**: ``bool`` as is; integer masks (``uint8`` 0..255) are foreground where ``> 128``,
  ``uint16`` masks where ``> 32896`` (the same 128/255 of full scale, ``hfsti.data.binarize_mask``;
  an integer mask whose maximum is 1 is refused as an ambiguous 0/1 mask); float masks where
  ``> 0.5``. ``HxW`` or ``HxWx1``.
* **Prediction**: resized to the GT size first if the sizes differ (``cv2.resize``, bilinear, as
  the toolbox does on the ``uint8`` map it read), then normalised to [0, 1]:

  - ``uint8``: ``p / 255``, then min-max normalised unless constant (the toolbox's
    ``im2double`` + ``mapminmax``); a constant map stays ``p / 255`` (all-255 is all ones).
    ``uint16`` likewise with ``p / 65535`` (a 16-bit PNG holding ``257 v`` scores as ``v``).
  - any other dtype (float, bool, other integers; any range, e.g. logits): min-max normalised
    unless constant; a constant map is clipped to [0, 1].

* **S-measure** (Fan et al. 2017, alpha = 0.5): object score (mean / sample std of the foreground
  and background regions) and region score (SSIM of the four blocks around the rounded GT centroid,
  plus one as in the MATLAB code). All-background GT: ``1 - mean(p)``; all-foreground GT:
  ``mean(p)``.
* **E-measure** (Fan et al. 2018) of the binarised map ``floor(255 p) >= k`` for the 256 levels
  ``k = 0..255`` (histogram + cumulative sum) -> ``meanEm`` / ``maxEm`` of the curve; **adpEm**
  binarises ``p >= min(2 mean(p), 1)``. The sum of the N enhanced-alignment values (each in
  [0, 1]) is divided by ``N - 1``, as the MATLAB code, the toolbox and pysodmetrics do, so
  E-measure values lie in [0, N / (N - 1)], not [0, 1]: a (near) perfect map scores up to
  N / (N - 1) (1 + 8e-6 at 352x352). Kept for parity with published numbers.
* **Weighted F-measure** (Margolin et al. 2014, beta^2 = 1): Euclidean distance transform to the
  GT, the error at the nearest GT pixel for background pixels, a 7x7 sigma-5 Gaussian
  (``fspecial``) with zero padding, the ``2 - 0.5^(d/5)`` importance weights. 0 when the GT is
  empty.
* **Dice / Sensitivity** curves over the same 256 levels: ``2 TP / (|pred| + |GT|)`` and
  ``TP / |GT|``, 0 where the denominator (or TP) is 0 -> ``meanDice``, ``maxDice``, ``meanSen``
  (``maxSen`` on request).
* **MAE**: ``mean(|p - GT|)``.

Aggregation (``vps_evaluator.py`` of the toolbox)
-------------------------------------------------
Within a case (sequence) the scalar metrics and the three 256-point curves are averaged over its
frames; a case's ``mean*`` / ``max*`` are the mean / max of its frame-averaged curve. Over a
dataset the *case* curves and scalars are averaged with equal weight per case, and the overall
``max*`` is the max of that case-averaged curve, exactly as the toolbox does. The overall
``mean*`` and scalar metrics therefore equal the mean of the per-case values; the overall
``max*`` is at most the mean of the per-case maxima.

Choices and intended differences
--------------------------------
* The toolbox drops the first and last frame of each case (DAVSOD convention). Here every frame
  given is scored by default; ``drop_ends=True`` (``evaluate_cases``, ``score_folders``,
  ``CaseMetrics``) reproduces the toolbox protocol, with frames in the order given (folders:
  natural order of the file stems). ``drop_ends=True, toolbox_thresholds=True`` on ``uint8``
  maps is the toolbox's protocol (up to float summation order).
* Dice / Sensitivity: the toolbox's ``Medical`` class tests ``p >= t`` for the floats
  ``t = np.linspace(1, 0, 256)``, 66 of which lie one ulp above ``k / 255``, so a pixel exactly
  on such a level (many pixels of a ``uint8`` map) counts one level lower there. By default the
  level of a pixel is ``floor(255 p)`` (``(p * 255).astype(uint8)``), as in pysodmetrics'
  ``FmeasureV2`` handlers and the toolbox's own E-measure; ``toolbox_thresholds=True`` applies
  the toolbox's float test exactly (vectorised). The two differ by up to ~1e-3 in ``meanDice`` /
  ``meanSen`` on ``uint8`` maps (most for noisy maps), ~1e-4 in ``maxDice``.
* S-measure: a block of the region score that is empty (centroid on the last row / column) is
  skipped (its weight is 0); the toolbox and pysodmetrics return NaN there.
* Weighted F-measure: scipy's ``distance_transform_edt`` is replaced by OpenCV's exact
  (``DIST_MASK_PRECISE``) distance transform, rounded back to the exact ``sqrt`` of an integer,
  and the nearest GT pixel of every background pixel within 3 px (the only ones the 7x7 filter
  carries into the GT) is found exactly, ties broken by the smallest column offset then the
  smallest row offset, which is what scipy's feature transform picks. Results agree with
  pysodmetrics to float rounding (~1e-15).
* Float predictions are scored without the uint8 quantisation a PNG round trip would add;
  save/pass ``uint8`` maps to reproduce toolbox numbers bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hfsti.data.sunseg import (
    binarize_mask,
    list_images,
    load_image,
    load_mask,
    luminance,
    natural_key,
)

__all__ = [
    "CURVE_KEYS",
    "METRIC_KEYS",
    "NUM_THRESHOLDS",
    "CaseMetrics",
    "FrameScores",
    "SegMetrics",
    "adaptive_e_measure",
    "aspect_ratio_differs",
    "dice_sensitivity_curves",
    "e_measure_curve",
    "evaluate_cases",
    "mae",
    "prepare_frame",
    "s_measure",
    "score_folders",
    "score_frame",
    "weighted_f_measure",
]

METRIC_KEYS = (
    "Smeasure",
    "meanEm",
    "maxEm",
    "adpEm",
    "wFmeasure",
    "meanDice",
    "maxDice",
    "meanSen",
    "MAE",
)
CURVE_KEYS = ("Em", "Dice", "Sen")
NUM_THRESHOLDS = 256
_EPS = float(np.spacing(1))  # MATLAB's eps, as in the original code


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------
def _as_2d(name: str, a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty HxW (or HxWx1) array, got shape {arr.shape}")
    return arr


def prepare_frame(pred: object, gt: object) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(p, g)``: ``p`` float64 in [0, 1] at the GT size, ``g`` the boolean GT."""
    pred = _as_2d("pred", pred)
    gt = _as_2d("gt", gt)
    if gt.dtype == np.bool_:
        g = gt
    elif np.issubdtype(gt.dtype, np.integer):
        if gt.max() == 1:
            raise ValueError(
                "integer gt with maximum 1 looks like a 0/1 mask, but integer masks are "
                "binarised at > 128 (0..255); pass gt.astype(bool) or a 0/255 mask"
            )
        g = binarize_mask(gt) if gt.dtype == np.uint16 else gt > 128
    elif np.issubdtype(gt.dtype, np.floating):
        g = gt > 0.5
    else:
        raise TypeError(f"unsupported gt dtype {gt.dtype}")
    g = np.ascontiguousarray(g)

    if pred.dtype in (np.uint8, np.uint16):
        if pred.shape != g.shape:
            pred = cv2.resize(np.ascontiguousarray(pred), (g.shape[1], g.shape[0]))
        p = pred / (255 if pred.dtype == np.uint8 else 65535)
    else:
        if not (np.issubdtype(pred.dtype, np.number) or pred.dtype == np.bool_):
            raise TypeError(f"unsupported pred dtype {pred.dtype}")
        p = np.ascontiguousarray(pred, dtype=np.float64)
        if not np.isfinite(p).all():
            raise ValueError("pred contains NaN or Inf")
        if p.shape != g.shape:
            p = cv2.resize(p, (g.shape[1], g.shape[0]))
    lo, hi = p.min(), p.max()
    if hi != lo:
        p = (p - lo) / (hi - lo)
    elif pred.dtype not in (np.uint8, np.uint16):
        p = np.clip(p, 0.0, 1.0)
    return p, g


# --------------------------------------------------------------------------------------------
# Per-frame metrics on prepared inputs (p float64 in [0, 1], g bool, same shape)
# --------------------------------------------------------------------------------------------
def mae(p: np.ndarray, g: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(p - g)))


def _s_object(x: np.ndarray) -> float:
    mu = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return 2.0 * mu / (mu * mu + 1.0 + sd + _EPS)


def _ssim(p: np.ndarray, g: np.ndarray) -> float:
    n = p.size
    mx = float(np.mean(p))
    my = float(np.mean(g))
    dp = p - mx
    dg = g - my
    sx = float(np.sum(dp * dp)) / (n - 1 + _EPS)
    sy = float(np.sum(dg * dg)) / (n - 1 + _EPS)
    sxy = float(np.sum(dp * dg)) / (n - 1 + _EPS)
    a = 4.0 * mx * my * sxy
    b = (mx * mx + my * my) * (sx + sy)
    if a != 0:
        return a / (b + _EPS)
    return 1.0 if b == 0 else 0.0


def s_measure(p: np.ndarray, g: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure S_alpha (object + region structural similarity)."""
    y = float(np.mean(g))
    if y == 0:
        return 1.0 - float(np.mean(p))
    if y == 1:
        return float(np.mean(p))
    # object-aware score
    obj = y * _s_object(p[g]) + (1.0 - y) * _s_object(1.0 - p[~g])
    # region-aware score around the (rounded, 1-based as in MATLAB) GT centroid
    h, w = g.shape
    ys, xs = np.nonzero(g)
    cy = int(np.round(ys.sum() / ys.size)) + 1
    cx = int(np.round(xs.sum() / xs.size)) + 1
    gf = g.astype(np.float64)
    area = h * w
    weights = (
        cx * cy / area,
        cy * (w - cx) / area,
        (h - cy) * cx / area,
    )
    weights = (*weights, 1.0 - sum(weights))
    blocks = (
        (slice(0, cy), slice(0, cx)),
        (slice(0, cy), slice(cx, w)),
        (slice(cy, h), slice(0, cx)),
        (slice(cy, h), slice(cx, w)),
    )
    region = 0.0
    for wt, (sy, sx) in zip(weights, blocks, strict=True):
        pb = p[sy, sx]
        if pb.size:
            region += wt * _ssim(pb, gf[sy, sx])
    return max(0.0, alpha * obj + (1.0 - alpha) * region)


# The toolbox's Dice / sensitivity thresholds (``Medical`` class), ascending: T[k] ~ k / 255.
_TOOLBOX_T = np.linspace(1, 0, NUM_THRESHOLDS)[::-1].copy()


def _levels(p: np.ndarray) -> np.ndarray:
    """Level of each pixel, ``floor(255 p)`` computed as ``(p * 255).astype(uint8)``."""
    return (p * 255).astype(np.uint8).astype(np.intp)


def _toolbox_levels(p: np.ndarray) -> np.ndarray:
    """Largest k with ``p >= np.linspace(1, 0, 256)[255 - k]`` (the toolbox's float test)."""
    lvl = _levels(p)
    lvl -= p < _TOOLBOX_T[lvl]
    up = np.minimum(lvl + 1, NUM_THRESHOLDS - 1)
    lvl += (up > lvl) & (p >= _TOOLBOX_T[up])
    return lvl


def _level_counts(levels: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level k = 0..255: GT-foreground (TP) and GT-background (FP) pixels at level >= k."""
    hist = np.bincount((levels + NUM_THRESHOLDS * g).ravel(), minlength=2 * NUM_THRESHOLDS)
    bg, fg = hist[:NUM_THRESHOLDS], hist[NUM_THRESHOLDS:]
    tp = np.cumsum(fg[::-1])[::-1]
    fp = np.cumsum(bg[::-1])[::-1]
    return tp, fp


def _e_measure_from_counts(tp, fp, n_fg: int, n: int):
    """E-measure from TP / FP counts (scalars or arrays) of a binarised map."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    n_pred = tp + fp
    if n_fg == 0:
        total = n - n_pred
    elif n_fg == n:
        total = n_pred
    else:
        fn = n_fg - tp
        tn = n - n_pred - fn
        mp = n_pred / n
        mg = n_fg / n
        total = (
            tp * _enhanced(1.0 - mp, 1.0 - mg)
            + fp * _enhanced(1.0 - mp, -mg)
            + fn * _enhanced(-mp, 1.0 - mg)
            + tn * _enhanced(-mp, -mg)
        )
    return total / (n - 1 + _EPS)


def _enhanced(a, b):
    align = 2.0 * a * b / (a * a + b * b + _EPS)
    return (align + 1.0) ** 2 / 4.0


def e_measure_curve(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """E-measure of ``floor(255 p) >= k`` for k = 0..255 (index k); each in [0, N / (N - 1)]
    for N pixels (the toolbox's N - 1 divisor, see the module docstring)."""
    tp, fp = _level_counts(_levels(p), g)
    return _e_measure_from_counts(tp, fp, int(np.count_nonzero(g)), g.size)


def _dice_sen_from_counts(tp: np.ndarray, fp: np.ndarray, n_fg: int):
    tp = tp.astype(np.float64)
    den = tp + fp + n_fg
    dice = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    sen = tp / n_fg if n_fg > 0 else np.zeros_like(tp)
    return dice, sen


def adaptive_e_measure(p: np.ndarray, g: np.ndarray) -> float:
    """E-measure of ``p >= min(2 mean(p), 1)``, in [0, N / (N - 1)] for N pixels (the toolbox's
    N - 1 divisor, see the module docstring)."""
    thr = min(2 * p.mean(), 1)
    b = p >= thr
    tp = np.count_nonzero(b & g)
    fp = np.count_nonzero(b & ~g)
    return float(_e_measure_from_counts(tp, fp, int(np.count_nonzero(g)), g.size))


def dice_sensitivity_curves(
    p: np.ndarray, g: np.ndarray, *, toolbox_thresholds: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Dice and sensitivity (recall) curves over the 256 levels k = 0..255 (index k).

    A pixel is predicted foreground at level k when ``floor(255 p) >= k``; with
    ``toolbox_thresholds=True`` when ``p >= np.linspace(1, 0, 256)[255 - k]``, the toolbox's
    exact float test (see the module docstring).
    """
    levels = _toolbox_levels(p) if toolbox_thresholds else _levels(p)
    tp, fp = _level_counts(levels, g)
    return _dice_sen_from_counts(tp, fp, int(np.count_nonzero(g)))


def _gauss7() -> np.ndarray:
    r = np.arange(-3, 4, dtype=np.float64)
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 5.0**2))
    k[k < np.finfo(np.float64).eps * k.max()] = 0
    return k / k.sum()


_GAUSS7 = _gauss7()
_RING_KERNEL = np.ones((7, 7), np.uint8)
_NN_R = 4  # nearest GT pixel of a bg pixel within 3 px (Chebyshev) lies within 3*sqrt(2) < 5


def _nn_offsets() -> tuple[np.ndarray, np.ndarray]:
    offs = [
        (dy, dx)
        for dy in range(-_NN_R, _NN_R + 1)
        for dx in range(-_NN_R, _NN_R + 1)
        if (dy, dx) != (0, 0)
    ]
    offs.sort(key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1], o[0]))
    dy, dx = np.array(offs).T
    return dy, dx


_NN_DY, _NN_DX = _nn_offsets()


def weighted_f_measure(p: np.ndarray, g: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure F^w_beta (beta^2 = ``beta2``); 0 for an empty GT."""
    rows = np.flatnonzero(g.any(axis=1))
    if rows.size == 0:
        return 0.0
    cols = np.flatnonzero(g.any(axis=0))
    h, w = g.shape
    err = np.abs(p - g)

    # Pixel dependency, only where it matters: the 7x7 filter carries the errors of pixels within
    # 3 px of the GT into the GT, so work in the GT's bounding box grown by 3 px (the filter's
    # zero padding at a window edge inside the image reaches no GT pixel).
    y0, y1 = max(rows[0] - 3, 0), min(rows[-1] + 4, h)
    x0, x1 = max(cols[0] - 3, 0), min(cols[-1] + 4, w)
    gw = np.ascontiguousarray(g[y0:y1, x0:x1])
    err_w = err[y0:y1, x0:x1]
    err_t = err_w.copy()
    # A background pixel takes the error of its nearest GT pixel (ties: smallest column offset,
    # then smallest row offset, as scipy's feature transform resolves them).
    ys, xs = np.nonzero((cv2.dilate(gw.astype(np.uint8), _RING_KERNEL) > 0) & ~gw)
    if ys.size:
        wp = gw.shape[1] + 2 * _NN_R
        padded = np.pad(gw, _NN_R).ravel()
        base = (ys + _NN_R) * wp + (xs + _NN_R)
        first = padded[base[:, None] + (_NN_DY * wp + _NN_DX)[None, :]].argmax(axis=1)
        err_t[ys, xs] = err_w[ys + _NN_DY[first], xs + _NN_DX[first]]
    ea = cv2.filter2D(err_t, -1, _GAUSS7, borderType=cv2.BORDER_CONSTANT)
    ew_fg = np.where(ea < err_w, ea, err_w)[gw]  # min(E, EA) on the GT; importance 1 there

    # Pixel importance of background pixels: 2 - 0.5^(d/5), d the exact Euclidean distance to
    # the GT (OpenCV's exact transform in float32, snapped back to sqrt of an integer). It is
    # exactly 1 on the GT (d = 0).
    dist = cv2.distanceTransform((~g).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist = np.sqrt(np.rint(dist.astype(np.float64) ** 2))
    importance = 2.0 - np.exp(math.log(0.5) / 5.0 * dist)

    tpw = float(ew_fg.size) - float(ew_fg.sum())
    fpw = float(np.sum(err * importance, where=~g))
    recall = 1.0 - float(ew_fg.mean())
    precision = tpw / (tpw + fpw + _EPS)
    return (1.0 + beta2) * recall * precision / (recall + beta2 * precision + _EPS)


@dataclass(frozen=True)
class FrameScores:
    """All metrics of one frame; the curves are indexed by level k (threshold k / 255)."""

    smeasure: float
    adp_em: float
    wfmeasure: float
    mae: float
    em_curve: np.ndarray
    dice_curve: np.ndarray
    sen_curve: np.ndarray


def score_frame(pred: object, gt: object, *, toolbox_thresholds: bool = False) -> FrameScores:
    """Score one frame (raw ``pred`` / ``gt`` as accepted by :func:`prepare_frame`).

    ``toolbox_thresholds``: Dice / sensitivity thresholds as the toolbox's ``Medical`` class
    (see :func:`dice_sensitivity_curves`).
    """
    p, g = prepare_frame(pred, gt)
    n_fg = int(np.count_nonzero(g))
    levels = _levels(p)
    tp, fp = _level_counts(levels, g)
    if toolbox_thresholds:
        dice, sen = _dice_sen_from_counts(*_level_counts(_toolbox_levels(p), g), n_fg)
    else:
        dice, sen = _dice_sen_from_counts(tp, fp, n_fg)
    return FrameScores(
        smeasure=s_measure(p, g),
        adp_em=adaptive_e_measure(p, g),
        wfmeasure=weighted_f_measure(p, g),
        mae=mae(p, g),
        em_curve=_e_measure_from_counts(tp, fp, n_fg, g.size),
        dice_curve=dice,
        sen_curve=sen,
    )


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------
_SCALARS = (
    ("Smeasure", "smeasure"),
    ("adpEm", "adp_em"),
    ("wFmeasure", "wfmeasure"),
    ("MAE", "mae"),
)
_CURVES = (("Em", "em_curve"), ("Dice", "dice_curve"), ("Sen", "sen_curve"))


def _summarise(scalars: Mapping[str, float], curves: Mapping[str, np.ndarray], max_sen: bool):
    out = {
        "Smeasure": float(scalars["Smeasure"]),
        "meanEm": float(curves["Em"].mean()),
        "maxEm": float(curves["Em"].max()),
        "adpEm": float(scalars["adpEm"]),
        "wFmeasure": float(scalars["wFmeasure"]),
        "meanDice": float(curves["Dice"].mean()),
        "maxDice": float(curves["Dice"].max()),
        "meanSen": float(curves["Sen"].mean()),
        "MAE": float(scalars["MAE"]),
    }
    if max_sen:
        out["maxSen"] = float(curves["Sen"].max())
    return out


class SegMetrics:
    """Frame-averaged metrics of one case (sequence), SUN-SEG style.

    ``add(pred, gt)`` scores a frame; ``results()`` returns the :data:`METRIC_KEYS` dict (plus
    ``"maxSen"`` with ``include_max_sen=True``): scalars averaged over the frames, ``mean*`` /
    ``max*`` the mean / max over the 256 levels of the frame-averaged curve.
    ``toolbox_thresholds``: see :func:`dice_sensitivity_curves`.
    """

    def __init__(self, *, toolbox_thresholds: bool = False) -> None:
        self.toolbox_thresholds = toolbox_thresholds
        self._frames: list[FrameScores] = []

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, pred: object, gt: object) -> FrameScores:
        """Score one frame, accumulate it and return its :class:`FrameScores`."""
        fs = score_frame(pred, gt, toolbox_thresholds=self.toolbox_thresholds)
        self.add_scores(fs)
        return fs

    def add_scores(self, fs: FrameScores) -> None:
        """Accumulate an already computed :class:`FrameScores`."""
        self._frames.append(fs)

    def _check(self) -> None:
        if not self._frames:
            raise ValueError("no frames were added")

    def scalars(self) -> dict[str, float]:
        """Frame means of ``Smeasure``, ``adpEm``, ``wFmeasure``, ``MAE``."""
        self._check()
        return {
            key: float(np.mean([getattr(f, attr) for f in self._frames])) for key, attr in _SCALARS
        }

    def curves(self) -> dict[str, np.ndarray]:
        """Frame-averaged 256-level curves ``{"Em", "Dice", "Sen"}`` (index k: level k)."""
        self._check()
        return {
            key: np.mean([getattr(f, attr) for f in self._frames], axis=0) for key, attr in _CURVES
        }

    def results(self, *, include_max_sen: bool = False) -> dict[str, float]:
        """The :data:`METRIC_KEYS` dict of this case (``maxSen`` added on request)."""
        return _summarise(self.scalars(), self.curves(), include_max_sen)


class CaseMetrics:
    """Streaming per-case evaluation: ``add(case, pred, gt)`` per frame, then ``results()``.

    With ``drop_ends=True`` the first and last frame added to each case are not counted (the
    toolbox protocol); frames must then be added in temporal order. ``toolbox_thresholds``: see
    :func:`dice_sensitivity_curves`.
    """

    def __init__(self, *, drop_ends: bool = False, toolbox_thresholds: bool = False) -> None:
        self.drop_ends = drop_ends
        self.toolbox_thresholds = toolbox_thresholds
        self._cases: dict[str, SegMetrics] = {}
        self._seen: dict[str, int] = {}
        self._pending: dict[str, FrameScores] = {}

    def add(self, case: str, pred: object, gt: object) -> None:
        """Add one frame of ``case``."""
        metrics = self._cases.setdefault(
            case, SegMetrics(toolbox_thresholds=self.toolbox_thresholds)
        )
        seen = self._seen.get(case, 0)
        self._seen[case] = seen + 1
        if not self.drop_ends:
            metrics.add(pred, gt)
        elif seen >= 1:  # the first frame is dropped; each later one waits for a successor
            if case in self._pending:
                metrics.add_scores(self._pending[case])
            self._pending[case] = score_frame(pred, gt, toolbox_thresholds=self.toolbox_thresholds)

    def results(self, *, include_max_sen: bool = False) -> dict:
        """``{"overall": {metric: float}, "cases": {case: {metric: float}}}``.

        Cases in insertion order; ``overall`` averages the case scalars and case curves with
        equal weight per case, then takes the mean / max of the averaged curves.
        """
        if not self._cases:
            raise ValueError("no cases were added")
        empty = [case for case, m in self._cases.items() if len(m) == 0]
        if empty:
            need = " (drop_ends needs at least 3 frames per case)" if self.drop_ends else ""
            raise ValueError(f"no frames scored for case(s) {empty}{need}")
        cases = {
            case: m.results(include_max_sen=include_max_sen) for case, m in self._cases.items()
        }
        per_case_scalars = [m.scalars() for m in self._cases.values()]
        per_case_curves = [m.curves() for m in self._cases.values()]
        scalars = {key: float(np.mean([s[key] for s in per_case_scalars])) for key, _ in _SCALARS}
        curves = {key: np.mean([c[key] for c in per_case_curves], axis=0) for key, _ in _CURVES}
        return {"overall": _summarise(scalars, curves, include_max_sen), "cases": cases}


def evaluate_cases(
    cases: Mapping[str, Iterable[tuple[object, object]]],
    *,
    drop_ends: bool = False,
    toolbox_thresholds: bool = False,
    include_max_sen: bool = False,
) -> dict:
    """Score ``{case: iterable of (pred, gt)}``.

    Returns ``{"overall": {metric: float}, "cases": {case: {metric: float}}}`` with the
    :data:`METRIC_KEYS` (plus ``"maxSen"`` on request); ``overall`` averages the cases with equal
    weight (``max*``: max of the case-averaged curve, as the toolbox does). ``drop_ends`` and
    ``toolbox_thresholds`` as in :class:`CaseMetrics`; both ``True`` is the toolbox protocol.
    """
    acc = CaseMetrics(drop_ends=drop_ends, toolbox_thresholds=toolbox_thresholds)
    for case, frames in cases.items():
        n = 0
        for pred, gt in frames:
            acc.add(case, pred, gt)
            n += 1
        if n == 0:
            raise ValueError(f"case {case!r} has no frames")
    return acc.results(include_max_sen=include_max_sen)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def _images_by_stem(folder: Path) -> dict[str, Path]:
    return {f.stem: f for f in list_images(folder)}


def _case_dirs(root: Path) -> dict[str, Path]:
    return {d.name: d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}


def _read_prediction(path: Path) -> np.ndarray:
    """A predicted map as uint8 or uint16 gray, at its stored depth."""
    return luminance(load_image(path))


def aspect_ratio_differs(pred_shape: tuple[int, ...], gt_shape: tuple[int, ...]) -> bool:
    """True when an (H, W) map cannot be a resize of the other: their aspect ratios differ by more
    than rounding each side to whole pixels explains."""
    (ph, pw), (gh, gw) = pred_shape[:2], gt_shape[:2]
    return abs(ph * gw - gh * pw) > max(gh + gw, ph + pw) / 2


def score_folders(
    pred_root: str | Path,
    gt_root: str | Path,
    *,
    cases: Iterable[str] | None = None,
    drop_ends: bool = False,
    toolbox_thresholds: bool = False,
    include_max_sen: bool = False,
) -> dict:
    """Score ``pred_root/<case>/<frame>.png`` against ``gt_root/<case>/<frame>.png``.

    ``gt_root`` may be a SUN-SEG dataset root holding ``GT/`` (then ``gt_root/GT`` is used) or
    the GT folder itself; ``cases`` restricts the scoring to those GT cases (ValueError naming
    any unknown or empty one). Frames are matched by file stem (any image extension) and read
    at their stored depth (8 or 16 bits) by ``hfsti.data.load_image``: predictions as gray
    (luminance), GT masks by ``hfsti.data.load_mask``, the rule of every other reader. A GT frame
    without a prediction, a prediction without a GT frame, or an empty root raises
    ``ValueError``; GT case folders without images are skipped with a warning, and so is a
    prediction whose aspect ratio differs from its GT's (it is stretched to the GT size, as the
    toolbox does; one warning per case). Cases and frames are taken in the natural order of
    their names ("2" < "10"). Returns the :func:`evaluate_cases` dict; the other keyword
    arguments are passed on to it.
    """
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    for name, root in (("pred_root", pred_root), ("gt_root", gt_root)):
        if not root.is_dir():
            raise ValueError(f"{name} {root} is not a directory")
    if (gt_root / "GT").is_dir():
        gt_root = gt_root / "GT"
    gt_cases, pred_cases = _case_dirs(gt_root), _case_dirs(pred_root)

    gt_frames = {case: _images_by_stem(d) for case, d in gt_cases.items()}
    empty = sorted((c for c, gts in gt_frames.items() if not gts), key=natural_key)
    gt_frames = {case: gts for case, gts in gt_frames.items() if gts}
    if cases is not None:
        cases = list(cases)
        unknown = [
            f"{c!r} ({'no GT images in' if c in gt_cases else 'not in'} {gt_root})"
            for c in cases
            if c not in gt_frames
        ]
        if unknown:
            have = sorted(gt_frames, key=natural_key)
            raise ValueError(f"cases: {', '.join(unknown)}; cases with GT frames: {have}")
        gt_frames = {c: gt_frames[c] for c in cases}
        pred_cases = {c: d for c, d in pred_cases.items() if c in gt_frames}
    elif empty:
        warnings.warn(
            f"skipped {len(empty)} empty case folder(s) of {gt_root} (no GT images): "
            + ", ".join(empty),
            stacklevel=2,
        )
    if not gt_frames:
        raise ValueError(f"no GT frames (<case>/<frame>.png) found under {gt_root}")

    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for case in sorted(gt_frames, key=natural_key) if cases is None else gt_frames:
        gts = gt_frames[case]
        preds = _images_by_stem(pred_cases[case]) if case in pred_cases else {}
        missing = sorted(set(gts) - set(preds), key=natural_key)
        if missing:
            raise ValueError(
                f"no prediction for GT frame {gts[missing[0]]} "
                f"({len(missing)} GT frame(s) of case {case!r} unmatched in {pred_root})"
            )
        extra = sorted(set(preds) - set(gts), key=natural_key)
        if extra:
            raise ValueError(f"prediction {preds[extra[0]]} has no GT frame in {gt_root}")
        pairs[case] = [(preds[s], gts[s]) for s in sorted(gts, key=natural_key)]
    for case in sorted(set(pred_cases) - set(pairs), key=natural_key):
        preds = _images_by_stem(pred_cases[case])
        if preds:
            first = preds[min(preds, key=natural_key)]
            raise ValueError(f"prediction {first} has no GT frame in {gt_root}")

    def frames(case_pairs: list[tuple[Path, Path]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        stretched = []
        for pred_path, gt_path in case_pairs:
            pred, gt = _read_prediction(pred_path), load_mask(gt_path)
            if aspect_ratio_differs(pred.shape, gt.shape):
                stretched.append((pred_path, pred.shape, gt.shape))
            yield pred, gt
        if stretched:
            path, (ph, pw), (gh, gw) = stretched[0]
            warnings.warn(
                f"{len(stretched)} prediction(s) of {path.parent} have an aspect ratio other "
                f"than their GT's (first: {path.name} is {pw}x{ph}, its GT {gw}x{gh}); they are "
                "stretched to the GT size",
                stacklevel=2,
            )

    return evaluate_cases(
        {case: frames(p) for case, p in pairs.items()},
        drop_ends=drop_ends,
        toolbox_thresholds=toolbox_thresholds,
        include_max_sen=include_max_sen,
    )
