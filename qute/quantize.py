"""Full-integer int8 quantization of a run's inference model, checked on TensorFlow Lite Micro.

``qute quantize RUN_DIR`` writes two files next to the run:

    RUN_DIR/
      model.int8.tflite   int8 input, int16 softmax outputs (one per head), int8 per-channel weights
      quantization.json   input/output quantization, ops, and float-vs-int8 test-set metrics

Conversion
    The Keras model is exported with :class:`keras.export.ExportArchive` as a SavedModel whose
    ``serving_default`` signature takes one float32 tensor named ``input`` of shape
    ``(1, H, W, C)`` (batch 1, what a microcontroller runs) and returns a *dict*
    ``{"head_0": ..., "head_{K-1}": ...}``. ``tf.lite.TFLiteConverter.from_saved_model`` then
    converts it with ``Optimize.DEFAULT``, ``TFLITE_BUILTINS_INT8`` only, int8 inference input
    and output types, and a representative dataset of ``samples`` training images drawn without
    replacement by a seeded generator (:func:`calibration_indices`). The converter picks the input
    scale and zero point from the min/max of those images and the weights' per-channel scales from
    the weights themselves. (``from_keras_model`` does the same export internally but names the
    outputs ``output_0..``, by list position, and a plain ``tf.function`` + ``from_concrete_functions``
    leaves Keras 3 variables as READ_VARIABLE ops that fail calibration.)

How outputs are matched to heads
    The converter does not keep the outputs in head order (a K = 3 model came out as
    head_1, head_2, head_0), and the output tensors are named ``StatefulPartitionedCall:j``, not
    after the heads. The head names live in the flatbuffer's SignatureDef: ``serving_default``
    maps each output name ``head_k`` to a tensor index. :func:`output_heads` reads that
    SignatureDef with the FlatBuffers schema binding that ships with ``ai_edge_litert``
    (``ai_edge_litert.schema_py_generated``, TFLite's generated Python schema) and returns, for
    head k, the position of its tensor in the subgraph's output list -- the index that
    ``get_output(i)`` of TFLM (and ``TfLiteMicroInterpreter::output(i)`` on the board) takes.
    TFLM itself ignores SignatureDefs, so whoever builds firmware must use this mapping.

16-bit heads
    The converter gives every softmax an int8 output (scale 1/256): a probability under 1/512
    becomes exactly 0, and a true class the model merely doubts then costs NLL's 27.6-nat floor
    (MNIST base, seed 0: int8 NLL 0.017 above float, almost all of it from such images). TFLite
    Micro's SOFTMAX also writes int16 (scale 1/65536, zero point -32768) from the same int8
    logits, so :func:`widen_heads` rewrites each head's softmax output tensor to that: the same
    ops and weights, eight more bits of probability (that model: 0.0003 above float).
    The generated C (``qute_softmax_s8_s16``) and the device's uncertainty paths take int16 heads.

Input quantization
    Float model input ``x`` (model-input space, see ``normalisation.json``) becomes
    ``q = clamp(round(x / scale) + zero_point, -128, 127)``, the division done in float32 and
    ``round`` rounding halves away from zero: that is TFLite's QUANTIZE reference kernel
    (``AffineQuantize``: ``TfLiteRound(val / static_cast<float>(scale))``, ``TfLiteRound`` being
    ``std::round``). ``np.round`` rounds halves to even and would differ on exact ties
    (digits' raw value 8 lands on 127.5 with scale 1/255), so :func:`quantize` does not use it.
    Outputs are dequantized as float32 ``(q - zero_point) * scale``.

The report
    ``stages`` holds one entry per way of running the model on the test set: ``float`` (the Keras
    model) and ``int8_tflm`` (the int8 model on the TFLM Python interpreter, TFLM's reference
    kernels, one sample per invoke). A later stage (generated C) adds its own entry with the
    same fields via :func:`stage_report`. Each stage has accuracy, NLL and ECE (15 bins) of the
    ensemble mean of its heads (:func:`qute.uncertainty.summarize`) and per-head accuracy; a
    non-reference stage also has top-1 agreement of the ensemble and of each head with the float
    stage, and the test indices whose ensemble prediction flips. A head can still output an exact 0
    for the true class (below 1/131072); NLL clips it at 1e-12 as :func:`qute.metrics.nll` does.

mc-dropout runs export a single deterministic head (dropout layers are identities at inference
and the converter removes them), so both stages there are that one head.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import flatbuffers
import numpy as np

from codegen.report import tflm_arena
from qute import __version__, metrics, uncertainty
from qute.data import load_dataset
from qute.errors import QuteError, RunFailure
from qute.int8_model import (TFLITE_FILE, QuantParams, dequantize, head_names, input_params, op_counts, output_heads,
                             output_params, quantize, read_graph, signature_outputs, tensor_params, weight_granularity)
from qute.run import write_atomic

REPORT_FILE = "quantization.json"
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "input"
DEFAULT_SAMPLES = 500
CALIBRATION_SEED = 0
ECE_BINS = 15

__all__ = [
    "DEFAULT_SAMPLES",
    "REPORT_FILE",
    "TFLITE_FILE",
    "QuantParams",
    "QuantizeResult",
    "calibration_indices",
    "check_samples",
    "convert",
    "dequantize",
    "format_table",
    "head_names",
    "input_params",
    "int8_head_probs",
    "int8_heads",
    "op_counts",
    "output_heads",
    "output_params",
    "quantize",
    "quantize_run",
    "run_tflm",
    "signature_outputs",
    "stage_report",
    "tflm_arena_bytes",
    "weight_granularity",
    "write_result",
]


@dataclass
class QuantizeResult:
    tflite: bytes
    report: dict
    # test-set arrays behind the report, for callers that compare further stages
    y_test: np.ndarray | None = field(default=None, repr=False)
    float_heads: np.ndarray | None = field(default=None, repr=False)  # (K, N, C) float32
    int8_heads: np.ndarray | None = field(default=None, repr=False)  # (K, N, C) float32, dequantized


def check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise QuteError(f"the number of calibration samples (--samples) must be a positive integer, got {samples!r}")
    return int(samples)


# --------------------------------------------------------------------------- quantization maths


def calibration_indices(n_train: int, samples: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Which training images form the representative dataset: ``min(samples, n_train)`` of them,
    drawn without replacement by a seeded generator, in draw order."""
    samples = check_samples(samples)
    if n_train < 1:
        raise QuteError("the training split is empty; there is nothing to calibrate the quantization with")
    rng = np.random.default_rng(seed)
    return rng.choice(n_train, size=min(samples, n_train), replace=False)


