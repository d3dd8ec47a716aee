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


# ==========================================================================================
# Integer-only path (cores without an FPU: Cortex-M0/M3)
# ==========================================================================================
#
# Bit-exact mirror of firmware/uncertainty/qute_uncertainty_int.c.  Everything is integer
# arithmetic (int64 numpy here, int32/int64/uint64 in C, no float anywhere), so there is no
# rounding-mode or FMA question: the C and this code agree bit for bit by construction,
# provided both follow the steps below in this order.
#
# Inputs: the K int8 (or int16) head outputs q[k][c] of one sample, their zero point ``zp`` and
# their scale as an unsigned Q24 multiplier ``s`` (scale = s / 2**24, 1 <= s <= 2**24).  A qute
# model's heads are int16 softmax outputs with scale 1/65536 and zero point -32768 (s = 256,
# w = q + 32768 in 0..65535); models quantized before that have int8 ones with scale 1/256 and
# zero point -128, i.e. s = 65536 (``INT_SCALE_Q24_DEFAULT``), zp = -128, which has a fast path
# in C (a 255-entry log table) that gives the same numbers as the general code.  Both cases are
# exact.
#
# I1. w[k][c] = clamp(q[k][c] - zp, 0, Wmax) with Wmax = 2**24 // s (so that a head value
#     never exceeds probability 1; for s = 65536, w = q + 128 in 0..255, no clamping).
#     The probability of a head value is w * s / 2**24.
# I2. sums[c] = sum_k w[k][c] (exact int32).  The mean probability is sums[c] * s / (K 2**24).
# I3. predicted = lowest c with the largest sums[c].  For s = 65536 this is always the float
#     path's argmax: the float32 means sums/256/K of different sums never round to the same
#     value (they differ by >= 1/(256 K), far above one float32 ulp), so the float path has no
#     rounding tie and both take the lowest index on a true tie.
# I4. S1 = largest sums[c], S2 = second largest (a tie for the top gives S2 = S1);
#     confidence_q16 = rdiv(S1 * s, K << 8), margin_q16 = rdiv((S1 - S2) * s, K << 8), where
#     rdiv(a, b) = (a + b/2) // b for a >= 0, b > 0 even (round half up).  Q16: 1.0 = 65536.
#     Exact roundings of the true mean probabilities (error <= 2**-17).
# I5. L(n) = ilog2_q20(n), log2 of an integer n >= 1 in Q20 (1.0 = 2**20): the integer part e
#     from normalising x = n * 2**(30-e) into [2**30, 2**31), then 21 fraction bits from
#     repeated squaring: x = (x * x) >> 30 (uint64 product, truncating), and if x >= 2**31 the
#     bit is 1 and x = x >> 1; r = (e << 21 | bits) and L(n) = (r + 1) >> 1 (round to
#     nearest).  |L(n) - log2(n) * 2**20| <= 0.51 (measured over n = 1..2**20 and random n).
# I6. A_h = (24 << 20) - L(s) (the Q20 log2 of the number of w-units per probability 1) and
#     A_m = A_h + L(K).
#     acc_m = sum_c [sums[c] > 0] sums[c] * (A_m - L(sums[c]))      (int64, c = 0..C-1)
#     acc_h = sum_k sum_c [w[k][c] > 0] w[k][c] * (A_h - L(w[k][c]))  (int64)
#     so that H(mean) = acc_m * s / (K 2**24) / 2**20 bits and mean_k H(head_k) =
#     acc_h * s / (K 2**24) / 2**20 bits (0 log 0 = 0).
# I7. entropy_bits_q20 = rdiv(max(acc_m, 0) * s, K << 24);
#     mi_bits_q20 = rdiv(max(acc_m - acc_h, 0) * s, K << 24)   (one difference of the exact
#     accumulators: no cancellation between two rounded entropies; K = 1 gives exactly 0).
# I8. nats: x_q20 = (x_bits_q20 * LN2_Q30 + 2**29) >> 30 with LN2_Q30 = 744261118
#     (= round(ln 2 * 2**30)); entropy_q20 and mutual_information_q20 are nats in Q20
#     (1.0 nat = 2**20).
#
# Range: 1 <= K, 2 <= C, K * C <= 8192 keeps every int64 product below 2**63 (and the C
# code's int32 sums are exact).  Precision (tests/test_uncertainty_int.py measures it against
# float64 on the exact probabilities w * s / 2**24): confidence and margin within 2**-17
# (exact rounding); entropy and mutual information within INT_NATS_MAX_ABS_ERROR * max(1, M)
# nats, where M = mean over heads of the head's total probability mass (about 1 for softmax
# outputs; up to C for arbitrary int8 vectors, since each log error is weighted by its p).
# Measured over ~30,000 random quantized-softmax samples (K 1..6, C 2..20): <= 1.4e-6 nats;
# over arbitrary int8 vectors and other scales: <= 1.2e-6 * max(1, M) nats.

