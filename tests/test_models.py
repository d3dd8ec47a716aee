import json

import numpy as np
import pytest
import tensorflow as tf

from qute import models
from qute.config import TrainConfig
from qute.errors import QuteError
from qute.models import NetSpec
from qute.models import predict_heads
from qute.train import train


@pytest.mark.parametrize("arch", models.ARCHS)
@pytest.mark.parametrize("method", models.METHODS)
def test_inference_graph_has_only_named_heads(arch, method):
    spec = NetSpec(arch, method, (8, 8, 1), 10, k=3)
    model = models.build(spec, training=False)
    want = 1 if method in ("base", "mc-dropout") else 3
    assert list(model.output_names) == [f"head_{i}" for i in range(want)]
    names = [layer.name for layer in model.layers]
    assert not any(n.startswith("exit") for n in names)
    assert "head" not in names  # the original classifier is dropped
    out = model(np.zeros((2, 8, 8, 1), np.float32))
    out = out if isinstance(out, list) else [out]
    for o in out:
        np.testing.assert_allclose(np.asarray(o).sum(1), 1.0, rtol=1e-5)


def test_mnist_cnn_is_the_papers_size():
    base = models.build(NetSpec("mnist-cnn", "base", (28, 28, 1), 10), training=False)
    assert 3_700 <= base.count_params() <= 4_100


def test_mnist_cnn_mp_pools_instead_of_striding():
    strided = models.build(NetSpec("mnist-cnn", "qute", (28, 28, 1), 10), training=False)
    pooled = models.build(NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10, filters=(8, 16, 16)), training=False)
    assert pooled.count_params() == strided.count_params()  # the same convolutions and heads
    assert [pooled.get_layer(f"bb_pool{i}").output.shape[1] for i in (1, 2, 3)] == [14, 7, 3]
    assert all(pooled.get_layer(f"bb_conv{i}").strides == (1, 1) for i in (1, 2, 3))
    assert pooled.get_layer("block_0_dw").output.shape[1:3] == (3, 3)
    # 8x8 digits: one pooling, then the map is too small for another
    small = models.build(NetSpec("mnist-cnn-mp", "base", (8, 8, 1), 10), training=False)
    assert [layer.name for layer in small.layers if "pool" in layer.name and layer.name.startswith("bb_")] == ["bb_pool1"]


def test_the_default_qute_fits_the_issues_budget():
    """At most 5K parameters and 45% of the three-member deep ensemble on the same backbone."""
    def params(method):
        return models.build(NetSpec("mnist-cnn-mp", method, (28, 28, 1), 10), training=False).count_params()
    assert params("qute") <= 5_000 and params("qute") <= 0.45 * params("deep-ensemble")
    assert params("qute") > params("base")


def test_a_saved_spec_records_its_filters_and_old_runs_read_as_built():
    spec = NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10)
    assert tuple(spec.to_dict()["filters"]) == models.FILTERS["mnist-cnn-mp"]
    # a run saved before runs recorded their channels was built with the former default
    old = {k: v for k, v in spec.to_dict().items() if k != "filters"}
    assert NetSpec.from_dict(old).filters == (8, 16, 16) == NetSpec.from_dict({**old, "filters": None}).filters


@pytest.mark.parametrize("arch", models.ARCHS)
def test_filters_set_every_backbone_stage_width(arch):
    wide = tuple(2 * f + 1 for f in models.FILTERS[arch])
    spec = NetSpec(arch, "qute", (8, 8, 1), 10, k=2, filters=list(wide))
    assert spec.filters == wide and NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    model = models.build(spec, training=True)
    # each stage's output (an exit's input) and the final map have the asked-for channels
    assert model.get_layer("exit_0_pw").input.shape[-1] in wide
    assert model.get_layer("block_0_dw").input.shape[-1] == wide[-1]
    assert model.get_layer("exit_1_pw").filters == wide[-1]
    default = models.build(NetSpec(arch, "qute", (8, 8, 1), 10, k=2), training=False)
    assert default.count_params() < models.build(spec, training=False).count_params()
    assert models.build(NetSpec(arch, "qute", (8, 8, 1), 10, k=2, filters=models.FILTERS[arch]),
                        training=False).count_params() == default.count_params()


