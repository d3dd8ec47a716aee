"""Dilated convolutions and shape inference (issue 9): shapes come from the graph inputs and the ops'
parameters (codegen/shapes.py, run by codegen.fold), never from what the file stores.

- Converter-made models (tests/opmodels.py): Conv2D, DepthwiseConv2D, Conv1D and DepthwiseConv1D with
  dilation 2 and 3, SAME and VALID padding, odd sizes, fused activations, an unknown batch (a plain
  Keras model: SPACE_TO_BATCH_ND -> conv -> BATCH_TO_SPACE_ND with wrong stored shapes, so the
  reference is LiteRT's) and a fixed batch (Input(batch_size=1): one natively dilated conv, TFLM).
  Each must give 0 differing bytes against qute.oracle.reference, and the generator must have picked
  the same reference as the oracle.
- Hand-built flatbuffers (tests/fbmodels.py): wrong stored shapes are reported and overridden, the
  inferred shapes agree with LiteRT's own Prepare steps op by op, a SHAPE op sees the inferred
  shape, and an impossible op is one CodegenError naming it. On a model TFLM cannot run, the ops
  whose LiteRT and TFLM kernels differ (RELU6, RELU, FULLY_CONNECTED) follow LiteRT's.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import opmodels as om
import pytest
from cliutil import qute
from fbmodels import ModelBuilder, fb, merge, padding
from hostcheck import check

from codegen.emit import generate
from codegen.fold import fold
from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from codegen.report import build_report
from qute import oracle
from qute.verify import model_inputs, verify

N_INPUTS = 20


def _c2(name, shape, kernel, dilation, pad, act, bias, batch, filters=None, mult=None):
    """A 2-D case of the conv2d builder (which makes DepthwiseConv2D when given a depth multiplier)."""
    kind = dict(filters=filters) if mult is None else dict(depth_multiplier=mult)
    return name, "conv2d", dict(input_shape=shape, kernel=kernel, dilation=dilation, strides=[1, 1], padding=pad,
                                activation=act, use_bias=bias, batch=batch, **kind)


def _c1(name, shape, kernel, dilation, pad, act, bias, batch, filters=None, mult=None):
    """A 1-D case: Conv1D, or DepthwiseConv1D when given a depth multiplier."""
    kind = dict(filters=filters) if mult is None else dict(depthwise=True, depth_multiplier=mult)
    return name, "conv1d", dict(input_shape=shape, kernel=kernel, dilation=dilation, strides=1, padding=pad,
                                activation=act, use_bias=bias, batch=batch, **kind)


# (id, builder, overrides); batch None is what a plain Keras model gives, 1 a fixed batch
CASES = [
    # the issue's layer: Conv2D(7, 3, dilation_rate=2, padding="same", activation="relu6") on 13x11x3
    _c2("issue-bias", [13, 11, 3], [3, 3], [2, 2], "same", "relu6", True, None, filters=7),
    _c2("issue-nobias", [13, 11, 3], [3, 3], [2, 2], "same", "relu6", False, None, filters=7),
    _c2("conv2d-d3-valid", [11, 9, 2], [3, 3], [3, 3], "valid", "relu", True, None, filters=5),
    _c2("conv2d-d2x3-same", [9, 13, 4], [3, 2], [2, 3], "same", "none", True, None, filters=3),
    _c2("conv2d-d2-same-b1", [13, 11, 3], [3, 3], [2, 2], "same", "relu6", True, 1, filters=7),
    _c2("conv2d-d3-valid-b1", [15, 9, 3], [3, 2], [3, 3], "valid", "relu6", False, 1, filters=4),
    _c2("dw-d2-same", [13, 11, 3], [3, 3], [2, 2], "same", "relu6", False, None, mult=2),
    _c2("dw-d3-valid", [11, 9, 4], [3, 3], [3, 3], "valid", "relu", True, None, mult=1),
    _c2("dw-d3-same-b1", [13, 11, 3], [3, 3], [3, 3], "same", "relu6", True, 1, mult=1),
    _c2("dw-d2-valid-b1", [9, 13, 2], [2, 3], [2, 2], "valid", "none", True, 1, mult=2),
    _c1("conv1d-d2-same", [17, 3], 3, 2, "same", "relu6", False, None, filters=5),
    _c1("conv1d-d3-valid", [19, 2], 3, 3, "valid", "relu", True, None, filters=4),
    _c1("conv1d-d2-same-b1", [17, 3], 3, 2, "same", "relu6", True, 1, filters=5),
    _c1("dw1d-d2-same", [17, 3], 3, 2, "same", "relu6", False, None, mult=1),
    _c1("dw1d-d3-valid-b1", [21, 4], 3, 3, "valid", "none", True, 1, mult=2),
]


@pytest.fixture(scope="module")
def converted() -> dict[str, om.OpModel]:
    """Each case converted once (cached on disk by tests/opmodels.py across runs)."""
    models = {}
    for k, (name, builder, overrides) in enumerate(CASES):
        models[name] = om.BUILDERS[builder](9000 + k, **overrides)
    return models


@pytest.fixture(scope="module")
def verified(converted) -> dict[str, tuple[dict, object]]:
    """Case -> (its output's entry of VerifyResult.per_output, the VerifyResult of its group). The cases go side by
    side into two models (one C build and one oracle run each): the unknown-batch ones, whose
    reference is LiteRT's, and the fixed-batch ones, whose reference is TFLM."""
    groups = [[n for n, m in converted.items() if m.config["batch"] is None],
              [n for n, m in converted.items() if m.config["batch"] is not None]]

    def one(names):
        data = merge([converted[n].tflite for n in names])
        return names, verify(data, model_inputs(data, N_INPUTS, seed=5))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, groups))
    # every op model has one output, and merge() keeps them in order
    return {name: (p, res) for names, res in results for name, p in zip(names, res.per_output)}


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_dilated_conv_is_bit_exact_with_the_reference(name, converted, verified):
    m = converted[name]
    per_output, res = verified[name]
    ops = om.op_codes(m.tflite)
    graph = fold(read_model(m.tflite))
    if m.config["batch"] is None:
        # the converter's lowering, with its wrong stored shapes: TFLM cannot run it
        assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} <= set(ops), ops
        assert graph.shape_notes and oracle.tflm_shape_problems(m.tflite) == graph.shape_notes, ops
        assert res.reference == "litert-ref" and res.shape_notes, res.summary()
        assert "reference: LiteRT reference kernels (TFLite Micro runs on the model's stored shapes" in res.summary()
    else:
        assert "SPACE_TO_BATCH_ND" not in ops, ops
        assert not graph.shape_notes and not oracle.tflm_shape_problems(m.tflite)
        assert res.reference == "tflm" and not res.shape_notes, res.summary()
        assert "reference: TFLite Micro reference kernels" in res.summary()
    # the generator follows the kernels the oracle takes as reference, for the model alone too
    assert generate(read_model(m.tflite)).reference == graph.reference == res.reference
    assert per_output["bytes"] == N_INPUTS * int(np.prod(oracle.model_io(m.tflite)[1][0][0][1:]))
    assert per_output["mismatches"] == 0, (m, per_output, res.summary())


