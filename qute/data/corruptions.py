"""Corruptions in the spirit of MNIST-C / CIFAR-10-C, using only numpy and scipy.ndimage."""

from __future__ import annotations

from typing import Callable

import numpy as np

from qute.data.images import linear_matrix, minmax_per_image, resize_matrix, seed_seq, separable
from qute.errors import QuteError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


# --------------------------------------------------------------------------- #
# Corruptions
# --------------------------------------------------------------------------- #


def _size_factor(h: int, w: int) -> float:
    """Pixel-sized parameters are tuned for 28x28; scale them, never below half."""
    return max(min(h, w) / 28.0, 0.5)


def _border_mean(x: np.ndarray) -> np.ndarray:
    border = np.concatenate(
        [x[:, 0, :, :], x[:, -1, :, :], x[:, :, 0, :], x[:, :, -1, :]], axis=1
    )
    return border.mean(axis=1).astype(np.float32)  # (N, C)


def _warp(x: np.ndarray, src_fn: Callable[[slice], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Bilinear resampling at per-sample source coordinates; outside pixels take the border mean."""
    n, h, w, c = x.shape
    fill = _border_mean(x)
    out = np.empty_like(x)
    chunk = max(1, 1_500_000 // (h * w * c))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        # a one-pixel frame of the fill value: every coordinate outside the image lands on it
        padded = np.empty((sl.stop - sl.start, h + 2, w + 2, c), np.float32)
        padded[:] = fill[sl][:, None, None, :]
        padded[:, 1:-1, 1:-1] = x[sl]
        sy, sx = src_fn(sl)
        sy = np.clip(sy, -1.0, h) + 1.0
        sx = np.clip(sx, -1.0, w) + 1.0
        y0 = np.minimum(np.floor(sy).astype(np.int64), h)
        x0 = np.minimum(np.floor(sx).astype(np.int64), w)
        wy = (sy - y0).astype(np.float32)[..., None]
        wx = (sx - x0).astype(np.float32)[..., None]
        idx = np.arange(len(padded))[:, None, None]
        top = padded[idx, y0, x0] * (1 - wx) + padded[idx, y0, x0 + 1] * wx
        bottom = padded[idx, y0 + 1, x0] * (1 - wx) + padded[idx, y0 + 1, x0 + 1] * wx
        out[sl] = top * (1 - wy) + bottom * wy
    return out


def _affine(x: np.ndarray, mats: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Sample each output pixel p from ``mats[n] @ (p - centre) + centre + shifts[n]``."""
    n, h, w, _ = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy = (np.arange(h) - cy)[None, :, None]
    dx = (np.arange(w) - cx)[None, None, :]
    if shifts is None:
        shifts = np.zeros((n, 2))

    def src(sl):
        m, s = mats[sl], shifts[sl]
        sy = m[:, 0, 0, None, None] * dy + m[:, 0, 1, None, None] * dx + cy + s[:, 0, None, None]
        sx = m[:, 1, 0, None, None] * dy + m[:, 1, 1, None, None] * dx + cx + s[:, 1, None, None]
        return sy, sx

    return _warp(x, src)


def _signs(rng, n):
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _gaussian_noise(x, s, rng):
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)


def _shot_noise(x, s, rng):
    lam = (60.0, 25.0, 12.0, 5.0, 3.0)[s - 1]
    return (rng.poisson(np.clip(x, 0, 1) * lam) / lam).astype(np.float32)


def _impulse_noise(x, s, rng):
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    u = rng.random(x.shape, dtype=np.float32)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u > 1 - amount / 2] = 1.0
    return out


def _speckle_noise(x, s, rng):
    sigma = (0.15, 0.25, 0.35, 0.45, 0.6)[s - 1]
    return x + x * np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)


def _gaussian_blur(x, s, rng):
    from scipy import ndimage

    k = _size_factor(*x.shape[1:3])
    sigma = (0.8, 1.1, 1.4, 1.8, 2.4)[s - 1] * k
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")


def _motion_blur(x, s, rng):
    n, h, w, _ = x.shape
    k = _size_factor(h, w)
    length = (1.5, 2.5, 3.5, 5.0, 7.0)[s - 1] * k
    taps = np.linspace(-length / 2, length / 2, int(np.ceil(length)) + 1)
    n_angles = 8
    which = rng.integers(0, n_angles, n)
    out = np.empty_like(x)
    for a in range(n_angles):
        idx = np.nonzero(which == a)[0]
        if len(idx) == 0:
            continue
        theta = np.pi * a / n_angles
        sub = x[idx]
        acc = np.zeros_like(sub)
        for t in taps:
            my = linear_matrix(np.arange(h) - t * np.sin(theta), h)
            mx = linear_matrix(np.arange(w) - t * np.cos(theta), w)
            acc += separable(sub, my, mx)
        out[idx] = acc / len(taps)
    return out


