"""Seeds and linear resampling helpers, used by the corruptions and the OOD sets."""

from __future__ import annotations

import zlib

import numpy as np

from qute.errors import QuteError


# --------------------------------------------------------------------------- #
# Seeds and linear resampling helpers
# --------------------------------------------------------------------------- #


def seed_seq(seed, *tags: str) -> np.random.SeedSequence:
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise QuteError(f"seed must be an integer; got {seed!r}") from None
    return np.random.SeedSequence([s % (1 << 64)] + [zlib.crc32(t.encode()) for t in tags])


def linear_matrix(src: np.ndarray, n: int) -> np.ndarray:
    """Rows interpolate linearly at source coordinates ``src`` (clamped to the edges)."""
    s = np.clip(np.asarray(src, np.float64), 0, n - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = s - i0
    m = np.zeros((len(s), n))
    rows = np.arange(len(s))
    np.add.at(m, (rows, i0), 1 - w)
    np.add.at(m, (rows, i1), w)
    return m


def resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """Area averaging when shrinking, linear interpolation when enlarging."""
    if n_dst == n_src:
        return np.eye(n_src)
    if n_dst < n_src:
        edges = np.arange(n_dst + 1) * (n_src / n_dst)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n_src)[None, :]
        m = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
        return m / m.sum(axis=1, keepdims=True)
    return linear_matrix((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5, n_src)


def separable(x: np.ndarray, my: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """out[n, i, j, c] = sum_{a,b} my[i, a] x[n, a, b, c] mx[j, b]."""
    t = np.moveaxis(x, 3, 1)  # N, C, H, W
    t = np.matmul(np.matmul(my.astype(np.float32), t), mx.T.astype(np.float32))
    return np.ascontiguousarray(np.moveaxis(t, 1, 3), dtype=np.float32)


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    if x.shape[1:3] == (h, w):
        return x
    return separable(x, resize_matrix(x.shape[1], h), resize_matrix(x.shape[2], w))


def minmax_per_image(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((x - lo) / span).astype(np.float32)


def to_shape(x01: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Images in [0, 1] to (H, W, C): channel conversion, resize, per-image renormalisation."""
    h, w, c = shape
    x = np.asarray(x01, np.float32)
    cin = x.shape[3]
    if cin != c:
        if cin == 3:
            x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        elif cin != 1:
            x = x.mean(axis=3, keepdims=True)
    if x.shape[1:3] != (h, w):
        x = minmax_per_image(_resize(x, h, w))
    if x.shape[3] != c:
        x = np.repeat(x, c, axis=3)
    return np.clip(x, 0.0, 1.0).astype(np.float32)