def test_sanitized_build_is_clean_on_the_issue_model(converted):
    m = converted["issue-nobias"]
    res = verify(m.tflite, model_inputs(m.tflite, 3, seed=1), sanitize=True)
    assert res.sanitized and res.mismatches == 0, res.summary()


# ---------------------------------------------------------------------------------------------
# Hand-built models


def _wrong_conv_model() -> bytes:
    """CONV_2D 3x3 VALID on 1x6x5x2 (really 1x4x3x3) and a RELU6 after it, both outputs stored as
    1x5x4x3; the RELU6 requantizes to another scale, where TFLM's and LiteRT's kernels differ."""
    r = np.random.default_rng(3)
    m = ModelBuilder("wrong stored shape")
    x = m.input((1, 6, 5, 2), 0.04, -5, name="x")
    w = m.const(r.integers(-127, 128, (3, 3, 3, 2)), scale=np.array([0.01, 0.02, 0.015], np.float32),
                quantized_dimension=0, dtype="int8", name="w")
    b = m.const(r.integers(-300, 300, 3), dtype="int32", scale=np.float32(0.04) * np.array([0.01, 0.02, 0.015]),
                name="b")
    y = m.tensor((1, 5, 4, 3), "int8", 0.05, 4, name="y")
    m.op("CONV_2D", [x, w, b], [y], version=3, padding=padding("VALID"), strideH=1, strideW=1)
    z = m.output(m.tensor((1, 5, 4, 3), "int8", 0.03, -100, name="z"))
    m.op("RELU6", [y], [z])
    return m.build()


