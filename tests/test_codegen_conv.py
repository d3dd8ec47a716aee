"""CONV_2D and DEPTHWISE_CONV_2D: generated C against TFLite Micro, byte for byte.

Three sources of models:
- hand-built flatbuffers (``conv_model``, written with tests/fbmodels.py): many random
  configurations packed as independent ops of one model, so one C build covers a dozen. They reach
  what the converter never emits: batch > 1, grouped convolution, per-tensor filter scales,
  multipliers >= 1, vanishing multipliers, extreme zero points, RELU_N1_TO_1, windows wholly in the
  padding, channel counts across the depthwise kernel's 32-channel chunks;
- converter-made one-op models from ``tests/opmodels.py`` (Keras -> TFLiteConverter, full int8),
  including the SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND-lowered dilated SAME convolutions, whose stored
  shapes are wrong: TFLM cannot run them, so they are checked against LiteRT's reference kernels
  (tests/test_dilated.py covers dilation in depth);
- the MLPerf Tiny models, when every op they use has a lowering.
"""

from __future__ import annotations

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fbmodels import ACTS, ModelBuilder, fb, padding
from hostcheck import check

from codegen import ops as op_registry
from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from qute import oracle

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


# ---------------------------------------------------------------------------------------------
# Hand-built models


def _out_size(padding: str, size: int, k: int, s: int, d: int) -> int:
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if padding == "SAME" else (size + s - eff) // s


def draw(r: np.random.Generator, kind: str) -> dict:
    """One random conv/depthwise configuration (plain JSON, so a failure can be replayed)."""
    pick = lambda seq: seq[int(r.integers(len(seq)))]  # noqa: E731
    c = {"kind": kind, "seed": int(r.integers(2**31))}
    c["batch"] = pick((1, 1, 1, 2, 3))
    c["h"], c["w"] = int(r.integers(1, 11)), int(r.integers(1, 11))
    c["padding"] = pick(("SAME", "VALID"))
    c["stride"] = [int(r.integers(1, 4)), int(r.integers(1, 4))]
    c["dilation"] = [1, 1] if r.random() < 0.6 else [int(r.integers(1, 4)), int(r.integers(1, 4))]
    c["kernel"] = [pick((1, 1, 2, 3, 3, 5)), pick((1, 1, 2, 3, 3, 5))]
    if c["padding"] == "VALID":  # shrink until the window fits
        for a, size in ((0, c["h"]), (1, c["w"])):
            while c["kernel"][a] > 1 and (c["kernel"][a] - 1) * c["dilation"][a] + 1 > size:
                c["kernel"][a] -= 1
            while (c["kernel"][a] - 1) * c["dilation"][a] + 1 > size:
                c["dilation"][a] = 1
    if kind == "conv":
        groups = pick((1, 1, 1, 1, 2, 3))
        c["filter_c"] = int(r.integers(1, 9))
        c["in_c"] = c["filter_c"] * groups
        c["out_c"] = groups * int(r.integers(1, 7))
    else:
        c["in_c"] = pick((1, 3, 8, 16, 33, 40))
        c["mult"] = pick((1, 1, 1, 2, 3))
        if c["in_c"] > 16 and c["mult"] > 1:
            c["mult"] = 1
        c["out_c"] = c["in_c"] * c["mult"]
    c["activation"] = pick(("NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"))
    c["bias"] = bool(r.random() < 0.8)
    c["per_channel"] = bool(r.random() < 0.85)
    c["in_zp"] = int(pick((0, -128, 127, int(r.integers(-128, 128)), int(r.integers(-128, 128)))))
    c["out_zp"] = int(pick((0, -128, int(r.integers(-128, 128)))))
    c["in_scale"] = float(np.float32(10 ** r.uniform(-3, 0)))
    # "gain": output scale relative to the typical accumulator; < 1 saturates, > 1 squeezes
    c["gain"] = float(10 ** r.uniform(-0.8, 0.8))
    c["big_multiplier"] = bool(r.random() < 0.1)  # effective scale >= 1: shift > 0 in requantization
    c["zero_channel"] = bool(r.random() < 0.1)
    c["tiny_channel"] = bool(r.random() < 0.05)  # a channel scale so small the multiplier is 0
    return c


