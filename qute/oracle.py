"""Reference outputs for int8 ``.tflite`` models: TFLite Micro first, LiteRT's reference kernels as fallback.

    run_tflm(tflite, inputs)       -> outputs from the tflite-micro Python interpreter (reference kernels)
    run_litert_ref(tflite, inputs) -> outputs from LiteRT with OpResolverType.BUILTIN_REF
    reference(tflite, inputs)      -> (outputs, "tflm" | "litert-ref")
    random_inputs(tflite, n, seed) -> uniform int8 inputs, one array per model input

``inputs`` is a list with one array per model input, in flatbuffer order. An array either has the
input's exact shape (one sample) or an extra leading axis of N samples when the model's batch is 1
(shape ``(N, *shape[1:])``, which is what ``random_inputs`` draws). The models are run one sample per
invoke; outputs come back in the same convention (``(N, *out_shape[1:])`` for a batch), one array
per model output in flatbuffer order.

Determinism and cost (measured with tflite-micro 0.dev20261023 and ai-edge-litert 2.3 on the op
models of tests/opmodels.py and the MLPerf Tiny models; pinned by tests/test_opmodels.py):
- Creating a TFLM interpreter costs ~0.7 ms (median) for an op model and 3-17 ms for the MLPerf Tiny
  models (vww_mobilenet 16 ms); an invoke of those takes 0.2-20 ms. ``run_tflm`` makes one interpreter per
  call and reuses it across that call's samples.
- On every model whose stored shapes are right, TFLM is deterministic: fresh interpreters, one
  interpreter reused across invokes, and one primed with other inputs all give the same bytes. A
  fresh interpreter per call is not needed for determinism.
- Dilated Keras convs with an unknown batch are lowered to SPACE_TO_BATCH_ND, CONV_2D or
  DEPTHWISE_CONV_2D, BATCH_TO_SPACE_ND (for SAME *and* VALID padding), and the converter stores
  wrong static shapes for the intermediates (``tflm_shape_problems``). TFLM runs on the stored shapes
  and reads uninitialised arena memory: its output is far from the float result (errors of 100-250
  LSB), sometimes changes between fresh interpreters and sometimes does not (a reused interpreter
  repeats itself, since the stale memory is then the same). LiteRT's reference kernels are right
  there (within 1-2 LSB of a float computation) and deterministic. ``reference`` therefore does not
  trust TFLM on such models even when two runs agree.
- TFLM and LiteRT's reference kernels differ deterministically elsewhere: int8 RELU6 (TFLM clamps in
  the input's quantized domain without requantizing to the output's scale/zero point; LiteRT
  requantizes, up to 127 LSB apart), and FULLY_CONNECTED rounding (off by 1 on a few elements, as on
  the MLPerf anomaly-detection autoencoder). TFLM is the reference that counts for firmware.
"""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _fb

_NP = {
    _fb.TensorType.INT8: np.int8,
    _fb.TensorType.UINT8: np.uint8,
    _fb.TensorType.INT16: np.int16,
    _fb.TensorType.INT32: np.int32,
    _fb.TensorType.INT64: np.int64,
    _fb.TensorType.FLOAT32: np.float32,
    _fb.TensorType.BOOL: np.bool_,
}


def model_io(tflite: bytes) -> tuple[list[tuple[tuple[int, ...], type]], list[tuple[tuple[int, ...], type]]]:
    """(shape, numpy dtype) of each model input and output, in flatbuffer order."""
    if len(tflite) < 8 or bytes(tflite[4:8]) != b"TFL3":
        raise ValueError("not a .tflite flatbuffer (no TFL3 identifier)")
    g = _fb.Model.GetRootAsModel(tflite, 0).Subgraphs(0)

    def one(i):
        t = g.Tensors(int(i))
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        return shape, _NP.get(t.Type(), np.float32)

    ins = [one(i) for i in g.InputsAsNumpy()] if g.InputsLength() else []
    outs = [one(i) for i in g.OutputsAsNumpy()] if g.OutputsLength() else []
    return ins, outs


