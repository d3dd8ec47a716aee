"""ADD, MUL, RELU, RELU6, RELU_N1_TO_1, LOGISTIC, SOFTMAX, QUANTIZE, DEQUANTIZE: generated C against
TFLite Micro, byte for byte.

Two sources of models:
- written directly (tests/fbmodels.py) from randomised configurations that reach the edges the
  converter rarely produces: zero points -128/127, scale ratios over many decades, softmax beta,
  rank-5 broadcasting, constant operands, an operand added to itself, float tensors mid-graph;
- the converter's own (tests/opmodels.py), for what real models look like.
Many configurations are merged side by side into one model, so one compile and one oracle run
cover a whole family. Every sample set ends with the edge inputs all -128, all 127 and a mix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fbmodels import ACTS as ALL_ACTS
from fbmodels import ModelBuilder, fb, merge

from codegen import ops as op_registry
from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from qute.oracle import reference, run_litert_ref

N_RANDOM = 40  # random samples per model input, before the edge samples
CONFIGS: dict[str, int] = {}  # family -> configurations checked (for the summary)

ACTS = {k: v for k, v in ALL_ACTS.items() if k != "TANH"}  # the fused activations drawn for ADD and MUL


# ---------------------------------------------------------------------------------------------
# helpers


def inputs_for(tflite: bytes, n: int, seed: int) -> list[np.ndarray]:
    """Uniform int8 samples for every model input, then all -128, all 127, and a -128/127 mix."""
    g = read_model(tflite)
    r = np.random.default_rng(seed)
    xs = []
    for t in g.inputs:
        shape = g.tensor(t).shape
        rnd = r.integers(-128, 128, (n,) + tuple(shape[1:]), dtype=np.int8)
        edges = np.stack([np.full(shape[1:], -128, np.int8), np.full(shape[1:], 127, np.int8),
                          np.where(r.random(shape[1:]) < 0.5, -128, 127).astype(np.int8)])
        xs.append(np.concatenate([rnd, edges]))
    return xs


def compare(tflite: bytes, labels: list[str], tmp_path, sanitize: bool = False, oracle: str = "tflm", seed: int = 0):
    """Builds the generated C on the host, runs it and the oracle; asserts 0 differing bytes."""
    host = build_host(read_model(tflite), tmp_path, sanitize=sanitize)
    xs = inputs_for(tflite, N_RANDOM, seed)
    if oracle == "litert-ref":
        ref, which = run_litert_ref(tflite, xs), "litert-ref"
    else:
        ref, which = reference(tflite, xs)
        assert which == "tflm", "TFLM was not deterministic on this model"
    got = host.run(xs)
    assert len(got) == len(ref) == len(labels)
    bad = []
    for k, (a, b) in enumerate(zip(got, ref)):
        a, b = a.reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
        assert a.dtype == b.dtype, f"output {k} [{labels[k]}]: ours is {a.dtype}, {which}'s {b.dtype}"
        a, b = np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
        diff = int(np.sum(a != b))
        if diff:
            bad.append(f"output {k} [{labels[k]}]: {diff} of {b.size} bytes differ from {which}")
    assert not bad, "\n".join(bad)
    return sum(int(np.asarray(b).nbytes) for b in ref)


def rscale(r, lo=-3.0, hi=1.0) -> float:
    return float(np.float32(10 ** r.uniform(lo, hi)))


def rzp(r) -> int:
    return int(r.choice([-128, 127, 0, int(r.integers(-128, 128)), int(r.integers(-128, 128))]))


def opts(kind, **fields):
    o = getattr(fb, kind)()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


# ---------------------------------------------------------------------------------------------
# random configurations, written as models


def broadcast_pair(r) -> tuple[tuple, tuple, bool, bool]:
    """Two broadcast-compatible shapes and which operand (if any) is a constant.

    Model inputs always have a leading 1 (batch); constants may have any rank, scalars included."""
    rank = int(r.integers(1, 6))
    full = [1] + [int(r.integers(1, 7)) for _ in range(rank - 1)]
    kind = r.choice(["same", "same", "scalar", "channel", "subset", "cross"])
    a, b = list(full), list(full)
    if kind == "scalar":
        b = [1] * rank
    elif kind == "channel":
        b = [1] * (rank - 1) + [full[-1]]
    elif kind == "subset":
        b = [d if r.random() < 0.5 else 1 for d in full]
    elif kind == "cross":  # each side broadcasts along different axes
        for d in range(1, rank):
            if r.random() < 0.5:
                a[d] = 1
            elif r.random() < 0.5:
                b[d] = 1
    const = r.choice(["none", "none", "second", "first"])
    if r.random() < 0.5:
        a, b = b, a

    def strip(shape):  # a constant may drop some of its leading 1s (down to a scalar)
        k = 0
        while k < len(shape) and shape[k] == 1 and r.random() < 0.6:
            k += 1
        return tuple(shape[k:])

    a, b = tuple(a), tuple(b)
    if const == "second":
        b = strip(b)
    elif const == "first":
        a = strip(a)
    return a, b, const == "first", const == "second"


def binary_model(r, opcode: str) -> tuple[bytes, str]:
    b = ModelBuilder()
    sa, sb, ca, cb = broadcast_pair(r)
    same_tensor = not ca and not cb and sa == sb and r.random() < 0.1
    s1, s2 = rscale(r), rscale(r)
    z1, z2 = rzp(r), rzp(r)
    if opcode == "ADD":
        so = float(np.float32(max(s1, s2) * 10 ** r.uniform(-1.5, 1.5)))
    else:
        so = float(np.float32(s1 * s2 * 10 ** r.uniform(-2.5, 2.5)))
    zo = rzp(r)
    act = str(r.choice(list(ACTS)))

    def operand(shape, const, s, z):
        if const:
            return b.const(r.integers(-128, 128, shape, dtype=np.int8).reshape(shape), scale=s, zero_point=z)
        return b.input(shape if len(shape) else (1,), scale=s, zero_point=z)

    x = operand(sa, ca, s1, z1)
    y = x if same_tensor else operand(sb, cb, s2, z2)
    if same_tensor:
        s2, z2 = s1, z1
    out_shape = tuple(np.broadcast_shapes(b.tensors[x].shape, b.tensors[y].shape))
    o = b.output(b.tensor(out_shape, scale=so, zero_point=zo))
    kind = "AddOptionsT" if opcode == "ADD" else "MulOptionsT"
    b.op(opcode, [x, y], [o], opts(kind, fusedActivationFunction=ACTS[act]))
    shape_of = lambda t: [int(d) for d in b.tensors[t].shape]  # noqa: E731
    label = (f"{opcode} {shape_of(x)}{'c' if ca else ''} x {shape_of(y)}{'c' if cb else ''}"
             f"{' (same tensor)' if same_tensor else ''} s=({s1:.3g},{s2:.3g})->{so:.3g} zp=({z1},{z2})->{zo} {act}")
    return b.build(), label


def unary_model(r, opcode: str) -> tuple[bytes, str]:
    b = ModelBuilder()
    rank = int(r.integers(1, 5))
    shape = (1,) + tuple(int(r.integers(1, 9)) for _ in range(rank - 1))
    si, zi = rscale(r, -3, 1), rzp(r)
    if opcode == "RELU6":
        si = rscale(r, -2.5, 0.5)  # keeps 6.0 on the int8 grid often enough to matter
    so, zo = rscale(r, -3, 1), rzp(r)
    if r.random() < 0.25:
        so, zo = si, zi
    if opcode == "LOGISTIC":
        si = rscale(r, -5, 1.4)  # up to ~25: scales >= 16 saturate every input (radius 0)
        so, zo = (1 / 256, -128) if r.random() < 0.8 else (rscale(r), -128)  # TFLM ignores the output scale
    x = b.input(shape, scale=si, zero_point=zi)
    o = b.output(b.tensor(shape, scale=so, zero_point=zo))
    b.op(opcode, [x], [o])
    return b.build(), f"{opcode} {list(shape)} in=({si:.3g},{zi}) out=({so:.3g},{zo})"


def softmax_model(r) -> tuple[bytes, str]:
    b = ModelBuilder()
    rank = int(r.integers(1, 5))
    depth = int(r.choice([1, 2, int(r.integers(2, 12)), int(r.integers(12, 64)), int(r.integers(64, 400))]))
    shape = (1,) + tuple(int(r.integers(1, 4)) for _ in range(max(rank - 2, 0))) + ((depth,) if rank > 1 else ())
    if rank == 1:
        shape = (depth,) if depth == 1 else (1, depth)
    si, zi = rscale(r, -4, 0.7), rzp(r)
    beta = float(np.float32(r.choice([1.0, 1.0, 10 ** r.uniform(-1.5, 1.5)])))
    out = "int16" if r.random() < 0.4 else "int8"  # TFLM's int8 -> int16 softmax: qute's heads
    x = b.input(shape, scale=si, zero_point=zi)
    o = b.output(softmax_output(b, shape, out))
    b.op("SOFTMAX", [x], [o], opts("SoftmaxOptionsT", beta=beta))
    return b.build(), f"SOFTMAX {list(shape)} in=({si:.3g},{zi}) beta={beta:.3g} -> {out}"


def softmax_output(b, shape, dtype: str) -> int:
    """The output tensor TFLM's SOFTMAX needs: int8 at 1/256 from -128, or int16 at 1/65536 from -32768."""
    if dtype == "int16":
        return b.tensor(shape, "int16", scale=1 / 65536, zero_point=-32768)
    return b.tensor(shape, scale=1 / 256, zero_point=-128)


