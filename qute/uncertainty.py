"""Uncertainty scores of a QUTE ensemble, from the probability vectors of its K heads.

This module is the reference that the C port on the microcontroller must
reproduce bit for bit on its float32 path, so every number here is computed in
IEEE-754 float32 with one fixed order of operations, written down below.  The C
code must do the same operations in the same order, in float32, without fused
multiply-add (compile with ``-ffp-contract=off``) and without reassociation
(no ``-ffast-math``).

Order of operations, for one sample with heads ``p[k][c]`` (k = 0..K-1,
c = 0..C-1), all values float32:

1. Inputs are rounded to float32 first (a no-op for float32 inputs), and a
   -0.0 input is read as +0.0 (``p + 0.0f`` does exactly that).
2. Mean over heads: ``s = p[0][c]``; then ``s = s + p[k][c]`` for
   k = 1..K-1 in that order; then ``mean[c] = s / (float)K`` (a true
   float32 division, not a multiplication by 1/K).
3. ``predicted`` = the lowest index c with the largest ``mean[c]``
   (scan c = 0..C-1, replace only on a strictly larger value).
4. ``confidence`` = largest ``mean[c]``; ``margin`` = largest minus
   second largest value of ``mean`` (one float32 subtraction; a tie for the
   top gives 0).
5. Entropy of a vector q (used for ``mean`` and for each head):
   ``h = 0``; for c = 0..C-1 in order: if ``q[c] >= 2**-126`` then
   ``h = h + q[c] * log32(q[c])`` (product rounded to float32, then the
   sum); finally ``H = 0 - h`` (not ``-h``, so that a zero entropy is +0).
   ``0 * log 0`` is taken to be 0, and so are the terms of subnormal
   ``q[c] < 2**-126`` (below 1e-35 anyway), which keeps the result the same
   on FPUs that flush subnormals to zero.  The logarithm is :func:`log32`, a
   fixed float32 algorithm spelled out below, NOT the C library's ``logf``
   or numpy's ``np.log`` (those differ between libraries and SIMD paths in
   the last bit).
6. Mean head entropy: ``e = H(p[0])``; ``e = e + H(p[k])`` for k = 1..K-1;
   then ``e = e / (float)K``.
7. ``mutual_information = max(H(mean) - e, 0)`` (one float32 subtraction,
   then negative results are replaced by +0).

With K = 1 step 2 returns the head unchanged, so the mutual information is
exactly 0.

``log32(x)`` for finite float32 ``x > 0`` (max error about 1 ulp), all float32:

a. Split ``x = m * 2**e`` with ``m`` in [1, 2) from the bit pattern (a
   subnormal ``x`` is first multiplied by ``2**23`` and ``e`` lowered by 23).
   If the bit pattern of ``m`` is ``>= 0x3fb504f3`` (about sqrt 2), then
   ``m = m * 0.5`` and ``e = e + 1``.  ``fe = (float)e``.
b. ``f = m - 1``; ``s = f / (2 + f)``; ``z = s * s``;
   ``R = z * (C3 + z * (C5 + z * (C7 + z * C9)))`` evaluated innermost first;
   ``hfsq = (0.5 * f) * f``.
c. ``log32 = fe * LN2_HI - ((hfsq - (s * (hfsq + R) + fe * LN2_LO)) - f)``,
   each operation rounded to float32 in the order the parentheses give.

The constants, as exact hexadecimal floats: ``LN2_HI = 0x1.62ep-1``,
``LN2_LO = 0x1.0bfbe8p-15``, ``C3 = 0x1.555556p-1`` (2/3),
``C5 = 0x1.99999ap-2`` (2/5), ``C7 = 0x1.24924ap-2`` (2/7),
``C9 = 0x1.c71c72p-3`` (2/9).  This is the identity
``log(1 + f) = 2 atanh(s) = 2s + s R`` with a truncated Taylor series.

The C port needs IEEE float32 with subnormals enabled (FPSCR.FZ = 0, the
Cortex-M reset default) for the sums and subtractions to match in every case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qute.errors import QuteError

SCORES = ("confidence", "margin", "entropy", "mutual_information")

_F32 = np.float32
_TINY = _F32(np.finfo(np.float32).tiny)  # 2**-126, the smallest normal float32

_LN2_HI = _F32(float.fromhex("0x1.62ep-1"))
_LN2_LO = _F32(float.fromhex("0x1.0bfbe8p-15"))
_C3 = _F32(float.fromhex("0x1.555556p-1"))
_C5 = _F32(float.fromhex("0x1.99999ap-2"))
_C7 = _F32(float.fromhex("0x1.24924ap-2"))
_C9 = _F32(float.fromhex("0x1.c71c72p-3"))
_SQRT2_BITS = np.uint32(0x3FB504F3)


def log32(x) -> np.ndarray:
    """Natural logarithm in float32 by the fixed recipe of the module docstring.

    ``x`` must be finite and > 0 (rounded to float32 first); the result is a
    float32 array of the same shape, within about 1 ulp of the true logarithm
    and identical on every IEEE-754 machine that follows the same steps.
    """
    x = np.array(x, dtype=_F32, copy=True)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise QuteError("log32 needs finite values > 0")
    shape = x.shape
    x = x.reshape(-1)
    sub = x < _TINY
    x[sub] = x[sub] * _F32(2.0**23)  # exact: brings subnormals into the normal range
    bits = x.view(np.uint32)
    e = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    e[sub] -= 23
    mbits = (bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)
    m = mbits.view(_F32).copy()
    big = mbits >= _SQRT2_BITS
    m[big] = m[big] * _F32(0.5)
    e[big] += 1
    fe = e.astype(_F32)
    one, two, half = _F32(1), _F32(2), _F32(0.5)
    f = m - one
    s = f / (two + f)
    z = s * s
    r = z * (_C3 + z * (_C5 + z * (_C7 + z * _C9)))
    hfsq = (half * f) * f
    out = fe * _LN2_HI - ((hfsq - (s * (hfsq + r) + fe * _LN2_LO)) - f)
    return out.astype(_F32, copy=False).reshape(shape)


@dataclass
class Scores:
    """Per-sample summary of the K head probability vectors (all float32 but ``predicted``)."""

    mean_probs: np.ndarray  # (N, C) mean over heads
    predicted: np.ndarray  # (N,) int64, argmax of mean_probs, ties -> lowest index
    confidence: np.ndarray  # (N,) max of mean_probs
    margin: np.ndarray  # (N,) top-1 minus top-2 of mean_probs
    entropy: np.ndarray  # (N,) predictive entropy H(mean) in nats
    mutual_information: np.ndarray  # (N,) H(mean) - mean_k H(head_k), clipped at >= 0


def _as_heads(head_probs) -> np.ndarray:
    """Return the input as a float32 (K, N, C) array, or raise QuteError."""
    try:
        arr = np.asarray(head_probs)
    except Exception as exc:  # ragged lists and the like
        raise QuteError(f"head probabilities must be a numeric array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise QuteError(
            f"head probabilities must be a numeric array, got dtype {arr.dtype}"
        )
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    elif arr.ndim != 3:
        raise QuteError(
            "head probabilities must have shape (K, N, C) or (N, C), "
            f"got an array with shape {arr.shape}"
        )
    k, _, c = arr.shape
    if k < 1:
        raise QuteError("head probabilities need at least one head (K >= 1), got K = 0")
    if c < 2:
        raise QuteError(f"head probabilities need at least 2 classes (C >= 2), got C = {c}")
    arr = arr.astype(_F32, copy=False) + _F32(0)  # new array; -0.0 becomes +0.0
    if not np.all(np.isfinite(arr)):
        raise QuteError("head probabilities must be finite (no NaN or inf)")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise QuteError(
            "head probabilities must lie in [0, 1], got values in "
            f"[{float(arr.min())}, {float(arr.max())}]"
        )
    return arr


def entropy(probs) -> np.ndarray:
    """Entropy in nats over the last axis of float32 ``probs``, in class index order.

    ``-sum_c p_c * log(p_c)`` with ``0 * log 0 = 0``; see the module docstring for
    the exact float32 order of operations.
    """
    p = np.asarray(probs, dtype=_F32)
    h = np.zeros(p.shape[:-1], dtype=_F32)
    for c in range(p.shape[-1]):
        q = p[..., c]
        used = q >= _TINY
        safe = np.where(used, q, _F32(1))  # log32(1) = 0; keeps log32 in its domain
        term = np.where(used, q * log32(safe), _F32(0)).astype(_F32, copy=False)
        h = (h + term).astype(_F32, copy=False)
    return (_F32(0) - h).astype(_F32, copy=False)  # 0 - h, so an entropy of 0 is +0


def _sequential_mean(stack: np.ndarray) -> np.ndarray:
    """Mean over axis 0: float32 sum k = 0..K-1 in order, then one division by K."""
    acc = stack[0].copy()
    for k in range(1, stack.shape[0]):
        acc = (acc + stack[k]).astype(_F32, copy=False)
    return (acc / _F32(stack.shape[0])).astype(_F32, copy=False)


def summarize(head_probs) -> Scores:
    """Compute the per-sample ensemble scores of ``head_probs``.

    ``head_probs`` has shape (K, N, C) (K heads) or (N, C) (one head, K = 1), with
    probabilities in [0, 1].  Everything is computed in float32 in the order the
    module docstring fixes.
    """
    heads = _as_heads(head_probs)
    mean = _sequential_mean(heads)
    predicted = np.argmax(mean, axis=1).astype(np.int64)  # first maximum wins
    ordered = np.sort(mean, axis=1)
    confidence = ordered[:, -1].copy()
    margin = (ordered[:, -1] - ordered[:, -2]).astype(_F32, copy=False)
    h_mean = entropy(mean)
    mean_head_entropy = _sequential_mean(entropy(heads))
    mi = (h_mean - mean_head_entropy).astype(_F32, copy=False)
    mi = np.where(mi > 0, mi, _F32(0)).astype(_F32, copy=False)
    return Scores(
        mean_probs=mean,
        predicted=predicted,
        confidence=confidence,
        margin=margin,
        entropy=h_mean,
        mutual_information=mi,
    )


def uncertainty_score(scores: Scores, name: str) -> np.ndarray:
    """One uncertainty score per sample, oriented so that higher means MORE uncertain.

    ``confidence`` -> -confidence, ``margin`` -> -margin, ``entropy`` -> entropy,
    ``mutual_information`` -> mutual information.  Float32; the negations are
    computed as ``0 - x`` (exact, and a zero margin gives +0 rather than -0).
    """
    if name == "confidence":
        return (_F32(0) - np.asarray(scores.confidence, dtype=_F32)).astype(_F32, copy=False)
    if name == "margin":
        return (_F32(0) - np.asarray(scores.margin, dtype=_F32)).astype(_F32, copy=False)
    if name == "entropy":
        return np.asarray(scores.entropy, dtype=_F32)
    if name == "mutual_information":
        return np.asarray(scores.mutual_information, dtype=_F32)
    raise QuteError(
        f"unknown uncertainty score {name!r}: choose one of {', '.join(SCORES)}"
    )