def test_wrong_stored_shape_is_reported_and_generation_goes_on():
    data = _wrong_conv_model()
    g = fold(read_model(data))
    notes = g.shape_notes
    assert notes == g.shape_notes == [
        "op 0 (CONV_2D v3): output tensor 3 (y) stored as [1, 5, 4, 3], inferred [1, 4, 3, 3]",
        "op 1 (RELU6 v1): output tensor 4 (z) stored as [1, 5, 4, 3], inferred [1, 4, 3, 3]",
    ]
    assert g.tensor(g.outputs[0]).shape == (1, 4, 3, 3)
    assert g.reference == "litert-ref" and oracle.tflm_shape_problems(data) == g.shape_notes
    gen = generate(read_model(data))
    assert gen.shape_notes == g.shape_notes and gen.reference == "litert-ref"
    assert "#define QUTE_MODEL_OUTPUT0_SIZE 36" in gen.header
    assert "stored as [1, 5, 4, 3], inferred [1, 4, 3, 3]" in gen.header and "LiteRT" in gen.header
    rep = build_report(read_model(data))
    assert rep.shape_notes == g.shape_notes and rep.reference == "litert-ref"
    assert [r.output for r in rep.ops] == [(1, 4, 3, 3), (1, 4, 3, 3)]
    text = rep.format()
    assert all(n in text for n in g.shape_notes) and "stored shapes: 2 disagree" in text
    as_json = json.loads(json.dumps(rep.to_dict()))
    assert as_json["shape_notes"] == g.shape_notes and as_json["reference"] == "litert-ref"
    # the C equals LiteRT's reference kernels, which re-infer shapes (TFLM runs on the stored ones)
    res = check(data, n=10)
    assert res.which == "litert-ref" and res.mismatches == 0, res


def test_qute_verify_prints_the_disagreements(tmp_path):
    from cliutil import qute

    path = tmp_path / "wrong.tflite"
    path.write_bytes(_wrong_conv_model())
    p = qute("verify", path, "--samples", "5")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "stored shapes: 2 disagree" in p.stdout
    assert "op 0 (CONV_2D v3): output tensor 3 (y) stored as [1, 5, 4, 3], inferred [1, 4, 3, 3]" in p.stdout
    assert "reference: LiteRT reference kernels (TFLite Micro runs on the model's stored shapes" in p.stdout
    assert "bit-exact: yes" in p.stdout


def test_shape_sees_the_inferred_shape():
    """SPACE_TO_BATCH_ND (stored batch 1, really 4) -> RESHAPE to SHAPE(itself) -> BATCH_TO_SPACE_ND: the
    reshape target is folded from the inferred shape; from the stored one it could not hold the data."""
    m = ModelBuilder("shape of a wrong tensor")
    x = m.input((1, 5, 3, 2), 0.1, 3, name="x")
    block = m.const([2, 2], dtype="int32", name="block")
    pads = m.const([[1, 0], [0, 1]], dtype="int32", name="pads")
    s2b = m.tensor((1, 3, 2, 2), "int8", 0.1, 3, name="s2b")
    m.op("SPACE_TO_BATCH_ND", [x, block, pads], [s2b])
    shp = m.tensor((4,), "int32", name="shape")
    m.op("SHAPE", [s2b], [shp], outType=2)
    same = m.tensor((1, 3, 2, 2), "int8", 0.1, 3, name="same")
    m.op("RESHAPE", [s2b, shp], [same])
    crops = m.const([[1, 0], [0, 1]], dtype="int32", name="crops")
    y = m.output(m.tensor((1, 5, 3, 2), "int8", 0.1, 3, name="y"))
    m.op("BATCH_TO_SPACE_ND", [same, block, crops], [y])
    data = m.build()
    g = fold(read_model(data))
    assert [op.opcode for op in g.ops] == ["SPACE_TO_BATCH_ND", "RESHAPE", "BATCH_TO_SPACE_ND"]
    assert g.tensor(g.ops[1].inputs[1]).data.tolist() == [4, 3, 2, 2]
    assert len(g.shape_notes) == 2 and all("inferred [4, 3, 2, 2]" in n for n in g.shape_notes)
    res = check(data, n=6)
    assert res.which == "litert-ref" and res.mismatches == 0, res


def _f32(m: ModelBuilder, shape, name: str) -> int:
    return m.tensor(shape, "float32", name=name)


