"""Compile-time evaluation of ops whose result is known before the model runs, and shape inference.

Every shape is static, so shape arithmetic (Keras' Flatten emits SHAPE -> STRIDED_SLICE -> PACK
feeding RESHAPE's shape input) and ops on constant tensors are evaluated here with numpy, following
TFLite's semantics. Their outputs become constant tensors and the ops disappear; ops that still
touch run-time data (a RESHAPE of an activation, whose shape input became constant) stay.

The same walk, in op order, gives every op's outputs the shapes codegen.shapes infers from the
graph inputs, before the op is evaluated: a SHAPE op reports the inferred shape, and a RESHAPE's
target may come from a chain folded just before it. The stored shapes that disagree are listed in
``Graph.shape_notes`` (the converter stores wrong ones for dilated convolutions with an unknown
batch); everything downstream uses the inferred shapes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from codegen import shapes
from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.stages import staged_order
from codegen.validate import validate


def fold(graph: Graph) -> Graph:
    """A folded copy of `graph` (the argument is left untouched) with inferred shapes; ops are
    renumbered 0..n-1, in stage order when the model has early exits (codegen.stages). Folding a
    folded graph changes nothing and keeps its shape notes."""
    validate(graph)  # every entry point folds first: nothing below sees a malformed graph
    tensors = list(graph.tensors)
    for t in graph.inputs:
        shapes.check_input_shape(tensors[t])
    notes = list(graph.shape_notes)
    kept: list[Op] = []
    protected = set(graph.outputs) | set(graph.inputs)
    for op in graph.ops:
        inferred = shapes.output_shapes(op, tensors)
        for t, shape in zip(op.outputs, inferred or ()):
            if t < 0 or t in graph.inputs or tensors[t].is_const:
                continue
            if tensors[t].shape != shape:
                notes.append(shapes.note(op, tensors[t], shape))
                tensors[t] = dataclasses.replace(tensors[t], shape=shape)
        value = None
        if not any(t in protected for t in op.outputs) and len(op.outputs) == 1:
            value = _evaluate(op, tensors)
        if value is None:
            kept.append(op)
            continue
        out = tensors[op.outputs[0]]
        value = np.asarray(value)
        if value.size != out.size:
            raise CodegenError(f"{op.describe()}: folds to shape {list(value.shape)}, inferred {list(out.shape)}")
        tensors[out.index] = dataclasses.replace(out, data=value.astype(out.dtype).reshape(out.shape))
    kept = staged_order(kept, graph)  # each early exit's ops right after what it needs (codegen.stages)
    ops = [dataclasses.replace(op, index=i, inputs=list(op.inputs), outputs=list(op.outputs)) for i, op in enumerate(kept)]
    return dataclasses.replace(graph, tensors=tensors, ops=ops, inputs=list(graph.inputs), outputs=list(graph.outputs),
                               shape_notes=notes)


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


def _strided_slice(op: Op, data: list[np.ndarray], out: Tensor) -> np.ndarray | None:
    o = op.options
    if o.get("Offset", False):
        # the converter never sets it, and neither TFLM nor LiteRT ran the models tried with it:
        # left unfolded, the op is reported as unsupported
        return None
    return shapes.strided_slice(data[0], data[1], data[2], data[3] if len(data) > 3 else np.ones(len(data[1]), np.int64),
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