def _tensors_for(c: dict, r: np.random.Generator):
    """Weights, bias and quantization of one configuration."""
    kh, kw = c["kernel"]
    oc = c["out_c"]
    if c["kind"] == "conv":
        wshape = (oc, kh, kw, c["filter_c"])
        taps = kh * kw * c["filter_c"]
    else:
        wshape = (1, kh, kw, oc)
        taps = kh * kw
    lim = 3 if c["big_multiplier"] else 127
    w = r.integers(-lim, lim + 1, wshape).astype(np.int8)
    chan_axis = 0 if c["kind"] == "conv" else 3
    if c["zero_channel"]:
        idx = [slice(None)] * 4
        idx[chan_axis] = 0
        w[tuple(idx)] = 0
    if c["per_channel"]:
        w_scale = (10 ** r.uniform(-3, -1, oc)).astype(np.float32)
        if c["tiny_channel"] and oc > 1:
            w_scale[-1] = np.float32(1e-14)
    else:
        w_scale = np.array([10 ** r.uniform(-3, -1)], np.float32)
    in_scale = np.float32(c["in_scale"])
    typical_w = float(np.median(w_scale[:-1] if c["tiny_channel"] and len(w_scale) > 1 else w_scale))
    typical = np.sqrt(taps) * 74.0 * (lim * 0.58)  # rms of the accumulator for uniform int8 inputs
    if c["big_multiplier"]:
        out_scale = np.float32(in_scale * typical_w * float(r.uniform(0.3, 1.0)))
    else:
        out_scale = np.float32(in_scale * typical_w * typical / 25.0 * c["gain"])
    bias = None
    if c["bias"]:
        bias = np.round(r.normal(0, typical, oc)).astype(np.int64)
        if r.random() < 0.1:
            bias[0] = int(r.integers(-(2**24), 2**24))
        bias = bias.astype(np.int32)
    return w, w_scale, bias, in_scale, out_scale


def conv_model(configs: list[dict]) -> bytes:
    """A model with one independent CONV_2D/DEPTHWISE_CONV_2D op (own input, own output) per config."""
    b = ModelBuilder("qute conv test")
    # one operator code per kind, versioned by the kind's first configuration (6: grouped convolution)
    version = {}
    for c in configs:
        version.setdefault(c["kind"], 6 if c["kind"] == "conv" and c["in_c"] != c["filter_c"] else 3)
    for i, c in enumerate(configs):
        r = np.random.default_rng(c["seed"])
        w, w_scale, bias, in_scale, out_scale = _tensors_for(c, r)
        conv = c["kind"] == "conv"
        kh, kw = c["kernel"]
        oh = _out_size(c["padding"], c["h"], kh, c["stride"][0], c["dilation"][0])
        ow = _out_size(c["padding"], c["w"], kw, c["stride"][1], c["dilation"][1])
        x = b.input((c["batch"], c["h"], c["w"], c["in_c"]), in_scale, c["in_zp"], name=f"in{i}")
        wt = b.const(w, w_scale, 0, name=f"w{i}", quantized_dimension=0 if conv else 3)
        ins = [x, wt]
        if bias is not None:
            ins.append(b.const(bias, (in_scale * w_scale).astype(np.float32), 0, name=f"b{i}"))
        elif c.get("bias_slot"):
            ins.append(-1)
        y = b.output(b.tensor((c["batch"], oh, ow, c["out_c"]), "int8", out_scale, c["out_zp"], name=f"out{i}"))
        if c.get("override"):  # deliberately broken models for the rejection tests
            for k, v in c["override"].items():
                if k == "w_zp":
                    b.tensors[wt].quantization.zeroPoint[0] = v
                if k == "in_type":
                    b.tensors[x].type = getattr(fb.TensorType, v)
        options = {"padding": padding(c["padding"]), "strideH": c["stride"][0], "strideW": c["stride"][1],
                   "dilationHFactor": c["dilation"][0], "dilationWFactor": c["dilation"][1],
                   "fusedActivationFunction": ACTS[c["activation"]]}
        if conv:
            b.op("CONV_2D", ins, [y], version=version["conv"], **options)
        else:
            b.op("DEPTHWISE_CONV_2D", ins, [y], version=version["depthwise"],
                 depthMultiplier=c.get("mult_option", c["mult"]), **options)
    return b.build()


