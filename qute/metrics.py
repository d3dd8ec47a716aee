"""Evaluation metrics: accuracy and calibration, failure and OOD detection, and the
QUTE paper's accuracy-drop detection on a sliding window of a data stream.

F1, AUROC and average precision are scikit-learn's; what no library has (ECE with its stated
binning, the accuracy-drop protocol, its detection delay) is numpy here. Labels are integer arrays of shape (N,), probabilities float arrays
of shape (N, C).  The predicted class is the argmax of the probabilities with ties
going to the lowest index, as in :mod:`qute.uncertainty`.  Metrics are computed in
float64 and returned as Python floats.  Bad input raises
:class:`qute.errors.QuteError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from qute.errors import QuteError
from qute.uncertainty import summarize

__all__ = [
    "DropResult",
    "accuracy",
    "accuracy_drop",
    "alarm_timeline",
    "auroc",
    "average_precision",
    "brier",
    "choose_rho",
    "detection_delay",
    "ece",
    "evaluate",
    "f1",
    "failure_auroc",
    "nll",
    "ood_auroc",
    "sliding_mean",
]


# --------------------------------------------------------------------------- checks


def _numeric(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:
        raise QuteError(f"{name} must be a numeric array: {exc}") from exc
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise QuteError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def _vector(values, name: str, *, min_len: int = 1) -> np.ndarray:
    """A finite float64 vector of at least ``min_len`` entries."""
    arr = _numeric(values, name)
    if arr.ndim != 1:
        raise QuteError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] < min_len:
        raise QuteError(f"{name} needs at least {min_len} value(s), got {arr.shape[0]}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise QuteError(f"{name} must be finite (no NaN or inf)")
    return arr


def _binary(values, name: str, *, min_len: int = 1) -> np.ndarray:
    """A 0/1 (or boolean) vector, returned as bool."""
    arr = _vector(values, name, min_len=min_len)
    if not np.all((arr == 0) | (arr == 1)):
        raise QuteError(f"{name} must hold only 0/1 (or False/True) values")
    return arr == 1


def _probs(probs, name: str = "probs") -> np.ndarray:
    arr = _numeric(probs, name)
    if arr.ndim != 2:
        raise QuteError(f"{name} must be 2-D (N samples, C classes), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise QuteError(f"{name} needs at least one sample and one class, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise QuteError(f"{name} must be finite (no NaN or inf)")
    return arr


def _labels_probs(y, probs) -> tuple[np.ndarray, np.ndarray]:
    p = _probs(probs)
    arr = _numeric(y, "labels y")
    if arr.ndim != 1:
        raise QuteError(f"labels y must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != p.shape[0]:
        raise QuteError(
            f"labels y and probs must have the same length, got {arr.shape[0]} and {p.shape[0]}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise QuteError("labels y must be integers")
    labels = arr.astype(np.int64)
    n_classes = p.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise QuteError(
            f"labels y must lie in [0, {n_classes - 1}] for {n_classes} classes, "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return labels, p


def _window(window, n: int, what: str) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise QuteError(f"window must be an integer, got {window!r}")
    window = int(window)
    if window < 1:
        raise QuteError(f"window must be >= 1, got {window}")
    if window > n:
        raise QuteError(f"window ({window}) must not exceed the length of {what} ({n})")
    return window


# ------------------------------------------------------------------ classification


def accuracy(y, probs) -> float:
    """Fraction of samples whose argmax class equals the label."""
    labels, p = _labels_probs(y, probs)
    return float(np.mean(np.argmax(p, axis=1) == labels))


def f1(y, probs) -> float:
    """Support-weighted mean over classes of the per-class F1 (sklearn's average="weighted"):
    classes absent from ``y`` weigh 0, an undefined F1 counts 0."""
    labels, p = _labels_probs(y, probs)
    return float(skm.f1_score(labels, np.argmax(p, axis=1), average="weighted", zero_division=0))


def nll(y, probs, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood -log p_y in nats, p_y clipped to [eps, 1]."""
    labels, p = _labels_probs(y, probs)
    if not (eps > 0):
        raise QuteError(f"eps must be > 0, got {eps}")
    p_true = np.clip(p[np.arange(p.shape[0]), labels], eps, 1.0)
    return float(np.mean(-np.log(p_true)))


def brier(y, probs) -> float:
    """Multi-class Brier score divided by the class count (as in the QUTE paper).

    mean over samples of sum_c (p_c - onehot_c)^2, then / C.
    """
    labels, p = _labels_probs(y, probs)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), labels] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)) / p.shape[1])


