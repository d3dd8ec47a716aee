"""Ops that move int8 bytes without arithmetic: PAD/PADV2 (qute_pad.c), CONCATENATION (qute_concat.c),
SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND (qute_space_batch.c).

None of them requantizes: bytes are copied as they are. TFLite Micro's CONCATENATION refuses
inputs quantized differently from its output (scale compared as double, zero point), and so does
the generator; PAD and the space/batch ops copy bytes whatever the quantization says, as TFLM does.
"""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op
from codegen.ops import check_dtypes, register

VERSIONS = (1, 2, 3, 4)


def const_int32(op: Op, g: Graph, pos: int, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        raise CodegenError(f"{op.describe()}: the {what} input is missing")
    t = g.tensor(op.inputs[pos])
    if not t.is_const:
        raise CodegenError(f"{op.describe()}: the {what} input must be constant")
    if t.dtype != "int32":
        raise CodegenError(f"{op.describe()}: the {what} input is {t.dtype}; TFLite Micro reads it as int32")
    data = t.data.astype(np.int64)
    if shape is not None and data.shape != shape:
        raise CodegenError(f"{op.describe()}: the {what} input has shape {list(data.shape)}, expected {list(shape)}")
    return data


def braces(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


@register
class Pad:
    opcodes = {"PAD": VERSIONS, "PADV2": VERSIONS}
    header = "qute_pad.h"
    MAX_DIMS = 5

    def _params(self, op: Op, g: Graph) -> dict:
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        rank = len(inp.shape)
        if rank > self.MAX_DIMS:
            raise CodegenError(f"{op.describe()}: input is {rank}-D; supported: up to {self.MAX_DIMS}-D")
        pads = const_int32(op, g, 1, "paddings", (rank, 2))
        if np.any(pads < 0):
            raise CodegenError(f"{op.describe()}: negative paddings {pads.tolist()} are not supported")
        want = tuple(int(d + a + b) for d, (a, b) in zip(inp.shape, pads))
        if tuple(out.shape) != want:
            raise CodegenError(f"{op.describe()}: output shape {list(out.shape)} should be {list(want)}")
        scale, zp = out.qparams()
        value = zp
        if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            c = g.tensor(op.inputs[2])
            if not c.is_const or c.dtype != "int8" or c.size != 1:
                raise CodegenError(f"{op.describe()}: the constant value must be a constant int8 scalar")
            cs, cz = c.qparams()
            # TFLM's PadPrepare: the constant shares the output's quantization
            if cz != zp or np.float32(cs) != np.float32(scale):
                raise CodegenError(f"{op.describe()}: the constant value is quantized differently from the output")
            value = int(c.data.reshape(-1)[0])
        if not -128 <= value <= 127:
            raise CodegenError(f"{op.describe()}: pad value {value} does not fit int8")
        lead = self.MAX_DIMS - rank
        return dict(
            in_dims=braces([1] * lead + list(inp.shape)),
            out_dims=braces([1] * lead + list(out.shape)),
            before=braces([0] * lead + [int(a) for a, _ in pads]),
            pad_value=value,
        )

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g, inputs=[0])
        self._params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        params = ctx.struct(op, "qute_pad_params", **self._params(op, g))
        return [f"qute_pad_s8(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]


@register
class Concatenation:
    opcodes = {"CONCATENATION": VERSIONS}
    header = "qute_concat.h"

    def _layout(self, op: Op, g: Graph) -> tuple[int, list[int]]:
        out = g.tensor(op.outputs[0])
        rank = len(out.shape)
        axis = op.options.get("Axis", 0)
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            raise CodegenError(f"{op.describe()}: axis {op.options.get('Axis')} is out of range for {rank}-D tensors")
        total = 0
        for t in op.inputs:
            s = g.tensor(t).shape
            if len(s) != rank or any(s[i] != out.shape[i] for i in range(rank) if i != axis):
                raise CodegenError(f"{op.describe()}: input shape {list(s)} does not fit output {list(out.shape)} on axis {axis}")
            total += s[axis]
        if total != out.shape[axis]:
            raise CodegenError(f"{op.describe()}: inputs add up to {total} along axis {axis}, the output has {out.shape[axis]}")
        outer = int(np.prod(out.shape[:axis], dtype=np.int64))
        inner = int(np.prod(out.shape[axis + 1 :], dtype=np.int64))
        return outer, [g.tensor(t).shape[axis] * inner for t in op.inputs]

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g)
        out_scale, out_zp = g.tensor(op.outputs[0]).qparams()
        for t in op.inputs:
            x = g.tensor(t) if t >= 0 else None
            if x is None or x.dtype != "int8":
                raise CodegenError(f"{op.describe()}: every input must be int8")
            scale, zp = x.qparams()
            if np.float32(scale) != np.float32(out_scale) or zp != out_zp:
                raise CodegenError(
                    f"{op.describe()}: input {x.name} is quantized (scale {scale}, zero point {zp}) unlike the "
                    f"output (scale {out_scale}, zero point {out_zp}); TFLite Micro's CONCATENATION requires them equal"
                )
        if op.options.get("FusedActivationFunction", "NONE") != "NONE":
            raise CodegenError(f"{op.describe()}: a fused activation is not supported (TFLite Micro rejects it too)")
        self._layout(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        outer, rows = self._layout(op, g)
        params = ctx.struct(op, "qute_concat_params", num_inputs=len(rows), outer=outer,
                            row=ctx.array(op, "row", np.array(rows, np.int32)))
        ins = ", ".join(ctx.ptr(t) for t in op.inputs)
        return [
            "{",
            f"    const int8_t *const op{op.index}_inputs[{len(rows)}] = {{ {ins} }};",
            f"    qute_concat_s8(&{params}, op{op.index}_inputs, {ctx.ptr(op.outputs[0])});",
            "}",
        ]


@register
class SpaceBatch:
    """SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND on 3-D (NHC) or 4-D (NHWC) tensors.

    SPACE_TO_BATCH_ND pads with the output zero point, as TensorFlow Lite's reference kernel does
    and as the float model means. Upstream TFLM never initializes that pad value
    (SpaceToBatchParams.output_offset): a fresh interpreter pads with 0 (zeroed persistent memory),
    a reused arena with whatever it held. Byte identity with TFLM is therefore only defined for
    unpadded SPACE_TO_BATCH_ND (or output zero point 0); padded ones follow LiteRT. The shapes seen
    here are inferred (codegen.shapes), not the wrong batch the converter stores for dilated
    convolutions.
    """

    opcodes = {"SPACE_TO_BATCH_ND": VERSIONS, "BATCH_TO_SPACE_ND": VERSIONS}
    header = "qute_space_batch.h"

    def _params(self, op: Op, g: Graph) -> dict:
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        rank = len(inp.shape)
        if rank not in (3, 4) or len(out.shape) != rank:
            raise CodegenError(f"{op.describe()}: input and output must both be 3-D or 4-D")
        spatial = rank - 2
        block = const_int32(op, g, 1, "block shape", (spatial,))
        pads = const_int32(op, g, 2, "paddings" if op.opcode == "SPACE_TO_BATCH_ND" else "crops", (spatial, 2))
        if np.any(block < 1) or np.any(pads < 0):
            raise CodegenError(f"{op.describe()}: block shape must be positive and paddings/crops non-negative")
        if rank == 3:
            block = np.array([block[0], 1])
            pads = np.array([pads[0], [0, 0]])
        ishape = list(inp.shape) if rank == 4 else [inp.shape[0], inp.shape[1], 1, inp.shape[2]]
        oshape = list(out.shape) if rank == 4 else [out.shape[0], out.shape[1], 1, out.shape[2]]
        nb = int(block.prod())
        if op.opcode == "SPACE_TO_BATCH_ND":
            padded = [ishape[1] + pads[0].sum(), ishape[2] + pads[1].sum()]
            if padded[0] % block[0] or padded[1] % block[1]:
                raise CodegenError(f"{op.describe()}: padded size {padded} is not a multiple of the block {block.tolist()}")
            want = [ishape[0] * nb, padded[0] // block[0], padded[1] // block[1], ishape[3]]
        else:
            if ishape[0] % nb:
                raise CodegenError(f"{op.describe()}: batch {ishape[0]} is not a multiple of the block size {nb}")
            want = [ishape[0] // nb, ishape[1] * block[0] - pads[0].sum(), ishape[2] * block[1] - pads[1].sum(), ishape[3]]
        if [int(v) for v in want] != oshape:
            raise CodegenError(f"{op.describe()}: output shape {list(out.shape)} does not match the block and paddings")
        return dict(
            in_b=ishape[0], in_h=ishape[1], in_w=ishape[2], depth=ishape[3],
            out_b=oshape[0], out_h=oshape[1], out_w=oshape[2],
            block_h=int(block[0]), block_w=int(block[1]), pad_top=int(pads[0][0]), pad_left=int(pads[1][0]),
            pad_value=out.qparams()[1] if op.opcode == "SPACE_TO_BATCH_ND" else 0,
        )

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g, inputs=[0])
        self._params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        params = ctx.struct(op, "qute_space_batch_params", **self._params(op, g))
        fn = "qute_space_to_batch_s8" if op.opcode == "SPACE_TO_BATCH_ND" else "qute_batch_to_space_s8"
        return [f"{fn}(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
