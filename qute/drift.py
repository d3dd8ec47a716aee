"""The accuracy-drop monitor of the firmware, simulated on the host with the same arithmetic
(pure numpy: qute calibrate chooses rho with it, qute run and qute monitor check the device against it).

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

Cores with no FPU (integer-only builds) run the monitor's integer variant, mirrored by
:func:`simulate_int`: the Q16 confidence is the integer path's own ``confidence_q16``
(:func:`qute.uncertainty.summarize_int`; values above 2**16 clamped to 2**16), step 2 is the
same, and the alarm is ``sum < rho_sum`` on the exact uint32 sum, once the window is full: no
division, no float, nothing rounded.
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
    sums = window_sums(q16(confidences), window)
    means = np.full(sums.shape[0], np.nan, dtype=np.float32)
    full = sums >= 0
    means[full] = (sums[full].astype(np.uint32).astype(np.float32) / np.float32(window)) * np.float32(1.0 / Q16)
    with np.errstate(invalid="ignore"):
        alarms = means < rho  # NaN compares False
    return means, alarms


def window_sums(q, window: int) -> np.ndarray:
    """Step 2 for a whole stream of Q16 values: per sample, the exact sum of the last `window`
    values (int64), -1 where the window is not yet full."""
    q = np.asarray(q, dtype=np.int64).reshape(-1)
    out = np.full(q.shape[0], -1, dtype=np.int64)
    if q.shape[0] >= window:
        out[window - 1:] = np.convolve(q, np.ones(window, dtype=np.int64), mode="valid")
    assert out.max(initial=0) < 2**32  # the device's uint32 sum is exact
    return out


def q16_int(confidence_q16) -> np.ndarray:
    """The integer variant's step 1: uint32 Q16 confidences, clamped to 2**16."""
    c = np.asarray(confidence_q16).reshape(-1)
    if c.size and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= 2**32):
        raise QuteError("Q16 confidences must be integers in [0, 2**32)")
    return np.minimum(c.astype(np.int64), Q16)


def simulate_int(confidence_q16, window: int, rho_sum) -> tuple[np.ndarray, np.ndarray]:
    """(window sums, alarms) per sample of the stream, as the integer-only firmware computes them.

    ``window_sums`` is int64 with -1 where the window is not yet full (the first ``window - 1``
    samples), else the exact sum of the last ``window`` Q16 confidences; ``alarms`` is
    ``sum < rho_sum`` there, False before.
    """
    window = check_window(window)
    rho_sum = check_rho_sum(rho_sum)
    sums = window_sums(q16_int(confidence_q16), window)
    return sums, (sums >= 0) & (sums < rho_sum)


def check_rho_sum(rho_sum) -> int:
    if isinstance(rho_sum, bool) or not isinstance(rho_sum, (int, np.integer)) or not 0 <= int(rho_sum) < 2**32:
        raise QuteError(f"rho_sum must be an integer in [0, 2**32), got {rho_sum!r}")
    return int(rho_sum)


def first_alarm(alarms) -> int | None:
    idx = np.flatnonzero(np.asarray(alarms, dtype=bool))
    return int(idx[0]) if idx.size else None