INT_SCALE_Q24_DEFAULT = 65536  # 1/256 as an unsigned Q24 multiplier
INT_SCALE_Q24_S16 = 256  # 1/65536: int16 softmax heads (zero point -32768)
INT_ZERO_POINT_DEFAULT = -128
INT_FRAC_BITS = {"confidence": 16, "margin": 16, "entropy": 20, "mutual_information": 20}
INT_NATS_MAX_ABS_ERROR = 2e-6  # bound for entropy / MI, nats per unit of probability mass
_LN2_Q30 = 744261118
_LOG2_FRAC = 20
_MAX_KC = 8192


def ilog2_q20(n) -> np.ndarray:
    """log2 of integers n >= 1 (n < 2**31) in Q20, by the repeated-squaring recipe I5 (int64)."""
    n = np.asarray(n, dtype=np.int64)
    if np.any(n < 1) or np.any(n >= 2**31):
        raise QuteError("ilog2_q20 needs integers in [1, 2**31)")
    x = n.astype(np.uint64)
    e = np.full(n.shape, 30, dtype=np.int64)
    for sh in (16, 8, 4, 2, 1):  # normalise into [2**30, 2**31), as the C does
        low = x < np.uint64(1 << (31 - sh))
        x = np.where(low, x << np.uint64(sh), x)
        e = np.where(low, e - sh, e)
    r = e << (_LOG2_FRAC + 1)
    for i in range(_LOG2_FRAC + 1):  # one guard bit, then round to nearest
        x = (x * x) >> np.uint64(30)
        hi = x >= np.uint64(1 << 31)
        x = np.where(hi, x >> np.uint64(1), x)
        r = np.where(hi, r | (1 << (_LOG2_FRAC - i)), r)
    return ((r + 1) >> 1).astype(np.int64)


@dataclass
class IntScores:
    """Per-sample scores of the integer path (all integers; see the I-steps above).

    ``score(name)`` gives a score of ``SCORES`` as float64 real value (confidence, margin in
    probability units, entropy and MI in nats); ``raw(name)`` the integer itself.
    """

    sums: np.ndarray  # (N, C) int64, sum over heads of q - zp (clamped), exact
    predicted: np.ndarray  # (N,) int64, argmax of sums, ties -> lowest index
    confidence_q16: np.ndarray  # (N,) int64, Q16
    margin_q16: np.ndarray  # (N,) int64, Q16
    entropy_q20: np.ndarray  # (N,) int64, nats in Q20
    mutual_information_q20: np.ndarray  # (N,) int64, nats in Q20

    def raw(self, name: str) -> np.ndarray:
        if name not in INT_FRAC_BITS:
            raise QuteError(
                f"unknown uncertainty score {name!r}: choose one of {', '.join(SCORES)}"
            )
        return getattr(self, f"{name}_q{INT_FRAC_BITS[name]}")

    def score(self, name: str) -> np.ndarray:
        return self.raw(name).astype(np.float64) / float(1 << INT_FRAC_BITS[name])

    @property
    def confidence(self) -> np.ndarray:
        return self.score("confidence")

    @property
    def margin(self) -> np.ndarray:
        return self.score("margin")

    @property
    def entropy(self) -> np.ndarray:
        return self.score("entropy")

    @property
    def mutual_information(self) -> np.ndarray:
        return self.score("mutual_information")


def uncertainty_score_int(scores: IntScores, name: str) -> np.ndarray:
    """Integer uncertainty score (int64), higher = MORE uncertain, as :func:`uncertainty_score`.

    ``confidence`` -> -confidence_q16, ``margin`` -> -margin_q16, ``entropy`` ->
    entropy_q20, ``mutual_information`` -> mutual_information_q20; a threshold on it is an
    integer in the same Q-format (``INT_FRAC_BITS``).
    """
    raw = scores.raw(name).astype(np.int64)
    return -raw if name in ("confidence", "margin") else raw.copy()


