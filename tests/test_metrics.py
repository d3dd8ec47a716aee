import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from qute import metrics as m
from qute.errors import QuteError

# fixed example: 4 samples, 3 classes
Y = np.array([0, 1, 2, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],  # predicts 0, right
        [0.1, 0.6, 0.3],  # predicts 1, right
        [0.5, 0.1, 0.4],  # predicts 0, wrong
        [0.2, 0.2, 0.6],  # predicts 2, right
    ]
)


# ---------------------------------------------------------------- classification


def test_accuracy_fixed():
    assert m.accuracy(Y, P) == 0.75


def test_accuracy_ties_go_to_lowest_index():
    assert m.accuracy([0, 1], [[0.5, 0.5], [0.5, 0.5]]) == 0.5


def test_f1_fixed_and_by_hand():
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: 1; class 2: tp 1, fn 1 -> 2/3
    # weighted by support (1, 1, 2): (2/3 + 1 + 2 * 2/3) / 4 = 0.75
    assert m.f1(Y, P) == pytest.approx(0.75)
    assert m.f1(Y, P) == pytest.approx(f1_score(Y, P.argmax(1), average="weighted"))


def test_f1_matches_sklearn_random():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, c = rng.integers(1, 80), rng.integers(2, 7)
        y = rng.integers(0, c, n)
        p = rng.random((n, c))
        # unseen predicted classes and absent true classes both occur
        assert m.f1(y, p) == pytest.approx(f1_score(y, p.argmax(1), average="weighted"), abs=1e-12)


def test_nll_by_hand():
    # p_y = 0.7, 0.6, 0.4, 0.6
    expected = -(math.log(0.7) + math.log(0.6) + math.log(0.4) + math.log(0.6)) / 4
    assert m.nll(Y, P) == pytest.approx(expected, rel=1e-12)


def test_nll_clips_at_eps():
    assert m.nll([1], [[1.0, 0.0]]) == pytest.approx(-math.log(1e-12))
    assert m.nll([1], [[1.0, 0.0]], eps=1e-3) == pytest.approx(-math.log(1e-3))
    with pytest.raises(QuteError):
        m.nll([1], [[1.0, 0.0]], eps=0.0)


def test_brier_by_hand():
    # squared distances to the one-hot label:
    # s0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14
    # s1: 0.1^2 + 0.4^2 + 0.3^2 = 0.26
    # s2: 0.5^2 + 0.1^2 + 0.6^2 = 0.62
    # s3: 0.2^2 + 0.2^2 + 0.4^2 = 0.24
    # mean = 1.26 / 4 = 0.315, divided by C = 3 -> 0.105
    assert m.brier(Y, P) == pytest.approx(0.105, rel=1e-12)


