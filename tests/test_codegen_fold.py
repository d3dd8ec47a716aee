"""codegen.fold: compile-time shape arithmetic and constant ops, and the inferred batch that replaces
the one the converter stores for dilated convolutions (tests/test_dilated.py covers inference)."""

from __future__ import annotations

import copy

import numpy as np
import opmodels
import pytest
from fbmodels import ModelBuilder
from hostcheck import check

from codegen.fold import fold
from codegen.shapes import strided_slice
from codegen.ir import CodegenError
from codegen.reader import read_model
from qute import oracle

SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}


def draw_slice(r, rank: int) -> dict:
    """Random STRIDED_SLICE parameters over a `rank`-D input, the masks as the converter may set them."""
    n = int(r.integers(1, rank + 1))
    c = {"begin": [], "end": [], "strides": [], "begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0,
         "new_axis_mask": 0, "shrink_axis_mask": 0}
    ellipsis = int(r.integers(n)) if r.random() < 0.2 else -1
    for i in range(n):
        c["begin"].append(int(r.integers(-4, 5)))
        c["end"].append(int(r.integers(-4, 6)))
        c["strides"].append(int(r.choice([1, 1, 1, 2, 3, -1, -2])))
        bit = 1 << i
        if i == ellipsis:
            c["ellipsis_mask"] |= bit
            continue
        roll = r.random()
        if roll < 0.1:
            c["new_axis_mask"] |= bit
        elif roll < 0.3:
            c["shrink_axis_mask"] |= bit
            c["begin"][-1] = int(r.integers(-2, 2))
            c["end"][-1] = c["begin"][-1] + 1
            c["strides"][-1] = 1
        if r.random() < 0.3:
            c["begin_mask"] |= bit
        if r.random() < 0.3:
            c["end_mask"] |= bit
    return c


def _slice(x: np.ndarray, c: dict) -> np.ndarray:
    return strided_slice(x, c["begin"], c["end"], c["strides"], c["begin_mask"], c["end_mask"], c["ellipsis_mask"],
                         c["new_axis_mask"], c["shrink_axis_mask"])


def test_strided_slice_follows_tflite():
    """Many slices of one int32 tensor in one model, run by LiteRT's reference kernel."""
    r = np.random.default_rng(12)
    shape = (1, 4, 3, 5)
    x = np.arange(np.prod(shape), dtype=np.int32).reshape(shape) - 17
    configs = []
    while len(configs) < 60:
        c = draw_slice(r, len(shape))
        try:
            want = _slice(x, c)
        except CodegenError:
            continue  # an out-of-range shrink index: TFLite fails on it too
        if want.size:
            configs.append((c, want.shape))
    m = ModelBuilder("strided slice test")
    inp = m.input(shape, dtype="int32", name="x")
    for i, (c, out_shape) in enumerate(configs):
        n = len(c["begin"])
        y = m.output(m.tensor(out_shape, "int32", name=f"y{i}"))
        b, e, s = (m.const(c[k], dtype="int32", name=f"{k[0]}{i}") for k in ("begin", "end", "strides"))
        m.op("STRIDED_SLICE", [inp, b, e, s], [y], version=4,
             beginMask=c["begin_mask"], endMask=c["end_mask"], ellipsisMask=c["ellipsis_mask"],
             newAxisMask=c["new_axis_mask"], shrinkAxisMask=c["shrink_axis_mask"])
        assert n
    outs = oracle.run_litert_ref(m.build(), [x])
    for (c, _), got in zip(configs, outs):
        want = _slice(x, c)
        assert got.shape == want.shape and np.array_equal(got, want), c


def test_flatten_folds_and_matches_the_oracle():
    models = opmodels.random_models("flatten", 2, seed=21) + opmodels.random_models("reshape", 2, seed=21)
    for m in models:
        g = fold(read_model(m.tflite))
        assert not {op.opcode for op in g.ops} & SHAPE_OPS, [op.opcode for op in g.ops]
        for op in g.ops:
            if op.opcode == "RESHAPE" and len(op.inputs) > 1:
                assert g.tensor(op.inputs[1]).is_const
        res = check(m.tflite, n=8)
        assert res.which == "tflm" and res.mismatches == 0, (m, res)