def ece(y, probs, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    Confidence is the largest probability.  Bin i (0-based) covers (i/n, (i+1)/n];
    a confidence of exactly 0 goes in bin 0 and one above 1 in the last bin.  The
    edges are the correctly rounded doubles i/n.  ECE = sum over bins of
    (bin count / N) * |bin accuracy - bin mean confidence|.
    """
    labels, p = _labels_probs(y, probs)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise QuteError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    n_bins = int(n_bins)
    conf = np.max(p, axis=1)
    correct = (np.argmax(p, axis=1) == labels).astype(np.float64)
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    # first edge >= conf is the bin's upper edge: an edge value belongs to the bin below it
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    used = count > 0
    gap = np.abs(acc_sum[used] - conf_sum[used]) / count[used]
    return float(np.sum(count[used] / conf.shape[0] * gap))


# ------------------------------------------------------------------ ranking metrics


def _labels_and_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    pos = _binary(labels, "labels")
    s = _vector(scores, "scores")
    if s.shape[0] != pos.shape[0]:
        raise QuteError(
            f"labels and scores must have the same length, got {pos.shape[0]} and {s.shape[0]}"
        )
    return pos, s


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for detecting ``labels == 1`` (ties count one half);
    nan when only one class is present."""
    pos, s = _labels_and_scores(labels, scores)
    if pos.all() or not pos.any():
        return math.nan
    return float(skm.roc_auc_score(pos, s))


def average_precision(labels, scores) -> float:
    """Average precision of ``scores`` for detecting ``labels == 1``: sum_n (R_n - R_{n-1}) P_n
    over the distinct scores from the highest down, no interpolation; nan when there are no
    positives (where sklearn warns and returns 0)."""
    pos, s = _labels_and_scores(labels, scores)
    if not pos.any():
        return math.nan
    return float(skm.average_precision_score(pos, s))


def failure_auroc(y, probs, uncertainty=None) -> float:
    """AUROC of flagging misclassified samples (the positives) by an uncertainty score.

    ``uncertainty`` (N,) is higher for more uncertain samples; by default the
    negated confidence (largest probability).  nan when all predictions are right
    or all are wrong.
    """
    labels, p = _labels_probs(y, probs)
    wrong = np.argmax(p, axis=1) != labels
    if uncertainty is None:
        u = -np.max(p, axis=1)
    else:
        u = _vector(uncertainty, "uncertainty")
        if u.shape[0] != labels.shape[0]:
            raise QuteError(
                f"uncertainty and labels must have the same length, "
                f"got {u.shape[0]} and {labels.shape[0]}"
            )
    return auroc(wrong, u)


def ood_auroc(u_id, u_ood) -> float:
    """AUROC of separating OOD samples (positives) from ID ones by an uncertainty score
    (higher = more uncertain)."""
    a = _vector(u_id, "in-distribution uncertainty u_id")
    b = _vector(u_ood, "out-of-distribution uncertainty u_ood")
    labels = np.concatenate((np.zeros(a.shape[0]), np.ones(b.shape[0])))
    return auroc(labels, np.concatenate((a, b)))


# --------------------------------------------------------- accuracy-drop detection


@dataclass
class DropResult:
    """Accuracy-drop detection on an ID stream followed by a shifted one."""

    auprc: float  # average precision of -window confidence for the positive windows
    mu: float  # mean sliding-window accuracy on the ID-only stream
    sigma: float  # its (population, ddof=0) standard deviation
    n_windows: int  # windows of the evaluated (ID + shifted) stream
    n_positive: int  # windows whose accuracy is <= mu - k_sigma * sigma
    window_accuracy: np.ndarray  # (n_windows,) per window of the evaluated stream
    window_confidence: np.ndarray  # (n_windows,) mean confidence per window
    positive: np.ndarray  # (n_windows,) bool, a true accuracy drop


def sliding_mean(values, window) -> np.ndarray:
    """Mean of every full window of ``values`` at stride 1: N - window + 1 values.

    Computed from float64 cumulative sums: (S[i + w] - S[i]) / w with S[0] = 0.
    """
    v = _vector(values, "values")
    w = _window(window, v.shape[0], "values")
    csum = np.concatenate(([0.0], np.cumsum(v)))
    return (csum[w:] - csum[:-w]) / w


def alarm_timeline(conf_stream, window, rho) -> np.ndarray:
    """Alarm per full window: the window's mean confidence is strictly below ``rho``."""
    rho = float(rho)
    if math.isnan(rho):
        raise QuteError("rho must be a number, got nan")
    return sliding_mean(conf_stream, window) < rho


def choose_rho(conf_id, window, false_alarm: float = 0.0) -> float:
    """The largest threshold rho that alarms on at most ``false_alarm`` of the windows
    of the ID-only confidence stream ``conf_id`` (alarm: window mean < rho).

    With W windows this allows a = floor(false_alarm * W) alarms (a 1e-9 slack
    absorbs the rounding of the product) and returns the (a+1)-th smallest window
    mean, so false_alarm = 0 gives the smallest window mean and no alarm on
    ``conf_id``.  With a >= W (false_alarm = 1) every window may alarm: +inf.
    """
    false_alarm = float(false_alarm)
    if not (0.0 <= false_alarm <= 1.0):
        raise QuteError(f"false_alarm must lie in [0, 1], got {false_alarm}")
    means = np.sort(sliding_mean(conf_id, window))
    allowed = int(math.floor(false_alarm * means.shape[0] + 1e-9))
    if allowed >= means.shape[0]:
        return math.inf
    return float(means[allowed])


def accuracy_drop(
    correct_id, conf_id, correct_shift, conf_shift, window: int = 100, k_sigma: float = 3.0
) -> DropResult:
    """The QUTE paper's accuracy-drop detection on a stream.

    ``correct_*`` are per-sample 0/1 (or bool) correctness, ``conf_*`` per-sample
    confidences.  mu and sigma (ddof=0) are the mean and standard deviation of the
    sliding-window accuracy of the ID stream alone.  The evaluated stream is the ID
    stream followed by the shifted one; each of its full windows is positive (a
    true accuracy drop) when its accuracy is <= mu - k_sigma * sigma, and an alarm
    at threshold rho fires when its mean confidence is < rho.  Sweeping rho gives a
    precision-recall curve whose average precision is ``auprc`` (nan when no window
    is positive).
    """
    c_id = _binary(correct_id, "correct_id").astype(np.float64)
    f_id = _vector(conf_id, "conf_id")
    c_sh = _binary(correct_shift, "correct_shift", min_len=0).astype(np.float64)
    f_sh = _vector(conf_shift, "conf_shift", min_len=0)
    if c_id.shape[0] != f_id.shape[0]:
        raise QuteError(
            f"correct_id and conf_id must have the same length, got {c_id.shape[0]} and {f_id.shape[0]}"
        )
    if c_sh.shape[0] != f_sh.shape[0]:
        raise QuteError(
            f"correct_shift and conf_shift must have the same length, "
            f"got {c_sh.shape[0]} and {f_sh.shape[0]}"
        )
    k_sigma = float(k_sigma)
    if not math.isfinite(k_sigma):
        raise QuteError(f"k_sigma must be finite, got {k_sigma}")
    window = _window(window, c_id.shape[0], "the ID stream")
    id_acc = sliding_mean(c_id, window)
    mu = float(np.mean(id_acc))
    sigma = float(np.std(id_acc))
    acc = sliding_mean(np.concatenate((c_id, c_sh)), window)
    conf = sliding_mean(np.concatenate((f_id, f_sh)), window)
    positive = acc <= mu - k_sigma * sigma
    n_positive = int(positive.sum())
    auprc = average_precision(positive, -conf) if n_positive else math.nan
    return DropResult(
        auprc=auprc,
        mu=mu,
        sigma=sigma,
        n_windows=int(acc.shape[0]),
        n_positive=n_positive,
        window_accuracy=acc,
        window_confidence=conf,
        positive=positive,
    )


def detection_delay(conf_id, conf_shift, window: int = 100, false_alarm: float = 0.0) -> float:
    """Shifted samples seen when the first alarm fires, rho set on the ID stream alone.

    rho is :func:`choose_rho` of ``conf_id`` (``false_alarm = 0``: no alarm on any window of the
    ID stream). The monitor then watches ``conf_id`` followed by ``conf_shift``; the delay is the
    count of shifted samples in the first alarming window that holds any (1 at best), or inf when
    no window alarms.
    """
    f_id = _vector(conf_id, "conf_id")
    f_sh = _vector(conf_shift, "conf_shift")
    window = _window(window, f_id.shape[0], "the ID stream")
    rho = choose_rho(f_id, window, false_alarm)
    # windows starting after n_id - window hold shifted samples; window i holds i + window - n_id
    first = f_id.shape[0] - window + 1
    alarms = np.flatnonzero(alarm_timeline(np.concatenate((f_id, f_sh)), window, rho)[first:])
    return float(alarms[0] + 1) if alarms.size else math.inf


# ------------------------------------------------------------------------- summary


def evaluate(y, head_probs) -> dict:
    """accuracy, f1, nll, brier, ece and failure_auroc of the mean of the heads.

    ``head_probs`` is (K, N, C) or (N, C); the mean is the float32 one of
    :func:`qute.uncertainty.summarize`.
    """
    probs = summarize(head_probs).mean_probs.astype(np.float64)
    return {
        "accuracy": accuracy(y, probs),
        "f1": f1(y, probs),
        "nll": nll(y, probs),
        "brier": brier(y, probs),
        "ece": ece(y, probs),
        "failure_auroc": failure_auroc(y, probs),
    }
