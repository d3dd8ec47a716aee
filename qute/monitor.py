"""The accuracy-drop monitor of the firmware, simulated on the host with the same arithmetic.

The device (``firmware/uncertainty/qute_monitor.c``) keeps the last ``window`` ensemble
confidences in a ring buffer as Q16 integers and their exact integer sum, so one update is O(1)
and no rounding accumulates over a long stream. Per sample, all steps exact or float32:

1. ``q = floor(confidence * 2**16)`` for a float32 confidence in (0, 1); 0 for confidence <= 0
   (or NaN), 2**16 for confidence >= 1. The product by 2**16 is exact in float32, so is the
   truncation.
2. ``sum = sum - ring[next] + q`` in uint32 (exact: window <= 65535).
3. Once ``window`` confidences have been seen: ``mean = (f32(sum) / f32(window)) * 2**-16``
   (float32 conversions and division, round to nearest even; the scaling is exact), and the
   alarm is ``mean < rho`` (float32 comparison). Before that there is no mean and no alarm.

:func:`simulate` reproduces this bit for bit, so the index of the device's first alarm is the
host's.
"""

from __future__ import annotations

import numpy as np

from qute.errors import QuteError

MAX_WINDOW = 65535
Q16 = 65536


def q16(confidences) -> np.ndarray:
    """Step 1 for a vector of confidences (rounded to float32 first): uint32 Q16 values."""
    c = np.asarray(confidences, dtype=np.float32).reshape(-1)
    out = np.zeros(c.shape, dtype=np.uint32)
    with np.errstate(invalid="ignore"):
        inside = (c > 0) & (c < 1)
        out[c >= 1] = Q16
    out[inside] = np.floor(c[inside] * np.float32(Q16)).astype(np.uint32)
    return out


def check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise QuteError(f"window must be an integer, got {window!r}")
    if not 1 <= int(window) <= MAX_WINDOW:
        raise QuteError(f"window must be in 1..{MAX_WINDOW}, got {window}")
    return int(window)


def simulate(confidences, window: int, rho) -> tuple[np.ndarray, np.ndarray]:
    """(window means, alarms) per sample of the stream, as the firmware computes them.

    ``window_means`` is float32 with NaN where the window is not yet full (the first
    ``window - 1`` samples); ``alarms`` is bool, False there.
    """
    window = check_window(window)
    rho = np.float32(rho)
    q = q16(confidences).astype(np.int64)
    n = q.shape[0]
    means = np.full(n, np.nan, dtype=np.float32)
    if n >= window:
        sums = np.convolve(q, np.ones(window, dtype=np.int64), mode="valid")  # exact integer sums
        assert sums.max(initial=0) < 2**32
        means[window - 1:] = (sums.astype(np.uint32).astype(np.float32) / np.float32(window)) * np.float32(1.0 / Q16)
    with np.errstate(invalid="ignore"):
        alarms = means < rho  # NaN compares False
    return means, alarms


def first_alarm(alarms) -> int | None:
    idx = np.flatnonzero(np.asarray(alarms, dtype=bool))
    return int(idx[0]) if idx.size else None