def special_configs() -> list[dict]:
    """Corner cases drawn on purpose, on top of the random ones."""
    r = np.random.default_rng(7)
    out = []

    def add(kind, **kw):
        c = draw(r, kind)
        c.update(kw)
        if kind == "depthwise":
            c["out_c"] = c["in_c"] * c["mult"]
        else:
            c["in_c"] = c["filter_c"] * c.pop("groups", c["in_c"] // c["filter_c"])
        out.append(c)

    # 1x1 fast path: stride 2, groups, odd channel counts
    add("conv", kernel=[1, 1], stride=[2, 2], padding="SAME", filter_c=5, groups=1, out_c=7, h=7, w=5)
    add("conv", kernel=[1, 1], stride=[1, 1], padding="VALID", filter_c=3, groups=2, out_c=4, h=4, w=4)
    # filter larger than the input under SAME; dilation leaving windows wholly in the padding
    add("conv", kernel=[5, 5], stride=[1, 1], dilation=[1, 1], padding="SAME", h=2, w=3, filter_c=2, groups=1, out_c=3)
    add("conv", kernel=[2, 2], stride=[1, 1], dilation=[3, 3], padding="SAME", h=1, w=1, filter_c=2, groups=1, out_c=2)
    add("depthwise", kernel=[2, 2], stride=[1, 1], dilation=[3, 3], padding="SAME", h=1, w=2, in_c=3, mult=2)
    # stride larger than the kernel; batch 3
    add("conv", kernel=[2, 2], stride=[3, 3], dilation=[1, 1], padding="SAME", h=10, w=9, batch=3, filter_c=4,
        groups=1, out_c=5)
    # grouped, dilated, strided
    add("conv", kernel=[3, 3], stride=[2, 1], dilation=[1, 2], padding="SAME", h=8, w=8, filter_c=2, groups=3, out_c=6)
    # depthwise across the 32-channel chunks; multiplier from one input channel
    add("depthwise", kernel=[3, 3], stride=[1, 1], dilation=[1, 1], padding="SAME", h=5, w=5, in_c=70, mult=1)
    add("depthwise", kernel=[3, 3], stride=[2, 2], dilation=[1, 1], padding="SAME", h=6, w=6, in_c=1, mult=40)
    add("depthwise", kernel=[3, 2], stride=[1, 2], dilation=[2, 1], padding="VALID", h=7, w=6, in_c=12, mult=3,
        batch=2)
    # requantization corners: multiplier >= 1, vanishing multiplier, per-tensor scale, zero points
    add("conv", big_multiplier=True, per_channel=True, tiny_channel=True, kernel=[1, 2], padding="SAME",
        filter_c=3, groups=1, out_c=4)
    add("depthwise", big_multiplier=True, per_channel=False, in_zp=-128, out_zp=127, activation="RELU")
    add("conv", per_channel=False, in_zp=127, out_zp=-128, activation="RELU_N1_TO_1", bias=False, bias_slot=True)
    add("depthwise", activation="RELU6", bias=False, in_zp=-128)
    return out


def _chunks(seq, n):
    return [seq[i:i + n] for i in range(0, len(seq), n)]


N_RANDOM = {"conv": 80, "depthwise": 60}
PER_MODEL = 20


def _hand_models() -> list[tuple[str, list[dict]]]:
    r = np.random.default_rng(2026)
    cases = []
    for kind, n in N_RANDOM.items():
        for j, chunk in enumerate(_chunks([draw(r, kind) for _ in range(n)], PER_MODEL)):
            cases.append((f"{kind}-{j}", chunk))
    cases.append(("special", special_configs()))
    return cases


HAND = _hand_models()


@pytest.mark.parametrize("name,configs", HAND, ids=[n for n, _ in HAND])
def test_hand_built_models_match_tflm(name, configs):
    res = check(conv_model(configs), n=3, seed=zlib.crc32(name.encode()), opt="-O2")
    assert res.which == "tflm", f"TFLM was not deterministic on {name}: {res.which}"
    assert res.mismatches == 0, f"{res.mismatches} of {res.total} bytes differ; configs: {json.dumps(configs)}"
    assert res.total > 0


def test_sanitizer_build_matches_tflm():
    """ASan + UBSan over the corner cases and a random batch of each kind."""
    r = np.random.default_rng(99)
    configs = special_configs() + [draw(r, "conv") for _ in range(6)] + [draw(r, "depthwise") for _ in range(6)]
    res = check(conv_model(configs), n=2, seed=5, sanitize=True, opt="-O2")
    assert res.mismatches == 0 and res.total > 0


def test_depthwise_with_omitted_bias_input():
    """DEPTHWISE_CONV_2D with bias index -1: TFLM's Prepare crashes on it (it frees the missing
    bias tensor), so the reference is the same op with the bias input left out altogether."""
    r = np.random.default_rng(17)
    configs = []
    for _ in range(4):
        c = draw(r, "depthwise")
        c.update(bias=False, bias_slot=True, batch=1)
        configs.append(c)
    ours = build_host(read_model(conv_model(configs)))
    plain = conv_model([{**c, "bias_slot": False} for c in configs])
    xs = oracle.random_inputs(plain, 3, 4)
    ref = oracle.run_tflm(plain, xs)
    got = ours.run(xs)
    assert all(np.array_equal(a.reshape(-1), b.reshape(-1)) for a, b in zip(got, ref))


# ---------------------------------------------------------------------------------------------
# Converter-made models


def _opmodels():
    try:
        import opmodels
    except Exception as e:  # pragma: no cover - the factory is optional
        pytest.skip(f"tests/opmodels.py unavailable: {e}")
    return opmodels


def _supported(tflite: bytes) -> list[str]:
    g = read_model(tflite)
    return sorted({op.opcode for op in g.ops if op.opcode not in op_registry.REGISTRY})


CONVERTED = [("conv2d", 6, 11), ("depthwise_conv2d", 6, 12), ("conv1d", 3, 13), ("add_self", 2, 16),
             ("conv2d_dilated_same", 3, 14), ("depthwise_conv2d_dilated_same", 3, 15),
             ("depthwise_conv2d_dilated_valid", 3, 17), ("conv1d_dilated", 3, 18)]


@pytest.mark.parametrize("builder,n,seed", CONVERTED, ids=[c[0] for c in CONVERTED])
def test_converter_models_match_oracle(builder, n, seed):
    opmodels = _opmodels()
    if builder not in opmodels.BUILDERS:
        pytest.skip(f"no {builder} builder")
    models = opmodels.random_models(builder, n, seed)
    missing = sorted({m for om in models for m in _supported(om.tflite)})
    if missing:
        pytest.skip(f"{builder}: no lowering yet for {', '.join(missing)}")

    def one(om):
        g = read_model(om.tflite)
        xs = oracle.random_inputs(om.tflite, 8, seed)
        ref, which = oracle.reference(om.tflite, xs)
        ours = build_host(g).run(xs)
        bad = sum(int((a.reshape(-1) != b.reshape(-1)).sum()) for a, b in zip(ours, ref))
        return om, bad, which

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, models))
    failures = [(om, bad, which) for om, bad, which in results
                if bad or (which != "tflm" and not oracle.tflm_shape_problems(om.tflite))]
    assert not failures, "\n".join(f"{om!r}: {bad} bytes differ from {which}" for om, bad, which in failures)