def test_inferred_shapes_agree_with_litert_prepare():
    """One float model with every op kind the inference knows, every output stored as [1]: the
    shapes codegen infers are the ones LiteRT's Prepare steps give the same tensors."""
    r = np.random.default_rng(0)
    m = ModelBuilder("every op, wrong shapes")
    x = m.input((1, 9, 7, 4), dtype="float32", name="x")
    c = lambda shape: m.const(r.normal(size=shape).astype(np.float32), name=f"c{len(m.tensors)}")  # noqa: E731
    ints = lambda v: m.const(v, dtype="int32", name=f"i{len(m.tensors)}")  # noqa: E731
    out = {}

    def op(name, inputs, label, **fields):
        t = _f32(m, (1,), label)
        m.op(name, inputs, [t], **fields)
        out[label] = t
        return t

    conv = op("CONV_2D", [x, c((5, 3, 2, 4)), c((5,))], "conv", padding=padding("SAME"), strideH=2, strideW=1,
              dilationHFactor=2, dilationWFactor=3)
    op("CONV_2D", [x, c((4, 3, 3, 2)), c((4,))], "grouped", padding=padding("VALID"), strideH=1, strideW=2,
       dilationHFactor=3, dilationWFactor=1)
    dw = op("DEPTHWISE_CONV_2D", [x, c((1, 3, 2, 8)), c((8,))], "dw", padding=padding("VALID"), strideH=2,
            strideW=2, dilationHFactor=2, dilationWFactor=2, depthMultiplier=2)
    op("AVERAGE_POOL_2D", [x], "avg", padding=padding("SAME"), strideH=2, strideW=3, filterHeight=3, filterWidth=2)
    op("MAX_POOL_2D", [conv], "max", padding=padding("VALID"), strideH=1, strideW=2, filterHeight=2, filterWidth=3)
    op("MEAN", [x, ints([1, -2])], "mean_keep", keepDims=True)
    op("MEAN", [dw, ints([2, 2, 1])], "mean", keepDims=False)
    op("FULLY_CONNECTED", [x, c((6, 28))], "fc", keepNumDims=False)
    op("FULLY_CONNECTED", [x, c((6, 4)), c((6,))], "fc_keep", keepNumDims=True)
    op("ADD", [x, c((7, 1))], "add")
    op("MUL", [c((9, 1, 1)), x], "mul")
    op("PAD", [x, ints([[0, 0], [1, 2], [0, 3], [0, 0]])], "pad")
    op("CONCATENATION", [x, c((1, 9, 7, 2))], "concat", axis=-1)
    reshaped = op("RESHAPE", [x, ints([-1, 7, 4])], "reshape")
    op("SOFTMAX", [reshaped], "softmax")
    op("SQUEEZE", [x], "squeeze", options=fb.SqueezeOptionsT())
    op("EXPAND_DIMS", [reshaped, ints(-2)], "expand")
    op("SPACE_TO_BATCH_ND", [x, ints([2, 3]), ints([[1, 0], [1, 1]])], "s2b")
    op("SPACE_TO_BATCH_ND", [reshaped, ints([3]), ints([[1, 1]])], "s2b_3d")
    op("BATCH_TO_SPACE_ND", [op("SPACE_TO_BATCH_ND", [x, ints([3, 1]), ints([[0, 0], [0, 0]])], "s2b2"),
                             ints([3, 1]), ints([[1, 1], [0, 0]])], "b2s")
    op("PACK", [x, x], "pack", valuesCount=2, axis=-1)
    for t in out.values():
        m.output(t)
    data = m.build()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    ip = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ip.allocate_tensors()
    litert = {d["index"]: tuple(int(v) for v in d["shape"]) for d in ip.get_tensor_details()}
    g = fold(read_model(data))
    ours = {label: g.tensor(t).shape for label, t in out.items()}
    theirs = {label: litert[t] for label, t in out.items()}
    assert ours == theirs
    assert len(g.shape_notes) == len(out)


