"""A factory of small, randomised, full-integer int8 ``.tflite`` models, one (or a few) ops each.

Every builder draws a configuration from a ``np.random.Generator`` (or an int seed), builds a tiny
Keras model with seeded random weights and converts it the way qute does
(``TFLiteConverter.from_keras_model``, ``Optimize.DEFAULT``, a seeded representative dataset,
``TFLITE_BUILTINS_INT8``, int8 input and output), which quantizes weights per channel by default.

    m = BUILDERS["conv2d"](np.random.default_rng(0))   # OpModel(name, config, tflite)
    op_codes(m.tflite)                                  # ['CONV_2D']
    models = random_models("add", n=3, seed=1)

``config`` alone determines the model: ``make(name, config)`` rebuilds it (useful to replay a
failing case). Keyword overrides pin parts of a drawn configuration:
``BUILDERS["conv2d"](rng, padding="same", activation="relu6")``; the caller must keep an
overridden configuration consistent (a VALID kernel must fit its input).

Converted models are cached on disk under ``$QUTE_OPMODELS_CACHE`` (default
``~/.cache/qute-opmodels``; set it to ``off`` to disable), keyed by a hash of the builder name, the
configuration, the factory version and the TensorFlow/Keras versions. TensorFlow is imported only
on a cache miss, so a warm cache never pays its ~6 s import. ``op_codes`` and the other flatbuffer
helpers read the model through tflite-micro's bundled schema binding, without TensorFlow.

What the converter (TF 2.21, Keras 3.15, batch dimension left ``None`` as qute leaves it) emits
per builder is in ``EMITS`` (ops that must appear) and ``ALLOWED`` (every op that may appear).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _fb

# Bump whenever a builder's construction changes, so stale cache entries are not reused.
FACTORY_VERSION = "2"


@dataclass(frozen=True)
class OpModel:
    name: str
    config: dict
    tflite: bytes = field(repr=False)

    def __repr__(self) -> str:  # keep pytest ids and failure messages readable
        return f"OpModel({self.name!r}, {json.dumps(self.config, sort_keys=True)}, {len(self.tflite)} bytes)"


# ---------------------------------------------------------------------------------------------
# Flatbuffer helpers (no TensorFlow)

_OP_NAMES = {v: k for k, v in vars(_fb.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
_TYPE_NAMES = {v: k for k, v in vars(_fb.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
_NP_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
             "FLOAT32": np.float32, "BOOL": np.bool_}


def _model(tflite: bytes):
    if len(tflite) < 8 or bytes(tflite[4:8]) != b"TFL3":
        raise ValueError("not a .tflite flatbuffer (no TFL3 identifier)")
    return _fb.Model.GetRootAsModel(tflite, 0)


def _opname(model, opcode_index: int) -> str:
    oc = model.OperatorCodes(opcode_index)
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
    if code == _fb.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (oc.CustomCode() or b"").decode()
    return _OP_NAMES.get(code, f"BUILTIN_{code}")


def op_codes(tflite: bytes, subgraph: int = 0) -> list[str]:
    """Builtin operator names of a subgraph in execution (flatbuffer) order."""
    m = _model(tflite)
    g = m.Subgraphs(subgraph)
    return [_opname(m, g.Operators(i).OpcodeIndex()) for i in range(g.OperatorsLength())]


def tensor_info(tflite: bytes, index: int, subgraph: int = 0) -> dict:
    """Name, shape, dtype, constness and quantization of one tensor."""
    m = _model(tflite)
    t = m.Subgraphs(subgraph).Tensors(index)
    q = t.Quantization()
    scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0)
    zps = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
    buf = m.Buffers(t.Buffer())
    const = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
    return {
        "index": index,
        "name": (t.Name() or b"").decode(),
        "shape": tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
        "dtype": _TYPE_NAMES.get(t.Type(), str(t.Type())).lower(),
        "const": bool(const),
        "scales": np.asarray(scales, np.float32),
        "zero_points": np.asarray(zps, np.int64),
        "quantized_dimension": int(q.QuantizedDimension()) if q is not None else 0,
    }


def operators(tflite: bytes, subgraph: int = 0) -> list[dict]:
    """Each operator: {'op', 'inputs': [tensor_info | None], 'outputs': [tensor_info], 'options': {...}}.

    ``options`` holds the scalar fields of the builtin options table (e.g. ``Padding``,
    ``FusedActivationFunction``, ``DilationHFactor``, ``KeepNumDims``, ``AsymmetricQuantizeInputs``).
    """
    m = _model(tflite)
    g = m.Subgraphs(subgraph)
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        ins = [None if j < 0 else tensor_info(tflite, j, subgraph) for j in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [tensor_info(tflite, j, subgraph) for j in op.OutputsAsNumpy()] if op.OutputsLength() else []
        out.append({"op": _opname(m, op.OpcodeIndex()), "inputs": ins, "outputs": outs, "options": _options(op)})
    return out


def _options(op) -> dict:
    kind = op.BuiltinOptionsType()
    if kind == 0 or op.BuiltinOptions() is None:
        return {}
    names = {v: k for k, v in vars(_fb.BuiltinOptions).items() if not k.startswith("_") and isinstance(v, int)}
    cls = getattr(_fb, names.get(kind, ""), None)
    if cls is None:
        return {}
    obj = cls()
    tab = op.BuiltinOptions()
    obj.Init(tab.Bytes, tab.Pos)
    res = {}
    for attr in dir(cls):
        if attr[0].isupper() and not attr.startswith(("Init", "GetRootAs", "BufferHasIdentifier")) \
                and not attr.endswith(("AsNumpy", "Length", "IsNone")):
            try:
                v = getattr(obj, attr)()
            except TypeError:
                continue
            if isinstance(v, (int, float, bool)):
                res[attr] = v
    return res


def io_details(tflite: bytes) -> tuple[list[dict], list[dict]]:
    """tensor_info of the model inputs and outputs, in flatbuffer order."""
    m = _model(tflite)
    g = m.Subgraphs(0)
    ins = [tensor_info(tflite, int(j)) for j in g.InputsAsNumpy()]
    outs = [tensor_info(tflite, int(j)) for j in g.OutputsAsNumpy()]
    return ins, outs


# ---------------------------------------------------------------------------------------------
# Conversion and the cache


def _versions() -> str:
    def v(*dists):
        for d in dists:
            try:
                return importlib.metadata.version(d)
            except importlib.metadata.PackageNotFoundError:
                pass
        return "?"
    return f"tf={v('tensorflow-cpu', 'tensorflow')};keras={v('keras')}"


def cache_dir() -> Path | None:
    env = os.environ.get("QUTE_OPMODELS_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "qute-opmodels"


def cache_key(name: str, config: dict) -> str:
    blob = json.dumps({"builder": name, "config": config, "factory": FACTORY_VERSION, "versions": _versions()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@contextlib.contextmanager
def _quiet_fds():
    """Sends fd 1 and 2 (TF's C++ chatter, Keras' export banner) to a temp file; yields it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log = tempfile.TemporaryFile()
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.close()