# ---------------------------------------------------------------------------------------------
# Whole models


@pytest.mark.parametrize("name", ["kws_dscnn_int8", "vww_mobilenet_int8"])
def test_mlperf_model_matches_tflm(name):
    path = MODELS / f"{name}.tflite"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    data = path.read_bytes()
    missing = _supported(data)
    if missing:
        pytest.skip(f"{name}: no lowering yet for {', '.join(missing)}")
    hm = build_host(read_model(data))
    xs = oracle.random_inputs(data, 6, 3)
    ref = oracle.run_tflm(data, xs)
    ours = hm.run(xs)
    bad = sum(int((a.reshape(-1) != b.reshape(-1)).sum()) for a, b in zip(ours, ref))
    assert bad == 0


# ---------------------------------------------------------------------------------------------
# Rejections


def _base(kind="conv", **kw):
    c = draw(np.random.default_rng(1), kind)
    c.update(padding="SAME", kernel=[3, 3], stride=[1, 1], dilation=[1, 1], batch=1)
    c.update(kw)
    return c


@pytest.mark.parametrize("kind,change,message", [
    ("conv", {"activation": "TANH"}, "fused activation TANH is not supported; supported: NONE, RELU, RELU6, RELU_N1_TO_1"),
    ("depthwise", {"activation": "TANH"}, "fused activation TANH"),
    ("conv", {"override": {"w_zp": 3}}, "symmetric"),
    ("depthwise", {"mult_option": 2}, "depth_multiplier 2 does not match"),
    ("conv", {"override": {"in_type": "INT16"}}, "supported: int8"),
])
def test_rejections_name_the_op(kind, change, message):
    c = _base(kind, **change)
    if kind == "depthwise":
        c["out_c"] = c["in_c"] * c["mult"]
    g = read_model(conv_model([c]))
    with pytest.raises(CodegenError) as e:
        build_host(g)
    text = str(e.value)
    assert message in text
    assert "op 0 (" in text and ("CONV_2D" in text)