# --------------------------------------------------------------------------- conversion


@contextmanager
def _captured_fd(fd: int = 2):
    """Sends what C/C++ code writes to file descriptor `fd` into a buffer (``box[0]`` afterwards)."""
    box = [""]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield box
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            box[0] = tmp.read().decode("utf-8", "replace")


def convert(model, heads: list[str], calibration: np.ndarray) -> bytes:
    """Converts a Keras model whose outputs are `heads` (in that order) to a full-int8 flatbuffer.

    `calibration` is the representative dataset, float32 (N, H, W, C) in model-input space.
    """
    import keras
    import tensorflow as tf

    calibration = np.asarray(calibration, dtype=np.float32)
    spec = tf.TensorSpec((1, *calibration.shape[1:]), tf.float32, name=INPUT_NAME)

    def serve(x):
        out = model(x, training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        if len(out) != len(heads):
            raise QuteError(f"the model has {len(out)} output(s) but the run names {len(heads)} head(s); re-run qute train")
        return dict(zip(heads, out))

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    # The SavedModel loader and the converter print progress lines straight to file descriptor 2;
    # they are kept, and shown only when the conversion fails (next to its traceback).
    chatter = [""]
    try:
        with tempfile.TemporaryDirectory(prefix="qute-savedmodel-") as folder, warnings.catch_warnings(), _captured_fd(2) as chatter:
            # "Statistics for quantized inputs were expected": harmless, the calibration sets them
            warnings.simplefilter("ignore", UserWarning)
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint(SIGNATURE_KEY, serve, [spec])
            archive.write_out(folder, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE_KEY])
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            data = converter.convert()
    except QuteError:
        raise
    except Exception:
        sys.stderr.write(chatter[0])
        raise
    return bytes(data)