def softmax_edge_models() -> list[tuple[bytes, str]]:
    """Multiplier at the cap 2^31-1 (left shift 31, diff_min 0), exactly 2^26, and just below."""
    res = []
    for si, beta, depth in [(0.5, 64.0, 10), (4.0, 1.0, 7), (1.0, 1.0, 5), (2.0**-26 * 1.5, 1.0, 9),
                            (1 / 32, 1.0, 33), (0.999, 32.0, 6), (1e-3, 0.5, 511)]:
        for out in ("int8", "int16"):
            b = ModelBuilder()
            x = b.input((1, depth), scale=si, zero_point=0)
            o = b.output(softmax_output(b, (1, depth), out))
            b.op("SOFTMAX", [x], [o], opts("SoftmaxOptionsT", beta=beta))
            res.append((b.build(), f"SOFTMAX edge scale={si:.3g} beta={beta} depth={depth} -> {out}"))
    return res


def test_softmax_rows_summing_past_tflm_limit(tmp_path):
    """Rows whose exps sum to 512 or more make TFLM abort (its exponent check); ours gives the
    correctly rounded probabilities (here 1/1000 -> 0 -> -128) and stays clean under sanitizers."""
    b = ModelBuilder()
    x = b.input((1, 1000), scale=1e-3, zero_point=0)
    o = b.output(b.tensor((1, 1000), scale=1 / 256, zero_point=-128))
    b.op("SOFTMAX", [x], [o], opts("SoftmaxOptionsT", beta=0.5))
    host = build_host(read_model(b.build()), tmp_path, sanitize=True)
    (out,) = host.run([np.zeros((2, 1, 1000), np.int8) + np.array([[[5]], [[-7]]], np.int8)])
    assert np.all(out == -128)


