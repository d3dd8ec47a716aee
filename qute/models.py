"""Backbones and the ensemble methods built on them.

Every method builds two graphs from the same layer names:

- the *training* graph, with everything the loss needs (early exits, the original head);
- the *inference* graph that ships: input -> backbone -> K softmax heads named ``head_0`` ..
  ``head_{K-1}``, in that order, and nothing else.

`export_inference` builds the second from the first and copies the weights over by layer name, so
every later stage (quantization, code generation, firmware) sees plain Keras layers only.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from qute.config import ARCHS, EXIT_SCHEDULES, FILTERS, METHODS, POOLING, NetSpec, check_choice  # noqa: F401  (re-exported)
from qute.errors import QuteError


def head_names(n: int) -> list[str]:
    return [f"head_{i}" for i in range(n)]


def exit_names(n: int) -> list[str]:
    return [f"exit_{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Backbones. Each returns the feature map after every stage; the last one is the final feature
# map. Early exits attach to the earlier ones.


def _conv_relu(x, filters, kernel, strides, name):
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", activation="relu", name=name)(x)


def _stage(feats, x, drop, name):
    # MC dropout needs dropout after every stage of the backbone, not only before the head.
    if drop:
        x = layers.Dropout(drop, name=f"{name}_drop")(x)
    feats.append(x)
    return x


def _mnist_cnn(x, p, filters, drop=0.0):
    # The QUTE paper's small MNIST CNN size (~3.9K parameters with the classifier): three conv
    # layers, the first two strided so most of the work happens on a quarter-size map, and a
    # classifier on the pooled final map. Maps of 8 pixels or less per side are not downsampled
    # further (8x8 digits keep their resolution).
    feats = []
    for i, (channels, kernel, stride) in enumerate(zip(filters, (5, 3, 3), (2, 2, 1))):
        stride = stride if min(x.shape[1], x.shape[2]) > 8 else 1
        x = _stage(feats, _conv_relu(x, channels, kernel, stride, f"{p}conv{i + 1}"), drop, f"{p}conv{i + 1}")
    return feats


def _mnist_cnn_mp(x, p, filters, drop=0.0):
    # The same three convolutions, unstrided, each followed by a 2x2 max pooling while the map is
    # larger than 4 pixels a side, as the QUTE paper's small CNN pools between convolutions
    # (28 -> 14 -> 7 -> 3: the output blocks' depthwise convs see a 3x3 map). Same parameters as
    # mnist-cnn, about 2.4x its MACs.
    feats = []
    for i, (channels, kernel) in enumerate(zip(filters, (5, 3, 3))):
        x = _conv_relu(x, channels, kernel, 1, f"{p}conv{i + 1}")
        if min(x.shape[1], x.shape[2]) > 4:
            x = layers.MaxPooling2D(2, name=f"{p}pool{i + 1}")(x)
        x = _stage(feats, x, drop, f"{p}conv{i + 1}")
    return feats


def _conv_bn_relu(x, filters, kernel, strides, name, relu=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _ds_cnn(x, p, filters, drop=0.0):
    # MLPerf Tiny keyword-spotting DS-CNN: a 10x4 stride-2 conv, then four depthwise-separable
    # blocks of 64 channels (by default; `filters`). The kernel is clipped to the input so tiny
    # inputs still work.
    h, w = x.shape[1], x.shape[2]
    feats = []
    x = _stage(feats, _conv_bn_relu(x, filters[0], (min(10, h), min(4, w)), 2, f"{p}stem"), drop, f"{p}stem")
    for i, channels in enumerate(filters[1:]):
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{p}dw{i + 1}")(x)
        y = layers.BatchNormalization(name=f"{p}dw{i + 1}_bn")(y)
        y = layers.ReLU(name=f"{p}dw{i + 1}_relu")(y)
        x = _stage(feats, _conv_bn_relu(y, channels, 1, 1, f"{p}pw{i + 1}"), drop, f"{p}pw{i + 1}")
    return feats


def _resnet8(x, p, filters, drop=0.0):
    # MLPerf Tiny image-classification ResNet-8: a stem and three residual stacks (16, 32, 64 by
    # default; `filters`).
    feats = []
    x = _stage(feats, _conv_bn_relu(x, filters[0], 3, 1, f"{p}stem"), drop, f"{p}stem")
    for i, (channels, stride) in enumerate(zip(filters[1:], (1, 2, 2))):
        inp = x
        y = _conv_bn_relu(inp, channels, 3, stride, f"{p}stack{i + 1}a")
        y = _conv_bn_relu(y, channels, 3, 1, f"{p}stack{i + 1}b", relu=False)
        if stride != 1 or inp.shape[-1] != channels:
            inp = layers.Conv2D(channels, 1, strides=stride, padding="same", name=f"{p}stack{i + 1}_skip")(inp)
        y = layers.Add(name=f"{p}stack{i + 1}_add")([y, inp])
        x = _stage(feats, layers.ReLU(name=f"{p}stack{i + 1}_relu")(y), drop, f"{p}stack{i + 1}")
    return feats


_BACKBONES = {"mnist-cnn": _mnist_cnn, "mnist-cnn-mp": _mnist_cnn_mp, "ds-cnn": _ds_cnn, "resnet8": _resnet8}


def exit_positions(num_stages: int, k: int) -> list[int]:
    """Stages (0-based, excluding the last) after which the K early exits sit, at roughly equal depth.

    Exit j sits at the fraction (j+1)/(K+1) of the stages before the final one; with more exits
    than stages several exits share a stage (each still has its own layers).
    """
    available = num_stages - 1
    if available < 1:
        raise QuteError("the backbone has a single stage: there is nowhere to attach early exits")
    return [min(available - 1, int((j + 1) * available / (k + 1))) for j in range(k)]


# ---------------------------------------------------------------------------------------------
# Heads


class TiedDepthwiseConv2D(layers.Layer):
    """A 3x3 depthwise conv that borrows its kernel from another DepthwiseConv2D.

    The kernel goes through a stop-gradient, so only the source layer's own loss trains it; this
    equals copying the exit's kernel into the output block before every batch. Only the bias is
    this layer's own.
    """

    def __init__(self, source: layers.DepthwiseConv2D, **kwargs):
        super().__init__(**kwargs)
        self.source = source

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        kernel = ops.stop_gradient(self.source.kernel)
        return ops.depthwise_conv(x, kernel, strides=1, padding="same") + self.bias

    def get_config(self):
        # The source is another layer of the same training graph; the training graph is never
        # serialized (only the inference graph, which has a plain DepthwiseConv2D here).
        return {**super().get_config(), "source": self.source.name}


def _softmax_head(x, num_classes, name, pool="avg"):
    if pool == "avg":
        x = layers.GlobalAveragePooling2D(name=f"{name}_gap")(x)
    elif pool == "max":
        # A full-map MaxPooling2D (MAX_POOL_2D in TFLite) rather than GlobalMaxPooling2D, which
        # converts to REDUCE_MAX.
        x = layers.MaxPooling2D((x.shape[1], x.shape[2]), name=f"{name}_maxpool")(x)
        x = layers.Reshape((x.shape[-1],), name=f"{name}_flat")(x)
    x = layers.Dense(num_classes, name=f"{name}_fc")(x)
    return layers.Softmax(name=name)(x)


def _qute_exit(feat, channels, num_classes, j, pool):
    # Early exit j: pointwise conv to the final map's channel count, depthwise conv, dense.
    y = layers.Conv2D(channels, 1, activation="relu", name=f"exit_{j}_pw")(feat)
    dw = layers.DepthwiseConv2D(3, padding="same", name=f"exit_{j}_dw")
    y = layers.ReLU(name=f"exit_{j}_relu")(dw(y))
    return dw, _softmax_head(y, num_classes, f"exit_{j}", pool)


def _qute_block(final, num_classes, j, pool, tied_to=None):
    if tied_to is not None:
        y = TiedDepthwiseConv2D(tied_to, name=f"block_{j}_dw")(final)
    else:
        y = layers.DepthwiseConv2D(3, padding="same", name=f"block_{j}_dw")(final)
    y = layers.ReLU(name=f"block_{j}_relu")(y)
    return _softmax_head(y, num_classes, f"head_{j}", pool)


def _fc_exit(feat, num_classes, name):
    # Qendro et al.'s exits: a fully connected classifier on the (pooled) intermediate map; the
    # pooling caps the FC's input at 4x4 positions so early, wide maps stay affordable.
    h, w = feat.shape[1], feat.shape[2]
    pool = (max(1, h // 4), max(1, w // 4))
    y = layers.AveragePooling2D(pool, name=f"{name}_pool")(feat) if pool != (1, 1) else feat
    y = layers.Flatten(name=f"{name}_flat")(y)
    return _softmax_head(y, num_classes, name, pool=None)


def build(spec: NetSpec, training: bool, exits: bool = False) -> keras.Model:
    """Builds the training graph (``training=True``) or the inference graph of a method.

    The training graph's outputs are a dict: ``head_j`` for the shipped heads plus, for qute,
    ``exit_j`` (early exits) and ``head`` (the original classifier, trained then dropped).
    ``exits=True`` (qute only) adds the early exits ``exit_0`` .. ``exit_{K-1}`` to the inference
    graph, after the heads: the graph for early-exit inference on the device.
    """
    if exits and spec.method != "qute":
        raise QuteError(f"only qute models have early exits to keep, not {spec.method}")
    inp = keras.Input(spec.input_shape, name="input")
    filters = spec.filters

    def backbone(x, p, drop=0.0):
        return _BACKBONES[spec.arch](x, p, filters, drop)

    nc = spec.num_classes
    pool = spec.pooling or POOLING[spec.arch]
    out = {}
    if spec.method == "deep-ensemble":
        for j in range(spec.k):
            final = backbone(inp, f"m{j}_bb_")[-1]
            out[f"head_{j}"] = _softmax_head(final, nc, f"head_{j}", pool)
    elif spec.method in ("base", "mc-dropout"):
        drop = spec.dropout if spec.method == "mc-dropout" else 0.0
        out["head_0"] = _softmax_head(backbone(inp, "bb_", drop)[-1], nc, "head_0", pool)
    elif spec.method == "ee-ensemble":
        feats = backbone(inp, "bb_")
        positions = exit_positions(len(feats), spec.k - 1) if spec.k > 1 else []
        for j, pos in enumerate(positions):
            out[f"head_{j}"] = _fc_exit(feats[pos], nc, f"head_{j}")
        out[f"head_{spec.k - 1}"] = _softmax_head(feats[-1], nc, f"head_{spec.k - 1}", pool)
    else:  # qute
        feats = backbone(inp, "bb_")
        final = feats[-1]
        channels = final.shape[-1]
        exit_dws = []
        if training or exits:
            positions = ([s - 1 for s in spec.exit_stages] if spec.exit_stages
                         else exit_positions(len(feats), spec.k))
            for j, pos in enumerate(positions):
                dw, probs = _qute_exit(feats[pos], channels, nc, j, pool)
                exit_dws.append(dw)
                out[f"exit_{j}"] = probs
        if training:
            out["head"] = _softmax_head(final, nc, "head", pool)
        for j in range(spec.k):
            tied = exit_dws[j] if training and not spec.untied else None
            out[f"head_{j}"] = _qute_block(final, nc, j, pool, tied)
    if not training:
        names = head_names(spec.num_heads) + (exit_names(spec.k) if exits else [])
        return keras.Model(inp, [out[n] for n in names], name=f"{spec.method}_{spec.arch}")
    return keras.Model(inp, out, name=f"{spec.method}_{spec.arch}_train")


def loss_weights(spec: NetSpec, epoch: int, epochs: int, exit_schedule: str = "sdn") -> dict[str, float]:
    """Weight of each training output's cross-entropy at an epoch (0-based).

    qute: exits ramp SDN-style from 0.01 to their relative depth (j+1)/(K+1) over training
    (`exit_schedule` "sdn"), or weigh their relative depth from the first epoch ("constant");
    output block k (k = 1..K) weighs 3 + 0.5 k; the original head weighs 1.
    Every other method weighs each head 1.
    """
    check_choice("exit_schedule", exit_schedule, EXIT_SCHEDULES)
    if spec.method != "qute":
        return {n: 1.0 for n in head_names(spec.num_heads)}
    ramp = 1.0 if exit_schedule == "constant" or epochs <= 1 else epoch / (epochs - 1)
    w = {}
    for j in range(spec.k):
        final = (j + 1) / (spec.k + 1)
        w[f"exit_{j}"] = 0.01 + (final - 0.01) * ramp
    for j in range(spec.k):
        w[f"head_{j}"] = 3.0 + 0.5 * (j + 1)
    w["head"] = 1.0
    return w


def is_backbone_variable(path: str) -> bool:
    """True for variables of the shared backbone (frozen for the last part of qute training)."""
    name = path.split("/")[0]
    return name.startswith("bb_") or (name.startswith("m") and "_bb_" in name)


def export_inference(spec: NetSpec, train_model: keras.Model, exits: bool = False) -> keras.Model:
    """The shipped graph, its weights copied from the training graph by layer name; with
    ``exits`` (qute) the early exits too, as outputs after the heads.

    A tied output block gets its kernel from the matching exit and its bias from itself.
    """
    model = build(spec, training=False, exits=exits)
    trained = {layer.name: layer for layer in train_model.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        src = trained[layer.name]
        if isinstance(src, TiedDepthwiseConv2D):
            layer.set_weights([np.asarray(src.source.kernel), np.asarray(src.bias)])
        else:
            layer.set_weights(src.get_weights())
    return model


# ---------------------------------------------------------------------------------------------
# Prediction


def predict_heads(model: keras.Model, x: np.ndarray, names=None, batch_size: int = 1024, training=False) -> np.ndarray:
    """Head probabilities as one (K, N, C) float32 array, heads in name order.

    Works for the inference graph (a list of outputs) and the training graph (a dict; pass the
    head names to pick). `training=True` keeps dropout active (MC dropout).
    """
    chunks = []
    for start in range(0, len(x), batch_size):
        out = model(ops.convert_to_tensor(x[start : start + batch_size]), training=training)
        if isinstance(out, dict):
            out = [out[n] for n in names]
        elif not isinstance(out, (list, tuple)):
            out = [out]
        chunks.append(np.stack([np.asarray(o) for o in out]))
    return np.concatenate(chunks, axis=1).astype(np.float32)


def ensemble_heads(spec: NetSpec, model: keras.Model, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The (K, N, C) head probabilities the method averages: its heads, or for mc-dropout its one
    head sampled K times with dropout on (the samples fixed by `seed`)."""
    if spec.method != "mc-dropout":
        return predict_heads(model, x)
    keras.utils.set_random_seed(seed)
    return np.concatenate([predict_heads(model, x, training=True) for _ in range(spec.k)])
