"""Synthetic colonoscopy-like clips with exact polyp masks (pure numpy, deterministic).

Used where real data is absent: training smoke tests, the demo input of the CLI and benchmarks.
The scene is a pinkish-red mucosa (smooth colour field, fine texture, dark vessel-like curves,
a few specular glints) seen through an endoscope (vignetting, sensor noise) by a camera that
drifts smoothly; 0..n polyps are irregular, shaded, glossy blobs attached to the scene that also
wobble and grow/shrink a little. Masks are exactly the blobs' support.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .sunseg import _as_size, resize_clip

__all__ = ["SyntheticClips", "synthetic_clip"]

# Period scale (frames) of the camera drift: slow enough that consecutive frames overlap a lot,
# bounded (sinusoids, not a ramp) so arbitrarily long clips keep the polyps in view.
_DRIFT_PERIOD = 48.0


def _basis(coords: np.ndarray, lo: float, hi: float, spacing: float) -> np.ndarray:
    """Gaussian RBF basis (len(coords), n_centres) with centres every ``spacing`` on [lo, hi]."""
    centres = np.arange(lo, hi + spacing, spacing, dtype=np.float32)
    z = (coords[:, None] - centres[None, :]) / np.float32(spacing)
    return np.exp(-0.5 * z * z)


class _NoiseField:
    """Smooth random field sampled at shifted pixel grids: By @ G @ Bx^T, about unit std.

    Separable Gaussian-RBF interpolation of a random grid: cheap (two small matmuls a frame),
    smooth at any scale, and a sub-pixel camera shift is just a shift of the sample coordinates.
    """

    def __init__(
        self, rng: np.random.Generator, h: int, w: int, spacing: float, margin: float, ch: int
    ) -> None:
        self.spacing, self.lo_y, self.hi_y = spacing, -margin, h + margin
        self.lo_x, self.hi_x = -margin, w + margin
        ny = len(np.arange(self.lo_y, self.hi_y + spacing, spacing))
        nx = len(np.arange(self.lo_x, self.hi_x + spacing, spacing))
        self.grid = rng.standard_normal((ch, ny, nx)).astype(np.float32)

    def __call__(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        by = _basis(ys, self.lo_y, self.hi_y, self.spacing)
        bx = _basis(xs, self.lo_x, self.hi_x, self.spacing)
        # sum_j exp(-z_j^2 / 2)^2 over a unit lattice is sqrt(pi) per axis: normalise to unit std
        return (by @ self.grid @ bx.T) / np.float32(np.sqrt(np.pi))  # (ch, H, W)


def _drift(rng: np.random.Generator, amp: float) -> Callable[[float], float]:
    """A smooth bounded 1-D trajectory |d(t)| <= amp (two sinusoids), d(0) arbitrary."""
    w1, w2 = rng.uniform(0.6, 1.4, 2) * 2 * np.pi / _DRIFT_PERIOD * np.array([1.0, 2.3])
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    a1 = rng.uniform(0.55, 0.75) * amp
    a2 = amp - a1
    return lambda t: float(a1 * np.sin(w1 * t + p1) + a2 * np.sin(w2 * t + p2))


def synthetic_clip(
    num_frames: int = 8,
    height: int = 352,
    width: int = 352,
    num_polyps: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic colonoscopy clip.

    Returns ``frames`` uint8 (T, H, W, 3) RGB and ``masks`` bool (T, H, W) (the union of the
    polyps' supports). Deterministic for a seed, and a clip is a prefix of any longer clip of the
    same seed and size. ``num_polyps=0`` gives empty masks (a negative clip). About 25 ms a frame
    at 352x352.
    """
    for name, v, lo in (("num_frames", num_frames, 1), ("height", height, 8), ("width", width, 8)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    if not isinstance(num_polyps, (int, np.integer)) or num_polyps < 0:
        raise ValueError(f"num_polyps: expected an int >= 0, got {num_polyps!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    h, w, s = int(height), int(width), float(min(height, width))
    f32 = np.float32

    def uni(lo: float, hi: float) -> float:
        # python floats keep the per-pixel math in float32 (a numpy float64 scalar would promote)
        return float(rng.uniform(lo, hi))

    # camera drift (scene coordinates = pixel + drift), bounded by 12 % of the frame
    drift_amp = 0.12 * s
    drift_y, drift_x = _drift(rng, drift_amp), _drift(rng, drift_amp)
    margin = drift_amp + 4.0 * 0.3 * s  # basis centres beyond the view, so edges are not damped

    # mucosa: base colour, low-frequency colour/brightness field, mid mottling, fine texture
    base = np.array([uni(185, 215), uni(80, 105), uni(70, 95)], dtype=f32)
    colour = _NoiseField(rng, h, w, 0.3 * s, margin, 3)
    mottle = _NoiseField(rng, h, w, max(3.0, 0.05 * s), margin, 1)
    fine = _NoiseField(rng, h, w, max(1.5, 0.012 * s), margin, 1)

    # vessels: thin dark curves q = c + A sin(f u + p) in a rotated scene frame (u, q)
    vessels = []
    for _ in range(int(rng.integers(3, 7))):
        theta = uni(0, np.pi)
        vessels.append(
            dict(
                cos=float(np.cos(theta)), sin=float(np.sin(theta)),
                c=uni(-0.6, 0.6) * s, amp=uni(0.03, 0.12) * s,
                freq=uni(1.5, 5.0) / s, phase=uni(0, 2 * np.pi),
                width=max(0.8, uni(0.004, 0.01) * s), depth=uni(0.2, 0.45),
            )
        )  # fmt: skip
    vessel_tint = np.array([1.0, 1.6, 1.2], dtype=f32)  # vessels are darker and more purple

    # specular glints on the mucosa (scene coordinates)
    glints = [(uni(0, h), uni(0, w), uni(0.006, 0.015) * s) for _ in range(int(rng.integers(2, 6)))]

    # polyps: scene-attached centre + own wobble, irregular radius r(phi), slow rotation/scale
    polyps = []
    for _ in range(int(num_polyps)):
        harm = [2, 3, 4, 5]
        polyps.append(
            dict(
                cy=uni(0.3, 0.7) * h, cx=uni(0.3, 0.7) * w,
                wob_y=_drift(rng, 0.03 * s), wob_x=_drift(rng, 0.03 * s),
                radius=uni(0.08, 0.16) * s / num_polyps**0.25,  # several polyps: smaller ones
                aspect=uni(0.65, 1.0), angle=uni(0, np.pi), spin=uni(-0.03, 0.03),
                scale_amp=uni(0.04, 0.1), scale_w=uni(0.1, 0.25), scale_p=uni(0, 2 * np.pi),
                harm=harm, harm_a=[uni(0.0, 0.12) / k for k in harm],
                harm_p=[uni(0, 2 * np.pi) for _ in harm], harm_w=[uni(-0.08, 0.08) for _ in harm],
                tint=np.array([uni(1.0, 1.12), uni(0.85, 1.05), uni(0.85, 1.05)], dtype=f32),
                light=uni(0, 2 * np.pi),
            )
        )  # fmt: skip

    # endoscope vignetting (image coordinates, fixed)
    yy, xx = np.mgrid[0:h, 0:w].astype(f32)
    r2 = ((yy - (h - 1) / 2) / (0.5 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.5 * w)) ** 2
    vignette = np.clip(1.0 - 0.32 * r2, 0.3, 1.0)[..., None]

    def box(cy: float, cx: float, half: float) -> tuple[slice, slice] | None:
        # the pixels within `half` of (cy, cx): work on a crop, not the whole frame
        y0, y1 = max(0, int(cy - half)), min(h, int(cy + half) + 2)
        x0, x1 = max(0, int(cx - half)), min(w, int(cx + half) + 2)
        return (slice(y0, y1), slice(x0, x1)) if y0 < y1 and x0 < x1 else None

    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, h, w), dtype=bool)
    for t in range(num_frames):
        dy, dx = drift_y(t), drift_x(t)
        ys = np.arange(h, dtype=f32) + f32(dy)
        xs = np.arange(w, dtype=f32) + f32(dx)
        sy, sx = yy + f32(dy), xx + f32(dx)  # scene coordinates of each pixel

        col = colour(ys, xs)  # (3, H, W)
        tex = 1.0 + 0.07 * mottle(ys, xs)[0] + 0.05 * fine(ys, xs)[0]
        bright = 1.0 + 0.12 * col[0]
        img = base * (1.0 + 0.06 * np.moveaxis(col, 0, -1)) * (bright * tex)[..., None]

        for v in vessels:
            u = sx * v["cos"] + sy * v["sin"]
            q = sy * v["cos"] - sx * v["sin"]
            arg = v["freq"] * u + v["phase"]
            centre = v["c"] + v["amp"] * np.sin(arg)
            slope = (v["amp"] * v["freq"]) * np.cos(arg)
            d = np.abs(q - centre) / np.sqrt(1.0 + slope * slope)  # distance to the curve
            line = np.exp(-((d / v["width"]) ** 2)) * v["depth"]
            img *= 1.0 - np.minimum(line[..., None] * vessel_tint, 0.9)

        glint = np.zeros((h, w), dtype=f32)
        for gy, gx, gs in glints:
            b = box(gy - dy, gx - dx, 4.0 * gs)
            if b is not None:
                d2 = (sy[b] - gy) ** 2 + (sx[b] - gx) ** 2
                glint[b] = np.maximum(glint[b], np.exp(-d2 / (2 * gs * gs)))

        for p in polyps:
            cy = p["cy"] - dy + p["wob_y"](t)  # image coordinates: the scene moves by -drift
            cx = p["cx"] - dx + p["wob_x"](t)
            scale = 1.0 + p["scale_amp"] * float(np.sin(p["scale_w"] * t + p["scale_p"]))
            rad = p["radius"] * scale
            # r <= rad * 1.16 (sum of harm_a < 0.16); the shadow ring fades by 1.75 r
            b = box(cy, cx, 1.8 * 1.16 * rad + 2.0)
            if b is None:
                continue
            ang = p["angle"] + p["spin"] * t
            ca, sa = float(np.cos(ang)), float(np.sin(ang))
            ry, rx = yy[b] - cy, xx[b] - cx
            eu = rx * ca + ry * sa
            ev = (ry * ca - rx * sa) / p["aspect"]
            rho = np.sqrt(eu * eu + ev * ev)
            phi = np.arctan2(ev, eu)
            wob = sum(
                a * np.cos(k * phi + (ph + wk * t))
                for k, a, ph, wk in zip(p["harm"], p["harm_a"], p["harm_p"], p["harm_w"])
            )
            r = rad * (1.0 + wob)  # > 0
            inside = rho < r
            masks[t][b] |= inside

            crop = img[b]
            # a soft shadow ring just outside (background appearance, outside the mask)
            outside = np.maximum((rho - r) / (0.25 * r), 0.0)
            crop *= (1.0 - 0.18 * np.exp(-outside * outside) * ~inside)[..., None]
            # dome shading + directional light + a glossy highlight, inside only
            z = np.sqrt(np.clip(1.0 - (rho / r) ** 2, 0.0, 1.0))
            lu, lv = float(np.cos(p["light"])), float(np.sin(p["light"]))
            lit = 0.82 + 0.22 * z + 0.12 * (eu * lu + ev * lv) / r
            poly = base * p["tint"] * (tex[b] * lit)[..., None]
            hl_d2 = (eu - 0.35 * r * lu) ** 2 + (ev - 0.35 * r * lv) ** 2
            hl = np.exp(-hl_d2 / (2 * (0.1 * r) ** 2)) * inside
            glint[b] = np.maximum(glint[b], hl)
            # alpha > 0 exactly where rho < r, so the mask is the support of the blob
            alpha = np.clip((r - rho) / 2.0, 0.0, 1.0)[..., None]
            img[b] = crop * (1.0 - alpha) + poly * alpha

        g = glint[..., None] * 0.95
        img = img * (1.0 - g) + np.array([255.0, 250.0, 245.0], dtype=f32) * g
        img *= vignette
        # sensor noise from a per-frame generator: clips of different lengths share prefixes
        noise_rng = np.random.default_rng([int(seed), t, 1])
        img += noise_rng.standard_normal((h, w, 3), dtype=f32) * 2.0
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames, masks