def test_fold_copies_and_renumbers():
    m = opmodels.random_models("flatten", 1, seed=3)[0]
    g = read_model(m.tflite)
    before = copy.deepcopy(g)
    f = fold(g)
    assert [op.opcode for op in g.ops] == [op.opcode for op in before.ops]  # caller's graph untouched
    assert all((a.data is None) == (b.data is None) and a.shape == b.shape for a, b in zip(g.tensors, before.tensors))
    assert [op.index for op in g.ops] == [op.index for op in before.ops]
    assert [op.opcode for op in f.ops] == ["RESHAPE"]
    assert [op.index for op in f.ops] == list(range(len(f.ops)))
    shape_t = f.ops[0].inputs[1]
    assert f.tensor(shape_t).data.tolist() == list(f.tensor(f.outputs[0]).shape)
    assert fold(f).ops == f.ops  # idempotent


def test_fold_evaluates_shape_arithmetic_chains():
    """SHAPE -> STRIDED_SLICE (shrink) + PACK + CONCATENATION feeding a RESHAPE of an activation,
    followed by a MAX_POOL_2D: only the RESHAPE and the pool remain, and the C matches TFLM."""
    m = ModelBuilder("fold chain")

    def ints(name: str, values) -> int:
        return m.const(values, dtype="int32", name=name)

    x = m.input((1, 6, 4, 2), 0.05, -3, name="x")
    shp = m.tensor((4,), "int32", name="shape")
    m.op("SHAPE", [x], [shp], outType=2)
    h = m.tensor((), "int32", name="h")
    m.op("STRIDED_SLICE", [shp, ints("b", [1]), ints("e", [2]), ints("s", [1])], [h], shrinkAxisMask=1)
    rest = m.tensor((2,), "int32", name="rest")
    m.op("STRIDED_SLICE", [shp, ints("b2", [2]), ints("e2", [0]), ints("s2", [1])], [rest], endMask=1)
    one = m.tensor((1,), "int32", name="one")
    m.op("PACK", [ints("k1", 1)], [one], valuesCount=1, axis=0)
    hh = m.tensor((1,), "int32", name="hh")
    m.op("PACK", [h], [hh], valuesCount=1, axis=0)
    target = m.tensor((4,), "int32", name="target")
    m.op("CONCATENATION", [one, hh, rest], [target], axis=0)
    y = m.tensor((1, 6, 4, 2), "int8", 0.05, -3, name="y")
    m.op("RESHAPE", [x, target], [y])
    z = m.output(m.tensor((1, 3, 2, 2), "int8", 0.05, -3, name="z"))
    m.op("MAX_POOL_2D", [y], [z], padding=1, strideH=2, strideW=2, filterHeight=2, filterWidth=2)
    data = m.build()
    g = fold(read_model(data))
    assert [op.opcode for op in g.ops] == ["RESHAPE", "MAX_POOL_2D"]
    assert g.tensor(g.ops[0].inputs[1]).data.tolist() == [1, 6, 4, 2]
    res = check(data, n=8)
    assert res.which == "tflm" and res.mismatches == 0, res


def test_fold_keeps_ops_that_produce_graph_outputs():
    m = ModelBuilder()
    c = m.tensor((2, 3), "int8", 0.1, 0, data=np.arange(6), name="c")
    y = m.output(m.tensor((3, 2), "int8", 0.1, 0, name="y"))
    m.op("RESHAPE", [c, m.const([3, 2], dtype="int32", name="s")], [y])
    g = fold(read_model(m.build()))
    assert [op.opcode for op in g.ops] == ["RESHAPE"] and not g.tensor(g.outputs[0]).is_const


@pytest.mark.parametrize("builder", ["conv2d_dilated_same", "depthwise_conv2d_dilated_same"])
def test_fold_repairs_the_batch_of_dilated_convolutions(builder):
    m = opmodels.random_models(builder, 1, seed=2)[0]
    raw = read_model(m.tflite)
    g = fold(raw)
    s2b, conv, b2s = g.ops[:3]
    assert (s2b.opcode, b2s.opcode) == ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
    nb = int(np.prod(g.tensor(s2b.inputs[1]).data))
    assert raw.tensor(s2b.outputs[0]).shape[0] == 1  # what the converter stores
    assert g.tensor(s2b.outputs[0]).shape[0] == nb
    assert g.tensor(conv.outputs[0]).shape[0] == nb
    assert g.tensor(b2s.outputs[0]).shape == raw.tensor(b2s.outputs[0]).shape