_TF = None


def _tf():
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        with _quiet_fds():
            import keras
            import tensorflow as tf
        _TF = (tf, keras)
    return _TF


def _convert(name: str, config: dict) -> bytes:
    tf, keras = _tf()
    spec = _SPECS[name]
    model = spec.build(config, keras)
    _randomise_weights(model, config)
    ranges = config["in_ranges"]
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs]
    input_names = [f"input_{i}" for i in range(len(shapes))]
    n_rep = config.get("n_rep", 8)

    def representative():
        r = np.random.default_rng([config["seed"], 1])
        for _ in range(n_rep):
            yield {nm: r.uniform(lo, hi, (1,) + s).astype(np.float32)
                   for nm, s, (lo, hi) in zip(input_names, shapes, ranges)}

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with _quiet_fds() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs ...", tf.lite.Interpreter deprecation
        try:
            return bytes(conv.convert())
        except Exception as e:
            sys.stderr.flush()
            log.seek(0)
            tail = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"converting {name} {json.dumps(config, sort_keys=True)} failed: {e}\n{tail}") from e


def make(name: str, config: dict, cache: bool = True) -> OpModel:
    """Builds (or loads from the cache) the model a builder makes for exactly this configuration."""
    if name not in _SPECS:
        raise KeyError(f"unknown op model builder {name!r}; known: {sorted(_SPECS)}")
    config = json.loads(json.dumps(config))  # plain JSON types, detached from the caller's dict
    d = cache_dir() if cache else None
    path = d / f"{name}-{cache_key(name, config)}.tflite" if d is not None else None
    if path is not None and path.is_file():
        data = path.read_bytes()
        if data[4:8] == b"TFL3":
            return OpModel(name, config, data)
    data = _convert(name, config)
    if path is not None:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # atomic: concurrent runs never see a half-written model
        except OSError:
            pass
    return OpModel(name, config, data)


# ---------------------------------------------------------------------------------------------
# Random weights