class SyntheticClips(Dataset):
    """``length`` synthetic clips in the format of ``SUNSEGClips``.

    Item ``i`` is ``synthetic_clip(clip_len, H, W, num_polyps, seed=s_i)`` with ``s_i`` derived
    from (``seed``, ``i``), converted like real data: ``"frames"`` float32 (T, 3, H, W) RGB in
    [0, 1], ``"masks"`` float32 (T, 1, H, W) in {0, 1}, ``"case"`` "synthNNNNN", ``"names"`` the
    frame indices "000".."T-1". ``transform(frames, masks)`` as in ``SUNSEGClips``.
    """

    def __init__(
        self,
        length: int = 16,
        clip_len: int = 3,
        size: int | Sequence[int] = 352,
        num_polyps: int = 1,
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected an int >= 1, got {length!r}")
        if not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"clip_len: expected an int >= 1, got {clip_len!r}")
        hw = _as_size(size)
        if hw is None:
            raise ValueError("size: expected an int or (height, width), got None")
        self.length, self.clip_len, self.size = length, clip_len, hw
        self.num_polyps, self.seed, self.transform = num_polyps, seed, transform

    def clip_seed(self, index: int) -> int:
        """The seed of clip ``index``: well mixed, so neighbouring clips are unrelated."""
        return int(
            np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, index]).generate_state(1)[0]
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"clip index {index} out of range for {self.length} clips")
        index %= self.length
        frames, masks = synthetic_clip(
            self.clip_len, self.size[0], self.size[1], self.num_polyps, self.clip_seed(index)
        )
        x, y = resize_clip(frames, masks, None)
        if self.transform is not None:
            x, y = self.transform(x, y)
        return {
            "frames": x,
            "masks": y,
            "case": f"synth{index:05d}",
            "names": [f"{t:03d}" for t in range(self.clip_len)],
        }