def dequant_quant_model(r) -> tuple[bytes, str]:
    b = ModelBuilder()
    shape = (1, int(r.integers(1, 40)))
    si, zi, so, zo = rscale(r), rzp(r), rscale(r), rzp(r)
    x = b.input(shape, scale=si, zero_point=zi)
    f = b.tensor(shape, dtype="float32")
    o = b.output(b.tensor(shape, scale=so, zero_point=zo))
    b.op("DEQUANTIZE", [x], [f])
    b.op("QUANTIZE", [f], [o])
    return b.build(), f"DEQUANTIZE->QUANTIZE {list(shape)} ({si:.3g},{zi})->float->({so:.3g},{zo})"


def family(seed: int, n: int, make) -> tuple[bytes, list[str]]:
    r = np.random.default_rng(seed)
    parts = [make(r) for _ in range(n)]
    return merge([p[0] for p in parts]), [p[1] for p in parts]


# ---------------------------------------------------------------------------------------------
# written models


@pytest.mark.parametrize("opcode, n, seed", [("ADD", 60, 1), ("MUL", 60, 2)])
def test_binary_random(opcode, n, seed, tmp_path):
    model, labels = family(seed, n, lambda r: binary_model(r, opcode))
    compare(model, labels, tmp_path)
    CONFIGS[opcode] = CONFIGS.get(opcode, 0) + n


