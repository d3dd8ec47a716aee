"""Structural checks on a graph straight from the reader, before anything lowers or runs it.

A ``.tflite`` file is untrusted input: every index in it may point anywhere, every scale may be
nan. Lowerings, the planner and TFLite Micro's interpreter (which the oracle and the arena report
run, and which trusts the file: a bad index there is a segfault, not an error) all assume a
well-formed graph. ``validate`` is where that assumption is made true or the model is refused,
with one CodegenError naming the op (or tensor), its index and what is wrong.

Checked: tensor indices of op inputs and outputs, graph inputs and outputs and signatures are in
range (-1 only where the op's input is optional); input and output counts of the ops known here;
every activation an op reads is a graph input or the output of an earlier op; every tensor is
written at most once, never a constant or a graph input, and never by the op that reads it; every
graph output is written (or is a graph input); shapes have no negative dimension and stay within
what a C int32 can count; quantization scales are finite and positive, zero points fit the tensor's
type, per-channel parameters have one scale and zero point per channel of a dimension that exists.
Whether an op's shapes fit together is codegen.shapes' and the lowerings' business.
"""

from __future__ import annotations

import math

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor

# op -> (min inputs, max inputs or None, outputs): TFLite's arity for the ops the generator knows
ARITY = {
    "CONV_2D": (2, 3, 1), "DEPTHWISE_CONV_2D": (2, 3, 1), "FULLY_CONNECTED": (2, 3, 1),
    "AVERAGE_POOL_2D": (1, 1, 1), "MAX_POOL_2D": (1, 1, 1), "MEAN": (2, 2, 1),
    "ADD": (2, 2, 1), "MUL": (2, 2, 1),
    "RELU": (1, 1, 1), "RELU6": (1, 1, 1), "RELU_N1_TO_1": (1, 1, 1), "LOGISTIC": (1, 1, 1), "TANH": (1, 1, 1),
    "SOFTMAX": (1, 1, 1), "PAD": (2, 2, 1), "PADV2": (2, 3, 1), "CONCATENATION": (1, None, 1),
    "RESHAPE": (1, 2, 1), "SQUEEZE": (1, 1, 1), "EXPAND_DIMS": (2, 2, 1),
    "QUANTIZE": (1, 1, 1), "DEQUANTIZE": (1, 1, 1),
    "SPACE_TO_BATCH_ND": (3, 3, 1), "BATCH_TO_SPACE_ND": (3, 3, 1),
    "SHAPE": (1, 1, 1), "STRIDED_SLICE": (3, 4, 1), "PACK": (1, None, 1),
}
# input positions a model may leave out (-1); the first input never is
OPTIONAL = {"CONV_2D": {2}, "DEPTHWISE_CONV_2D": {2}, "FULLY_CONNECTED": {2}, "PADV2": {2}, "RESHAPE": {1},
            "TRANSPOSE_CONV": {3}}
# ...of which TFLM crashes on some (measured: a segfault in DEPTHWISE_CONV_2D's Prepare, which frees
# the missing bias); the generator handles them, so only what runs TFLM refuses them
TFLM_NOT_OMITTABLE = {"DEPTHWISE_CONV_2D": {2}}

# a tensor's bytes, and all activations together, must be countable in a C int32 (sizes, offsets)
MAX_BYTES = 2**31 - 1

_ZERO_POINT_RANGE = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "bool": (0, 1),
    "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "float32": (-(2**31), 2**31 - 1),
}


def _name(t: Tensor) -> str:
    name = t.name if len(t.name) <= 60 else t.name[:57] + "..."  # converters fuse long names
    return f"tensor {t.index} ({name})" if name else f"tensor {t.index}"


def _check_tensor(t: Tensor) -> None:
    if any(d < 0 for d in t.shape):
        raise CodegenError(f"{_name(t)} has shape {list(t.shape)}: a dimension is negative")
    nbytes = math.prod(t.shape) * np.dtype(t.dtype).itemsize  # Python ints: no overflow on the way
    if nbytes > MAX_BYTES:
        raise CodegenError(f"{_name(t)} has shape {list(t.shape)}, {nbytes:,} bytes; at most {MAX_BYTES:,} are supported")
    if t.scale is None:
        return
    scale = np.asarray(t.scale, np.float64)
    zero_point = np.asarray(t.zero_point if t.zero_point is not None else [], np.int64)
    bad = [float(s) for s in scale if not (math.isfinite(s) and s > 0)]
    if bad:
        raise CodegenError(f"{_name(t)} has quantization scale {bad[0]!r}; scales must be finite and positive")
    if len(zero_point) != len(scale):
        raise CodegenError(f"{_name(t)} has {len(scale)} quantization scales but {len(zero_point)} zero points")
    lo, hi = _ZERO_POINT_RANGE.get(t.dtype, _ZERO_POINT_RANGE["int32"])
    out = [int(z) for z in zero_point if not lo <= int(z) <= hi]
    if out:
        raise CodegenError(f"{_name(t)} is {t.dtype} with zero point {out[0]}; it must lie in [{lo}, {hi}]")
    if len(scale) > 1:
        if not 0 <= t.quantized_dim < len(t.shape):
            raise CodegenError(f"{_name(t)} is quantized per channel along dimension {t.quantized_dim}, "
                               f"but its shape {list(t.shape)} has {len(t.shape)} dimensions")
        if t.shape[t.quantized_dim] != len(scale):
            raise CodegenError(f"{_name(t)} has {len(scale)} per-channel scales, but dimension {t.quantized_dim} of "
                               f"its shape {list(t.shape)} has {t.shape[t.quantized_dim]} channels")