def _arena_size(tflite: bytes) -> int:
    """A generous arena: TFLM's default (10x the model) is too small for tiny models with big activations."""
    m = _fb.Model.GetRootAsModel(tflite, 0)
    g = m.Subgraphs(0)
    total = 0
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        b = m.Buffers(t.Buffer())
        if b is not None and (b.DataLength() > 0 or b.Offset() > 1):
            continue
        n = int(np.prod(t.ShapeAsNumpy())) if t.ShapeLength() else 1
        total += max(n, 1) * np.dtype(_NP.get(t.Type(), np.float32)).itemsize + 16
    return max(len(tflite) * 10, 2 * total + 64 * 1024)


def _split(tflite: bytes, inputs) -> tuple[list[list[np.ndarray]], bool]:
    """Per-sample input lists, and whether the caller passed a batch (leading N axis)."""
    specs, _ = model_io(tflite)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) != len(specs):
        raise ValueError(f"model has {len(specs)} inputs, got {len(inputs)} arrays")
    arrs = [np.asarray(a) for a in inputs]
    conv = []
    for a, (shape, dtype) in zip(arrs, specs):
        if a.dtype != dtype:
            raise ValueError(f"input dtype {a.dtype} != model's {np.dtype(dtype)}")
        if tuple(a.shape) == shape:
            conv.append((False, 1))
        elif len(shape) >= 1 and shape[0] == 1 and a.ndim == len(shape) and tuple(a.shape[1:]) == shape[1:]:
            conv.append((True, a.shape[0]))
        else:
            raise ValueError(f"input shape {a.shape} fits neither {shape} nor (N, *{shape[1:]})")
    if len(set(conv)) > 1:
        raise ValueError(f"inputs disagree on the batch convention or size: {conv}")
    batched, n = conv[0] if conv else (False, 1)
    samples = []
    for s in range(n):
        samples.append([np.ascontiguousarray(a[s:s + 1] if batched else a) for a in arrs])
    return samples, bool(batched)


def _join(per_sample: list[list[np.ndarray]], batched: bool) -> list[np.ndarray]:
    if not batched:
        return per_sample[0]
    n_out = len(per_sample[0])
    return [np.concatenate([s[k] for s in per_sample], axis=0) for k in range(n_out)]


def tflm_interpreter(tflite: bytes):
    """A fresh tflite-micro interpreter with a generous arena."""
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(bytes(tflite), arena_size=_arena_size(tflite))


def run_tflm(tflite: bytes, inputs, interpreter=None) -> list[np.ndarray]:
    """Runs TFLM one sample per invoke; one interpreter (fresh unless given) for all samples."""
    samples, batched = _split(tflite, inputs)
    _, outs = model_io(tflite)
    ip = interpreter if interpreter is not None else tflm_interpreter(tflite)
    results = []
    for xs in samples:
        for i, x in enumerate(xs):
            ip.set_input(x, i)
        ip.invoke()
        results.append([np.array(ip.get_output(k), copy=True) for k in range(len(outs))])
    return _join(results, batched)