def _rdiv(a: np.ndarray, b) -> np.ndarray:
    """Round-half-up a / b for int64 a >= 0 and even b > 0."""
    return (a + np.int64(b // 2)) // np.int64(b)


def _to_nats_q20(bits_q20: np.ndarray) -> np.ndarray:
    return (bits_q20 * np.int64(_LN2_Q30) + np.int64(1 << 29)) >> np.int64(30)


def int_head_quant(scales_zero_points) -> dict:
    """The integer-only path's head quantization from each head's (scale, zero point).

    The heads' scale as an unsigned Q24 multiplier (exact for a qute model's 1/256: 65536; other
    scales are rounded to the nearest Q24 value, on the device and in qute.uncertainty.summarize_int
    alike) and their zero point; every head must share them (the C takes one of each). Also what
    qute calibrate scores the validation split with, so its integer thresholds are the device's.
    """
    quant = {(float(np.float32(scale)), int(zp)) for scale, zp in scales_zero_points}
    if len(quant) != 1:
        raise QuteError(f"the integer-only uncertainty path needs every head with the same "
                        f"int8 scale and zero point; this model's heads have {sorted(quant)}")
    scale, zp = quant.pop()
    q24 = int(round(scale * (1 << 24)))
    if not 1 <= q24 <= 1 << 24:
        raise QuteError(f"the integer-only uncertainty path needs a head scale in "
                        f"[2^-24, 1]; this model's is {scale}")
    return {"kind": "int", "scale_q24": q24, "zero_point": zp, "exact_scale": q24 == scale * (1 << 24)}


def summarize_int(
    head_q, scale_q24: int = INT_SCALE_Q24_DEFAULT, zero_point: int = INT_ZERO_POINT_DEFAULT
) -> IntScores:
    """Integer-only ensemble scores of int8 or int16 head outputs ``head_q`` (K, N, C) or (N, C).

    Bit-exact mirror of ``qute_ensemble_scores_int`` and ``qute_ensemble_scores_int16`` (steps
    I1..I8 above).
    """
    arr = np.asarray(head_q)
    if arr.dtype not in (np.int8, np.int16):
        raise QuteError(f"head outputs must be int8 or int16, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise QuteError(f"head outputs must have shape (K, N, C) or (N, C), got {arr.shape}")
    k, _, c = arr.shape
    if k < 1 or c < 2 or k * c > _MAX_KC:
        raise QuteError(f"need K >= 1, C >= 2 and K * C <= {_MAX_KC}, got K = {k}, C = {c}")
    s = int(scale_q24)
    if not 1 <= s <= 1 << 24:
        raise QuteError(f"scale_q24 must lie in [1, 2**24], got {scale_q24}")
    info = np.iinfo(arr.dtype)
    if not info.min <= int(zero_point) <= info.max:
        raise QuteError(f"zero point must be an {arr.dtype} value, got {zero_point}")
    wmax = (1 << 24) // s
    w = np.clip(arr.astype(np.int64) - int(zero_point), 0, wmax)  # I1
    sums = w.sum(axis=0)  # I2, exact
    predicted = np.argmax(sums, axis=1).astype(np.int64)  # I3: first maximum
    ordered = np.sort(sums, axis=1)
    s1, s2 = ordered[:, -1], ordered[:, -2]  # I4
    conf = _rdiv(s1 * s, k << 8)
    margin = _rdiv((s1 - s2) * s, k << 8)
    l_s = int(ilog2_q20(s))  # I6
    a_h = (24 << _LOG2_FRAC) - l_s
    a_m = a_h + int(ilog2_q20(k))

    def _acc(v: np.ndarray, a: int) -> np.ndarray:
        lg = ilog2_q20(np.maximum(v, 1))
        return np.where(v > 0, v * (np.int64(a) - lg), 0).sum(axis=-1)

    acc_m = _acc(sums, a_m)
    acc_h = _acc(w, a_h).sum(axis=0)
    den = k << 24  # I7
    h_bits = _rdiv(np.maximum(acc_m, 0) * s, den)
    mi_bits = _rdiv(np.maximum(acc_m - acc_h, 0) * s, den)
    return IntScores(  # I8
        sums=sums.astype(np.int64),
        predicted=predicted,
        confidence_q16=conf.astype(np.int64),
        margin_q16=margin.astype(np.int64),
        entropy_q20=_to_nats_q20(h_bits),
        mutual_information_q20=_to_nats_q20(mi_bits),
    )
