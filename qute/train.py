"""Training: one loop for every method, with the QUTE paper's loss schedule.

The loop is written out (not `model.fit`) because the loss weights change every epoch (the
exits' SDN ramp) and the backbone is frozen for the last part of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import keras
import numpy as np
import tensorflow as tf

from qute import metrics, models
from qute.config import TrainConfig
from qute.models import NetSpec
from qute.temperature import fit_temperature, fold_temperature, tempered

if TYPE_CHECKING:
    from qute.data import Dataset


@dataclass
class TrainResult:
    spec: NetSpec
    model: keras.Model  # the inference graph
    train_model: keras.Model
    history: list[dict] = field(default_factory=list)
    config: TrainConfig | None = None  # the settings used, defaults filled in
    temperature: dict | None = None  # the fitted temperature and its effect on validation (qute.temperature)
    # qute: the inference graph with the early exits kept as outputs after the heads (the same
    # heads, temperature included; each exit tempered on its own)
    exits_model: keras.Model | None = None


def spec_for(cfg: TrainConfig, data: Dataset) -> NetSpec:
    return NetSpec(
        arch=cfg.arch,
        method=cfg.method,
        input_shape=tuple(data.input_shape),
        num_classes=data.num_classes,
        k=cfg.k,
        untied=cfg.untied,
        dropout=cfg.dropout,
        filters=cfg.filters,
        pooling=cfg.pooling,
        exit_stages=cfg.exit_stages,
    )


def train(cfg: TrainConfig, data: Dataset, on_epoch: Callable[[dict, keras.Model], None] | None = None) -> TrainResult:
    """Trains the method of `cfg` on `data` and returns its inference model.

    `on_epoch` receives each epoch's record (loss, validation accuracy and NLL of the mean of the
    heads, learning rate, whether the backbone was frozen) and the training graph.
    """
    cfg = cfg.for_dataset(len(data.x_train))
    keras.utils.set_random_seed(cfg.seed)
    spec = spec_for(cfg, data)
    model = models.build(spec, training=True)
    names = sorted(models.loss_weights(spec, 0, cfg.epochs))
    optimizer = keras.optimizers.Adam(learning_rate=cfg.lr)
    weights = tf.Variable(np.zeros(len(names), np.float32), trainable=False)
    frozen_from = cfg.epochs - int(round(cfg.freeze_fraction * cfg.epochs)) if spec.method == "qute" else cfg.epochs
    all_vars = model.trainable_variables
    head_vars = [v for v in all_vars if not models.is_backbone_variable(v.path)]
    optimizer.build(all_vars)

    # Per-sample loss weights of each output (1 everywhere unless cfg.bootstrap resamples the
    # output blocks); a row per name, a column per training sample.
    n = len(data.x_train)
    sample_weights = np.ones((len(names), n), np.float32)
    if cfg.bootstrap and spec.method == "qute":
        boot = np.random.default_rng([cfg.seed, 0xB007])
        for i, name in enumerate(names):
            if name.startswith("head_"):
                sample_weights[i] = boot.poisson(1.0, n)

    def make_step(variables):
        @tf.function(reduce_retracing=True)
        def step(x, y, sw):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                losses = [tf.reduce_mean(_loss(y, out[n_], cfg.label_smoothing) * sw[i]) for i, n_ in enumerate(names)]
                loss = tf.reduce_sum(tf.stack(losses) * weights)
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            return loss

        return step

    full_step, head_step = make_step(all_vars), make_step(head_vars)
    rng = np.random.default_rng(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        w = models.loss_weights(spec, epoch, cfg.epochs, cfg.exit_schedule)
        weights.assign(np.array([w[n_] for n_ in names], np.float32))
        lr = cfg.lr * cfg.lr_decay**epoch
        optimizer.learning_rate = lr
        frozen = epoch >= frozen_from
        step = head_step if frozen else full_step
        order = rng.permutation(n)
        total, batches = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            total += float(step(tf.constant(data.x_train[idx]), tf.constant(data.y_train[idx]),
                                tf.constant(sample_weights[:, idx])))
            batches += 1
        heads = models.predict_heads(model, data.x_val, names=models.head_names(spec.num_heads))
        mean = heads.mean(axis=0)
        record = {
            "epoch": epoch + 1,
            "loss": total / max(batches, 1),
            "val_accuracy": float(np.mean(mean.argmax(1) == data.y_val)),
            "val_nll": float(-np.mean(np.log(np.clip(mean[np.arange(len(mean)), data.y_val], 1e-12, None)))),
            "lr": lr,
            "backbone_frozen": frozen,
        }
        history.append(record)
        if on_epoch:
            on_epoch(record, model)
    inference = models.export_inference(spec, model)
    temperature = scale_temperature(inference, spec, cfg, data) if cfg.temperature else None
    exits_model = None
    if spec.method == "qute":
        exits_model = models.export_inference(spec, model, exits=True)
        for layer in inference.layers:  # the heads as shipped, temperature folded in
            if layer.weights:
                exits_model.get_layer(layer.name).set_weights(layer.get_weights())
        if cfg.temperature:
            temperature["exits"] = scale_exit_temperatures(exits_model, spec, data)
    return TrainResult(spec, inference, model, history, cfg, temperature, exits_model)


def scale_exit_temperatures(model: keras.Model, spec: NetSpec, data: Dataset) -> list[dict]:
    """Fits each early exit's own temperature on the validation split (an exit that stops a run
    reports its own uncertainty, so it is calibrated alone) and folds it into `model`."""
    exits = models.predict_heads(model, data.x_val)[spec.num_heads:]
    y = data.y_val
    found = []
    for j, probs in enumerate(exits):
        t = fit_temperature(probs[None], y)
        fold_temperature(model, t, [f"exit_{j}"])
        mean_after = tempered(probs[None], t)[0].astype(np.float32)
        found.append({"exit": f"exit_{j}", "value": t, "val_nll_before": metrics.nll(y, probs),
                      "val_nll_after": metrics.nll(y, mean_after), "val_accuracy": metrics.accuracy(y, probs)})
    return found


def _loss(y, probs, smoothing: float):
    """Per-sample cross-entropy of softmax outputs, label-smoothed by `smoothing`."""
    ce = keras.losses.sparse_categorical_crossentropy(y, probs)
    if not smoothing:
        return ce
    uniform = -tf.reduce_mean(tf.math.log(tf.clip_by_value(probs, 1e-7, 1.0)), axis=-1)
    return (1.0 - smoothing) * ce + smoothing * uniform


def scale_temperature(model: keras.Model, spec: NetSpec, cfg: TrainConfig, data: Dataset) -> dict:
    """Fits the ensemble's temperature on the validation split and folds it into `model`."""
    def val_heads():  # mc-dropout: the same K dropout samples before and after folding
        return models.ensemble_heads(spec, model, data.x_val, cfg.seed)

    before = val_heads()
    t = fit_temperature(before, data.y_val)
    fold_temperature(model, t, models.head_names(spec.num_heads))
    after = val_heads()
    y = data.y_val

    def summary(heads):
        mean = heads.mean(axis=0)
        return {"nll": metrics.nll(y, mean), "ece": metrics.ece(y, mean, n_bins=15), "accuracy": metrics.accuracy(y, mean)}

    return {"value": t, "fitted_on": f"validation split ({len(y)} images)", "before": summary(before),
            "after": summary(after), "expected_after": summary(tempered(before, t).astype(np.float32))}
