import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qute.errors import QuteError
from qute.uncertainty import SCORES, Scores, entropy, log32, summarize, uncertainty_score

F32 = np.float32
LOG2 = math.log(2.0)


def _ulps(a, b):
    """Distance in float32 ulps between float32 ``a`` and the float64 reference ``b``."""
    return np.abs(a.astype(np.float64) - b) / np.spacing(np.abs(b).astype(F32)).astype(np.float64)


# ------------------------------------------------------------------------ log32


def test_log32_exact_points():
    assert log32(F32(1.0)) == 0.0
    assert log32(F32(2.0)).dtype == F32
    # powers of two are e * ln2 with the hi/lo split: within half an ulp
    x = np.array([2.0**-20, 0.25, 0.5, 2.0, 1024.0], dtype=F32)
    assert np.all(_ulps(log32(x), np.log(x.astype(np.float64))) <= 0.5)


def test_log32_is_accurate_over_probabilities():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.random(20000).astype(F32),
            (10.0 ** rng.uniform(-45, 0, 20000)).astype(F32),  # down into the subnormals
            np.array([np.finfo(F32).smallest_subnormal, np.finfo(F32).tiny, 1.0], dtype=F32),
            np.nextafter(F32(1.0), F32(0.0), dtype=F32)[None],
            np.array([0x3FB504F3, 0x3FB504F2, 0x3F3504F3], dtype=np.uint32).view(F32),
        ]
    )
    x = x[x > 0]
    assert np.max(_ulps(log32(x), np.log(x.astype(np.float64)))) < 1.0


def test_log32_keeps_shape_and_rejects_bad_input():
    assert log32(np.ones((2, 3), dtype=F32)).shape == (2, 3)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(QuteError):
            log32(np.array([0.5, bad]))


# --------------------------------------------------------------- hand values


def test_two_heads_disagreeing_fully_have_mi_log2():
    heads = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=F32)
    s = summarize(heads)
    np.testing.assert_array_equal(s.mean_probs, [[0.5, 0.5]])
    assert s.predicted.tolist() == [0]  # tie -> lowest index
    assert s.confidence[0] == F32(0.5)
    assert s.margin[0] == 0.0
    # H(mean) = log 2, each one-hot head has entropy 0
    assert abs(float(s.entropy[0]) - LOG2) < 1e-7
    assert abs(float(s.mutual_information[0]) - LOG2) < 1e-7


def test_identical_heads_have_zero_mi():
    head = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=F32)
    s = summarize(np.stack([head, head, head]))
    assert np.all(s.mutual_information == 0.0)
    np.testing.assert_array_equal(s.mean_probs, head)  # (3p)/3 happens to be exact here
    # H(0.7, 0.2, 0.1) = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.8018185...
    expected = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert abs(float(s.entropy[0]) - expected) < 1e-6
    assert s.predicted.tolist() == [0, 2]
    np.testing.assert_allclose(s.margin, [0.5, 0.7], rtol=1e-6)


def test_one_hot_heads_agreeing():
    heads = np.array([[[0.0, 0.0, 1.0]]] * 4, dtype=F32)
    s = summarize(heads)
    assert s.predicted.tolist() == [2]
    assert s.confidence[0] == 1.0 and s.margin[0] == 1.0
    assert s.entropy[0] == 0.0 and not np.signbit(s.entropy[0])  # +0, not -0
    assert s.mutual_information[0] == 0.0


def test_partial_disagreement_hand_computed():
    # heads (0.9, 0.1) and (0.5, 0.5): mean (0.7, 0.3)
    heads = np.array([[[0.9, 0.1]], [[0.5, 0.5]]], dtype=F32)
    s = summarize(heads)
    h_mean = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))  # 0.6108643
    h0 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.3250830
    h1 = LOG2
    assert abs(float(s.entropy[0]) - h_mean) < 1e-6
    assert abs(float(s.mutual_information[0]) - (h_mean - (h0 + h1) / 2)) < 1e-6
    assert abs(float(s.margin[0]) - 0.4) < 1e-6
    assert abs(float(s.confidence[0]) - 0.7) < 1e-6


def test_ties_in_argmax_choose_lowest_index():
    probs = np.array(
        [[0.25, 0.25, 0.25, 0.25], [0.1, 0.45, 0.45, 0.0], [0.0, 0.2, 0.4, 0.4]], dtype=F32
    )
    s = summarize(probs)
    assert s.predicted.tolist() == [0, 1, 2]
    assert np.all(s.margin == 0.0)


def test_single_head_2d_input_equals_k1():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), size=20).astype(F32)
    a, b = summarize(p), summarize(p[None])
    for field in ("mean_probs", "predicted", "confidence", "margin", "entropy", "mutual_information"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.mean_probs, p)  # dividing by K = 1 is exact
    assert np.all(a.mutual_information == 0.0)


