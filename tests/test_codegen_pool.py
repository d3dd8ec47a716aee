"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN: generated C against TFLite Micro, byte for byte.

Two sources of models:
- hand-built flatbuffers (tests/fbmodels.py), a dozen random configurations per model as independent
  ops: batch > 1, every fused activation, SAME/VALID with filters larger than the input, MEAN over
  any axes of 2-D to 5-D tensors with and without keep_dims, and MEAN with identical input and
  output quantization (TFLM's truncating integer path, which the converter rarely produces);
- converter-made models from tests/opmodels.py (Keras pooling layers, GlobalAveragePooling1D/2D).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import opmodels
import pytest
from fbmodels import ACTS, ModelBuilder, padding
from hostcheck import check

from codegen.emit import generate
from codegen.ir import CodegenError
from codegen.reader import read_model

ACTIVATIONS = ("NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _qparams(r) -> tuple[float, int]:
    return float(np.float32(10 ** r.uniform(-3, 0))), int(r.choice([0, -128, 127, int(r.integers(-128, 128))]))


def _out(padding_: str, size: int, k: int, s: int) -> int:
    return (size + s - 1) // s if padding_ == "SAME" else (size + s - k) // s


def draw_pool(r) -> dict:
    c = {"kind": str(r.choice(["AVERAGE_POOL_2D", "MAX_POOL_2D"])), "batch": int(r.choice([1, 1, 2, 3])),
         "h": int(r.integers(1, 11)), "w": int(r.integers(1, 11)), "c": int(r.integers(1, 9)),
         "filter": [int(r.integers(1, 6)), int(r.integers(1, 6))], "stride": [int(r.integers(1, 4)), int(r.integers(1, 4))],
         "padding": str(r.choice(["SAME", "VALID"])), "activation": str(r.choice(ACTIVATIONS))}
    if c["padding"] == "VALID":
        c["filter"] = [min(c["filter"][0], c["h"]), min(c["filter"][1], c["w"])]
    c["scale"], c["zp"] = _qparams(r)
    return c


def pool_model(configs: list[dict]) -> bytes:
    m = ModelBuilder("qute pool test")
    for i, c in enumerate(configs):
        oh = _out(c["padding"], c["h"], c["filter"][0], c["stride"][0])
        ow = _out(c["padding"], c["w"], c["filter"][1], c["stride"][1])
        x = m.input((c["batch"], c["h"], c["w"], c["c"]), c["scale"], c["zp"], name=f"in{i}")
        out_scale, out_zp = c.get("out_q", (c["scale"], c["zp"]))
        y = m.output(m.tensor((c["batch"], oh, ow, c["c"]), "int8", out_scale, out_zp, name=f"out{i}"))
        m.op(c["kind"], [x], [y], version=2, padding=padding(c["padding"]), strideH=c["stride"][0],
             strideW=c["stride"][1], filterHeight=c["filter"][0], filterWidth=c["filter"][1],
             fusedActivationFunction=ACTS[c["activation"]])
    return m.build()


def draw_mean(r) -> dict:
    rank = int(r.choice([2, 3, 4, 4, 4, 5]))
    shape = [1 if rank == 5 and r.random() < 0.3 else int(r.integers(1, 7)) for _ in range(rank - 1)]
    n_axes = int(r.integers(1, rank))
    axes = sorted(r.choice(np.arange(1, rank), n_axes, replace=False).tolist())
    # negative and repeated axes resolve like TFLM's ResolveAxis
    axes = [a - rank if r.random() < 0.3 else a for a in axes]
    if r.random() < 0.15:
        axes.append(axes[0])
    c = {"shape": [int(r.choice([1, 1, 2]))] + shape, "axes": [int(a) for a in axes],
         "keep_dims": bool(r.random() < 0.5), "same_quant": bool(r.random() < 0.35)}
    c["scale"], c["zp"] = _qparams(r)
    c["out_scale"], c["out_zp"] = (c["scale"], c["zp"]) if c["same_quant"] else _qparams(r)
    return c


def mean_model(configs: list[dict]) -> bytes:
    m = ModelBuilder("qute mean test")
    for i, c in enumerate(configs):
        rank = len(c["shape"])
        red = {a % rank for a in c["axes"]}
        out_shape = [1 if d in red else s for d, s in enumerate(c["shape"]) if c["keep_dims"] or d not in red]
        x = m.input(c["shape"], c["scale"], c["zp"], name=f"in{i}")
        axis = m.const(c["axes"], dtype="int32", name=f"axis{i}")
        y = m.output(m.tensor(out_shape, "int8", c["out_scale"], c["out_zp"], name=f"out{i}"))
        m.op("MEAN", [x, axis], [y], version=2, keepDims=c["keep_dims"])
    return m.build()


def _run_all(models: list[bytes], **kw) -> list:
    with ThreadPoolExecutor(2) as pool:  # the C builds dominate; gcc runs beside gcc
        return list(pool.map(lambda t: check(t, **kw), models))


def test_pool_hand_built_configurations():
    r = np.random.default_rng(20261128)
    batches = [[draw_pool(r) for _ in range(12)] for _ in range(4)]
    # filters larger than the input, SAME, strides past the input
    batches[0][:3] = [
        dict(batches[0][0], h=2, w=3, filter=[5, 5], stride=[3, 3], padding="SAME"),
        dict(batches[0][1], h=1, w=1, filter=[4, 2], stride=[1, 2], padding="SAME"),
        dict(batches[0][2], h=7, w=4, filter=[7, 4], stride=[2, 2], padding="VALID"),
    ]
    results = _run_all([pool_model(b) for b in batches])
    for b, res in zip(batches, results):
        assert res.which == "tflm"
        assert res.mismatches == 0, (res, b)


def test_mean_hand_built_configurations():
    r = np.random.default_rng(7)
    batches = [[draw_mean(r) for _ in range(12)] for _ in range(4)]
    # Keras' GlobalAveragePooling2D, both paths; all five axes of a 5-D tensor but the batch
    batches[0][:4] = [
        {"shape": [1, 7, 5, 16], "axes": [1, 2], "keep_dims": kd, "same_quant": sq, "scale": 0.02, "zp": -3,
         "out_scale": 0.02 if sq else 0.005, "out_zp": -3 if sq else 11}
        for kd, sq in ((True, True), (False, True), (True, False), (False, False))
    ]
    batches[1][0] = {"shape": [1, 2, 3, 4, 5], "axes": [1, 2, 3, 4], "keep_dims": False, "same_quant": False,
                     "scale": 0.05, "zp": 100, "out_scale": 0.0004, "out_zp": -128}
    results = _run_all([mean_model(b) for b in batches])
    for b, res in zip(batches, results):
        assert res.which == "tflm"
        assert res.mismatches == 0, (res, b)


def test_pool_and_mean_under_sanitizers():
    r = np.random.default_rng(3)
    res = check(pool_model([draw_pool(r) for _ in range(6)]), sanitize=True, opt="-O0")
    assert res.mismatches == 0, res
    res = check(mean_model([draw_mean(r) for _ in range(6)]), sanitize=True, opt="-O0")
    assert res.mismatches == 0, res


@pytest.mark.parametrize("builder, n", [("average_pool2d", 4), ("max_pool2d", 4), ("mean", 5)])
def test_converter_models(builder, n):
    models = opmodels.random_models(builder, n, seed=11)
    results = _run_all([m.tflite for m in models])
    for m, res in zip(models, results):
        assert res.mismatches == 0, (m, res)


def test_mean_with_the_output_quantized_like_the_input():
    """The converter's GlobalAveragePooling2D with its output scale and zero point patched to the
    input's: older TFLM took reference_ops::Mean (sum / count, truncated) then; the tested one
    requantizes as for any other scales, and so does the generated code."""
    import tflite

    m = opmodels.random_models("mean", 1, seed=5)[0]
    data = bytearray(m.tflite)
    model = tflite.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    qin = sg.Tensors(sg.Inputs(0)).Quantization()
    qout = sg.Tensors(sg.Outputs(0)).Quantization()
    qout.ScaleAsNumpy()[0] = qin.ScaleAsNumpy()[0]  # writes through into `data`
    qout.ZeroPointAsNumpy()[0] = qin.ZeroPointAsNumpy()[0]
    res = check(bytes(data), n=16)
    assert res.which == "tflm" and res.mismatches == 0, res


def test_pool_rejects_what_tflm_rejects():
    c = draw_pool(np.random.default_rng(1))
    bad = dict(c, out_q=(c["scale"] * 2, c["zp"]))
    with pytest.raises(CodegenError, match="quantization differ"):
        generate(read_model(pool_model([bad])))
    with pytest.raises(CodegenError, match="TANH is not supported"):
        generate(read_model(pool_model([dict(c, activation="TANH")])))


def test_mean_rejects_non_constant_axes_and_six_dimensions():
    m = ModelBuilder()
    x = m.input((1, 2, 2, 2, 2, 2), 0.1, 0, name="x")
    y = m.output(m.tensor((1, 2, 2, 2, 2), "int8", 0.1, 0, name="y"))
    m.op("MEAN", [x, m.const([1], dtype="int32", name="axis")], [y], keepDims=False)
    with pytest.raises(CodegenError, match="up to 5-D"):
        generate(read_model(m.build()))
    m = ModelBuilder()
    x = m.input((1, 4, 4, 2), 0.1, 0, name="x")
    axis = m.input((1,), 0.1, 0, name="axis")
    y = m.output(m.tensor((1, 4, 2), "int8", 0.1, 0, name="y"))
    m.op("MEAN", [x, axis], [y], keepDims=False)
    with pytest.raises(CodegenError, match="axis input must be a constant int32"):
        generate(read_model(m.build()))