def test_brier_perfect_and_worst():
    assert m.brier([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0
    assert m.brier([0, 1], [[0.0, 1.0], [1.0, 0.0]]) == pytest.approx(1.0)  # 2 / C


def test_ece_by_hand():
    # confidences 0.7, 0.6, 0.5, 0.6 with 5 bins (0,.2],(.2,.4],(.4,.6],(.6,.8],(.8,1]
    # bin 2 (0.4, 0.6]: 0.6 right, 0.5 wrong, 0.6 right -> acc 2/3, conf 1.7/3
    # bin 3 (0.6, 0.8]: 0.7 right -> acc 1, conf 0.7
    # ECE = 3/4 * |2/3 - 1.7/3| + 1/4 * |1 - 0.7| = 0.075 + 0.075 = 0.15
    assert m.ece(Y, P, n_bins=5) == pytest.approx(0.15, abs=1e-12)


def test_ece_edges():
    # 0.5 lies exactly on the edge between bins 0 and 1 of 2 bins: it belongs to (0, .5]
    # one sample, conf 0.5, right -> |1 - 0.5| = 0.5 regardless of bin; two samples
    # tell the bins apart: conf 0.5 (right) and 0.75 (wrong)
    y = [0, 1]
    p = [[0.5, 0.5], [0.75, 0.25]]
    # same bin would give |1/2 - 1.25/2| = 0.125; separate bins give
    # 1/2 * |1 - 0.5| + 1/2 * |0 - 0.75| = 0.625
    assert m.ece(y, p, n_bins=2) == pytest.approx(0.625)
    # with 1 bin they share it
    assert m.ece(y, p, n_bins=1) == pytest.approx(0.125)
    # 0.6 sits on the edge 3/5 of 5 bins (3/5 is the double 0.6): bin (0.4, 0.6], so it
    # shares a bin with 0.55 (wrong); 0.6 + 1e-9 would go to the next bin
    y2 = [0, 1]
    p_edge = [[0.6, 0.4], [0.55, 0.45]]
    p_above = [[0.6 + 1e-9, 0.4 - 1e-9], [0.55, 0.45]]
    assert m.ece(y2, p_edge, n_bins=5) == pytest.approx(abs(0.5 - (0.6 + 0.55) / 2))
    assert m.ece(y2, p_above, n_bins=5) == pytest.approx(0.5 * 0.4 + 0.5 * 0.55, abs=1e-8)


def test_ece_confidence_one_and_zero():
    # confidence 1.0 goes in the last bin, and a perfect confident model has ECE 0
    assert m.ece([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0
    # confidence 0 (all-zero row) goes in bin 0: |acc 1 - conf 0| = 1
    assert m.ece([0], [[0.0, 0.0]]) == 1.0


def test_ece_bins_match_naive_loop():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    p = rng.dirichlet(np.ones(4), 300)
    p[:10] = np.round(p[:10] * 15) / 15  # some confidences near edges
    conf, correct = p.max(1), p.argmax(1) == y
    total = 0.0
    for i in range(15):
        lo, hi = i / 15, (i + 1) / 15
        inside = (conf > lo) & (conf <= hi) if i else (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert m.ece(y, p) == pytest.approx(total, abs=1e-12)


# ----------------------------------------------------------------- ranking


def test_auroc_fixed_with_ties():
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.8, 0.9]
    # pairs (pos, neg): 9; pos 0.4 vs negs (0.1 win, 0.4 tie, 0.8 loss) = 1.5
    # pos 0.8: 0.1 win, 0.4 win, 0.8 tie = 2.5; pos 0.9: 3 wins -> 7 / 9
    assert m.auroc(labels, scores) == pytest.approx(7 / 9)
    assert m.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_auroc_and_ap_match_sklearn_random():
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(2, 100))
        labels = rng.integers(0, 2, n)
        if trial % 2:
            scores = rng.integers(0, 4, n).astype(float)  # heavy ties
        else:
            scores = rng.normal(size=n) + labels * rng.random()
        if 0 < labels.sum() < n:
            assert m.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        if labels.sum() > 0:
            assert m.average_precision(labels, scores) == pytest.approx(
                average_precision_score(labels, scores), abs=1e-12
            )


def test_average_precision_fixed_by_hand():
    labels = [1, 0, 1, 0, 1]
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    # thresholds 0.9: P 1, R 1/3; 0.8: P 2/3, R 2/3; 0.3: P 2/4, R 2/3; 0.1: P 3/5, R 1
    # AP = 1/3 * 1 + 1/3 * 2/3 + 0 * 1/2 + 1/3 * 3/5
    expected = 1 / 3 + 2 / 9 + 1 / 5
    assert m.average_precision(labels, scores) == pytest.approx(expected)
    assert m.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores)
    )


def test_ranking_degenerate_cases():
    assert math.isnan(m.auroc([1, 1], [0.1, 0.2]))
    assert math.isnan(m.auroc([0, 0], [0.1, 0.2]))
    assert math.isnan(m.average_precision([0, 0], [0.1, 0.2]))
    assert m.average_precision([1, 1], [0.1, 0.2]) == 1.0
    assert m.auroc([True, False], [1.0, 0.0]) == 1.0


def test_ranking_bad_input():
    with pytest.raises(QuteError):
        m.auroc([0, 1, 2], [0.1, 0.2, 0.3])  # not binary
    with pytest.raises(QuteError):
        m.auroc([0, 1], [0.1])  # lengths differ
    with pytest.raises(QuteError):
        m.average_precision([0, 1], [0.1, np.nan])


def test_failure_auroc():
    # default uncertainty -confidence: wrong sample 2 has conf 0.5, the lowest -> AUROC 1
    assert m.failure_auroc(Y, P) == 1.0
    # an uncertainty that ranks the wrong sample lowest -> 0
    assert m.failure_auroc(Y, P, uncertainty=[1.0, 1.0, 0.0, 1.0]) == 0.0
    assert m.failure_auroc(Y, P, uncertainty=[0.3, 0.2, 0.4, 0.1]) == pytest.approx(1.0)
    # all right -> nan
    assert math.isnan(m.failure_auroc([0, 1], [[0.9, 0.1], [0.2, 0.8]]))
    with pytest.raises(QuteError):
        m.failure_auroc(Y, P, uncertainty=[0.1, 0.2])


def test_failure_auroc_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200)
    wrong = p.argmax(1) != y
    assert m.failure_auroc(y, p) == pytest.approx(roc_auc_score(wrong, -p.max(1)))