def litert_interpreter(tflite: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    ip = Interpreter(model_content=bytes(tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ip.allocate_tensors()
    return ip


def run_litert_ref(tflite: bytes, inputs, interpreter=None) -> list[np.ndarray]:
    """Runs LiteRT's reference kernels (BUILTIN_REF), one sample per invoke."""
    samples, batched = _split(tflite, inputs)
    ip = interpreter if interpreter is not None else litert_interpreter(tflite)
    ind, outd = ip.get_input_details(), ip.get_output_details()
    results = []
    for xs in samples:
        for d, x in zip(ind, xs):
            ip.set_tensor(d["index"], x)
        ip.invoke()
        results.append([np.array(ip.get_tensor(d["index"]), copy=True) for d in outd])
    return _join(results, batched)


def same_bytes(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


def _const_ints(m, t) -> np.ndarray | None:
    b = m.Buffers(t.Buffer())
    if b is None or not b.DataLength():  # not constant (or an offset buffer of a >2 GB model)
        return None
    return np.frombuffer(b.DataAsNumpy().tobytes(), _NP.get(t.Type(), np.int32)).astype(np.int64)


def tflm_shape_problems(tflite: bytes) -> list[str]:
    """Ops whose stored output shape is not what their inputs imply.

    TFLM never re-infers shapes: it runs every op on the shapes stored in the flatbuffer. The
    converter stores wrong shapes for the SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND pair it emits for a
    dilated Keras convolution with an unknown batch (e.g. SPACE_TO_BATCH_ND (1,9,10,8) -> (1,3,4,8)
    instead of (9,5,4,8)); TFLM then reads uninitialised arena memory, and its output is garbage that
    may or may not change from run to run. LiteRT resizes tensors itself and gets them right.
    """
    m = _fb.Model.GetRootAsModel(tflite, 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in vars(_fb.BuiltinOperator).items() if not k.startswith("_")}
    problems = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()))
        if name not in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"):
            continue
        ins = op.InputsAsNumpy()
        x, block, pads = (g.Tensors(int(j)) for j in ins[:3])
        bs, pd = _const_ints(m, block), _const_ints(m, pads)
        shape = [int(d) for d in x.ShapeAsNumpy()]
        got = [int(d) for d in g.Tensors(int(op.OutputsAsNumpy()[0])).ShapeAsNumpy()]
        if bs is None or pd is None or len(shape) != 2 + len(bs):
            problems.append(f"op {i} {name}: cannot check (non-constant block/paddings)")
            continue
        pd = pd.reshape(len(bs), 2)
        if name == "SPACE_TO_BATCH_ND":
            want = [shape[0] * int(np.prod(bs))] + [(shape[1 + k] + int(pd[k].sum())) // int(bs[k]) for k in range(len(bs))]
        else:
            want = [shape[0] // int(np.prod(bs))] + [shape[1 + k] * int(bs[k]) - int(pd[k].sum()) for k in range(len(bs))]
        want += shape[1 + len(bs):]
        if want != got:
            problems.append(f"op {i} {name}: stored output shape {tuple(got)}, inputs imply {tuple(want)}")
    return problems


def reference(tflite: bytes, inputs) -> tuple[list[np.ndarray], str]:
    """Reference outputs and which engine gave them: "tflm" or "litert-ref".

    TFLM runs twice on two fresh interpreters: once over the samples in order, once (after a
    priming invoke on a different input, so any stale arena contents differ) in reverse order. If
    both agree byte for byte, and the model has none of the stored-shape faults of
    ``tflm_shape_problems`` (which make TFLM read uninitialised memory that is not always
    different from one run to the next), the TFLM outputs are returned with "tflm"; otherwise
    LiteRT's reference kernels' with "litert-ref".
    """
    samples, batched = _split(tflite, inputs)
    if not tflm_shape_problems(tflite):
        first = run_tflm(tflite, inputs)
        ip = tflm_interpreter(tflite)
        run_tflm(tflite, [np.bitwise_not(x) if np.issubdtype(x.dtype, np.integer) else -x for x in samples[0]], ip)
        rev = [run_tflm(tflite, xs, ip) for xs in reversed(samples)][::-1]
        if same_bytes(first, _join(rev, batched)):
            return first, "tflm"
    return run_litert_ref(tflite, inputs), "litert-ref"


def random_inputs(tflite: bytes, n: int, seed: int) -> list[np.ndarray]:
    """n uniform samples per model input over the dtype's full range, shaped (n, *shape[1:])."""
    specs, _ = model_io(tflite)
    r = np.random.default_rng(seed)
    res = []
    for shape, dtype in specs:
        if not shape or shape[0] != 1:
            raise ValueError(f"input shape {shape} has no batch-1 leading axis")
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
        if info is None:
            res.append(r.uniform(-1, 1, (n,) + shape[1:]).astype(dtype))
        else:
            res.append(r.integers(info.min, info.max, (n,) + shape[1:], endpoint=True, dtype=dtype))
    return res
