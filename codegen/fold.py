"""Compile-time evaluation of ops whose result is known before the model runs.

Every shape is static, so shape arithmetic (Keras' Flatten emits SHAPE -> STRIDED_SLICE -> PACK
feeding RESHAPE's shape input) and ops on constant tensors are evaluated here with numpy, following
TFLite's semantics. Their outputs become constant tensors and the ops disappear; ops that still
touch run-time data (a RESHAPE of an activation, whose shape input became constant) stay.

Before that, stored shapes the converter got wrong are repaired: for a dilated Keras convolution with
an unknown batch (SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND) it stores batch 1 for the
SPACE_TO_BATCH_ND output and the convolution output, where the block multiplies the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor


def fold(graph: Graph) -> Graph:
    """A folded copy of `graph` (the argument is left untouched); ops are renumbered 0..n-1."""
    tensors = _repair_shapes(graph)
    kept: list[Op] = []
    protected = set(graph.outputs) | set(graph.inputs)
    for op in graph.ops:
        value = None
        if not any(t in protected for t in op.outputs) and len(op.outputs) == 1:
            value = _evaluate(op, tensors)
        if value is None:
            kept.append(op)
            continue
        out = tensors[op.outputs[0]]
        value = np.asarray(value)
        if value.size != out.size:
            raise CodegenError(f"{op.describe()}: folds to shape {list(value.shape)}, the model says {list(out.shape)}")
        tensors[out.index] = dataclasses.replace(out, data=value.astype(out.dtype).reshape(out.shape))
    ops = [dataclasses.replace(op, index=i, inputs=list(op.inputs), outputs=list(op.outputs)) for i, op in enumerate(kept)]
    return dataclasses.replace(graph, tensors=tensors, ops=ops, inputs=list(graph.inputs), outputs=list(graph.outputs))


def _evaluate(op: Op, tensors: list[Tensor]) -> np.ndarray | None:
    """The op's output when it can be known now, else None."""
    ins = [tensors[t] if t >= 0 else None for t in op.inputs]
    if op.opcode == "SHAPE":
        return np.array(ins[0].shape, dtype=tensors[op.outputs[0]].dtype)
    if not ins or any(t is None or not t.is_const for t in ins):
        return None
    out = tensors[op.outputs[0]]
    if op.opcode == "CONCATENATION" and any(_quant(t) != _quant(out) for t in ins):
        return None  # TFLM refuses it; the lowering reports why
    fn = _FOLDERS.get(op.opcode)
    return fn(op, [t.data for t in ins], out) if fn else None


def _quant(t: Tensor) -> tuple:
    if t.scale is None or len(t.scale) == 0:
        return ()
    return tuple(np.float32(t.scale).tolist()), tuple(np.asarray(t.zero_point).tolist())


def _reshape(op: Op, data: list[np.ndarray], out: Tensor) -> np.ndarray:
    return data[0].reshape(out.shape)


def _pack(op: Op, data: list[np.ndarray], out: Tensor) -> np.ndarray:
    axis = op.options.get("Axis", 0)
    axis = axis + data[0].ndim + 1 if axis < 0 else axis
    return np.stack(data, axis=axis)


def _concat(op: Op, data: list[np.ndarray], out: Tensor) -> np.ndarray | None:
    if op.options.get("FusedActivationFunction", "NONE") != "NONE":
        return None
    axis = op.options.get("Axis", 0)
    return np.concatenate(data, axis=axis + data[0].ndim if axis < 0 else axis)


def strided_slice(x: np.ndarray, begin, end, strides, begin_mask=0, end_mask=0, ellipsis_mask=0,
                  new_axis_mask=0, shrink_axis_mask=0) -> np.ndarray:
    """TensorFlow's strided slice (the dense specification, as numpy indexing expresses it)."""
    begin, end, strides = (np.asarray(v).reshape(-1).tolist() for v in (begin, end, strides))
    if ellipsis_mask.bit_count() > 1:
        raise CodegenError("STRIDED_SLICE: more than one ellipsis")
    index: list = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        bit = 1 << i
        if s == 0:
            raise CodegenError("STRIDED_SLICE: a stride of 0")
        if ellipsis_mask & bit:
            index.append(Ellipsis)
        elif new_axis_mask & bit:
            index.append(None)
        elif shrink_axis_mask & bit:
            index.append(0 if begin_mask & bit else int(b))
        else:
            index.append(slice(None if begin_mask & bit else int(b), None if end_mask & bit else int(e), int(s)))
    try:
        return np.asarray(x[tuple(index)])
    except IndexError as err:
        raise CodegenError(f"STRIDED_SLICE: {err}") from None


def _strided_slice(op: Op, data: list[np.ndarray], out: Tensor) -> np.ndarray | None:
    o = op.options
    if o.get("Offset", False):
        # the converter never sets it, and neither TFLM nor LiteRT ran the models tried with it:
        # left unfolded, the op is reported as unsupported
        return None
    return strided_slice(data[0], data[1], data[2], data[3] if len(data) > 3 else np.ones(len(data[1]), np.int64),
                         o.get("BeginMask", 0), o.get("EndMask", 0), o.get("EllipsisMask", 0),
                         o.get("NewAxisMask", 0), o.get("ShrinkAxisMask", 0))


_FOLDERS = {
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "EXPAND_DIMS": _reshape,
    "PACK": _pack,
    "CONCATENATION": _concat,
    "STRIDED_SLICE": _strided_slice,
}


# Ops whose output batch is their first input's batch (what can sit between the two space/batch ops).
_BATCH_PRESERVING = {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH",
                     "QUANTIZE", "DEQUANTIZE"}


def _repair_shapes(graph: Graph) -> list[Tensor]:
    tensors = list(graph.tensors)

    def ints(t: int) -> np.ndarray | None:
        x = tensors[t] if 0 <= t < len(tensors) else None
        return x.data.astype(np.int64) if x is not None and x.is_const and x.dtype == "int32" else None

    def set_shape(t: int, shape: tuple[int, ...]) -> None:
        if tensors[t].shape != shape:
            tensors[t] = dataclasses.replace(tensors[t], shape=shape)

    for op in graph.ops:
        if len(op.inputs) < 1 or len(op.outputs) != 1 or op.inputs[0] < 0:
            continue
        src, dst = tensors[op.inputs[0]].shape, tensors[op.outputs[0]].shape
        if op.opcode in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND") and len(op.inputs) >= 3:
            block, pads = ints(op.inputs[1]), ints(op.inputs[2])
            if block is None or pads is None or len(src) != 2 + block.size or len(dst) != len(src) \
                    or pads.size != 2 * block.size or np.any(block < 1):
                continue
            pads = pads.reshape(block.size, 2)
            spatial = src[1 : 1 + block.size]
            nb = int(block.prod())
            if op.opcode == "SPACE_TO_BATCH_ND":
                padded = [int(d + p.sum()) for d, p in zip(spatial, pads)]
                if any(p % int(b) for p, b in zip(padded, block)):
                    continue
                want = (src[0] * nb, *(p // int(b) for p, b in zip(padded, block)), *src[1 + block.size :])
            else:
                if src[0] % nb:
                    continue
                want = (src[0] // nb, *(int(d * b - p.sum()) for d, b, p in zip(spatial, block, pads)),
                        *src[1 + block.size :])
            set_shape(op.outputs[0], tuple(int(v) for v in want))
        elif op.opcode in _BATCH_PRESERVING and src and dst and len(src) == len(dst) and src[0] != dst[0]:
            set_shape(op.outputs[0], (src[0], *dst[1:]))
    return tensors
