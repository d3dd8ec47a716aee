"""`.tflite` flatbuffer -> `Graph`, through the `tflite` schema binding (no TensorFlow)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import tflite

from codegen.ir import CodegenError, Graph, Op, Tensor

# TensorType enum value -> numpy dtype name (the ones a microcontroller model can carry)
_DTYPES = {
    tflite.TensorType.FLOAT32: "float32",
    tflite.TensorType.INT32: "int32",
    tflite.TensorType.UINT8: "uint8",
    tflite.TensorType.INT64: "int64",
    tflite.TensorType.BOOL: "bool",
    tflite.TensorType.INT16: "int16",
    tflite.TensorType.INT8: "int8",
}

_OPTION_CLASSES = {
    value: getattr(tflite, name)
    for name, value in vars(tflite.BuiltinOptions).items()
    if not name.startswith("_") and isinstance(value, int) and hasattr(tflite, name)
}
_ENUMS = {
    "Padding": {v: k for k, v in vars(tflite.Padding).items() if not k.startswith("_")},
    "FusedActivationFunction": {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")},
}
_SKIP = ("Init", "GetRootAs", "BufferHasIdentifier")


def read_file(path: str | Path) -> Graph:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CodegenError(f"cannot read {path}: {e.strerror}") from None
    return read_model(data, str(path))


def read_model(data: bytes, what: str = "model") -> Graph:
    """Parses a flatbuffer; any structural damage becomes one CodegenError naming the file."""
    if len(data) == 0:
        raise CodegenError(f"{what} is empty; expected a .tflite flatbuffer")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise CodegenError(f"{what} is not a .tflite model (no TFL3 file identifier)")
    try:
        return _read(data)
    except CodegenError:
        raise
    except Exception as e:  # truncated or corrupt buffers fail anywhere inside the binding
        raise CodegenError(f"{what} is truncated or corrupt ({type(e).__name__}: {e})") from None


def _read(data: bytes) -> Graph:
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise CodegenError(f"the model has {model.SubgraphsLength()} subgraphs; only single-subgraph models are supported")
    sg = model.Subgraphs(0)
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = tflite.BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")
        if code == tflite.BuiltinOperator.CUSTOM:
            name = f"CUSTOM({(oc.CustomCode() or b'').decode()})"
        opcodes.append((name, oc.Version()))

    tensors = [_tensor(model, sg.Tensors(i), i) for i in range(sg.TensorsLength())]
    ops = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        if not 0 <= o.OpcodeIndex() < len(opcodes):
            raise CodegenError(f"op {i} has operator code index {o.OpcodeIndex()}; the model has {len(opcodes)} operator code(s)")
        name, version = opcodes[o.OpcodeIndex()]
        ops.append(
            Op(
                index=i,
                opcode=name,
                version=version,
                inputs=[int(x) for x in o.InputsAsNumpy()] if o.InputsLength() else [],
                outputs=[int(x) for x in o.OutputsAsNumpy()] if o.OutputsLength() else [],
                options=_options(o),
            )
        )
    graph = Graph(
        tensors=tensors,
        ops=ops,
        inputs=[int(x) for x in sg.InputsAsNumpy()],
        outputs=[int(x) for x in sg.OutputsAsNumpy()],
    )
    if model.SignatureDefsLength():
        sig = model.SignatureDefs(0)
        graph.input_names = {sig.Inputs(j).Name().decode(): sig.Inputs(j).TensorIndex() for j in range(sig.InputsLength())}
        graph.output_names = {sig.Outputs(j).Name().decode(): sig.Outputs(j).TensorIndex() for j in range(sig.OutputsLength())}
    return graph


def _tensor(model, t, index: int) -> Tensor:
    dtype = _DTYPES.get(t.Type())
    if dtype is None:
        raise CodegenError(f"tensor {index} has type {t.Type()}, which no supported op uses")
    shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    q = t.Quantization()
    scale = zero_point = None
    qdim = 0
    if q is not None and q.ScaleLength():
        scale = q.ScaleAsNumpy().astype(np.float32)
        # none at all is kept as none (validate refuses it: TFLM aborts on it), not read as zeros
        zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(0, np.int64)
        qdim = q.QuantizedDimension()
    data = None
    if t.Buffer() >= model.BuffersLength():
        raise CodegenError(f"tensor {index} ({(t.Name() or b'').decode(errors='replace')}) refers to buffer {t.Buffer()}; "
                           f"the model has {model.BuffersLength()} buffers")
    buf = model.Buffers(t.Buffer())
    if buf is not None:
        raw = None
        if buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        elif buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            raw = model._tab.Bytes[buf.Offset() : buf.Offset() + buf.Size()]
        if raw is not None:
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if len(raw) != expected:
                raise CodegenError(f"tensor {index} ({t.Name().decode()}) holds {len(raw)} bytes, its shape needs {expected}")
            data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return Tensor(
        index=index,
        name=(t.Name() or b"").decode(),
        shape=shape,
        dtype=dtype,
        scale=scale,
        zero_point=zero_point,
        quantized_dim=qdim,
        data=data,
    )


def _options(o) -> dict:
    cls = _OPTION_CLASSES.get(o.BuiltinOptionsType())
    table = o.BuiltinOptions()
    if cls is None or table is None:
        return {}
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith(("_",) + _SKIP) or name.endswith(("Length", "IsNone")):
            continue
        params = inspect.signature(fn).parameters
        if name.endswith("AsNumpy"):
            value = getattr(opts, name)()
            out[name[: -len("AsNumpy")]] = [] if isinstance(value, int) else [int(v) for v in value]
        elif len(params) == 1 and f"{name}AsNumpy" not in dir(cls):
            value = getattr(opts, name)()
            out[name] = _ENUMS[name][value] if name in _ENUMS else value
    return out
