"""PAD, PADV2, CONCATENATION, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND: generated C against the
reference, byte for byte, on hand-built models (tests/fbmodels.py, many configurations per model)
and converter-made ones (tests/opmodels.py), including Keras' dilated SAME/VALID convolutions.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import opmodels
import pytest
from fbmodels import ModelBuilder
from hostcheck import check

from codegen import ops as op_registry
from codegen.emit import generate
from codegen.fold import fold
from codegen.ir import CodegenError
from codegen.reader import read_model


def _q(r) -> tuple[float, int]:
    return float(np.float32(10 ** r.uniform(-3, 0))), int(r.choice([0, -128, 127, int(r.integers(-128, 128))]))


def _run_all(models: list[bytes], **kw) -> list:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda t: check(t, **kw), models))


# --- PAD / PADV2 ------------------------------------------------------------------------------


def draw_pad(r) -> dict:
    rank = int(r.integers(1, 6))
    shape = [int(r.choice([1, 1, 2]))] + [int(r.integers(1, 6)) for _ in range(rank - 1)]
    pads = [[int(r.integers(0, 4)) for _ in range(2)] for _ in range(rank)]
    c = {"shape": shape, "pads": pads, "v2": bool(r.random() < 0.4), "value": int(r.integers(-128, 128))}
    c["scale"], c["zp"] = _q(r)
    return c


def pad_model(configs: list[dict]) -> bytes:
    m = ModelBuilder("qute pad test")
    for i, c in enumerate(configs):
        x = m.input(c["shape"], c["scale"], c["zp"], name=f"in{i}")
        out_shape = [d + a + b for d, (a, b) in zip(c["shape"], c["pads"])]
        y = m.output(m.tensor(out_shape, "int8", c["scale"], c["zp"], name=f"out{i}"))
        ins = [x, m.const(c["pads"], dtype="int32", name=f"pads{i}")]
        if c["v2"]:
            ins.append(m.const(c["value"], c["scale"], c["zp"], dtype="int8", name=f"value{i}"))
        m.op("PADV2" if c["v2"] else "PAD", ins, [y], version=2)
    return m.build()


def test_pad_hand_built_configurations():
    r = np.random.default_rng(2026)
    batches = [[draw_pad(r) for _ in range(12)] for _ in range(3)]
    batches[0][0] = {"shape": [1, 5, 6, 3], "pads": [[0, 0], [1, 2], [0, 3], [0, 0]], "v2": False, "value": 0,
                     "scale": 0.1, "zp": -7}  # Keras' ZeroPadding2D: TFLM's image-style path
    for b, res in zip(batches, _run_all([pad_model(b) for b in batches])):
        assert res.which == "tflm" and res.mismatches == 0, (res, b)


def test_pad_rejections():
    c = {"shape": [1, 3, 3, 2], "pads": [[0, 0], [1, -1], [0, 0], [0, 0]], "v2": False, "value": 0, "scale": 0.1, "zp": 0}
    m = ModelBuilder()
    x = m.input(c["shape"], 0.1, 0, name="x")
    y = m.output(m.tensor((1, 3, 3, 2), "int8", 0.1, 0, name="y"))
    m.op("PAD", [x, m.const(c["pads"], dtype="int32", name="p")], [y])
    with pytest.raises(CodegenError, match="negative paddings"):
        generate(read_model(m.build()))
    m = ModelBuilder()
    x = m.input((1, 2), 0.1, 0, name="x")
    y = m.output(m.tensor((1, 4), "int8", 0.1, 0, name="y"))
    m.op("PADV2", [x, m.const([[0, 0], [1, 1]], dtype="int32", name="p"), m.const(3, 0.2, 0, dtype="int8", name="v")],
         [y])
    with pytest.raises(CodegenError, match="quantized differently"):
        generate(read_model(m.build()))


# --- CONCATENATION ----------------------------------------------------------------------------


def draw_concat(r) -> dict:
    rank = int(r.integers(1, 5))
    base = [int(r.choice([1, 1, 2]))] + [int(r.integers(1, 5)) for _ in range(rank - 1)]
    axis = int(r.integers(-rank, rank))
    n = int(r.integers(1, 11))  # TFLM's kMaxInputNum is 10
    shapes = []
    for _ in range(n):
        s = list(base)
        s[axis] = int(r.integers(1, 5))
        shapes.append(s)
    q = _q(r)  # TFLM requires every input quantized like the output
    c = {"shapes": shapes, "axis": axis, "qs": [q] * n, "out_q": q,
         "const": [bool(r.random() < 0.15) and s[0] == 1 for s in shapes]}
    if all(c["const"]):
        c["const"][0] = False
    return c


def concat_model(configs: list[dict]) -> bytes:
    m = ModelBuilder("qute concat test")
    for i, c in enumerate(configs):
        r = np.random.default_rng(i)
        ins = []
        for j, (s, (sc, zp), const) in enumerate(zip(c["shapes"], c["qs"], c["const"])):
            if const:
                ins.append(m.const(r.integers(-128, 128, s), sc, zp, dtype="int8", name=f"c{i}_{j}"))
            else:
                ins.append(m.input(s, sc, zp, name=f"in{i}_{j}"))
        out_shape = list(c["shapes"][0])
        out_shape[c["axis"]] = sum(s[c["axis"]] for s in c["shapes"])
        y = m.output(m.tensor(out_shape, "int8", *c["out_q"], name=f"out{i}"))
        m.op("CONCATENATION", ins, [y], version=3, axis=c["axis"])
    return m.build()


def test_concat_hand_built_configurations():
    r = np.random.default_rng(99)
    batches = [[draw_concat(r) for _ in range(8)] for _ in range(3)]
    for b, res in zip(batches, _run_all([concat_model(b) for b in batches])):
        assert res.which == "tflm" and res.mismatches == 0, (res, b)


def test_concat_rejections():
    c = draw_concat(np.random.default_rng(3))
    c["shapes"] = c["shapes"][:1] * 2
    c["qs"] = [c["qs"][0], (c["qs"][0][0] * 1.5, c["qs"][0][1])]
    c["const"] = [False, False]
    with pytest.raises(CodegenError, match="requires them equal"):
        generate(read_model(concat_model([c])))
    m = ModelBuilder()
    a, b = m.input((1, 2), 0.1, 0, name="a"), m.input((1, 3), 0.1, 0, name="b")
    y = m.output(m.tensor((1, 5), "int8", 0.1, 0, name="y"))
    m.op("CONCATENATION", [a, b], [y], axis=1, fusedActivationFunction=1)
    with pytest.raises(CodegenError, match="fused activation"):
        generate(read_model(m.build()))


# --- SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND -------------------------------------------------------


def draw_space_batch(r, kind: str) -> dict:
    rank = int(r.choice([3, 4, 4]))
    spatial = rank - 2
    block = [int(r.integers(1, 4)) for _ in range(spatial)]
    c = {"kind": kind, "block": block, "batch": int(r.choice([1, 1, 2])), "depth": int(r.integers(1, 6))}
    c["scale"], c["zp"] = _q(r)
    if kind == "SPACE_TO_BATCH_ND":
        c["pads"], c["size"] = [], []
        for b in block:
            lo, size = int(r.integers(0, 3)), int(r.integers(1, 8))
            hi = (-(lo + size)) % b + b * int(r.integers(0, 2))
            c["pads"].append([lo, hi])
            c["size"].append(size)
    else:
        c["in_size"] = [int(r.integers(1, 5)) for _ in block]
        c["pads"] = [[int(r.integers(0, b)), 0] for b in block]
        c["pads"] = [[lo, int(r.integers(0, max(1, s * b - lo)))] for (lo, _), s, b in zip(c["pads"], c["in_size"], block)]
    return c


def space_batch_model(configs: list[dict]) -> bytes:
    m = ModelBuilder("qute space/batch test")
    for i, c in enumerate(configs):
        nb = int(np.prod(c["block"]))
        if c["kind"] == "SPACE_TO_BATCH_ND":
            in_shape = [c["batch"], *c["size"], c["depth"]]
            out_shape = [c["batch"] * nb, *[(s + sum(p)) // b for s, p, b in zip(c["size"], c["pads"], c["block"])],
                         c["depth"]]
        else:
            in_shape = [c["batch"] * nb, *c["in_size"], c["depth"]]
            out_shape = [c["batch"], *[s * b - sum(p) for s, p, b in zip(c["in_size"], c["pads"], c["block"])],
                         c["depth"]]
        x = m.input(in_shape, c["scale"], c["zp"], name=f"in{i}")
        y = m.output(m.tensor(out_shape, "int8", c["scale"], c["zp"], name=f"out{i}"))
        block = m.const(c["block"], dtype="int32", name=f"block{i}")
        m.op(c["kind"], [x, block, m.const(c["pads"], dtype="int32", name=f"pads{i}")], [y], version=2)
    return m.build()


def test_batch_to_space_hand_built_configurations():
    r = np.random.default_rng(4)
    batches = [[draw_space_batch(r, "BATCH_TO_SPACE_ND") for _ in range(10)] for _ in range(2)]
    for b, res in zip(batches, _run_all([space_batch_model(b) for b in batches])):
        assert res.which == "tflm" and res.mismatches == 0, (res, b)


def test_space_to_batch_hand_built_configurations():
    """Upstream TFLM never initialises SpaceToBatchParams.output_offset, the pad value: a fresh
    interpreter pads with 0 (zeroed persistent memory), a reused arena with whatever it held. The
    generated code pads with the output zero point, as LiteRT's kernel and TFLM forks that fixed the
    bug do (and as the float model means), so padded configurations are checked against LiteRT's
    reference kernel; without padding TFLM is deterministic and is the reference."""
    r = np.random.default_rng(5)
    padded = [draw_space_batch(r, "SPACE_TO_BATCH_ND") for _ in range(10)]
    unpadded = []
    for _ in range(10):
        c = draw_space_batch(r, "SPACE_TO_BATCH_ND")
        c["size"] = [s + lo + hi for s, (lo, hi) in zip(c["size"], c["pads"])]
        c["pads"] = [[0, 0] for _ in c["block"]]
        unpadded.append(c)
    with ThreadPoolExecutor(2) as pool:
        res_padded = pool.submit(check, space_batch_model(padded), engine="litert-ref")
        res_unpadded = pool.submit(check, space_batch_model(unpadded))
        res_padded, res_unpadded = res_padded.result(), res_unpadded.result()
    assert res_padded.mismatches == 0, (res_padded, padded)
    assert res_unpadded.which == "tflm" and res_unpadded.mismatches == 0, (res_unpadded, unpadded)


def test_layout_ops_under_sanitizers():
    r = np.random.default_rng(8)
    configs = [draw_pad(r) for _ in range(4)]
    assert check(pad_model(configs), sanitize=True, opt="-O0").mismatches == 0
    configs = [draw_concat(r) for _ in range(4)]
    assert check(concat_model(configs), sanitize=True, opt="-O0").mismatches == 0
    configs = [draw_space_batch(r, k) for k in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND") * 3]
    assert check(space_batch_model(configs), sanitize=True, opt="-O0", engine="litert-ref").mismatches == 0


# --- converter-made models --------------------------------------------------------------------


@pytest.mark.parametrize("builder, n", [("pad", 3), ("concatenation", 4)])
def test_converter_models(builder, n):
    models = opmodels.random_models(builder, n, seed=13)
    for m, res in zip(models, _run_all([m.tflite for m in models])):
        assert res.mismatches == 0, (m, res)


needs_conv = pytest.mark.skipif("CONV_2D" not in op_registry.REGISTRY or "DEPTHWISE_CONV_2D" not in op_registry.REGISTRY,
                                reason="CONV_2D/DEPTHWISE_CONV_2D lowerings not present yet")


@needs_conv
@pytest.mark.parametrize("builder", ["conv2d_dilated_same", "conv2d_dilated_valid", "depthwise_conv2d_dilated_same"])
def test_dilated_convolutions(builder):
    """Keras lowers a dilated conv with an unknown batch to SPACE_TO_BATCH_ND, CONV_2D,
    BATCH_TO_SPACE_ND; the converter stores batch 1 for the two inner tensors and fold()'s shape
    inference gives them the block's batch.

    TFLM is not deterministic on these models (uninitialised SPACE_TO_BATCH_ND pad value, wrong stored
    shapes), so the reference is LiteRT's, and the generated code follows LiteRT's kernels too (a
    standalone RELU6 requantizes, as LiteRT's does and TFLM's does not).
    """
    r = np.random.default_rng([17, len(builder)])
    models = [opmodels.BUILDERS[builder](r, activation=str(r.choice(["none", "relu", "relu6"]))) for _ in range(3)]
    for m in models:
        g = fold(read_model(m.tflite))
        s2b = next(op for op in g.ops if op.opcode == "SPACE_TO_BATCH_ND")
        block = g.tensor(s2b.inputs[1]).data
        assert g.tensor(s2b.outputs[0]).shape[0] == int(np.prod(block))
    for m, res in zip(models, _run_all([m.tflite for m in models])):
        assert res.mismatches == 0, (m, res)
