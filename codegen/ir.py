"""The graph the code generator works on: tensors with their quantization, ops with their options.

Everything is static: shapes are known, constant tensors carry their data, and no field refers back
to the flatbuffer, so later passes (folding, planning, emitting) can be run and tested alone. The
reader gives the shapes stored in the file; codegen.fold replaces them by inferred ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class CodegenError(Exception):
    """A model the generator cannot compile; the message names what and what is supported."""


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: int8, int16, int32, int64, uint8, float32, bool
    scale: np.ndarray | None = None  # float32, one per channel or one for the tensor
    zero_point: np.ndarray | None = None  # int64, same length as scale
    quantized_dim: int = 0
    data: np.ndarray | None = None  # constant tensors only, already shaped

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and len(self.scale) > 1

    def qparams(self) -> tuple[float, int]:
        """The per-tensor (scale, zero point); raises for an unquantized tensor."""
        if self.scale is None or len(self.scale) == 0:
            raise CodegenError(f"tensor {self.index} ({self.name}) has no quantization parameters")
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class Op:
    index: int
    opcode: str  # e.g. "CONV_2D"
    version: int
    inputs: list[int]  # tensor indices; -1 marks an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"op {self.index} ({self.opcode} v{self.version})"


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    # SignatureDef names (e.g. "head_0") -> tensor index, when the model has a signature
    input_names: dict[str, int] = field(default_factory=dict)
    output_names: dict[str, int] = field(default_factory=dict)
    # set by codegen.fold: each stored shape that disagrees with the inferred one, as a sentence
    shape_notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        """Whose reference kernels the generated code must equal, byte for byte (folded graphs only).

        "tflm": TFLite Micro's. "litert-ref": LiteRT's, when stored shapes are wrong. TFLM runs
        every op on the stored shapes, so on such a model it has no defined output to match (it
        reads memory it never wrote); LiteRT re-infers shapes as the generator does, and where the
        two kernel sets differ its behaviour is the one to follow: RELU6 requantizes, RELU takes
        a float32 quotient of the scales, FULLY_CONNECTED rounds once, LOGISTIC reads a table
        LiteRT fills in float32 (TFLM's fixed point differs on ~1 byte in 1,800: mostly by 1, by
        up to 4 next to the zero point at input scales 4-5, by 128 at the zero point from scale
        16, where TFLM saturates every input). ADD, MUL, MEAN, AVERAGE_POOL_2D, MAX_POOL_2D,
        SOFTMAX, QUANTIZE, DEQUANTIZE, CONCATENATION, PAD, CONV_2D and DEPTHWISE_CONV_2D gave the
        same bytes on both over hundreds of random quantizations each (int8 SOFTMAX is the same integer kernel with
        the same parameters in both; the byte in ~600 that differed on classifiers came from the
        FULLY_CONNECTED feeding it). Not yet: models LiteRT refuses have no reference in this
        mode (CONCATENATION of differently quantized inputs, which LiteRT requantizes and the
        generator refuses as TFLM does; CONV_2D without a bias and DEPTHWISE_CONV_2D with an
        omitted bias slot, which LiteRT's Prepare rejects and the generator builds as TFLM would;
        LOGISTIC with an output scale other than 1/256, refused here). The same rule picks the
        oracle in qute.oracle.reference.
        """
        return "litert-ref" if self.shape_notes else "tflm"

    def tensor(self, i: int) -> Tensor:
        return self.tensors[i]

    def consumers(self, tensor: int) -> list[Op]:
        return [op for op in self.ops if tensor in op.inputs]

    def producer(self, tensor: int) -> Op | None:
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def output_label(self, tensor: int) -> str:
        """The signature name of a graph output, else its tensor name."""
        for name, t in self.output_names.items():
            if t == tensor:
                return name
        return self.tensors[tensor].name