def _rotate(x, s, rng):
    n = len(x)
    deg = (10.0, 20.0, 30.0, 40.0, 55.0)[s - 1] * _signs(rng, n) * rng.uniform(0.85, 1.15, n)
    t = np.deg2rad(deg)
    mats = np.stack([np.stack([np.cos(t), -np.sin(t)], 1), np.stack([np.sin(t), np.cos(t)], 1)], 1)
    return _affine(x, mats)


def _shear(x, s, rng):
    n = len(x)
    amount = (0.15, 0.25, 0.35, 0.5, 0.65)[s - 1] * _signs(rng, n) * rng.uniform(0.85, 1.15, n)
    horizontal = rng.random(n) < 0.5
    mats = np.tile(np.eye(2), (n, 1, 1))
    mats[horizontal, 1, 0] = amount[horizontal]
    mats[~horizontal, 0, 1] = amount[~horizontal]
    return _affine(x, mats)


def _scale(x, s, rng):
    n = len(x)
    factor = (0.88, 0.78, 0.68, 0.58, 0.48)[s - 1] * rng.uniform(0.95, 1.05, n)
    mats = np.eye(2)[None] / factor[:, None, None]
    return _affine(x, mats)


def _translate(x, s, rng):
    n, h, w, _ = x.shape
    frac = (0.07, 0.12, 0.18, 0.24, 0.32)[s - 1]
    phi = rng.uniform(0, 2 * np.pi, n)
    shifts = np.stack([np.sin(phi) * frac * h, np.cos(phi) * frac * w], 1)
    return _affine(x, np.tile(np.eye(2), (n, 1, 1)), shifts)


def _elastic(x, s, rng):
    from scipy import ndimage

    n, h, w, _ = x.shape
    k = _size_factor(h, w)
    alpha = (0.6, 1.0, 1.4, 1.9, 2.5)[s - 1] * k
    smooth = max(1.0, 0.12 * min(h, w))
    field = rng.standard_normal((n, h, w, 2), dtype=np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, smooth, smooth, 0), mode="reflect")
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
    field *= alpha
    gy = np.arange(h, dtype=np.float32)[None, :, None]
    gx = np.arange(w, dtype=np.float32)[None, None, :]
    return _warp(x, lambda sl: (gy + field[sl, :, :, 0], gx + field[sl, :, :, 1]))


def _brightness(x, s, rng):
    return x + np.float32((0.1, 0.2, 0.3, 0.4, 0.5)[s - 1])


def _contrast(x, s, rng):
    c = np.float32((0.6, 0.45, 0.3, 0.2, 0.1)[s - 1])
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * c + m


def _smooth_field(rng, n, h, w, grid=4):
    """Per-sample smooth random fields in [0, 1] from a coarse grid (Gaussian interpolation)."""

    def weights(size):
        centres = np.linspace(0, size - 1, grid)
        width = max((size - 1) / (grid - 1) * 0.6, 0.5)
        m = np.exp(-((np.arange(size)[:, None] - centres[None, :]) ** 2) / (2 * width**2))
        return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)

    g = rng.random((n, grid, grid), dtype=np.float32)
    f = weights(h) @ g @ weights(w).T
    return minmax_per_image(f[..., None])


def _fog(x, s, rng):
    n, h, w, _ = x.shape
    a = np.float32((0.25, 0.4, 0.55, 0.7, 0.9)[s - 1])
    return (x + a * _smooth_field(rng, n, h, w)) / (1 + a)


def _pixelate(x, s, rng):
    _, h, w, _ = x.shape
    r = (0.75, 0.6, 0.5, 0.4, 0.3)[s - 1]

    def matrix(size):
        small = max(1, int(round(size * r)))
        if small >= size:
            small = size - 1 if size > 1 else 1
        down = resize_matrix(size, small)
        up = np.zeros((size, small))
        up[np.arange(size), np.minimum(((np.arange(size) + 0.5) * small / size).astype(int), small - 1)] = 1
        return up @ down

    return separable(x, matrix(h), matrix(w))


def _stripe(x, s, rng):
    n, h, w, _ = x.shape
    count = (1, 2, 3, 4, 5)[s - 1]
    width = max(1, int(round(min(h, w) / 28.0)))
    vertical = rng.random(n) < 0.5
    length = np.where(vertical, w, h)
    pos = (rng.random((n, count)) * (length[:, None] - width + 1)).astype(np.int64)
    line = np.arange(max(h, w))[None, :, None]
    mask1d = ((line >= pos[:, None, :]) & (line < pos[:, None, :] + width)).any(axis=2)  # (n, max(h, w))
    mask = np.where(
        vertical[:, None, None],
        mask1d[:, None, :w],
        mask1d[:, :h, None],
    )
    out = x.copy()
    out[mask] = 1.0
    return out