def test_dtypes_are_float32_and_int():
    s = summarize(np.full((2, 3, 4), 0.25))  # float64 in, float32 out
    for field in ("mean_probs", "confidence", "margin", "entropy", "mutual_information"):
        assert getattr(s, field).dtype == F32, field
    assert np.issubdtype(s.predicted.dtype, np.integer)
    assert s.mean_probs.shape == (3, 4)
    for name in SCORES:
        assert uncertainty_score(s, name).dtype == F32


def test_mean_is_sequential_sum_then_division():
    rng = np.random.default_rng(7)
    heads = rng.dirichlet(np.ones(6), size=(5, 30)).astype(F32)
    acc = heads[0].copy()
    for k in range(1, 5):
        acc = acc + heads[k]
    np.testing.assert_array_equal(summarize(heads).mean_probs, acc / F32(5))


def test_entropy_follows_documented_order():
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(10) * 0.3, size=50).astype(F32)
    p[0, 3] = 0.0
    h = np.zeros(50, dtype=F32)
    for c in range(10):
        q = p[:, c]
        used = q >= np.finfo(F32).tiny  # subnormal terms are skipped
        term = np.where(used, q * log32(np.where(used, q, F32(1))), F32(0)).astype(F32)
        h = h + term
    np.testing.assert_array_equal(entropy(p), F32(0) - h)
    np.testing.assert_allclose(entropy(p), -np.sum(p * np.log(np.where(p > 0, p, 1)), axis=1), rtol=1e-5)


def test_input_is_not_modified():
    heads = np.array([[[0.5, 0.5]], [[1.0, 0.0]]], dtype=F32)
    before = heads.copy()
    summarize(heads)
    np.testing.assert_array_equal(heads, before)


def test_negative_zero_reads_as_zero():
    s = summarize(np.array([[-0.0, 1.0], [0.5, 0.5]], dtype=F32))
    assert not np.signbit(s.mean_probs).any()


# ------------------------------------------------------------------ scores


def test_uncertainty_score_orientation():
    s = summarize(np.array([[0.9, 0.1], [0.5, 0.5]], dtype=F32))
    for name in SCORES[:3]:  # the second sample is the more uncertain one
        u = uncertainty_score(s, name)
        assert u[1] > u[0], name
    np.testing.assert_array_equal(uncertainty_score(s, "confidence"), -s.confidence)
    np.testing.assert_array_equal(uncertainty_score(s, "margin"), -s.margin)
    assert not np.signbit(uncertainty_score(s, "margin")[1])  # 0 - 0 = +0
    np.testing.assert_array_equal(uncertainty_score(s, "entropy"), s.entropy)
    np.testing.assert_array_equal(uncertainty_score(s, "mutual_information"), s.mutual_information)


def test_unknown_score_lists_choices():
    s = summarize(np.array([[0.9, 0.1]], dtype=F32))
    with pytest.raises(QuteError) as info:
        uncertainty_score(s, "variance")
    for name in SCORES:
        assert name in str(info.value)


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(3),  # 1-D
        np.zeros((1, 2, 3, 4)),  # 4-D
        np.zeros((0, 2, 3)),  # no heads
        np.ones((2, 1)),  # one class
        np.array([[0.5, np.nan]]),
        np.array([[1.5, -0.5]]),
        np.array([["a", "b"]]),
        np.float32(0.5),
    ],
)
def test_bad_input_raises(bad):
    with pytest.raises(QuteError):
        summarize(bad)


def test_ragged_input_raises():
    with pytest.raises(QuteError):
        summarize([[0.5, 0.5], [1.0]])


def test_scores_dataclass_fields():
    assert list(Scores.__dataclass_fields__) == [
        "mean_probs",
        "predicted",
        "confidence",
        "margin",
        "entropy",
        "mutual_information",
    ]


# --------------------------------------------------------------- properties


@st.composite
def head_stacks(draw):
    k = draw(st.integers(1, 5))
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 8))
    raw = draw(
        arrays(np.float64, (k, n, c), elements=st.floats(0.0, 1.0, allow_subnormal=False))
    )
    raw = raw + 1e-3 * draw(st.booleans())  # sometimes no exact zeros
    sums = raw.sum(axis=2, keepdims=True)
    raw = np.where(sums > 0, raw / np.where(sums > 0, sums, 1.0), 1.0 / c)
    return raw.astype(F32)


@settings(max_examples=200, deadline=None)
@given(head_stacks())
def test_score_ranges(heads):
    k, n, c = heads.shape
    s = summarize(heads)
    tol = 1e-5
    assert np.all(s.confidence >= 1.0 / c - tol) and np.all(s.confidence <= 1.0 + tol)
    assert np.all(s.margin >= 0) and np.all(s.margin <= s.confidence)
    assert np.all(s.entropy >= 0) and np.all(s.entropy <= math.log(c) + tol)
    assert np.all(s.mutual_information >= 0)
    assert np.all(s.mutual_information <= s.entropy)
    assert np.all(s.predicted == np.argmax(s.mean_probs, axis=1))
    assert np.all(s.mean_probs[np.arange(n), s.predicted] == s.confidence)
    if k == 1:
        assert np.all(s.mutual_information == 0)
