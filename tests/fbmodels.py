"""``.tflite`` flatbuffers written directly (no TensorFlow, no converter), and merged side by side.

The converter decides scales, zero points and shapes itself; to exercise a kernel at the edges
(zero point -128 or 127, scale ratios over many decades, per-channel scales that vanish, batch > 1,
5-D tensors, rank-5 broadcasting, constant operands, omitted optional inputs, float tensors inside
the graph...) the tests write the model themselves, with the tflite-micro schema's object API:

    b = ModelBuilder("qute add test")
    x = b.input((1, 4, 8), scale=0.05, zero_point=-3, name="x")
    c = b.const(np.arange(8, dtype=np.int8), scale=0.1, zero_point=0)
    w = b.const(weights, scale=per_channel_scales, quantized_dimension=3)  # zero points: 0 each
    y = b.output(b.tensor((1, 4, 8), scale=0.2, zero_point=7))
    b.op("ADD", [x, c], [y], fusedActivationFunction=ACTS["RELU"])  # or b.op("ADD", ..., fb.AddOptionsT())
    tflite = b.build()

Tensor, input, const and output return tensor indices; an op's optional input left out is -1.
Many configurations usually go into one model as independent ops (own input, own output), so one
C build and one oracle run cover a dozen of them.

``merge(models)`` puts several single-subgraph models side by side in one (inputs and outputs
concatenated in order). Signature defs and metadata are dropped, so the merged outputs keep
flatbuffer order.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

TYPES = {"int8": fb.TensorType.INT8, "int16": fb.TensorType.INT16, "int32": fb.TensorType.INT32,
         "int64": fb.TensorType.INT64, "uint8": fb.TensorType.UINT8, "float32": fb.TensorType.FLOAT32}
ACTS = {"NONE": fb.ActivationFunctionType.NONE, "RELU": fb.ActivationFunctionType.RELU,
        "RELU6": fb.ActivationFunctionType.RELU6, "RELU_N1_TO_1": fb.ActivationFunctionType.RELU_N1_TO_1,
        "TANH": fb.ActivationFunctionType.TANH}
# builtin operator -> its options class: the class keyword options go into; an op listed here always
# carries its options table (defaults where no keyword is given), any other op only when given one
OPTIONS = {
    "ADD": fb.AddOptionsT,
    "MUL": fb.MulOptionsT,
    "SOFTMAX": fb.SoftmaxOptionsT,
    "FULLY_CONNECTED": fb.FullyConnectedOptionsT,
    "CONV_2D": fb.Conv2DOptionsT,
    "DEPTHWISE_CONV_2D": fb.DepthwiseConv2DOptionsT,
    "AVERAGE_POOL_2D": fb.Pool2DOptionsT,
    "MAX_POOL_2D": fb.Pool2DOptionsT,
    "MEAN": fb.ReducerOptionsT,
    "PAD": fb.PadOptionsT,
    "PADV2": fb.PadV2OptionsT,
    "CONCATENATION": fb.ConcatenationOptionsT,
    "SPACE_TO_BATCH_ND": fb.SpaceToBatchNDOptionsT,
    "BATCH_TO_SPACE_ND": fb.BatchToSpaceNDOptionsT,
    "STRIDED_SLICE": fb.StridedSliceOptionsT,
    "PACK": fb.PackOptionsT,
    "SHAPE": fb.ShapeOptionsT,
    "RESHAPE": fb.ReshapeOptionsT,
}


def opcode(name: str) -> int:
    return getattr(fb.BuiltinOperator, name)


def padding(name: str) -> int:
    return fb.Padding.SAME if name == "SAME" else fb.Padding.VALID


class ModelBuilder:
    """One subgraph under construction; ``build`` packs it."""

    def __init__(self, description: str = "qute test model") -> None:
        self.description = description
        self.tensors: list = []
        self.buffers: list = [fb.BufferT()]  # buffer 0: the empty buffer of every activation
        self.codes: list = []
        self._code_index: dict[tuple[int, int], int] = {}
        self.ops: list = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, shape, dtype: str = "int8", scale=None, zero_point=0, data=None, name: str | None = None,
               quantized_dimension: int = 0) -> int:
        """scale and zero_point: one value (per tensor) or one per channel along quantized_dimension;
        a single zero point serves every channel. No scale: not quantized."""
        t = fb.TensorT()
        t.shape = np.array([int(d) for d in shape], np.int32)
        t.type = TYPES[dtype]
        t.name = name or f"t{len(self.tensors)}"
        t.buffer = 0
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(t.shape))
            buf = fb.BufferT()
            buf.data = np.frombuffer(arr.tobytes(), np.uint8).copy()
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scale, np.float32))
            q.zeroPoint = np.broadcast_to(np.asarray(zero_point, np.int64), q.scale.shape).copy()
            q.quantizedDimension = quantized_dimension
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, shape, scale=None, zero_point=0, dtype: str = "int8", name: str | None = None) -> int:
        i = self.tensor(shape, dtype, scale, zero_point, name=name)
        self.inputs.append(i)
        return i

    def const(self, data, scale=None, zero_point=0, dtype: str | None = None, name: str | None = None,
              quantized_dimension: int = 0) -> int:
        """A constant tensor holding data (its own dtype unless one is given)."""
        arr = np.asarray(data, dtype=dtype)
        return self.tensor(arr.shape, arr.dtype.name, scale, zero_point, arr, name, quantized_dimension)

    def output(self, t: int) -> int:
        self.outputs.append(t)
        return t

    def _code(self, code: int, version: int, oc=None) -> int:
        """Index of the operator code (code, version), added on first use."""
        key = (code, version)
        if key not in self._code_index:
            if oc is None:
                oc = fb.OperatorCodeT()
                oc.deprecatedBuiltinCode = min(code, 127)
            oc.builtinCode, oc.version = code, version
            self.codes.append(oc)
            self._code_index[key] = len(self.codes) - 1
        return self._code_index[key]

    def op(self, name: str, inputs: list[int], outputs: list[int], options=None, version: int = 1,
           **fields) -> None:
        """options: an options object (``fb.AddOptionsT()``...); fields: keyword options, set on it
        or on a new object of the op's ``OPTIONS`` class. An omitted optional input is -1."""
        o = fb.OperatorT()
        o.opcodeIndex = self._code(opcode(name), version)
        o.inputs = np.array(inputs, np.int32)
        o.outputs = np.array(outputs, np.int32)
        if options is None and (fields or name in OPTIONS):
            if name not in OPTIONS:
                raise TypeError(f"no options known for {name}")
            options = OPTIONS[name]()
        for k, v in fields.items():
            if not hasattr(options, k):
                raise TypeError(f"{type(options).__name__} has no field {k}")
            setattr(options, k, v)
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, type(options).__name__.removesuffix("T"))
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
        m.description = self.description
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
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex]
            op.opcodeIndex = out._code(max(code.builtinCode, code.deprecatedBuiltinCode), code.version, code)
            op.inputs = np.array([i + base if i >= 0 else i for i in op.inputs], np.int32)
            op.outputs = np.array([i + base for i in op.outputs], np.int32)
            out.ops.append(op)
        out.inputs += [int(i) + base for i in sg.inputs]
        out.outputs += [int(i) + base for i in sg.outputs]
    return out.build()