def _impossible(kind: str) -> bytes:
    m = ModelBuilder(f"impossible {kind}")
    x = m.input((1, 4, 3, 2), 0.1, 0, name="x")
    y = m.output(m.tensor((1, 1, 1, 1), "int8", 0.1, 0, name="y"))
    ints = lambda v: m.const(v, dtype="int32")  # noqa: E731
    if kind == "conv-valid":
        w = m.const(np.ones((1, 5, 2, 2)), scale=0.1, dtype="int8", name="w")
        m.op("CONV_2D", [x, w, -1], [y], version=3, padding=padding("VALID"), strideH=1, strideW=1)
    elif kind == "conv-channels":
        w = m.const(np.ones((1, 1, 1, 3)), scale=0.1, dtype="int8", name="w")
        m.op("CONV_2D", [x, w, -1], [y], version=3, padding=padding("SAME"), strideH=1, strideW=1)
    elif kind == "reshape":
        m.op("RESHAPE", [x, ints([5, 5])], [y])
    elif kind == "broadcast":
        m.op("ADD", [x, m.input((1, 4, 2, 2), 0.1, 0, name="x2")], [y])
    elif kind == "space-to-batch":
        m.op("SPACE_TO_BATCH_ND", [x, ints([2, 2]), ints([[0, 0], [0, 0]])], [y])
    elif kind == "pool-valid":
        m.op("MAX_POOL_2D", [x], [y], padding=padding("VALID"), strideH=1, strideW=1, filterHeight=5, filterWidth=1)
    elif kind == "squeeze":
        opts = fb.SqueezeOptionsT()
        opts.squeezeDims = [1]
        m.op("SQUEEZE", [x], [y], options=opts)
    elif kind == "fully-connected":
        m.op("FULLY_CONNECTED", [x, m.const(np.ones((2, 5)), scale=0.1, dtype="int8"), -1], [y])
    elif kind == "input":
        m.tensors[x].shape = np.array([1, 0, 3, 2], np.int32)
        m.op("RELU", [x], [y])
    return m.build()


IMPOSSIBLE = {
    "conv-valid": "the height filter window (5 taps, dilation 1: 5) is larger than the VALID input (4)",
    "conv-channels": "the input has 2 channels, not a multiple of the filter's 3",
    "reshape": "cannot reshape 24 values ([1, 4, 3, 2]) to [5, 5] (25 values)",
    "broadcast": "input shapes [1, 4, 3, 2] and [1, 4, 2, 2] do not broadcast",
    "space-to-batch": "the padded size [4, 3] is not a multiple of the block [2, 2]",
    "pool-valid": "is larger than the VALID input (4)",
    "squeeze": "cannot squeeze dimension 1 of [1, 4, 3, 2]: it is not 1",
    "fully-connected": "the input's 24 values do not split into rows of the weights' depth 5",
    "input": "has shape [1, 0, 3, 2]; every dimension must be 1 or more",
}


@pytest.mark.parametrize("kind", sorted(IMPOSSIBLE))
def test_impossible_op_is_one_codegen_error(kind):
    data = _impossible(kind)
    with pytest.raises(CodegenError) as err:
        generate(read_model(data))
    msg = str(err.value)
    assert IMPOSSIBLE[kind] in msg, msg
    if kind != "input":
        assert msg.startswith("op 0 ("), msg
    with pytest.raises(CodegenError, match="^" + re.escape(msg) + "$"):
        build_report(read_model(data))
    # TFLM is no reference for such a model either
    assert oracle.tflm_shape_problems(data) == [f"shapes cannot be inferred: {msg}"]


def test_graph_inputs_keep_their_stored_shape():
    """A graph input's stored shape defines the model; a RESHAPE's -1 is resolved from it."""
    m = ModelBuilder("inputs")
    x = m.input((2, 3, 4), 0.1, 0, name="x")
    y = m.output(m.tensor((24,), "int8", 0.1, 0, name="y"))
    m.op("RESHAPE", [x, m.const([-1], dtype="int32")], [y], newShape=[-1])
    g = fold(read_model(m.build()))
    assert g.tensor(g.inputs[0]).shape == (2, 3, 4) and g.tensor(g.outputs[0]).shape == (24,)
    assert not g.shape_notes
    assert fold(g).shape_notes == [] and fold(g).tensors == g.tensors


def test_folding_twice_keeps_the_notes():
    g = fold(read_model(_wrong_conv_model()))
    again = fold(g)
    assert again.shape_notes == g.shape_notes and again.reference == "litert-ref"
    assert [t.shape for t in again.tensors] == [t.shape for t in g.tensors]


# (input scale, output scale, input zero point, output zero point) where a double quotient of the
# scales gives another multiplier than LiteRT's float32 one, and another output byte
RELU6_EDGES = [(0.001899059978313744, 0.003367563709616661, -107, -4),
               (0.012903486378490925, 0.0027527438942342997, -102, -98),
               (0.03735906258225441, 0.0824475884437561, 48, -100),
               (0.019745884463191032, 0.02923700027167797, -115, -64)]


