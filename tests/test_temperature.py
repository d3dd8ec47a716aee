"""Temperature scaling of the ensemble (qute.temperature), fitted on validation and folded into the heads."""

import json

import numpy as np
import pytest

from qute.temperature import ensemble_nll, fit_temperature, fold_temperature, tempered


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_tempered_heads_are_softmax_of_scaled_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 50, 7)) * 3
    for t in (0.3, 1.0, 2.5):
        assert np.allclose(tempered(_softmax(z), t), _softmax(z / t), atol=1e-12)
    assert np.allclose(tempered(_softmax(z), 1.0), _softmax(z))


@pytest.mark.parametrize("s", [0.5, 2.0])  # over-confident heads, under-confident heads
def test_fit_recovers_the_temperature_that_calibrates(s):
    """Labels drawn from softmax(z); heads that report softmax(z / s): the fit must undo s (T = 1 / s)."""
    rng = np.random.default_rng(1)
    k, n, c = 3, 20_000, 10
    z = rng.normal(size=(n, c)) * 2.5
    y = np.array([rng.choice(c, p=p) for p in _softmax(z)])
    heads = np.stack([_softmax(z / s)] * k)
    t = fit_temperature(heads, y)
    assert t == pytest.approx(1 / s, rel=0.05)
    assert ensemble_nll(heads, y, t) < ensemble_nll(heads, y, 1.0)


def test_fit_never_makes_the_nll_worse():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(400, 5))
    y = np.array([rng.choice(5, p=p) for p in _softmax(z)])
    heads = np.stack([_softmax(z), _softmax(z)])
    t = fit_temperature(heads, y)
    assert ensemble_nll(heads, y, t) <= ensemble_nll(heads, y, 1.0)
    assert t == pytest.approx(1.0, rel=0.25)  # already calibrated


def test_fold_changes_the_heads_exactly_like_the_temperature(tmp_path):
    import keras

    from qute.config import NetSpec
    from qute.models import build, head_names, predict_heads

    spec = NetSpec(arch="mnist-cnn", method="qute", k=3, input_shape=(8, 8, 1), num_classes=10)
    keras.utils.set_random_seed(0)
    model = build(spec, training=False)
    x = np.random.default_rng(3).random((64, 8, 8, 1)).astype(np.float32)
    before = predict_heads(model, x)
    fold_temperature(model, 0.4, head_names(spec.num_heads))
    after = predict_heads(model, x)
    assert np.allclose(after, tempered(before, 0.4), atol=2e-6)
    with pytest.raises(Exception, match="positive"):
        fold_temperature(model, 0.0, head_names(spec.num_heads))


@pytest.mark.slow
def test_qute_train_fits_and_records_the_temperature(tmp_path):
    from cliutil import qute

    p = qute("train", "--dataset", "digits", "--limit", "640", "--epochs", "3", "--lr", "0.01", "-o", tmp_path / "t")
    assert p.returncode == 0, p.stderr
    t = json.loads((tmp_path / "t" / "config.json").read_text())["temperature"]
    assert t["value"] > 0 and "validation split" in t["fitted_on"]
    assert t["after"]["nll"] <= t["before"]["nll"] + 1e-6
    assert t["after"]["nll"] == pytest.approx(t["expected_after"]["nll"], abs=1e-4)  # folding did what the fit assumed
    assert f"temperature {t['value']:.3f} fitted on the validation split" in p.stdout
    p = qute("train", "--dataset", "digits", "--limit", "640", "--epochs", "3", "--no-temperature", "-o", tmp_path / "n")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "n" / "config.json").read_text())["temperature"] is None
    assert "temperature" not in p.stdout
