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

Both interpreters believe the file they are given, so every entry point first runs
codegen.validate on it (a QuteError if it fails), then the interpreter in a child process
(codegen.tflm, one child per call: ``reference`` runs both TFLM passes and the LiteRT fallback in
one). A crash there is one QuteError, "TFLite Micro crashed on this model (SIGSEGV) ...", and a
model the interpreter refuses is "TFLite Micro cannot run this model (...)". The child costs 6-7 ms
per call (measured: run_tflm on 4 samples of kws_dscnn 19 ms against 13 ms in-process, vww 39 ms
against 32 ms). ``tflm_interpreter`` and ``run_tflm(..., interpreter=ip)`` run in this process, for
tests that reuse one interpreter across calls.

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
  requantizes, up to 127 LSB apart), FULLY_CONNECTED rounding (off by 1 on a few elements, as on
  the MLPerf anomaly-detection autoencoder) and int8 LOGISTIC (LiteRT's float32 lookup table vs
  TFLM's fixed point: ~1 byte in 1,800 over input scales 1e-5..30, mostly by 1, by 128 at the zero
  point from input scale 16; LiteRT also refuses an output scale other than 1/256). TFLM is the
  reference that counts for firmware.
"""

from __future__ import annotations

import functools

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _fb

from codegen import tflm as _child
from codegen.fold import fold
from codegen.ir import CodegenError
from codegen.reader import read_model
from codegen.validate import validate
from qute.errors import QuteError

_child.preload(__name__)  # the TFLM children start with this module imported

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
    _check(tflite)
    return _io(tflite)


def _check(tflite: bytes) -> None:
    """TFLM trusts the file (a bad index is a segfault): only models codegen.validate passes go near it."""
    _validated(bytes(tflite))


@functools.lru_cache(maxsize=16)
def _validated(tflite: bytes) -> bool:
    try:
        validate(read_model(tflite), for_tflm=True)
    except CodegenError as e:
        raise QuteError(str(e)) from None
    return True


def _isolated(fn, *args, doing: str, samples: int = 1, who: str = "TFLite Micro"):
    """fn(*args) in a child process (codegen.tflm); whatever goes wrong there is one QuteError."""
    try:
        return _child.run(fn, *args, doing=doing, timeout=120.0 + 2.0 * samples, who=who)
    except QuteError:
        raise
    except _child.TFLMCrash as e:
        raise QuteError(str(e)) from None
    except Exception as e:  # the interpreter refused the model (an op it lacks, a failed Prepare)
        raise QuteError(f"{who} cannot run this model ({type(e).__name__}: {e})") from None


def _io(tflite: bytes):
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
    specs, _ = _io(tflite)
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
    """A fresh tflite-micro interpreter with a generous arena, in this process (tests use it to
    reuse one interpreter across calls; a crash of it is a crash of the caller)."""
    _check(tflite)
    return _interpreter(tflite)


def _interpreter(tflite: bytes):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(bytes(tflite), arena_size=_arena_size(tflite))


def run_tflm(tflite: bytes, inputs, interpreter=None) -> list[np.ndarray]:
    """Runs TFLM one sample per invoke; one interpreter for all samples: a fresh one in a child
    process, or the given one here."""
    _check(tflite)
    if interpreter is not None:
        return _tflm_here(tflite, inputs, interpreter)
    samples, _ = _split(tflite, inputs)  # the caller's mistakes are ValueErrors raised here
    return _isolated(_tflm_here, tflite, inputs, doing="running it", samples=len(samples))


def _tflm_here(tflite: bytes, inputs, interpreter=None) -> list[np.ndarray]:
    samples, batched = _split(tflite, inputs)
    _, outs = _io(tflite)
    ip = interpreter if interpreter is not None else _interpreter(tflite)
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
    """Runs LiteRT's reference kernels (BUILTIN_REF), one sample per invoke: a fresh interpreter
    in a child process, or the given one here."""
    _check(tflite)
    if interpreter is None:
        samples, _ = _split(tflite, inputs)
        return _isolated(_litert_here, tflite, inputs, doing="running it", samples=len(samples),
                         who="LiteRT")
    return _litert_here(tflite, inputs, interpreter)


def _litert_here(tflite: bytes, inputs, interpreter=None) -> list[np.ndarray]:
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


def tflm_shape_problems(tflite: bytes) -> list[str]:
    """Stored tensor shapes that disagree with the ones the model's ops imply (codegen's inference).

    TFLM never re-infers shapes: it runs every op on the shapes stored in the flatbuffer. The
    converter stores wrong shapes for the SPACE_TO_BATCH_ND/conv/BATCH_TO_SPACE_ND chain it emits
    for a dilated Keras convolution with an unknown batch (e.g. SPACE_TO_BATCH_ND (1,9,10,8) ->
    (1,3,4,8) instead of (9,5,4,8)); TFLM then reads uninitialised arena memory, and its output is
    garbage that may or may not change from run to run. LiteRT resizes tensors itself and gets them
    right. The answer is codegen.fold's ``shape_notes``, so the oracle and the generated code
    (``codegen.ir.Graph.reference``) pick the same reference by construction.
    """
    return list(_shape_problems(bytes(tflite)))


@functools.lru_cache(maxsize=16)
def _shape_problems(tflite: bytes) -> tuple[str, ...]:
    try:
        graph = read_model(tflite)
    except CodegenError:
        return ()  # a model codegen cannot read (types it has no use for): TFLM alone decides
    try:
        return tuple(fold(graph).shape_notes)
    except CodegenError as e:
        return (f"shapes cannot be inferred: {e}",)


def reference(tflite: bytes, inputs) -> tuple[list[np.ndarray], str]:
    """Reference outputs and which engine gave them: "tflm" or "litert-ref".

    TFLM runs twice on two fresh interpreters: once over the samples in order, once (after a
    priming invoke on a different input, so any stale arena contents differ) in reverse order. If
    both agree byte for byte, and the model has none of the stored-shape faults of
    ``tflm_shape_problems`` (which make TFLM read uninitialised memory that is not always
    different from one run to the next), the TFLM outputs are returned with "tflm"; otherwise
    LiteRT's reference kernels' with "litert-ref". All of it runs in one child process.
    """
    _check(tflite)
    samples, _ = _split(tflite, inputs)
    trust = not tflm_shape_problems(tflite)
    return _isolated(_reference_here, tflite, inputs, trust, doing="computing its reference outputs",
                     samples=2 * len(samples), who="TFLite Micro" if trust else "LiteRT")


def _reference_here(tflite: bytes, inputs, trust_tflm: bool) -> tuple[list[np.ndarray], str]:
    samples, batched = _split(tflite, inputs)
    if trust_tflm:
        first = _tflm_here(tflite, inputs)
        ip = _interpreter(tflite)
        _tflm_here(tflite, [np.bitwise_not(x) if np.issubdtype(x.dtype, np.integer) else -x for x in samples[0]], ip)
        rev = [_tflm_here(tflite, xs, ip) for xs in reversed(samples)][::-1]
        if same_bytes(first, _join(rev, batched)):
            return first, "tflm"
    return _litert_here(tflite, inputs), "litert-ref"


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
