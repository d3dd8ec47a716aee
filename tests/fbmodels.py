"""``.tflite`` flatbuffers written directly (no TensorFlow, no converter), and merged side by side.

The converter decides scales, zero points and shapes itself; to exercise a kernel at the edges
(zero point -128 or 127, scale ratios over many decades, softmax beta, rank-5 broadcasting,
constant operands, float tensors inside the graph) the tests write the model themselves:

    b = ModelBuilder()
    x = b.input((1, 4, 8), scale=0.05, zero_point=-3)
    c = b.const(np.arange(8, dtype=np.int8), scale=0.1, zero_point=0)
    y = b.tensor((1, 4, 8), scale=0.2, zero_point=7)
    b.op("ADD", [x, c], [y], fb.AddOptionsT())   # options optional
    b.output(y)
    tflite = b.build()

``merge(models)`` puts several single-subgraph models side by side in one (inputs and outputs
concatenated in order), so that one compile and one oracle run cover many configurations.
Signature defs and metadata are dropped, so the merged outputs keep flatbuffer order.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

_TYPES = {"int8": fb.TensorType.INT8, "int16": fb.TensorType.INT16, "int32": fb.TensorType.INT32,
          "uint8": fb.TensorType.UINT8, "float32": fb.TensorType.FLOAT32, "int64": fb.TensorType.INT64}
_OPTION_KIND = {
    "AddOptionsT": fb.BuiltinOptions.AddOptions,
    "MulOptionsT": fb.BuiltinOptions.MulOptions,
    "SoftmaxOptionsT": fb.BuiltinOptions.SoftmaxOptions,
    "ReshapeOptionsT": fb.BuiltinOptions.ReshapeOptions,
    "ConcatenationOptionsT": fb.BuiltinOptions.ConcatenationOptions,
    "FullyConnectedOptionsT": fb.BuiltinOptions.FullyConnectedOptions,
    "DequantizeOptionsT": fb.BuiltinOptions.DequantizeOptions,
    "QuantizeOptionsT": fb.BuiltinOptions.QuantizeOptions,
}


def opcode(name: str) -> int:
    return getattr(fb.BuiltinOperator, name)


class ModelBuilder:
    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers: list = [fb.BufferT()]  # buffer 0: the empty buffer of every activation
        self.codes: list = []
        self.ops: list = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, shape, dtype: str = "int8", scale: float | None = None, zero_point: int = 0,
               data: np.ndarray | None = None, name: str | None = None) -> int:
        t = fb.TensorT()
        t.shape = np.array(shape, np.int32)
        t.type = _TYPES[dtype]
        t.name = name or f"t{len(self.tensors)}"
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8).copy()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = np.array([scale], np.float32)
            q.zeroPoint = np.array([zero_point], np.int64)
            q.quantizedDimension = 0
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, shape, scale: float | None = None, zero_point: int = 0, dtype: str = "int8") -> int:
        i = self.tensor(shape, dtype, scale, zero_point)
        self.inputs.append(i)
        return i

    def const(self, data: np.ndarray, scale: float | None = None, zero_point: int = 0) -> int:
        data = np.asarray(data)
        return self.tensor(data.shape, data.dtype.name, scale, zero_point, data=data)

    def output(self, t: int) -> int:
        self.outputs.append(t)
        return t

    def op(self, name: str, inputs: list[int], outputs: list[int], options=None, version: int = 1) -> None:
        code = opcode(name)
        key = (code, version)
        keys = [(c.builtinCode, c.version) for c in self.codes]
        if key not in keys:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self.codes.append(oc)
            keys.append(key)
        o = fb.OperatorT()
        o.opcodeIndex = keys.index(key)
        o.inputs = np.array(inputs, np.int32)
        o.outputs = np.array(outputs, np.int32)
        if options is not None:
            o.builtinOptionsType = _OPTION_KIND[type(options).__name__]
            o.builtinOptions = options
        self.ops.append(o)

    def model(self):
        sg = fb.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = np.array(self.inputs, np.int32)
        sg.outputs = np.array(self.outputs, np.int32)
        sg.operators = self.ops
        sg.name = "main"
        m = fb.ModelT()
        m.version = 3
        m.operatorCodes = self.codes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "qute test model"
        return m

    def build(self) -> bytes:
        return pack(self.model())


def pack(model) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def unpack(tflite: bytes):
    return fb.ModelT.InitFromPackedBuf(bytearray(tflite), 0)


def merge(models: list[bytes]) -> bytes:
    """One model running every given model's subgraph side by side."""
    out = ModelBuilder()
    for data in models:
        m = unpack(data)
        if len(m.subgraphs) != 1:
            raise ValueError("only single-subgraph models can be merged")
        sg = m.subgraphs[0]
        buf_map = {}
        for i, buf in enumerate(m.buffers or []):
            if buf.data is None or len(buf.data) == 0:
                buf_map[i] = 0
            else:
                out.buffers.append(buf)
                buf_map[i] = len(out.buffers) - 1
        base = len(out.tensors)
        for t in sg.tensors:
            t.buffer = buf_map.get(t.buffer, 0)
            out.tensors.append(t)
        keys = [(c.builtinCode, c.version) for c in out.codes]
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex]
            key = (max(code.builtinCode, code.deprecatedBuiltinCode), code.version)
            if key not in keys:
                code.builtinCode = key[0]
                out.codes.append(code)
                keys.append(key)
            op.opcodeIndex = keys.index(key)
            op.inputs = np.array([i + base if i >= 0 else i for i in op.inputs], np.int32)
            op.outputs = np.array([i + base for i in op.outputs], np.int32)
            out.ops.append(op)
        out.inputs += [int(i) + base for i in sg.inputs]
        out.outputs += [int(i) + base for i in sg.outputs]
    return out.build()