def widen_heads(tflite_bytes: bytes, heads: list[str]) -> bytes:
    """The model with each head's int8 softmax output (scale 1/256, zero point -128) made int16
    (scale 1/65536, zero point -32768), as TFLite Micro's SOFTMAX allows for an int8 input.

    Only heads written by a SOFTMAX and read by no other op change; anything else stays as it is
    (a head made by another op keeps its int8 output). Every other tensor, op, buffer and the
    signature keep their contents (the flatbuffer is packed again, so its bytes move).
    """
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    sg = model.subgraphs[0]
    names = signature_outputs(tflite_bytes)
    producer = {t: op for op in sg.operators for t in (op.outputs if op.outputs is not None else [])}
    read = {t for op in sg.operators for t in (op.inputs if op.inputs is not None else [])}
    changed = 0
    for name in heads:
        t = names.get(name)
        op = producer.get(t)
        if op is None or t in read:
            continue
        code = model.operatorCodes[op.opcodeIndex]
        tensor = sg.tensors[t]
        q = tensor.quantization
        if (max(code.builtinCode, code.deprecatedBuiltinCode) != fb.BuiltinOperator.SOFTMAX
                or tensor.type != fb.TensorType.INT8 or q is None or list(q.zeroPoint) != [-128]
                or not np.isclose(list(q.scale), [1 / 256]).all()):
            continue
        tensor.type = fb.TensorType.INT16
        q.scale, q.zeroPoint = [1.0 / 65536], [-32768]
        changed += 1
    if not changed:
        return bytes(tflite_bytes)
    builder = flatbuffers.Builder(len(tflite_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --------------------------------------------------------------------------- running on TFLM


def run_tflm(tflite_bytes: bytes, x_int8: np.ndarray) -> list[np.ndarray]:
    """Runs the int8 model on TFLM's reference kernels, one sample per invoke.

    `x_int8` is (N, *input shape without batch) int8; returns one (N, *output shape without
    batch) int8 array per flatbuffer output, in flatbuffer output order (see :func:`output_heads`).
    """
    from qute import oracle

    x_int8 = np.asarray(x_int8)
    if x_int8.dtype != np.int8:
        raise QuteError(f"run_tflm needs int8 inputs (use quantize() first), got {x_int8.dtype}")
    shape = read_graph(tflite_bytes).tensor(read_graph(tflite_bytes).inputs[0]).shape
    if tuple(x_int8.shape[1:]) != tuple(shape[1:]):
        raise QuteError(f"inputs of shape {x_int8.shape[1:]} do not fit the model input {shape}")
    return oracle.run_tflm(bytes(tflite_bytes), [x_int8])


def int8_head_probs(tflite_bytes: bytes, x: np.ndarray, num_heads: int | None = None) -> np.ndarray:
    """Float model inputs -> (K, N, C) float32 dequantized head outputs of the int8 model on TFLM."""
    heads, params = int8_heads(tflite_bytes, x, num_heads)
    return np.stack([dequantize(h, p) for h, p in zip(heads, params)]).astype(np.float32)


def int8_heads(tflite_bytes: bytes, x: np.ndarray, num_heads: int | None = None) -> tuple[np.ndarray, list[QuantParams]]:
    """Float model inputs -> the raw (K, N, C) head outputs of the int8 model on TFLM (int16 for
    widened softmax heads, see :func:`widen_heads`), and each head's scale and zero point (what
    the integer-only uncertainty path takes)."""
    outs = run_tflm(tflite_bytes, quantize(x, input_params(tflite_bytes)))
    order = output_heads(tflite_bytes, num_heads)
    return np.stack([np.asarray(outs[i]) for i in order]), output_params(tflite_bytes, num_heads)


def heads_from_outputs(outs: list[np.ndarray], order: list[int], params: list[QuantParams]) -> np.ndarray:
    """The int8 model's raw outputs -> (K, N, C) float32 head probabilities, heads in name order."""
    return np.stack([dequantize(outs[i], p) for i, p in zip(order, params)]).astype(np.float32)


def _c_stage(tflite, x_q, tflm_outs, order, params, y, float_heads) -> dict:
    """The generated C on the test images: the int8 stage's metrics, and its bytes against TFLM's."""
    from qute.verify import run_c

    try:
        ours = run_c(tflite, [x_q])
    except (QuteError, RunFailure) as e:  # the report says what went wrong with the C; the rest stands
        return {"error": str(e).splitlines()[0]}
    report = stage_report(y, heads_from_outputs(ours, order, params), reference=float_heads)
    as_bytes = lambda a: np.ascontiguousarray(a).view(np.uint8)  # noqa: E731  (int16 heads: two bytes a value)
    report["bytes_differing_from_int8_tflm"] = int(sum(np.sum(as_bytes(a) != as_bytes(b)) for a, b in zip(ours, tflm_outs)))
    report["bytes_compared"] = int(sum(a.nbytes for a in tflm_outs))
    return report


def tflm_arena_bytes(tflite_bytes: bytes) -> int | None:
    """TFLM's recorded arena use on this (64-bit) host; None if not reported.

    A 32-bit Cortex-M build needs somewhat less (its pointers and structs are smaller).
    """
    return tflm_arena(bytes(tflite_bytes)).get("total")


def stage_report(y: np.ndarray, heads: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Metrics of one stage's (K, N, C) head probabilities on labels `y`.

    With `reference` (the float stage's heads) it adds top-1 agreement of the ensemble and of
    each head, and the sample indices whose ensemble prediction differs from the reference's.
    """
    scores = uncertainty.summarize(heads)
    probs = scores.mean_probs
    out = {
        "accuracy": metrics.accuracy(y, probs),
        "nll": metrics.nll(y, probs),
        "ece": metrics.ece(y, probs, n_bins=ECE_BINS),
        "head_accuracy": [metrics.accuracy(y, h) for h in heads],
        "mean_confidence": float(np.mean(scores.confidence)),
        "mean_mutual_information": float(np.mean(scores.mutual_information)),
    }
    if reference is not None:
        ref = uncertainty.summarize(reference)
        flips = np.flatnonzero(ref.predicted != scores.predicted)
        out["agreement"] = float(1.0 - len(flips) / len(y))
        out["head_agreement"] = [
            float(np.mean(np.argmax(r, axis=1) == np.argmax(h, axis=1))) for r, h in zip(reference, heads)
        ]
        out["flips"] = [int(i) for i in flips]
        out["max_abs_prob_error"] = float(np.max(np.abs(heads.astype(np.float64) - reference)))
        out["mean_abs_prob_error"] = float(np.mean(np.abs(heads.astype(np.float64) - reference)))
    return out


def quantize_run(
    run,
    samples: int = DEFAULT_SAMPLES,
    data_dir=None,
    *,
    model=None,
    dataset=None,
    seed: int = CALIBRATION_SEED,
    progress: Callable[[str], None] | None = None,
    exits: bool = False,
) -> QuantizeResult:
    """Quantizes `run` (a :class:`qute.run.Run`) and compares float and int8 on its test set.

    `model` and `dataset` default to the run's model and its training-time data split. With
    `exits` the model is the run's graph with its early exits kept (outputs exit_0 .. exit_{K-1}
    after the heads, 16-bit softmax outputs as the heads'), and the report has each exit's row.
    Nothing is written; see :func:`write_result`.
    """
    samples = check_samples(samples)
    if exits:
        run.check_exits()
    step = progress or (lambda label: None)
    if dataset is None:
        step("loading data")
        t = run.train
        dataset = load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    if model is None:
        model = run.load_model(exits=exits)
    from qute.models import exit_names, predict_heads

    heads = head_names(run.spec.num_heads)
    exit_outputs = exit_names(run.spec.k) if exits else []
    idx = calibration_indices(len(dataset.x_train), samples, seed)
    calibration = dataset.x_train[idx]
    step(f"converting with {len(idx)} calibration images")
    tflite = widen_heads(convert(model, heads + exit_outputs, calibration), heads + exit_outputs)

    step(f"running {len(dataset.x_test):,} test images on TFLM")
    y = dataset.y_test
    float_all = predict_heads(model, dataset.x_test)
    float_heads, float_exits = float_all[: len(heads)], float_all[len(heads):]
    in_p = input_params(tflite)
    out_p = output_params(tflite, len(heads))
    order = output_heads(tflite, len(heads))
    x_q = quantize(dataset.x_test, in_p)
    tflm_outs = run_tflm(tflite, x_q)
    int8_heads = heads_from_outputs(tflm_outs, order, out_p)
    step("running the generated C on the test images")
    c_stage = _c_stage(tflite, x_q, tflm_outs, order, out_p, y, float_heads)
    g = read_graph(tflite)

    report = {
        "qute_version": __version__,
        "model_file": TFLITE_FILE,
        "tflite_bytes": len(tflite),
        "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
        "method": run.spec.method,
        "arch": run.spec.arch,
        "dataset": dataset.name,
        "heads": heads,
        "calibration": {
            "samples": int(len(idx)),
            "requested": samples,
            "seed": seed,
            "split": "train",
            "min": float(calibration.min()),
            "max": float(calibration.max()),
        },
        "input": {
            "name": INPUT_NAME,
            "shape": list(g.tensor(g.inputs[0]).shape),
            "dtype": "int8",
            **in_p.to_dict(),
            "float_range": list(in_p.float_range()),
            "rounding": "round(x / scale) half away from zero (float32 division), + zero_point, clamp to [-128, 127]",
            # test input values the int8 range cannot hold (quantization error above half a step)
            "test_clipped_fraction": float(np.mean(np.abs(dequantize(x_q, in_p) - dataset.x_test) > 0.5001 * in_p.scale)),
        },
        "outputs": [
            {"head": h, "output_index": i, "tensor": g.tensor(g.outputs[i]).name, "dtype": g.tensor(g.outputs[i]).dtype,
             **p.to_dict()}
            for h, i, p in zip(heads, order, out_p)
        ],
        "ops": op_counts(tflite),
        "weights": weight_granularity(tflite),
        "tflm_arena_bytes_host": tflm_arena_bytes(tflite),
        "test_samples": int(len(y)),
        "ece_bins": ECE_BINS,
        "stages": {
            "float": stage_report(y, float_heads),
            "int8_tflm": stage_report(y, int8_heads, reference=float_heads),
            "c": c_stage,
        },
    }
    if exits:
        names = signature_outputs(tflite)
        report["exits"] = []
        for j, name in enumerate(exit_outputs):
            i = g.outputs.index(names[name])
            p = tensor_params(g.tensor(g.outputs[i]))
            int8_exit = dequantize(tflm_outs[i], p)[None]
            report["exits"].append({
                "exit": name, "output_index": i, "dtype": g.tensor(g.outputs[i]).dtype, **p.to_dict(),
                "float": stage_report(y, float_exits[j : j + 1]),
                "int8_tflm": stage_report(y, int8_exit, reference=float_exits[j : j + 1]),
            })
    if run.spec.method == "mc-dropout":
        report["note"] = "mc-dropout: both stages are the single deterministic head (dropout off; the int8 graph has none)"
    return QuantizeResult(tflite, report, y, float_heads, int8_heads)


def write_result(run_dir, result: QuantizeResult) -> list[Path]:
    """Writes ``model.int8.tflite`` and ``quantization.json`` (the report last) into `run_dir`."""
    run_dir = Path(run_dir)
    model_path, report_path = run_dir / TFLITE_FILE, run_dir / REPORT_FILE
    report = json.dumps(result.report, indent=2) + "\n"
    write_atomic({model_path: result.tflite, report_path: report.encode()})
    return [model_path, report_path]


_ROWS = (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("agreement", "agreement"))


def format_table(report: dict) -> str:
    """The stages side by side (float first), then per-head rows, flips and quantization params."""
    stages = {n: v for n, v in report["stages"].items() if "error" not in v}
    names = list(stages)
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"{'':<18}" + "".join(f"{n:>{width}}" for n in names)]

    def row(label, values):
        lines.append(f"{label:<18}" + "".join(f"{v:>{width}}" for v in values))

    for key, label in _ROWS:
        row(label, [f"{stages[n][key]:.4f}" if key in stages[n] else "-" for n in names])
    for k, head in enumerate(report["heads"]):
        row(f"{head} accuracy", [f"{stages[n]['head_accuracy'][k]:.4f}" for n in names])
        row(f"{head} agreement", [f"{stages[n]['head_agreement'][k]:.4f}" if "head_agreement" in stages[n] else "-" for n in names])
    for e in report.get("exits", []):
        row(f"{e['exit']} accuracy", [f"{e[n]['accuracy']:.4f}" if n in e else "-" for n in names])
        row(f"{e['exit']} NLL", [f"{e[n]['nll']:.4f}" if n in e else "-" for n in names])
    n_test = report["test_samples"]
    for n in names:
        if "flips" in stages[n]:
            flips = stages[n]["flips"]
            shown = ", ".join(map(str, flips[:10])) + (", ..." if len(flips) > 10 else "")
            lines.append(f"\n{n}: {len(flips)} of {n_test:,} ensemble predictions differ from float" + (f" (test indices {shown})" if flips else ""))
    for n, v in report["stages"].items():
        if "error" in v:
            lines.append(f"{n}: not available ({v['error']})")
        elif "bytes_differing_from_int8_tflm" in v:
            lines.append(f"{n}: {v['bytes_differing_from_int8_tflm']:,} of {v['bytes_compared']:,} output bytes differ from TFLite Micro")
    inp = report["input"]
    lines.append(
        f"input int8: scale {inp['scale']:.6g}, zero point {inp['zero_point']} "
        f"(float range [{inp['float_range'][0]:.4g}, {inp['float_range'][1]:.4g}])"
    )
    lines.append(
        "outputs: " + "; ".join(f"{o['head']} = output {o['output_index']} (scale {o['scale']:.6g}, zp {o['zero_point']})" for o in report["outputs"])
    )
    return "\n".join(lines)