def _check_arity(op: Op) -> None:
    arity = ARITY.get(op.opcode)
    if not op.outputs:
        raise CodegenError(f"{op.describe()} has no outputs")
    if arity is None:
        return
    lo, hi, n_out = arity
    if not lo <= len(op.inputs) <= (hi if hi is not None else len(op.inputs)):
        want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        raise CodegenError(f"{op.describe()} has {len(op.inputs)} inputs; {op.opcode} takes {want}")
    if len(op.outputs) != n_out:
        raise CodegenError(f"{op.describe()} has {len(op.outputs)} outputs; {op.opcode} has {n_out}")


def validate(graph: Graph, for_tflm: bool = False) -> None:
    """Raises one CodegenError for the first structural fault of `graph`; returns None if there is none.

    `for_tflm`: also refuse what is well-formed but known to crash TFLite Micro's interpreter."""
    n = len(graph.tensors)
    span = f"the model has {n} tensors" if n else "the model has no tensors"

    def in_range(t: int) -> bool:
        return 0 <= t < n

    for t in graph.tensors:
        _check_tensor(t)

    if not graph.outputs:
        raise CodegenError("the model has no outputs")
    for kind, lst in (("input", graph.inputs), ("output", graph.outputs)):
        seen = set()
        for k, t in enumerate(lst):
            if not in_range(t):
                raise CodegenError(f"model {kind} {k} is tensor {t}; {span}")
            if t in seen:
                raise CodegenError(f"model {kind} {k}: {_name(graph.tensors[t])} is listed twice as a model {kind}")
            seen.add(t)
            if graph.tensors[t].is_const:
                raise CodegenError(f"model {kind} {k}: {_name(graph.tensors[t])} is a constant")
    for kind, names in (("input", graph.input_names), ("output", graph.output_names)):
        for name, t in names.items():
            if not in_range(t):
                raise CodegenError(f"signature {kind} {name!r} is tensor {t}; {span}")

    inputs = set(graph.inputs)
    written: dict[int, int] = {}  # tensor -> the op that writes it
    activations = sum(t.nbytes for t in graph.tensors if not t.is_const)
    if activations > MAX_BYTES:
        raise CodegenError(f"the model's activations take {activations:,} bytes; at most {MAX_BYTES:,} are supported")
    for op in graph.ops:
        _check_arity(op)
        optional = OPTIONAL.get(op.opcode, set() if op.opcode in ARITY else None)
        for pos, t in enumerate(op.inputs):
            if t == -1 and pos > 0 and (optional is None or pos in optional):
                continue
            if not in_range(t):
                what = "may not be omitted" if t == -1 else f"is tensor {t}; {span}"
                raise CodegenError(f"{op.describe()}: input {pos} {what}")
            x = graph.tensors[t]
            if not (x.is_const or t in inputs or t in written):
                later = next((o for o in graph.ops if t in o.outputs and o is not op), None)
                why = f"op {later.index} writes it later" if later is not None else "no op writes it"
                if t in op.outputs:
                    why = "the op writes it itself"
                raise CodegenError(f"{op.describe()}: input {pos} is {_name(x)}, which is read before it is written ({why})")
        for pos, t in enumerate(op.outputs):
            if not in_range(t):
                raise CodegenError(f"{op.describe()}: output {pos} is tensor {t}; {span}")
            x = graph.tensors[t]
            if x.is_const:
                raise CodegenError(f"{op.describe()}: output {pos} is {_name(x)}, a constant")
            if t in inputs:
                raise CodegenError(f"{op.describe()}: output {pos} is {_name(x)}, a model input")
            if t in op.inputs:
                raise CodegenError(f"{op.describe()}: output {pos} is {_name(x)}, which is also its own input")
            if t in written:
                first = f"op {written[t]}" if written[t] != op.index else "this op"
                raise CodegenError(f"{op.describe()}: output {pos} is {_name(x)}, which {first} writes too")
            written[t] = op.index
    for k, t in enumerate(graph.outputs):
        if t not in written and t not in inputs:
            raise CodegenError(f"model output {k} is {_name(graph.tensors[t])}, which no op writes")
    if for_tflm:
        check_tflm(graph)


def check_tflm(graph: Graph) -> None:
    """Raises a CodegenError for what a validated graph holds that is known to crash TFLite Micro."""
    for op in graph.ops:
        for pos in TFLM_NOT_OMITTABLE.get(op.opcode, ()):
            if pos < len(op.inputs) and op.inputs[pos] == -1:
                raise CodegenError(f"{op.describe()}: input {pos} is omitted (-1), which crashes TFLite Micro "
                                   f"(leave the input out instead)")