def test_activation_bound_beyond_int32_is_refused_like_tflm():
    """TFLM's CalculateActivationRangeQuantized fails Prepare when 6.0 / output scale overflows int32."""
    c = _base("conv", activation="RELU6", out_c=1, filter_c=1, in_c=1, per_channel=True, tiny_channel=False,
              big_multiplier=False)
    tflite = conv_model([c])
    g = read_model(tflite)
    g.tensor(g.ops[0].outputs[0]).scale[:] = np.float32(1e-15)
    with pytest.raises(CodegenError, match=r"op 0 \(CONV_2D v3\): the fused RELU6 bound 6.0 does not fit int32"):
        build_host(g)


def test_output_shape_follows_the_padding_arithmetic_not_the_file():
    """A stored output shape is not trusted (codegen/shapes.py): the inferred one is used and the
    disagreement reported."""
    from codegen.fold import fold

    c = _base("conv", padding="VALID", h=6, w=6)
    g = read_model(conv_model([c]))
    out = g.tensor(g.ops[0].outputs[0])
    out.shape = (1, 6, 6, out.shape[3])  # VALID 3x3 on 6x6 gives 4x4
    assert build_host(g).output_shapes == [(1, 4, 4, out.shape[3])]
    (note,) = fold(g).shape_notes
    assert note.startswith("op 0 (CONV_2D v3): output tensor") and "stored as [1, 6, 6," in note
    assert "inferred [1, 4, 4," in note