@pytest.mark.parametrize("opcode, n, seed", [("RELU", 30, 3), ("RELU6", 30, 4), ("LOGISTIC", 40, 5), ("QUANTIZE", 30, 6)])
def test_unary_random(opcode, n, seed, tmp_path):
    model, labels = family(seed, n, lambda r: unary_model(r, opcode))
    compare(model, labels, tmp_path)
    CONFIGS[opcode] = CONFIGS.get(opcode, 0) + n


def test_relu_n1_to_1_random(tmp_path):
    # TFLM has no RELU_N1_TO_1 kernel: TFLite's reference ReluX is the only reference there is.
    model, labels = family(7, 20, lambda r: unary_model(r, "RELU_N1_TO_1"))
    compare(model, labels, tmp_path, oracle="litert-ref")
    CONFIGS["RELU_N1_TO_1"] = 20


def test_softmax_random(tmp_path):
    model, labels = family(8, 50, softmax_model)
    edges = softmax_edge_models()
    model = merge([model] + [e[0] for e in edges])
    compare(model, labels + [e[1] for e in edges], tmp_path)
    CONFIGS["SOFTMAX"] = 50 + len(edges)


def test_dequantize_quantize_float_path(tmp_path):
    model, labels = family(9, 15, dequant_quant_model)
    compare(model, labels, tmp_path)
    CONFIGS["DEQUANTIZE+QUANTIZE(float)"] = 15


def test_everything_under_sanitizers(tmp_path):
    parts = []
    for seed, make in enumerate([lambda r: binary_model(r, "ADD"), lambda r: binary_model(r, "MUL"),
                                 lambda r: unary_model(r, "RELU"), lambda r: unary_model(r, "RELU6"),
                                 lambda r: unary_model(r, "LOGISTIC"), lambda r: unary_model(r, "QUANTIZE"),
                                 softmax_model, dequant_quant_model]):
        parts.append(family(100 + seed, 6, make))
    model = merge([p[0] for p in parts])
    compare(model, [lab for p in parts for lab in p[1]], tmp_path, sanitize=True)
    CONFIGS["sanitized mix"] = 6 * len(parts)


# ---------------------------------------------------------------------------------------------
# the converter's models


CONVERTED = [("add", 6), ("mul", 6), ("add_self", 4, {"branch": "self"}), ("add_self", 3, {"branch": "relu"}),
             ("relu", 4, {"source": "input"}), ("relu6", 4, {"source": "input"}), ("logistic", 6), ("softmax", 8)]


def test_converted_models(tmp_path):
    opmodels = pytest.importorskip("opmodels")
    models, labels = [], []
    for spec in CONVERTED:
        name, n, over = spec[0], spec[1], (spec[2] if len(spec) > 2 else {})
        r = np.random.default_rng([11, len(name), n])
        for _ in range(n):
            m = opmodels.BUILDERS[name](r, **over)
            models.append(m.tflite)
            labels.append(repr(m))
    compare(merge(models), labels, tmp_path)
    CONFIGS["converted"] = len(models)