def test_ood_auroc():
    assert m.ood_auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert m.ood_auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert m.ood_auroc([0.1, 0.3], [0.3, 0.2]) == pytest.approx(
        roc_auc_score([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.2])
    )
    with pytest.raises(QuteError):
        m.ood_auroc([], [0.1])


# -------------------------------------------------------- input validation


@pytest.mark.parametrize("fn", [m.accuracy, m.f1, m.nll, m.brier, m.ece])
def test_classification_bad_input(fn):
    with pytest.raises(QuteError):
        fn([0, 1], [0.5, 0.5])  # 1-D probs
    with pytest.raises(QuteError):
        fn([0, 1, 1], P[:2])  # lengths differ
    with pytest.raises(QuteError):
        fn([0, 3], P[:2])  # label out of range
    with pytest.raises(QuteError):
        fn([0.5, 1], P[:2])  # non-integer label
    with pytest.raises(QuteError):
        fn([[0], [1]], P[:2])  # 2-D labels
    with pytest.raises(QuteError):
        fn([0, 1], [[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]])


def test_ece_bad_bins():
    with pytest.raises(QuteError):
        m.ece(Y, P, n_bins=0)
    with pytest.raises(QuteError):
        m.ece(Y, P, n_bins=2.5)


# ------------------------------------------------------ drop detection


def test_sliding_mean_matches_naive_loop():
    rng = np.random.default_rng(4)
    for n, w in [(1, 1), (10, 1), (10, 10), (57, 7), (300, 100)]:
        v = rng.random(n)
        naive = np.array([sum(v[i : i + w]) / w for i in range(n - w + 1)])
        got = m.sliding_mean(v, w)
        assert got.shape == (n - w + 1,)
        np.testing.assert_allclose(got, naive, rtol=0, atol=1e-12)


def test_sliding_mean_bad_input():
    for bad in (0, 11, 2.0, True):
        with pytest.raises(QuteError):
            m.sliding_mean(np.ones(10), bad)
    with pytest.raises(QuteError):
        m.sliding_mean(np.ones((2, 5)), 2)


def _streams(seed, related, n_id=1000, n_shift=1000):
    """ID accuracy 0.9, shifted accuracy 0.4; confidence follows the shift when related."""
    rng = np.random.default_rng(seed)
    correct_id = rng.random(n_id) < 0.9
    correct_shift = rng.random(n_shift) < 0.4
    conf_id = rng.uniform(0.8, 1.0, n_id)
    if related:
        conf_shift = rng.uniform(0.3, 0.6, n_shift)
    else:
        conf_shift = rng.uniform(0.8, 1.0, n_shift)
    return correct_id, conf_id, correct_shift, conf_shift