@pytest.mark.parametrize("opcode", ["RELU6", "RELU", "RELU_N1_TO_1"])
def test_activations_follow_litert_where_tflm_cannot_run(opcode):
    """With a wrong stored shape anywhere, the model's RELU6s follow LiteRT (requantize to the output's
    scale and zero point with a multiplier from the float32 quotient of the scales, clamp to the
    output's 0 and 6), not TFLM (clamp in the input's domain), and its RELUs take LiteRT's float32
    quotient too, not TFLM's double one. Every int8 value, one build."""
    r = np.random.default_rng(11)
    configs = RELU6_EDGES + [(*(float(np.float32(10 ** r.uniform(-3, -0.5))) for _ in range(2)),
                              int(r.integers(-128, 128)), int(r.integers(-128, 128))) for _ in range(12)]
    m = ModelBuilder(f"{opcode} configurations")
    for i, (s_in, s_out, z_in, z_out) in enumerate(configs):
        x = m.input((1, 256), s_in, z_in, name=f"x{i}")
        # a wrong stored shape on the first output makes the model one TFLM cannot run
        y = m.output(m.tensor((1, 255) if i == 0 else (1, 256), "int8", s_out, z_out, name=f"y{i}"))
        m.op(opcode, [x], [y])
    data = m.build()
    g = fold(read_model(data))
    assert len(g.shape_notes) == 1 and g.reference == "litert-ref"
    xs = [np.arange(-128, 128, dtype=np.int8)[None]] * len(configs)
    ours = build_host(g).run(xs)
    want = oracle.run_litert_ref(data, xs)
    bad = {i: int((a.reshape(-1) != b.reshape(-1)).sum()) for i, (a, b) in enumerate(zip(ours, want))}
    assert not any(bad.values()), bad


def test_fully_connected_follows_litert_where_tflm_cannot_run():
    """LiteRT's int8 FULLY_CONNECTED rounds the requantization product once (TFLM: twice); in a model
    TFLM cannot run the generated code does the same, per tensor and per channel."""
    r = np.random.default_rng(4)
    m = ModelBuilder("fully connected, litert")
    for i, per_channel in enumerate((True, False, True)):
        x = m.input((1, 3, 40), float(np.float32(10 ** r.uniform(-2, -1))), int(r.integers(-128, 128)), name=f"x{i}")
        scales = (10 ** r.uniform(-3, -1, 12)).astype(np.float32) if per_channel else np.float32(0.01)
        w = m.const(r.integers(-127, 128, (12, 40)), scale=scales, dtype="int8", name=f"w{i}")
        b = m.const(r.integers(-3000, 3000, 12), dtype="int32", name=f"b{i}")
        y = m.output(m.tensor((3, 12), "int8", float(np.float32(10 ** r.uniform(-1, 0))), int(r.integers(-128, 128)),
                              name=f"y{i}"))
        m.op("FULLY_CONNECTED", [x, w, b], [y], version=9 if per_channel else 4)
    # the wrong stored shape that makes TFLM unfit for the whole model
    x = m.input((1, 5), 0.1, 0, name="xr")
    m.output(m.tensor((1, 6), "int8", 0.1, 0, name="yr"))
    m.op("RELU", [x], [len(m.tensors) - 1])
    data = m.build()
    g = fold(read_model(data))
    assert g.reference == "litert-ref"
    res = check(data, n=60)
    assert res.which == "litert-ref" and res.mismatches == 0, res


@pytest.mark.skipif(not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "make", "qemu-system-arm")),
                    reason="the Arm toolchain or QEMU is not installed")
def test_firmware_under_qemu_equals_litert_on_the_issue_model(converted, tmp_path):
    """The firmware, not only the host C: the issue's model built for the emulated Cortex-M7 prints
    the bytes of the reference that counts on it (LiteRT's, since TFLM runs on the wrong stored shapes)."""
    model = tmp_path / "issue.tflite"
    model.write_bytes(converted["issue-bias"].tflite)
    built = qute("build", "--board", "mps2-an500", model, "--samples", 6, "-o", tmp_path / "fw")
    assert built.returncode == 0, built.stderr + built.stdout
    ran = qute("run", tmp_path / "fw")
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert re.search(r"output bytes: +0 of [\d,]+ differ from the host reference \(LiteRT reference kernels\)",
                     ran.stdout), ran.stdout
    assert "bit-exact: yes" in ran.stdout