def _draw(out: np.ndarray, pts: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Set the pixels under points ``pts`` (n, P, 2) (row, col) to 1."""
    n, h, w, _ = out.shape
    r = np.rint(pts[..., 0]).astype(np.int64)
    c = np.rint(pts[..., 1]).astype(np.int64)
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    if keep is not None:
        ok &= keep
    idx = np.broadcast_to(np.arange(n)[:, None], r.shape)
    out[idx[ok], r[ok], c[ok]] = 1.0
    return out


def _zigzag(x, s, rng):
    n, h, w, _ = x.shape
    lines = (1, 2, 2, 3, 4)[s - 1]
    vertices = (3, 4, 5, 6, 6)[s - 1]
    out = x.copy()
    p = (h + w) * (vertices - 1)
    t = np.linspace(0, vertices - 1, p)
    i0 = np.minimum(np.floor(t).astype(int), vertices - 2)
    frac = t - i0
    along = np.linspace(0.0, 1.0, vertices)[None, :]
    for _ in range(lines):
        across = rng.random((n, vertices))
        horizontal = (rng.random(n) < 0.5)[:, None]
        rows = np.where(horizontal, across, along) * (h - 1)
        cols = np.where(horizontal, along, across) * (w - 1)
        pr = rows[:, i0] * (1 - frac) + rows[:, i0 + 1] * frac
        pc = cols[:, i0] * (1 - frac) + cols[:, i0 + 1] * frac
        _draw(out, np.stack([pr, pc], -1))
    return out


def _dotted_line(x, s, rng):
    """Dotted straight lines through a random inner point, crossing the whole image."""
    n, h, w, _ = x.shape
    lines = (1, 2, 3, 4, 5)[s - 1]
    spacing = 2.0 * max(1.0, min(h, w) / 28.0)
    reach = np.hypot(h, w)
    dist = np.arange(-np.ceil(reach / spacing), np.ceil(reach / spacing) + 1) * spacing
    out = x.copy()
    for _ in range(lines):
        centre = (0.2 + 0.6 * rng.random((n, 2))) * [h - 1, w - 1]
        phi = rng.uniform(0, np.pi, n)
        unit = np.stack([np.sin(phi), np.cos(phi)], 1)
        pts = centre[:, None, :] + unit[:, None, :] * dist[None, :, None]
        _draw(out, pts)
    return out


def _occlusion(x, s, rng):
    n, h, w, _ = x.shape
    frac = (0.2, 0.3, 0.4, 0.5, 0.6)[s - 1]
    bh, bw = max(1, int(round(frac * h))), max(1, int(round(frac * w)))
    r0 = rng.integers(0, h - bh + 1, n)[:, None, None]
    c0 = rng.integers(0, w - bw + 1, n)[:, None, None]
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    mask = (rows >= r0) & (rows < r0 + bh) & (cols >= c0) & (cols < c0 + bw)
    fill = rng.random(n, dtype=np.float32)[:, None, None, None]
    return np.where(mask[..., None], fill, x)


def _inverse(x, s, rng):
    a = np.float32((0.2, 0.4, 0.6, 0.8, 1.0)[s - 1])
    return x + a * (1 - 2 * x)


_CORRUPTION_FNS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "rotate": _rotate,
    "shear": _shear,
    "scale": _scale,
    "translate": _translate,
    "elastic": _elastic,
    "brightness": _brightness,
    "contrast": _contrast,
    "fog": _fog,
    "pixelate": _pixelate,
    "stripe": _stripe,
    "zigzag": _zigzag,
    "dotted_line": _dotted_line,
    "occlusion": _occlusion,
    "inverse": _inverse,
}
CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTION_FNS)


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5, 5 strongest) to NHWC images in [0, 1].

    Returns a new float32 array of the same shape, clipped to [0, 1]; the
    result depends only on (x, name, severity, seed).
    """
    if name not in _CORRUPTION_FNS:
        raise QuteError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise QuteError(f"corruption severity must be one of {', '.join(map(str, SEVERITIES))}; got {severity!r}")
    arr = np.asarray(x)
    if arr.ndim != 4:
        raise QuteError(f"corrupt expects images of shape (N, H, W, C); got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise QuteError(f"corrupt expects float images in [0, 1]; got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float32, copy=True)
    if arr.size == 0:
        return arr
    rng = np.random.default_rng(seed_seq(seed, "corrupt", name))
    out = _CORRUPTION_FNS[name](arr, int(severity), rng)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