def test_accuracy_drop_detected_when_confidence_drops_too():
    r = m.accuracy_drop(*_streams(0, related=True), window=100, k_sigma=3.0)
    assert r.n_windows == 2000 - 100 + 1
    assert r.window_accuracy.shape == r.window_confidence.shape == r.positive.shape == (1901,)
    assert 0.85 < r.mu < 0.95 and 0 < r.sigma < 0.1
    assert r.n_positive == int(r.positive.sum()) > 0
    # every positive window reaches well into the shifted part, whose confidence is lower
    assert r.auprc == 1.0


def test_accuracy_drop_lower_when_confidence_unrelated():
    related = m.accuracy_drop(*_streams(0, related=True))
    unrelated = m.accuracy_drop(*_streams(0, related=False))
    assert unrelated.n_positive == related.n_positive  # same correctness streams
    assert unrelated.auprc < 0.8 < related.auprc


def test_accuracy_drop_by_hand():
    # window 2; ID correctness 1,1,0,1 -> window acc 1, .5, .5: mu 2/3, sigma sqrt(1/18)
    correct_id = [1, 1, 0, 1]
    conf_id = [0.9, 0.9, 0.8, 0.9]
    correct_shift = [0, 0]
    conf_shift = [0.2, 0.4]
    r = m.accuracy_drop(correct_id, conf_id, correct_shift, conf_shift, window=2, k_sigma=1.0)
    assert r.mu == pytest.approx(2 / 3)
    assert r.sigma == pytest.approx(math.sqrt(1 / 18))
    # stream 1,1,0,1,0,0: window acc 1, .5, .5, .5, 0; threshold 2/3 - 0.2357 = 0.431
    np.testing.assert_allclose(r.window_accuracy, [1, 0.5, 0.5, 0.5, 0])
    np.testing.assert_allclose(r.window_confidence, [0.9, 0.85, 0.85, 0.55, 0.3])
    assert r.positive.tolist() == [False, False, False, False, True]
    assert r.n_positive == 1 and r.auprc == 1.0


def test_accuracy_drop_without_positives_is_nan():
    # the shifted stream is more accurate than the ID one: no window drops
    rng = np.random.default_rng(6)
    correct_id = rng.random(500) < 0.7
    r = m.accuracy_drop(correct_id, np.full(500, 0.9), np.ones(300), np.full(300, 0.5), window=50)
    assert r.sigma > 0
    assert r.n_positive == 0 and math.isnan(r.auprc)
    assert not r.positive.any() and r.n_windows == 800 - 50 + 1


def test_accuracy_drop_empty_shift_stream():
    r = m.accuracy_drop([1, 0, 1, 1], [0.9, 0.5, 0.9, 0.9], [], [], window=2, k_sigma=0.0)
    assert r.n_windows == 3
    assert r.positive.tolist() == [True, True, False]  # acc .5, .5, 1 vs mu 2/3
    assert r.auprc == 1.0  # conf .7, .7 below .9


def test_accuracy_drop_bad_input():
    good = ([1, 0, 1], [0.9, 0.8, 0.9], [0, 0], [0.1, 0.2])
    with pytest.raises(QuteError):
        m.accuracy_drop(*good, window=4)  # longer than the ID stream
    with pytest.raises(QuteError):
        m.accuracy_drop([1, 0], [0.9, 0.8, 0.9], [0, 0], [0.1, 0.2], window=2)
    with pytest.raises(QuteError):
        m.accuracy_drop([1, 0, 1], [0.9, 0.8, 0.9], [0, 0], [0.1], window=2)
    with pytest.raises(QuteError):
        m.accuracy_drop([1, 2, 1], [0.9, 0.8, 0.9], [0, 0], [0.1, 0.2], window=2)