@pytest.mark.parametrize("filters", [(8, 16), (8, 16, 0), (8, 16, 16.0), "8,16,16", (8, 16, True), (8, 16, 5000)])
def test_bad_filters_name_the_stage_count_and_the_default(filters):
    with pytest.raises(QuteError, match=r"filters must be 3 channel counts .* mnist-cnn-mp.*its own: 6,12,24"):
        TrainConfig(arch="mnist-cnn-mp", filters=filters)


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_pooling_chooses_how_every_classifier_pools(pooling):
    spec = NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10, k=2, pooling=pooling)
    names = [layer.name for layer in models.build(spec, training=True).layers]
    want = pooling or models.POOLING["mnist-cnn-mp"]
    for out in ("head_0", "head_1", "exit_0", "exit_1", "head"):
        assert (f"{out}_gap" in names) == (want == "avg") and (f"{out}_maxpool" in names) == (want == "max")
    same = NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10, k=2, pooling="avg")
    assert models.build(same, training=False).count_params() == models.build(spec, training=False).count_params()
    with pytest.raises(QuteError, match="unknown pooling 'min'; choose one of: avg, max"):
        TrainConfig(pooling="min")


def test_exit_stages_place_the_exits():
    spec = NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10, k=3, exit_stages=[2, 2, 2])
    model = models.build(spec, training=True)
    second = model.get_layer("bb_pool2")
    for j in range(3):
        assert model.get_layer(f"exit_{j}_pw").input is second.output  # all after the second stage
    default = models.build(NetSpec("mnist-cnn-mp", "qute", (28, 28, 1), 10, k=3), training=True)
    assert default.get_layer("exit_0_pw").input is default.get_layer("bb_pool1").output
    for bad in ([1, 2], [0, 1, 2], [1, 3, 3], [2, 1, 1], "1,2,2"):
        with pytest.raises(QuteError, match="exit_stages must be K = 3 stage numbers from 1 to 2 for arch mnist-cnn-mp"):
            TrainConfig(exit_stages=bad)
    with pytest.raises(QuteError, match="method base has none to place"):
        TrainConfig(method="base", exit_stages=[1, 1, 2])


def test_qute_training_graph_has_exits_blocks_and_original_head():
    spec = NetSpec("mnist-cnn", "qute", (28, 28, 1), 10, k=3, untied=False)
    model = models.build(spec, training=True)
    assert sorted(model.output_names) == sorted(
        ["exit_0", "exit_1", "exit_2", "head_0", "head_1", "head_2", "head"]
    )
    # exits reach the final map's channel count with a pointwise conv
    for j in range(3):
        assert model.get_layer(f"exit_{j}_pw").filters == 16
        assert isinstance(model.get_layer(f"block_{j}_dw"), models.TiedDepthwiseConv2D)


def test_exit_positions_spread_along_the_backbone():
    assert models.exit_positions(4, 3) == [0, 1, 2]
    assert models.exit_positions(4, 1) == [1]
    assert models.exit_positions(5, 3) == [1, 2, 3]
    pos = models.exit_positions(4, 6)
    assert pos == sorted(pos) and max(pos) <= 2 and len(pos) == 6