def _randomise_weights(model, config: dict) -> None:
    """Seeded weights with per-output-channel spread, so per-channel scales really differ."""
    r = np.random.default_rng([config["seed"], 2])
    gain = float(config.get("weight_gain", 1.0))
    zero_ch = bool(config.get("zero_channel", False))
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        kind = type(layer).__name__
        new = []
        for k, w in enumerate(ws):
            if k == 0 and w.ndim >= 2:  # kernel
                if kind == "DepthwiseConv2D":
                    fan_in, ch_shape = w.shape[0] * w.shape[1], w.shape[2:]
                elif kind == "DepthwiseConv1D":
                    fan_in, ch_shape = w.shape[0], w.shape[1:]
                else:
                    fan_in, ch_shape = int(np.prod(w.shape[:-1])), w.shape[-1:]
                lim = math.sqrt(3.0 / max(fan_in, 1)) * gain
                ch = np.exp(r.normal(0.0, 0.6, ch_shape))
                v = r.uniform(-lim, lim, w.shape) * ch
                if zero_ch:
                    v.reshape(-1, int(np.prod(ch_shape)))[:, 0] = 0.0
                new.append(v.astype(np.float32))
            elif k == 1 and w.ndim == 1:  # bias
                new.append(r.normal(0.0, 0.3 * gain, w.shape).astype(np.float32))
            else:
                new.append(r.normal(0.0, 0.5, w.shape).astype(np.float32))
        layer.set_weights(new)


# ---------------------------------------------------------------------------------------------
# Sampling helpers


def _int(r, lo, hi) -> int:
    return int(r.integers(lo, hi + 1))


def _pick(r, seq):
    return seq[int(r.integers(len(seq)))]


def _range(r) -> list[float]:
    """A float input range for the representative dataset, so input scales/zero points vary."""
    a = float(10 ** r.uniform(-1.0, 1.0))
    kind = _pick(r, ("sym", "sym", "pos", "asym"))
    if kind == "sym":
        return [round(-a, 4), round(a, 4)]
    if kind == "pos":
        return [0.0, round(a, 4)]
    return [round(-a * float(r.uniform(0.1, 0.9)), 4), round(a, 4)]


def _base(r, n_inputs: int = 1) -> dict:
    return {"seed": int(r.integers(2**31)), "in_ranges": [_range(r) for _ in range(n_inputs)]}


def _act(r) -> str:
    return _pick(r, ("none", "relu", "relu6"))


def _keras_act(a: str):
    return None if a in (None, "none") else a


def _fit_valid(r, size: int, k: int, d: int = 1) -> int:
    """Shrinks a kernel so a VALID window (dilation d) fits in `size`."""
    while k > 1 and (k - 1) * d + 1 > size:
        k -= 1
    return k


def _inputs(keras, config, *shapes):
    b = config.get("batch")
    return [keras.Input(tuple(s), batch_size=b, name=f"input_{i}") for i, s in enumerate(shapes)]


# ---------------------------------------------------------------------------------------------
# Builders: each spec = sample(rng) -> config, build(config, keras) -> keras.Model


@dataclass(frozen=True)
class _Spec:
    sample: Callable
    build: Callable
    emits: frozenset
    allowed: frozenset
    note: str = ""


_SPECS: dict[str, _Spec] = {}


def _spec(name, emits, allowed=(), note=""):
    def deco(pair):
        sample, build = pair
        _SPECS[name] = _Spec(sample, build, frozenset(emits), frozenset(emits) | frozenset(allowed), note)
        return pair
    return deco


# --- CONV_2D --------------------------------------------------------------------------------


def _sample_conv(r, dilated: str | None = None, depthwise: bool = False) -> dict:
    c = _base(r)
    h, w = _int(r, 1, 12), _int(r, 1, 12)
    pad = _pick(r, ("same", "valid")) if dilated is None else dilated
    dil = [1, 1]
    if dilated is not None:
        dil = _pick(r, ([2, 2], [2, 2], [2, 1], [1, 2], [3, 3]))
        h, w = max(h, 3), max(w, 3)
    elif r.random() < 0.3:
        dil = [_int(r, 1, 2), _int(r, 1, 2)]
    stride = [1, 1] if dil != [1, 1] else [_int(r, 1, 3), _int(r, 1, 3)]
    kh, kw = _int(r, 1, 5), _int(r, 1, 5)
    if pad == "valid":
        kh, kw = _fit_valid(r, h, kh, dil[0]), _fit_valid(r, w, kw, dil[1])
    c.update(input_shape=[h, w, _int(r, 1, 8)], kernel=[kh, kw], strides=stride, dilation=dil, padding=pad,
             activation=_act(r), use_bias=bool(r.random() < 0.75), zero_channel=bool(r.random() < 0.1),
             weight_gain=round(float(10 ** r.uniform(-0.5, 0.5)), 4))
    if depthwise:
        c["depth_multiplier"] = _int(r, 1, 3)
    else:
        c["filters"] = _int(r, 1, 16)
    # Keras' TF backend lowers any dilated conv to SPACE_TO_BATCH_ND/conv/BATCH_TO_SPACE_ND when the
    # batch is unknown; with batch 1 the converter folds it back into one dilated op. Plain conv
    # cases use batch 1 for dilation so they cover native dilation factors.
    c["batch"] = None if dilated is not None or dil == [1, 1] else 1
    return c