def test_converted_quantize(tmp_path):
    # int8 -> int8 QUANTIZE as the converter emits it: in front of a CONCATENATION
    opmodels = pytest.importorskip("opmodels")
    if "CONCATENATION" not in op_registry.REGISTRY:
        pytest.skip("CONCATENATION is not supported yet")
    ms = opmodels.random_models("quantize", 4, 12)
    compare(merge([m.tflite for m in ms]), [repr(m) for m in ms], tmp_path)
    CONFIGS["converted QUANTIZE"] = len(ms)


# ---------------------------------------------------------------------------------------------
# parameters computed as TFLM's Prepare computes them


def test_softmax_multiplier_is_capped_with_shift_31():
    from codegen.ops.activation import Softmax

    b = ModelBuilder()
    x = b.input((1, 4), scale=0.5, zero_point=0)
    o = b.output(b.tensor((1, 4), scale=1 / 256, zero_point=-128))
    b.op("SOFTMAX", [x], [o], opts("SoftmaxOptionsT", beta=64.0))
    g = read_model(b.build())
    p = Softmax().params(g.ops[0], g)
    assert (p["input_multiplier"], p["input_left_shift"], p["diff_min"]) == (2**31 - 1, 31, 0)


def test_logistic_radius_and_multiplier():
    from codegen.ops.activation import Logistic

    b = ModelBuilder()
    x = b.input((1, 4), scale=0.1, zero_point=3)
    o = b.output(b.tensor((1, 4), scale=1 / 256, zero_point=-128))
    b.op("LOGISTIC", [x], [o])
    g = read_model(b.build())
    p = Logistic().params(g.ops[0], g)
    real = float(np.float32(0.1)) * 2**27
    q, shift = math.frexp(real)
    assert p["input_left_shift"] == shift == 24
    assert p["input_multiplier"] == round(q * 2**31)
    assert p["input_range_radius"] == math.floor(15 * 2**27 / 2**24)


# ---------------------------------------------------------------------------------------------
# what is refused, and how


def _single(opcode, in_scale, in_zp, out_scale, out_zp, dtype="int8", options=None):
    b = ModelBuilder()
    x = b.input((1, 8), scale=in_scale, zero_point=in_zp, dtype=dtype)
    o = b.output(b.tensor((1, 8), scale=out_scale, zero_point=out_zp, dtype=dtype))
    b.op(opcode, [x], [o], options)
    return read_model(b.build())


@pytest.mark.parametrize("graph, message", [
    (lambda: _single("SOFTMAX", 0.1, 0, 0.01, -128, options=opts("SoftmaxOptionsT", beta=1.0)), "scale 1/256"),
    (lambda: _single("SOFTMAX", 0.1, 0, 1 / 256, 0, options=opts("SoftmaxOptionsT", beta=1.0)), "zero point -128"),
    (lambda: _single("LOGISTIC", 0.1, 0, 1 / 256, 0), "zero point 0; TFLite Micro needs -128"),
    (lambda: _single("RELU", 0.1, 0, 0.1, 0, dtype="int16"), "int16; supported: int8"),
])
def test_unsupported_configurations_are_clear_errors(graph, message, tmp_path):
    with pytest.raises(CodegenError, match=message):
        build_host(graph(), tmp_path)


def test_add_with_too_small_output_scale_is_refused(tmp_path):
    b = ModelBuilder()
    x = b.input((1, 4), scale=1.0, zero_point=0)
    y = b.input((1, 4), scale=1.0, zero_point=0)
    o = b.output(b.tensor((1, 4), scale=1e-7, zero_point=0))
    b.op("ADD", [x, y], [o], opts("AddOptionsT"))
    with pytest.raises(CodegenError, match="output rescale factor"):
        build_host(read_model(b.build()), tmp_path)


def test_summary():
    """Not a check: prints how many configurations the tests above compared (pytest -s)."""
    print("\nelementwise configurations compared:", CONFIGS, "total", sum(CONFIGS.values()))