def test_loss_weights_follow_the_papers_formula():
    spec = NetSpec("mnist-cnn", "qute", (8, 8, 1), 10, k=4)
    first, last = models.loss_weights(spec, 0, 10), models.loss_weights(spec, 9, 10)
    for k in range(1, 5):
        assert first[f"head_{k - 1}"] == last[f"head_{k - 1}"] == 3 + 0.5 * k
        assert first[f"exit_{k - 1}"] == pytest.approx(0.01)
        assert last[f"exit_{k - 1}"] == pytest.approx(k / 5)
    mid = models.loss_weights(spec, 3, 10)
    assert mid["exit_1"] == pytest.approx(0.01 + (2 / 5 - 0.01) * 3 / 9)
    assert first["head"] == 1.0
    constant = models.loss_weights(spec, 0, 10, "constant")
    assert constant == models.loss_weights(spec, 9, 10, "constant") == last
    with pytest.raises(QuteError, match="unknown exit_schedule 'linear'; choose one of: sdn, constant"):
        TrainConfig(exit_schedule="linear")
    other = models.loss_weights(NetSpec("mnist-cnn", "ee-ensemble", (8, 8, 1), 10, k=3), 0, 10)
    assert other == {"head_0": 1.0, "head_1": 1.0, "head_2": 1.0}


def test_block_loss_does_not_train_the_tied_kernel():
    spec = NetSpec("mnist-cnn", "qute", (8, 8, 1), 10, k=2, untied=False)
    model = models.build(spec, training=True)
    x = tf.random.uniform((4, 8, 8, 1))
    kernel = model.get_layer("exit_1_dw").kernel
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=True)
        block = tf.reduce_sum(out["head_1"] * tf.math.log(out["head_1"] + 1e-9))
        exit_ = tf.reduce_sum(out["exit_1"] * tf.math.log(out["exit_1"] + 1e-9))
    assert tape.gradient(block, kernel) is None or not np.any(tape.gradient(block, kernel))
    assert np.any(tape.gradient(exit_, kernel))


def test_bad_spec_names_the_allowed_values():
    with pytest.raises(QuteError, match="mnist-cnn, mnist-cnn-mp, ds-cnn, resnet8"):
        NetSpec("lenet", "qute", (8, 8, 1), 10)
    with pytest.raises(QuteError, match="choose one of: qute, base"):
        NetSpec("mnist-cnn", "bagging", (8, 8, 1), 10)


@pytest.fixture(scope="module")
def digits():
    from qute.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("untied", [False, True])
def test_trained_blocks_share_their_exits_kernel(digits, untied):
    # no temperature: it is folded into the exported heads only, and this compares them with the training graph's
    cfg = TrainConfig(method="qute", k=3, epochs=8, batch_size=32, untied=untied, freeze_fraction=0.125, temperature=False)
    snapshots = []

    def on_epoch(record, model):
        bb = [np.array(v) for v in model.trainable_variables if models.is_backbone_variable(v.path)]
        snapshots.append((record, bb))

    result = train(cfg, digits, on_epoch=on_epoch)
    for j in range(3):
        block = result.model.get_layer(f"block_{j}_dw").get_weights()[0]
        exit_kernel = result.train_model.get_layer(f"exit_{j}_dw").get_weights()[0]
        assert np.array_equal(block, exit_kernel) != untied
    # the last epoch (12.5% of 8) ran with the backbone frozen
    assert [r["backbone_frozen"] for r, _ in snapshots] == [False] * 7 + [True]
    for a, b in zip(snapshots[-2][1], snapshots[-1][1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshots[0][1], snapshots[1][1]))
    # the exported graph computes what the training graph's heads compute
    exported = predict_heads(result.model, digits.x_test[:50])
    trained = predict_heads(result.train_model, digits.x_test[:50], names=["head_0", "head_1", "head_2"])
    np.testing.assert_allclose(exported, trained, atol=1e-6)
    assert result.history[-1]["val_accuracy"] > max(0.3, result.history[0]["val_accuracy"])


@pytest.mark.slow
def test_deep_ensemble_members_differ(digits):
    result = train(TrainConfig(method="deep-ensemble", k=2, epochs=2, batch_size=64), digits)
    heads = predict_heads(result.model, digits.x_test[:20])
    assert heads.shape == (2, 20, 10)
    assert not np.allclose(heads[0], heads[1])