def _build_conv(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    if "depth_multiplier" in c:
        layer = keras.layers.DepthwiseConv2D(tuple(c["kernel"]), strides=tuple(c["strides"]), padding=c["padding"],
                                             depth_multiplier=c["depth_multiplier"],
                                             dilation_rate=tuple(c["dilation"]), activation=_keras_act(c["activation"]),
                                             use_bias=c["use_bias"], name="op")
    else:
        layer = keras.layers.Conv2D(c["filters"], tuple(c["kernel"]), strides=tuple(c["strides"]), padding=c["padding"],
                                    dilation_rate=tuple(c["dilation"]), activation=_keras_act(c["activation"]),
                                    use_bias=c["use_bias"], name="op")
    return keras.Model(ins, layer(x), name="opmodel")


_spec("conv2d", {"CONV_2D"})((lambda r: _sample_conv(r), _build_conv))
# In the SPACE_TO_BATCH_ND lowering the bias is not fused: it follows BATCH_TO_SPACE_ND as an ADD
# (carrying the fused ReLU/ReLU6); without bias a ReLU/ReLU6 stays a standalone op.
_STB_TAIL = {"ADD", "RELU", "RELU6"}
_spec("conv2d_dilated_same", {"SPACE_TO_BATCH_ND", "CONV_2D", "BATCH_TO_SPACE_ND"}, allowed=_STB_TAIL,
      note="Keras Conv2D(dilation, padding=same), batch None; bias -> separate ADD")(
    (lambda r: _sample_conv(r, dilated="same"), _build_conv))
_spec("conv2d_dilated_valid", {"SPACE_TO_BATCH_ND", "CONV_2D", "BATCH_TO_SPACE_ND"}, allowed=_STB_TAIL,
      note="Keras Conv2D(dilation, padding=valid), batch None: lowered the same way")(
    (lambda r: _sample_conv(r, dilated="valid"), _build_conv))
_spec("depthwise_conv2d", {"DEPTHWISE_CONV_2D"})((lambda r: _sample_conv(r, depthwise=True), _build_conv))
_spec("depthwise_conv2d_dilated_same", {"SPACE_TO_BATCH_ND", "DEPTHWISE_CONV_2D", "BATCH_TO_SPACE_ND"},
      allowed=_STB_TAIL)(
    (lambda r: _sample_conv(r, dilated="same", depthwise=True), _build_conv))
_spec("depthwise_conv2d_dilated_valid", {"SPACE_TO_BATCH_ND", "DEPTHWISE_CONV_2D", "BATCH_TO_SPACE_ND"},
      allowed=_STB_TAIL)(
    (lambda r: _sample_conv(r, dilated="valid", depthwise=True), _build_conv))


def _sample_conv1d(r):
    c = _base(r)
    n = _int(r, 3, 16)
    k = _fit_valid(r, n, _int(r, 1, 5)) if (pad := _pick(r, ("same", "valid"))) == "valid" else _int(r, 1, 5)
    c.update(input_shape=[n, _int(r, 1, 8)], filters=_int(r, 1, 12), kernel=k, strides=_int(r, 1, 2), padding=pad,
             activation=_act(r), use_bias=bool(r.random() < 0.75))
    return c


def _sample_conv1d_dilated(r):
    c = _base(r)
    n, dil, pad = _int(r, 5, 21), _pick(r, (2, 3)), _pick(r, ("same", "valid"))
    k = _int(r, 2, 4)
    if pad == "valid":
        k = _fit_valid(r, n, k, dil)
    c.update(input_shape=[n, _int(r, 1, 6)], kernel=k, strides=1, dilation=dil, padding=pad, activation=_act(r),
             use_bias=bool(r.random() < 0.75), depthwise=bool(r.random() < 0.5), batch=None)
    if c["depthwise"]:
        c["depth_multiplier"] = _int(r, 1, 2)
    else:
        c["filters"] = _int(r, 1, 8)
    return c


def _build_conv1d(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    common = dict(strides=c["strides"], padding=c["padding"], dilation_rate=c.get("dilation", 1),
                  activation=_keras_act(c["activation"]), use_bias=c["use_bias"], name="op")
    if c.get("depthwise"):
        layer = keras.layers.DepthwiseConv1D(c["kernel"], depth_multiplier=c["depth_multiplier"], **common)
    else:
        layer = keras.layers.Conv1D(c["filters"], c["kernel"], **common)
    return keras.Model(ins, layer(x), name="opmodel")


_spec("conv1d", {"EXPAND_DIMS", "CONV_2D", "RESHAPE"}, allowed={"ADD", "RELU", "RELU6"},
      note="Conv1D: EXPAND_DIMS, CONV_2D, RESHAPE (no SQUEEZE); sometimes the bias+act is a trailing ADD")(
    (_sample_conv1d, _build_conv1d))
_spec("conv1d_dilated", {"SPACE_TO_BATCH_ND", "EXPAND_DIMS", "RESHAPE", "BATCH_TO_SPACE_ND"},
      allowed={"CONV_2D", "DEPTHWISE_CONV_2D"} | _STB_TAIL,
      note="Conv1D or DepthwiseConv1D(dilation 2-3), batch None: SPACE_TO_BATCH_ND and EXPAND_DIMS (either order), "
           "the 2-D conv, RESHAPE and BATCH_TO_SPACE_ND (either order)")(
    (_sample_conv1d_dilated, _build_conv1d))


# --- FULLY_CONNECTED ------------------------------------------------------------------------


def _sample_fc(r, rank3: bool = False):
    c = _base(r)
    c.update(units=_int(r, 1, 32), activation=_pick(r, ("none", "relu", "relu6") if not rank3 else ("none", "relu")),
             use_bias=bool(r.random() < 0.8), zero_channel=bool(r.random() < 0.1),
             weight_gain=round(float(10 ** r.uniform(-0.5, 0.5)), 4))
    c["input_shape"] = [_int(r, 1, 8), _int(r, 1, 16)] if rank3 else [_int(r, 1, 64)]
    if rank3:
        c["batch"] = 1  # with batch None Dense-on-rank-3 becomes SHAPE/GATHER/REDUCE_PROD/.../RESHAPE around FC
    return c


def _build_fc(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    y = keras.layers.Dense(c["units"], activation=_keras_act(c["activation"]), use_bias=c["use_bias"], name="op")(x)
    return keras.Model(ins, y, name="opmodel")


_spec("fully_connected", {"FULLY_CONNECTED"})((lambda r: _sample_fc(r), _build_fc))
_spec("fully_connected_rank3", {"FULLY_CONNECTED"}, note="Dense on (1, T, F) with static batch: keep_num_dims")(
    (lambda r: _sample_fc(r, rank3=True), _build_fc))


# --- pooling, MEAN ------------------------------------------------------------------------


def _sample_pool(r):
    c = _base(r)
    h, w = _int(r, 1, 12), _int(r, 1, 12)
    pad = _pick(r, ("same", "valid"))
    ph, pw = _int(r, 1, 4), _int(r, 1, 4)
    if pad == "valid":
        ph, pw = min(ph, h), min(pw, w)
    c.update(input_shape=[h, w, _int(r, 1, 8)], pool=[ph, pw], strides=[_int(r, 1, 3), _int(r, 1, 3)], padding=pad,
             activation=_pick(r, ("none", "none", "relu")))
    return c


def _build_pool(kind):
    def build(c, keras):
        (x,) = ins = _inputs(keras, c, c["input_shape"])
        cls = keras.layers.AveragePooling2D if kind == "avg" else keras.layers.MaxPooling2D
        y = cls(tuple(c["pool"]), strides=tuple(c["strides"]), padding=c["padding"], name="op")(x)
        if c["activation"] == "relu":
            y = keras.layers.ReLU(name="act")(y)
        return keras.Model(ins, y, name="opmodel")
    return build


_spec("average_pool2d", {"AVERAGE_POOL_2D"}, note="a following ReLU is fused")((_sample_pool, _build_pool("avg")))
_spec("max_pool2d", {"MAX_POOL_2D"}, note="a following ReLU is fused")((_sample_pool, _build_pool("max")))


def _sample_mean(r):
    c = _base(r)
    rank = _pick(r, (4, 4, 3))
    c.update(input_shape=[_int(r, 1, 12), _int(r, 1, 12), _int(r, 1, 16)][: rank - 1],
             keepdims=bool(r.random() < 0.5))
    return c


def _build_mean(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    cls = keras.layers.GlobalAveragePooling2D if len(c["input_shape"]) == 3 else keras.layers.GlobalAveragePooling1D
    return keras.Model(ins, cls(keepdims=c["keepdims"], name="op")(x), name="opmodel")


_spec("mean", {"MEAN"}, note="GlobalAveragePooling1D/2D -> MEAN (never AVERAGE_POOL_2D)")((_sample_mean, _build_mean))


# --- elementwise ---------------------------------------------------------------------------


def _sample_binary(r):
    c = _base(r, 2)
    shape = [_int(r, 1, 8), _int(r, 1, 8), _int(r, 1, 8)]
    other = list(shape)
    bc = _pick(r, ("none", "none", "channel", "spatial"))
    if bc == "channel":
        other = [1, 1, shape[2]]
    elif bc == "spatial":
        other = [shape[0], shape[1], 1]
    c.update(input_shapes=[shape, other], broadcast=bc, activation=_pick(r, ("none", "none", "relu")))
    return c


def _build_binary(kind):
    def build(c, keras):
        a, b = ins = _inputs(keras, c, *c["input_shapes"])
        cls = keras.layers.Add if kind == "add" else keras.layers.Multiply
        y = cls(name="op")([a, b])
        if c["activation"] == "relu":
            y = keras.layers.ReLU(name="act")(y)
        return keras.Model(ins, y, name="opmodel")
    return build


_spec("add", {"ADD"}, note="two model inputs with their own scales; optional broadcast; ReLU fused")(
    (_sample_binary, _build_binary("add")))
_spec("mul", {"MUL"}, note="two model inputs with their own scales; optional broadcast; ReLU fused")(
    (_sample_binary, _build_binary("mul")))


def _sample_add_self(r):
    c = _base(r)
    c.update(input_shape=[_int(r, 1, 8), _int(r, 1, 8), _int(r, 1, 8)],
             branch=_pick(r, ("conv1x1", "conv1x1", "self", "relu")), activation=_pick(r, ("none", "relu")),
             use_bias=True, weight_gain=round(float(10 ** r.uniform(-0.5, 0.5)), 4))
    return c


def _build_add_self(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    if c["branch"] == "conv1x1":
        b = keras.layers.Conv2D(c["input_shape"][2], 1, name="branch")(x)
    elif c["branch"] == "relu":
        b = keras.layers.ReLU(name="branch")(x)
    else:
        b = x
    y = keras.layers.Add(name="op")([x, b])
    if c["activation"] == "relu":
        y = keras.layers.ReLU(name="act")(y)
    return keras.Model(ins, y, name="opmodel")


_spec("add_self", {"ADD"}, allowed={"CONV_2D", "RELU"},
      note="x + f(x), f = 1x1 conv, relu or identity (x + x)")((_sample_add_self, _build_add_self))


def _sample_unary_act(r):
    c = _base(r)
    c.update(source=_pick(r, ("input", "conv_branch")), input_shape=[_int(r, 1, 8), _int(r, 1, 8), _int(r, 1, 8)],
             filters=_int(r, 1, 8), weight_gain=round(float(10 ** r.uniform(-0.5, 0.5)), 4))
    return c


def _build_unary_act(kind):
    def build(c, keras):
        (x,) = ins = _inputs(keras, c, c["input_shape"])
        act = keras.layers.ReLU(max_value=6.0 if kind == "relu6" else None, name="op")
        if c["source"] == "input":
            return keras.Model(ins, act(x), name="opmodel")
        y = keras.layers.Conv2D(c["filters"], 1, name="conv")(x)
        # the conv output is itself a model output, so the activation cannot be fused into it
        return keras.Model(ins, [y, act(y)], name="opmodel")
    return build


_spec("relu", {"RELU"}, allowed={"CONV_2D"},
      note="standalone on the input, or on a conv whose raw output is also a model output (else fused)")(
    (_sample_unary_act, _build_unary_act("relu")))
_spec("relu6", {"RELU6"}, allowed={"CONV_2D"}, note="as relu")((_sample_unary_act, _build_unary_act("relu6")))


def _sample_logistic(r):
    c = _base(r)
    src = _pick(r, ("input", "input", "dense"))
    c.update(source=src, weight_gain=round(float(10 ** r.uniform(-0.3, 0.7)), 4))
    c["input_shape"] = [_int(r, 1, 32)] if src == "dense" else [_int(r, 1, 8), _int(r, 1, 8), _int(r, 1, 8)][: _int(r, 1, 3)]
    if src == "dense":
        c["units"] = _int(r, 1, 16)
    return c


def _build_logistic(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    if c["source"] == "dense":
        x = keras.layers.Dense(c["units"], name="dense")(x)
    return keras.Model(ins, keras.layers.Activation("sigmoid", name="op")(x), name="opmodel")


_spec("logistic", {"LOGISTIC"}, allowed={"FULLY_CONNECTED"}, note="sigmoid is never fused")(
    (_sample_logistic, _build_logistic))


def _sample_softmax(r):
    c = _base(r)
    src = _pick(r, ("dense", "dense", "input"))
    # weight_gain spreads the logits, hence the softmax input scale, over ~3 decades
    c.update(source=src, weight_gain=round(float(10 ** r.uniform(-1.0, 1.5)), 4))
    if src == "dense":
        c.update(input_shape=[_int(r, 1, 32)], units=_int(r, 2, 16))
    else:
        c["input_shape"] = _pick(r, ([_int(r, 2, 16)], [_int(r, 1, 4), _int(r, 1, 4), _int(r, 2, 10)]))
        lo = -float(10 ** r.uniform(-1, 1.5))
        c["in_ranges"] = [[round(lo, 4), round(-lo * float(r.uniform(0.2, 1.0)), 4)]]
    return c


def _build_softmax(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    if c["source"] == "dense":
        x = keras.layers.Dense(c["units"], name="dense")(x)
    return keras.Model(ins, keras.layers.Softmax(name="op")(x), name="opmodel")


_spec("softmax", {"SOFTMAX"}, allowed={"FULLY_CONNECTED"})((_sample_softmax, _build_softmax))


def _sample_dilated_classifier(r):
    c = _base(r)
    c.update(input_shape=[_int(r, 6, 12), _int(r, 6, 12), _int(r, 1, 4)], filters=_int(r, 2, 8),
             kernel=_pick(r, (2, 3)), dilation=_pick(r, (2, 3)), padding=_pick(r, ("same", "valid")),
             activation=_pick(r, ("relu", "relu6")), units=_int(r, 2, 12),
             head=_pick(r, ("softmax", "softmax", "sigmoid")), weight_gain=round(float(10 ** r.uniform(-0.3, 0.5)), 4), batch=None)
    return c


def _build_dilated_classifier(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    y = keras.layers.Conv2D(c["filters"], c["kernel"], dilation_rate=c["dilation"], padding=c["padding"],
                            activation=c["activation"], name="conv")(x)
    y = keras.layers.Dense(c["units"], name="dense")(keras.layers.Flatten(name="flatten")(y))
    return keras.Model(ins, keras.layers.Activation(c["head"], name="op")(y), name="opmodel")


_spec("dilated_classifier", {"SPACE_TO_BATCH_ND", "CONV_2D", "BATCH_TO_SPACE_ND", "FULLY_CONNECTED"},
      allowed=_STB_TAIL | {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "SOFTMAX", "LOGISTIC"},
      note="Conv2D(dilation 2-3, relu/relu6), Flatten, Dense, softmax or sigmoid, batch None: a typical "
           "classifier TFLM cannot run (wrong stored shapes)")(
    (_sample_dilated_classifier, _build_dilated_classifier))


# --- shape ops ------------------------------------------------------------------------------


def _sample_pad(r):
    c = _base(r)
    p = [[_int(r, 0, 3), _int(r, 0, 3)], [_int(r, 0, 3), _int(r, 0, 3)]]
    if not any(map(any, p)):
        p[0][0] = 1
    c.update(input_shape=[_int(r, 1, 8), _int(r, 1, 8), _int(r, 1, 8)], padding=p)
    return c


def _build_pad(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    return keras.Model(ins, keras.layers.ZeroPadding2D(tuple(map(tuple, c["padding"])), name="op")(x), name="opmodel")


_spec("pad", {"PAD"})((_sample_pad, _build_pad))


def _sample_concat(r):
    n = _int(r, 2, 3)
    c = _base(r, n)
    axis = _pick(r, (-1, -1, 1, 2))  # counts the batch: 1 = H, 2 = W, -1 = C
    dim = 2 if axis == -1 else axis - 1
    base = [_int(r, 1, 6), _int(r, 1, 6), _int(r, 1, 6)]
    shapes = []
    for _ in range(n):
        s = list(base)
        s[dim] = _int(r, 1, 6)
        shapes.append(s)
    c.update(input_shapes=shapes, axis=axis, source=_pick(r, ("inputs", "inputs", "conv_branches")),
             filters=[_int(r, 1, 6) for _ in range(n)])
    return c


def _build_concat(c, keras):
    ins = _inputs(keras, c, *c["input_shapes"])
    xs = ins
    if c["source"] == "conv_branches":
        # one input feeding n differently scaled 1x1 convs
        ins = ins[:1]
        fs = c["filters"] if c["axis"] == -1 else [c["filters"][0]] * len(c["filters"])
        xs = [keras.layers.Conv2D(f, 1, name=f"conv{i}")(ins[0]) for i, f in enumerate(fs)]
    return keras.Model(ins, keras.layers.Concatenate(axis=c["axis"], name="op")(xs), name="opmodel")


_spec("concatenation", {"CONCATENATION"}, allowed={"CONV_2D"},
      note="model inputs are forced onto the output's scale, so no QUANTIZE appears")((_sample_concat, _build_concat))


def _factor_shape(r, n: int) -> list[int]:
    dims = []
    rest = n
    for _ in range(_int(r, 1, 3) - 1):
        divs = [d for d in range(1, rest + 1) if rest % d == 0]
        d = _pick(r, divs)
        dims.append(d)
        rest //= d
    dims.append(rest)
    return dims


def _sample_reshape(r):
    c = _base(r)
    shape = [_int(r, 1, 6) for _ in range(_int(r, 1, 3))]
    target = _factor_shape(r, int(np.prod(shape)))
    if target == shape:  # an identity reshape is deleted: the model would have no operator at all
        target = target + [1] if len(target) < 3 else [int(np.prod(shape))]
        if target == shape:
            target = [1] + shape
    c.update(input_shape=shape, target=target, batch=_pick(r, (None, 1)))
    return c


def _build_reshape(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    return keras.Model(ins, keras.layers.Reshape(tuple(c["target"]), name="op")(x), name="opmodel")


_spec("reshape", {"RESHAPE"}, allowed={"SHAPE", "STRIDED_SLICE", "PACK"},
      note="batch None: SHAPE, STRIDED_SLICE, PACK, RESHAPE; batch 1: RESHAPE alone")((_sample_reshape, _build_reshape))


def _sample_flatten(r):
    c = _base(r)
    c["input_shape"] = [_int(r, 1, 6) for _ in range(_int(r, 2, 3))]
    return c


def _build_flatten(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    return keras.Model(ins, keras.layers.Flatten(name="op")(x), name="opmodel")


_spec("flatten", {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"}, note="Keras 3 Flatten with batch None")(
    (_sample_flatten, _build_flatten))


def _sample_expand_dims(r):
    c = _base(r)
    shape = [_int(r, 1, 6) for _ in range(_int(r, 1, 3))]
    c.update(input_shape=shape, axis=_int(r, 1, len(shape) + 1))
    return c


def _build_expand_dims(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    axis = c["axis"]
    return keras.Model(ins, keras.layers.Lambda(lambda t: keras.ops.expand_dims(t, axis), name="op")(x), name="opmodel")


_spec("expand_dims", {"EXPAND_DIMS"}, note="keras.ops.expand_dims in a Lambda, batch None")(
    (_sample_expand_dims, _build_expand_dims))


# --- QUANTIZE -------------------------------------------------------------------------------


def _sample_quantize(r):
    c = _base(r)
    c.update(input_shape=[_int(r, 2, 16)], squash=_pick(r, ("softmax", "sigmoid")))
    return c


def _build_quantize(c, keras):
    (x,) = ins = _inputs(keras, c, c["input_shape"])
    s = keras.layers.Softmax(name="sq")(x) if c["squash"] == "softmax" else keras.layers.Activation("sigmoid", name="sq")(x)
    # SOFTMAX/LOGISTIC outputs have the fixed scale 1/256; CONCATENATION wants one scale for all
    # its inputs, so the converter requantizes int8 -> int8 with a QUANTIZE op.
    return keras.Model(ins, keras.layers.Concatenate(name="op")([s, x]), name="opmodel")


_spec("quantize", {"QUANTIZE", "CONCATENATION"}, allowed={"SOFTMAX", "LOGISTIC"},
      note="concat of a softmax/sigmoid output with the input: int8->int8 QUANTIZE")((_sample_quantize, _build_quantize))


# ---------------------------------------------------------------------------------------------
# Public API


def _make_builder(name: str):
    def builder(rng: np.random.Generator | int | None = None, **overrides) -> OpModel:
        r = np.random.default_rng(rng)
        config = _SPECS[name].sample(r)
        config.update(overrides)
        return make(name, config)
    builder.__name__ = f"build_{name}"
    builder.__doc__ = f"Draws a random {name!r} configuration and returns its OpModel. {_SPECS[name].note}"
    return builder


BUILDERS: dict[str, Callable[..., OpModel]] = {name: _make_builder(name) for name in _SPECS}
EMITS: dict[str, frozenset] = {name: s.emits for name, s in _SPECS.items()}
ALLOWED: dict[str, frozenset] = {name: s.allowed for name, s in _SPECS.items()}
NOTES: dict[str, str] = {name: s.note for name, s in _SPECS.items()}


def random_models(op: str, n: int, seed: int) -> list[OpModel]:
    """n models from builder `op`; the same (op, n, seed) always gives the same models."""
    r = np.random.default_rng([seed, zlib.crc32(op.encode())])
    return [BUILDERS[op](r) for _ in range(n)]
