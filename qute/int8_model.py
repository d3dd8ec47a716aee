"""An int8 .tflite read back: the affine quantization of its tensors, which output is which head
(head_k by the SignatureDef), op counts and weight granularity. Light (numpy and codegen's reader):
the build, the expectation and the firmware's inputs need it without TensorFlow or the metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from codegen.ir import CodegenError
from codegen.reader import read_model
from qute.errors import QuteError


TFLITE_FILE = "model.int8.tflite"  # a run directory's quantized model


@dataclass(frozen=True)
class QuantParams:
    """Affine int8 quantization of one tensor: ``real = (q - zero_point) * scale``."""

    scale: float
    zero_point: int

    def float_range(self) -> tuple[float, float]:
        """The real values that int8 -128 and 127 stand for."""
        return (float(np.float32(-128 - self.zero_point) * np.float32(self.scale)),
                float(np.float32(127 - self.zero_point) * np.float32(self.scale)))

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point)}


def head_names(num_heads: int) -> list[str]:
    return [f"head_{k}" for k in range(num_heads)]


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """Float model input -> int8 exactly as TFLite's QUANTIZE does (see the module docstring)."""
    v = np.asarray(x, dtype=np.float32) / np.float32(params.scale)  # float32 division
    v = v.astype(np.float64)  # exact; |v| + 0.5 is then exact too, so floor gives std::round
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(r + params.zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """int8 (or int16) -> float32 ``(q - zero_point) * scale``, computed in float32."""
    diff = np.asarray(q).astype(np.int32) - np.int32(params.zero_point)
    return (diff.astype(np.float32) * np.float32(params.scale)).astype(np.float32)


# --------------------------------------------------------------------------- reading the flatbuffer


def read_graph(tflite_bytes: bytes, label: str = "the TFLite model"):
    """The model as codegen's graph (the one flatbuffer reader of the project); errors become QuteError."""
    try:
        return read_model(bytes(tflite_bytes), label)
    except CodegenError as e:
        raise QuteError(str(e)) from None


def signature_outputs(tflite_bytes: bytes) -> dict[str, int]:
    """Output name -> tensor index, from the flatbuffer's SignatureDef."""
    names = read_graph(tflite_bytes).output_names
    if not names:
        raise QuteError("the TFLite model has no signature; its outputs cannot be matched to heads (re-run qute quantize)")
    return names


def output_heads(tflite_bytes: bytes, num_heads: int | None = None) -> list[int]:
    """For head k = 0, 1, ...: the position in the subgraph's output list of head_k's tensor.

    Reads the SignatureDef (names -> tensor indices) and the subgraph's output tensor list.
    `num_heads` defaults to the number of ``head_k`` names in the signature.
    """
    g = read_graph(tflite_bytes)
    names = signature_outputs(tflite_bytes)
    if num_heads is None:
        num_heads = sum(1 for n in names if re.fullmatch(r"head_\d+", n))
    order = []
    for name in head_names(num_heads):
        if name not in names:
            raise QuteError(f"the TFLite model's signature has no output {name!r} (it has {', '.join(sorted(names))})")
        if names[name] not in g.outputs:
            raise QuteError(f"signature output {name!r} is tensor {names[name]}, which is not a model output")
        order.append(g.outputs.index(names[name]))
    if num_heads == 0 or len(set(order)) != len(order):
        raise QuteError(f"the TFLite model's signature does not name one distinct output per head: {names}")
    return order


def tensor_params(tensor) -> QuantParams:
    if tensor.scale is None or len(tensor.scale) != 1:
        raise QuteError(f"tensor {tensor.name!r} is not per-tensor quantized")
    return QuantParams(scale=float(tensor.scale[0]), zero_point=int(tensor.zero_point[0]))


def input_params(tflite_bytes: bytes) -> QuantParams:
    """Scale and zero point of the (single, int8) model input."""
    g = read_graph(tflite_bytes)
    if len(g.inputs) != 1:
        raise QuteError(f"expected one model input, found {len(g.inputs)}")
    return tensor_params(g.tensor(g.inputs[0]))


def output_params(tflite_bytes: bytes, num_heads: int | None = None) -> list[QuantParams]:
    """Scale and zero point of each head's output, in head order."""
    g = read_graph(tflite_bytes)
    return [tensor_params(g.tensor(g.outputs[i])) for i in output_heads(tflite_bytes, num_heads)]


def op_counts(tflite_bytes: bytes) -> dict[str, int]:
    """Builtin operator name -> how often the model uses it."""
    counts: dict[str, int] = {}
    for op in read_graph(tflite_bytes).ops:
        counts[op.opcode] = counts.get(op.opcode, 0) + 1
    return dict(sorted(counts.items()))


def weight_granularity(tflite_bytes: bytes) -> dict[str, str]:
    """For each weighted op type: "per-channel", "per-tensor" or "mixed" weight scales.

    TF 2.21 quantizes FULLY_CONNECTED weights per channel too, which a kernel library must support.
    """
    g = read_graph(tflite_bytes)
    kinds: dict[str, set] = {}
    for op in g.ops:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") and len(op.inputs) > 1:
            kinds.setdefault(op.opcode, set()).add("per-channel" if g.tensor(op.inputs[1]).per_channel else "per-tensor")
    return {n: k.pop() if len(k) == 1 else "mixed" for n, k in sorted(kinds.items())}