def test_choose_rho_gives_no_alarm_on_id_stream():
    correct_id, conf_id, _, conf_shift = _streams(3, related=True)
    rho = m.choose_rho(conf_id, 100)
    assert rho == pytest.approx(m.sliding_mean(conf_id, 100).min(), abs=0)
    assert not m.alarm_timeline(conf_id, 100, rho).any()
    # the same threshold fires once the confidence drops
    stream = np.concatenate((conf_id, conf_shift))
    alarms = m.alarm_timeline(stream, 100, rho)
    assert not alarms[: 1000 - 100 + 1].any()  # ID-only windows of the joint stream
    assert alarms[-1]
    # any larger rho alarms at least once on ID
    assert m.alarm_timeline(conf_id, 100, np.nextafter(rho, 2.0)).any()


def test_choose_rho_false_alarm_fraction():
    # sixteenths, so that the cumulative sums behind the window means are exact
    conf = np.array([5, 1, 4, 3, 2, 6, 7, 8, 9, 10]) / 16
    # window 1: 10 windows; 30% -> 3 alarms allowed -> rho = 4th smallest = 4/16
    assert m.choose_rho(conf, 1, 0.3) == 4 / 16
    assert m.alarm_timeline(conf, 1, 4 / 16).sum() == 3
    assert m.choose_rho(conf, 1, 0.0) == 1 / 16
    assert m.choose_rho(conf, 1, 0.29) == 3 / 16  # floor(2.9) = 2 alarms allowed
    assert m.choose_rho(conf, 1, 1.0) == math.inf
    # window 2: means 6/32 5/32 7/32 5/32 8/32 13/32 15/32 17/32 19/32 (9 windows)
    assert m.choose_rho(conf, 2, 0.0) == 5 / 32
    assert m.choose_rho(conf, 2, 2 / 9) == 6 / 32  # ties at 5/32 both alarm
    with pytest.raises(QuteError):
        m.choose_rho(conf, 1, 1.5)


# ------------------------------------------------------------------ evaluate


def test_evaluate_uses_mean_of_heads():
    heads = np.stack([P, P[:, [0, 1, 2]]]).astype(np.float32)
    out = m.evaluate(Y, heads)
    assert set(out) == {"accuracy", "f1", "nll", "brier", "ece", "failure_auroc"}
    assert out["accuracy"] == 0.75
    assert out["f1"] == pytest.approx(0.75)
    assert out["brier"] == pytest.approx(0.105, rel=1e-6)
    assert out["failure_auroc"] == 1.0
    assert all(isinstance(v, float) for v in out.values())
    # two heads whose mean is P
    a = np.array([[0.9, 0.0, 0.1], [0.1, 0.8, 0.1], [0.5, 0.2, 0.3], [0.2, 0.0, 0.8]])
    b = 2 * P - a
    assert m.evaluate(Y, np.stack([a, b]))["nll"] == pytest.approx(m.nll(Y, P), rel=1e-6)


def test_detection_delay_by_hand():
    # ID windows (w=2): .85 .85 .9 -> rho .85, no alarm on the ID stream; the window [.9, .7]
    # (two shifted samples) is the first below it
    assert m.detection_delay([0.9, 0.8, 0.9, 0.9], [0.9, 0.7, 0.5], window=2) == 2.0
    assert m.detection_delay([0.9, 0.8, 0.9, 0.9], [0.1, 0.9], window=2) == 1.0
    assert m.detection_delay([0.9, 0.8, 0.9, 0.9], [0.9, 0.9, 0.95], window=2) == math.inf
    # allowing alarms on two of the three ID windows raises rho to .9: [.9, .82] alarms
    assert m.detection_delay([0.9, 0.8, 0.9, 0.9], [0.9, 0.82], window=2, false_alarm=0.67) == 2.0
    assert m.detection_delay([0.9, 0.8, 0.9, 0.9], [0.9, 0.82], window=2) == math.inf


def test_detection_delay_is_shorter_when_confidence_falls_further():
    _, conf_id, _, _ = _streams(1, related=True)
    rng = np.random.default_rng(2)
    slight, steep = rng.uniform(0.55, 0.95, 1000), rng.uniform(0.2, 0.6, 1000)
    assert 1 <= m.detection_delay(conf_id, steep) < m.detection_delay(conf_id, slight) < math.inf
