"""Hand-built ``.tflite`` models for the pool/reduce/layout/fold tests, and the byte-for-byte check.

``FlatModel`` assembles a flatbuffer with the tflite-micro schema's object API: tensors with their
quantization, ops with their builtin options. A test packs many random configurations into one
model as independent ops (own input, own output), so one C build covers a dozen configurations,
and it reaches what the converter never emits (batch > 1, 5-D tensors, identical MEAN scales,
PADV2 constants, concatenations of differently quantized inputs...).

``check(tflite)`` builds the model on the host, runs it and TFLM (or LiteRT's reference kernels,
see ``oracle.reference``) on the same random inputs and returns the mismatching byte count.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
import oracle
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from codegen.emit import output_order
from codegen.host import build_host
from codegen.reader import read_model

TYPES = {"int8": fb.TensorType.INT8, "int32": fb.TensorType.INT32, "int64": fb.TensorType.INT64,
         "float32": fb.TensorType.FLOAT32}
ACTS = {"NONE": fb.ActivationFunctionType.NONE, "RELU": fb.ActivationFunctionType.RELU,
        "RELU6": fb.ActivationFunctionType.RELU6, "RELU_N1_TO_1": fb.ActivationFunctionType.RELU_N1_TO_1,
        "TANH": fb.ActivationFunctionType.TANH}
# builtin operator -> (options union member, options class)
_OPTIONS = {
    "AVERAGE_POOL_2D": ("Pool2DOptions", fb.Pool2DOptionsT),
    "MAX_POOL_2D": ("Pool2DOptions", fb.Pool2DOptionsT),
    "MEAN": ("ReducerOptions", fb.ReducerOptionsT),
    "PAD": ("PadOptions", fb.PadOptionsT),
    "PADV2": ("PadV2Options", fb.PadV2OptionsT),
    "CONCATENATION": ("ConcatenationOptions", fb.ConcatenationOptionsT),
    "SPACE_TO_BATCH_ND": ("SpaceToBatchNDOptions", fb.SpaceToBatchNDOptionsT),
    "BATCH_TO_SPACE_ND": ("BatchToSpaceNDOptions", fb.BatchToSpaceNDOptionsT),
    "STRIDED_SLICE": ("StridedSliceOptions", fb.StridedSliceOptionsT),
    "PACK": ("PackOptions", fb.PackOptionsT),
    "SHAPE": ("ShapeOptions", fb.ShapeOptionsT),
    "RESHAPE": ("ReshapeOptions", fb.ReshapeOptionsT),
}


class FlatModel:
    """One subgraph under construction; ``tensor`` and ``op`` return indices, ``finish`` the bytes."""

    def __init__(self, description: str = "qute op test"):
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.description = description
        self.model.buffers = [fb.BufferT()]
        self.model.operatorCodes = []
        self.sg = fb.SubGraphT()
        self.sg.tensors, self.sg.operators, self.sg.inputs, self.sg.outputs = [], [], [], []
        self._codes: dict[tuple[int, int], int] = {}

    def tensor(self, name: str, shape, dtype: str = "int8", scale=None, zp=None, data=None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], TYPES[dtype]
        t.buffer = 0
        if data is not None:
            b = fb.BufferT()
            arr = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape([int(d) for d in shape]))
            b.data = np.frombuffer(arr.tobytes(), np.uint8)
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(np.float32(s)) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(0 if zp is None else zp)]
            t.quantization = q
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def const(self, name: str, values, dtype: str = "int32", shape=None) -> int:
        arr = np.asarray(values, dtype=dtype)
        return self.tensor(name, arr.shape if shape is None else shape, dtype, data=arr)

    def input(self, name: str, shape, scale: float, zp: int) -> int:
        t = self.tensor(name, shape, "int8", scale, zp)
        self.sg.inputs.append(t)
        return t

    def output(self, t: int) -> int:
        self.sg.outputs.append(t)
        return t

    def op(self, opcode: str, inputs: list[int], outputs: list[int], version: int = 1, **options) -> None:
        code = getattr(fb.BuiltinOperator, opcode)
        key = (code, version)
        if key not in self._codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self.model.operatorCodes.append(oc)
            self._codes[key] = len(self.model.operatorCodes) - 1
        o = fb.OperatorT()
        o.opcodeIndex = self._codes[key]
        o.inputs, o.outputs = list(inputs), list(outputs)
        if opcode in _OPTIONS:
            member, cls = _OPTIONS[opcode]
            opts = cls()
            for k, v in options.items():
                if not hasattr(opts, k):
                    raise TypeError(f"{cls.__name__} has no field {k}")
                setattr(opts, k, v)
            o.builtinOptionsType = getattr(fb.BuiltinOptions, member)
            o.builtinOptions = opts
        elif options:
            raise TypeError(f"no options known for {opcode}")
        self.sg.operators.append(o)

    def finish(self) -> bytes:
        self.model.subgraphs = [self.sg]
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def padding(name: str) -> int:
    return fb.Padding.SAME if name == "SAME" else fb.Padding.VALID


@dataclass
class Result:
    mismatches: int  # output bytes that differ from the reference
    total: int  # output bytes compared
    which: str  # "tflm" or "litert-ref"


def check(tflite: bytes, n: int = 12, seed: int = 0, sanitize: bool = False, opt: str = "-O1",
          engine: str = "reference") -> Result:
    """Generated C (built for the host) against the reference on n random samples.

    engine: "reference" (oracle.reference: TFLM, or LiteRT's reference kernels when TFLM is not
    deterministic on the model), "tflm" or "litert-ref".
    """
    g = read_model(tflite)
    host = build_host(g, sanitize=sanitize, opt=opt)
    specs, _ = oracle.model_io(tflite)
    r = np.random.default_rng(seed)
    # one sample = one exact-shaped array per input (batch > 1 allowed); the host takes them stacked
    samples = [[r.integers(-128, 128, shape, dtype=np.int8) for shape, _ in specs] for _ in range(n)]
    got = host.run([np.stack([s[i] for s in samples]) for i in range(len(specs))])
    runs = []
    for xs in samples:
        if engine == "reference":
            runs.append(oracle.reference(tflite, xs))
        elif engine == "tflm":
            runs.append((oracle.run_tflm(tflite, xs), "tflm"))
        else:
            runs.append((oracle.run_litert_ref(tflite, xs), "litert-ref"))
    bad = total = 0
    for k, t in enumerate(output_order(g)):
        j = g.outputs.index(t)
        want = np.stack([np.asarray(ref[j]).reshape(-1) for ref, _ in runs])
        have = np.asarray(got[k]).reshape(n, -1)
        assert want.shape == have.shape, f"output {k}: shape {have.shape} vs reference {want.shape}"
        bad += int(np.count_nonzero(want != have))
        total += want.size
    return Result(bad, total, "+".join(sorted({w for _, w in runs})))
