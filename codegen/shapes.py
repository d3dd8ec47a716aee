"""Shape inference: every op's output shape from its input shapes and parameters.

The shapes stored in a ``.tflite`` file are the converter's guess, and it guesses wrong: for a Keras
convolution with ``dilation_rate > 1`` and an unknown batch it emits SPACE_TO_BATCH_ND -> conv ->
BATCH_TO_SPACE_ND and stores batch 1 for tensors whose batch is the block size. TensorFlow Lite
re-derives every shape in its ops' Prepare steps (and so runs such models correctly); TFLite Micro
cannot resize tensors and trusts the file (and so reads memory it never wrote). The generator
follows TensorFlow Lite: the graph inputs' stored shapes define the model, every other activation's
shape is derived from them, op by op, and the stored shapes are only compared with the result.

``output_shapes(op, tensors)`` gives one op's output shapes, or None where an op is not known here
(its stored shape is kept; the lowering check rejects unsupported ops anyway). An op that cannot be
computed at all (a filter larger than its VALID input, a reshape to another element count, shapes
that do not broadcast) raises one CodegenError naming the op. The driver that walks the graph in
op order, interleaved with constant folding so that a RESHAPE sees the target a folded
SHAPE -> STRIDED_SLICE -> PACK chain computes, is ``codegen.fold.fold``; it records every
disagreement with the stored shapes (``note``) in ``Graph.shape_notes``.
"""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor

Shape = tuple[int, ...]

# Ops whose output has their first input's shape (elementwise, or a change of type only).
_SAME_SHAPE = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH",
               "SOFTMAX", "LOG_SOFTMAX", "QUANTIZE", "DEQUANTIZE", "ABS", "NEG"}


def check_input_shape(t: Tensor) -> None:
    """A graph input's stored shape is the one shape nothing can re-derive: it must be usable."""
    if any(d < 1 for d in t.shape):
        raise CodegenError(f"model input tensor {t.index} ({t.name}) has shape {list(t.shape)}; every dimension "
                           "must be 1 or more (convert the model with a fixed input size)")


def note(op: Op, t: Tensor, inferred: Shape) -> str:
    return f"{op.describe()}: output tensor {t.index} ({t.name}) stored as {list(t.shape)}, inferred {list(inferred)}"


def output_shapes(op: Op, tensors: list[Tensor]) -> list[Shape] | None:
    """The op's output shapes as TensorFlow Lite's Prepare computes them; None if not known here."""
    rule = _RULES.get(op.opcode)
    if op.opcode in _SAME_SHAPE:
        rule = _same
    if rule is None or not op.inputs or not op.outputs:
        return None
    ins = [tensors[t] if 0 <= t < len(tensors) else None for t in op.inputs]
    if ins[0] is None:
        return None
    try:
        shape = rule(op, ins)
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError, OverflowError) as e:
        # malformed parameters (wrong ranks, missing inputs) of an op that claims to be known
        raise _fail(op, f"cannot compute its output shape ({type(e).__name__}: {e})") from None
    if shape is None:
        return None
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise _fail(op, f"its parameters give the output shape {list(shape)}")
    return [shape]


def _fail(op: Op, what: str) -> CodegenError:
    return CodegenError(f"{op.describe()}: {what}")


def _const_ints(op: Op, t: Tensor | None, what: str) -> np.ndarray | None:
    """A parameter tensor's values, or None when it is only known at run time."""
    if t is None:
        raise _fail(op, f"the {what} input is missing")
    if not t.is_const:
        return None
    if not np.issubdtype(t.data.dtype, np.integer):
        raise _fail(op, f"the {what} input is {t.dtype}; it must be an integer tensor")
    return t.data.astype(np.int64)


def _input(ins: list, k: int) -> Tensor | None:
    return ins[k] if k < len(ins) else None


def _same(op: Op, ins: list) -> Shape:
    return ins[0].shape


# --- convolution and pooling ------------------------------------------------------------------


def window_out(op: Op, padding: str, size: int, taps: int, stride: int, dilation: int, axis: str) -> int:
    """TFLite's ComputeOutSize; a VALID window that does not fit is an impossible op."""
    if stride < 1 or dilation < 1 or taps < 1:
        raise _fail(op, f"{axis}: filter {taps}, stride {stride}, dilation {dilation} must all be 1 or more")
    effective = (taps - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    if padding != "VALID":
        raise _fail(op, f"padding {padding!r} is not supported; supported: SAME, VALID")
    if effective > size:
        raise _fail(op, f"the {axis} filter window ({taps} taps, dilation {dilation}: {effective}) is larger "
                        f"than the VALID input ({size})")
    return (size - effective) // stride + 1


def _conv(op: Op, ins: list) -> Shape:
    x, w = ins[0], _input(ins, 1)
    if w is None or len(x.shape) != 4 or len(w.shape) != 4:
        raise _fail(op, f"input and filter must be 4-D, got {list(x.shape)} and "
                        f"{None if w is None else list(w.shape)}")
    o = op.options
    n, h, wd, c = x.shape
    if op.opcode == "CONV_2D":
        out_c, taps_h, taps_w, in_c = w.shape
        if in_c < 1 or c % in_c:
            raise _fail(op, f"the input has {c} channels, not a multiple of the filter's {in_c}")
    else:
        _, taps_h, taps_w, out_c = w.shape
        if c < 1 or out_c % c:
            raise _fail(op, f"the filter has {out_c} channels, not a multiple of the input's {c}")
    padding = o.get("Padding", "SAME")
    oh = window_out(op, padding, h, taps_h, int(o.get("StrideH", 1)), int(o.get("DilationHFactor", 1)), "height")
    ow = window_out(op, padding, wd, taps_w, int(o.get("StrideW", 1)), int(o.get("DilationWFactor", 1)), "width")
    return n, oh, ow, out_c


def _pool(op: Op, ins: list) -> Shape:
    x = ins[0]
    if len(x.shape) != 4:
        raise _fail(op, f"the input must be 4-D (NHWC), got {list(x.shape)}")
    o = op.options
    n, h, w, c = x.shape
    padding = o.get("Padding", "SAME")
    oh = window_out(op, padding, h, int(o.get("FilterHeight", 0)), int(o.get("StrideH", 0)), 1, "height")
    ow = window_out(op, padding, w, int(o.get("FilterWidth", 0)), int(o.get("StrideW", 0)), 1, "width")
    return n, oh, ow, c


def _fully_connected(op: Op, ins: list) -> Shape:
    x, w = ins[0], _input(ins, 1)
    if w is None or len(w.shape) != 2:
        raise _fail(op, f"the weights must be 2-D, got {None if w is None else list(w.shape)}")
    units, depth = w.shape
    if depth < 1 or x.size % depth:
        raise _fail(op, f"the input's {x.size} values do not split into rows of the weights' depth {depth}")
    if op.options.get("KeepNumDims", False):
        if not x.shape or x.shape[-1] != depth:
            raise _fail(op, f"keep_num_dims needs the input's last dimension ({list(x.shape)}) to be the "
                            f"weights' depth {depth}")
        return (*x.shape[:-1], units)
    return x.size // depth, units


# --- reductions and elementwise -----------------------------------------------------------------


def _axes(op: Op, values, rank: int, extra: int = 0) -> list[int]:
    """Axes resolved as TFLite resolves them (negative counts from the end, duplicates once)."""
    out: list[int] = []
    for a in np.asarray(values).reshape(-1).tolist():
        r = a + rank + extra if a < 0 else a
        if not 0 <= r < rank + extra:
            raise _fail(op, f"axis {a} is out of range for a {rank}-D input")
        if r not in out:
            out.append(r)
    return out


def _mean(op: Op, ins: list) -> Shape | None:
    x = ins[0]
    values = _const_ints(op, _input(ins, 1), "axis")
    if values is None:
        return None
    axes = _axes(op, values, len(x.shape))
    if op.options.get("KeepDims", False):
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _broadcast(op: Op, ins: list) -> Shape:
    b = _input(ins, 1)
    if b is None:
        raise _fail(op, "the second input is missing")
    try:
        return tuple(np.broadcast_shapes(ins[0].shape, b.shape))
    except ValueError:
        raise _fail(op, f"input shapes {list(ins[0].shape)} and {list(b.shape)} do not broadcast") from None


# --- layout -------------------------------------------------------------------------------------


def _pad(op: Op, ins: list) -> Shape | None:
    x = ins[0]
    pads = _const_ints(op, _input(ins, 1), "paddings")
    if pads is None:
        return None
    if pads.shape != (len(x.shape), 2):
        raise _fail(op, f"the paddings have shape {list(pads.shape)}, expected {[len(x.shape), 2]}")
    return tuple(int(d + a + b) for d, (a, b) in zip(x.shape, pads))


def _concat(op: Op, ins: list) -> Shape:
    if any(t is None for t in ins):
        raise _fail(op, "an input is missing")
    rank = len(ins[0].shape)
    axis = _axes(op, [op.options.get("Axis", 0)], rank)[0]
    total = 0
    for t in ins:
        if len(t.shape) != rank or any(t.shape[i] != ins[0].shape[i] for i in range(rank) if i != axis):
            raise _fail(op, f"input shapes {[list(t.shape) for t in ins]} do not concatenate along axis {axis}")
        total += t.shape[axis]
    return (*ins[0].shape[:axis], total, *ins[0].shape[axis + 1 :])


def _pack(op: Op, ins: list) -> Shape:
    if any(t is None for t in ins):
        raise _fail(op, "an input is missing")
    if any(t.shape != ins[0].shape for t in ins):
        raise _fail(op, f"input shapes {[list(t.shape) for t in ins]} differ")
    rank = len(ins[0].shape)
    axis = _axes(op, [op.options.get("Axis", 0)], rank, extra=1)[0]
    return (*ins[0].shape[:axis], len(ins), *ins[0].shape[axis:])


def reshape_target(op: Op, ins: list) -> list[int] | None:
    """The requested shape (may hold one -1): the shape input when it is a 1-D int32 vector, else the
    options' new_shape, as TFLite's GetOutputShape chooses; None when only known at run time."""
    shape_t = _input(ins, 1)
    if shape_t is not None and len(shape_t.shape) == 1 and shape_t.dtype == "int32":
        values = _const_ints(op, shape_t, "shape")
        return None if values is None else values.tolist()
    if "NewShape" in op.options:
        values = list(op.options["NewShape"])
        # legacy files write [0] for a scalar
        return [] if values == [0] else values
    return None


def _reshape(op: Op, ins: list) -> Shape | None:
    target = reshape_target(op, ins)
    if target is None:
        return None
    n = ins[0].size
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise _fail(op, f"target shape {target}: at most one -1 and no other negative size")
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    if -1 in target:
        if known == 0 or n % known:
            raise _fail(op, f"cannot reshape {n} values ({list(ins[0].shape)}) to {target}")
        target = [n // known if d == -1 else d for d in target]
    elif known != n:
        raise _fail(op, f"cannot reshape {n} values ({list(ins[0].shape)}) to {target} ({known} values)")
    return tuple(target)


def _squeeze(op: Op, ins: list) -> Shape:
    shape = ins[0].shape
    dims = op.options.get("SqueezeDims") or []
    if not dims:
        return tuple(d for d in shape if d != 1)
    axes = _axes(op, dims, len(shape))
    for a in axes:
        if shape[a] != 1:
            raise _fail(op, f"cannot squeeze dimension {a} of {list(shape)}: it is not 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _expand_dims(op: Op, ins: list) -> Shape | None:
    values = _const_ints(op, _input(ins, 1), "axis")
    if values is None:
        return None
    if values.size != 1:
        raise _fail(op, f"the axis input holds {values.size} values; it must hold one")
    shape = ins[0].shape
    axis = _axes(op, values, len(shape), extra=1)[0]
    return (*shape[:axis], 1, *shape[axis:])


def _space_batch(op: Op, ins: list) -> Shape | None:
    x = ins[0]
    block = _const_ints(op, _input(ins, 1), "block shape")
    pads = _const_ints(op, _input(ins, 2), "paddings" if op.opcode == "SPACE_TO_BATCH_ND" else "crops")
    if block is None or pads is None:
        return None
    block = block.reshape(-1)
    m = block.size
    if len(x.shape) not in (3, 4) or m != len(x.shape) - 2:
        raise _fail(op, f"a {len(x.shape)}-D input with a {m}-value block shape; supported: 3-D or 4-D input "
                        "with one block value per spatial dimension")
    if pads.shape != (m, 2):
        raise _fail(op, f"paddings/crops have shape {list(pads.shape)}, expected {[m, 2]}")
    if np.any(block < 1) or np.any(pads < 0):
        raise _fail(op, f"block shape {block.tolist()} must be positive and paddings/crops "
                        f"{pads.tolist()} non-negative")
    nb = int(block.prod())
    spatial = x.shape[1 : 1 + m]
    if op.opcode == "SPACE_TO_BATCH_ND":
        padded = [int(d + p.sum()) for d, p in zip(spatial, pads)]
        if any(p % int(b) for p, b in zip(padded, block)):
            raise _fail(op, f"the padded size {padded} is not a multiple of the block {block.tolist()}")
        return (x.shape[0] * nb, *(p // int(b) for p, b in zip(padded, block)), *x.shape[1 + m :])
    if x.shape[0] % nb:
        raise _fail(op, f"the batch {x.shape[0]} is not a multiple of the block size {nb}")
    out = [int(d * b - p.sum()) for d, b, p in zip(spatial, block, pads)]
    if any(d < 1 for d in out):
        raise _fail(op, f"crops {pads.tolist()} remove the whole of {list(spatial)} x {block.tolist()}")
    return (x.shape[0] // nb, *out, *x.shape[1 + m :])


# --- shape arithmetic (folded away, but SHAPE must see the inferred shape) -----------------------


def _shape(op: Op, ins: list) -> Shape:
    return (len(ins[0].shape),)


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


def _strided_slice(op: Op, ins: list) -> Shape | None:
    o = op.options
    params = [_const_ints(op, _input(ins, k), what) for k, what in ((1, "begin"), (2, "end"))]
    strides = _const_ints(op, _input(ins, 3), "strides") if len(ins) > 3 and ins[3] is not None else None
    if any(p is None for p in params) or (len(ins) > 3 and ins[3] is not None and strides is None) or o.get("Offset"):
        return None
    if strides is None:
        strides = np.ones(params[0].size, np.int64)
    # a zero-strided view: the slice's shape without touching (or allocating) the data
    view = np.broadcast_to(np.zeros((), np.int8), ins[0].shape)
    try:
        return strided_slice(view, params[0], params[1], strides, o.get("BeginMask", 0), o.get("EndMask", 0),
                             o.get("EllipsisMask", 0), o.get("NewAxisMask", 0), o.get("ShrinkAxisMask", 0)).shape
    except CodegenError as e:
        raise _fail(op, str(e).removeprefix("STRIDED_SLICE: ")) from None


_RULES = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "FULLY_CONNECTED": _fully_connected,
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "MEAN": _mean,
    "ADD": _broadcast,
    "MUL": _broadcast,
    "SUB": _broadcast,
    "PAD": _pad,
    "PADV2": _pad,
    "CONCATENATION": _concat,
    "PACK": _pack,
    "RESHAPE": _reshape,
    "SQUEEZE": _squeeze,
    "EXPAND_DIMS": _expand_dims,
    "SPACE_TO_BATCH_ND": _space_batch,
    "BATCH_TO_SPACE_ND": _space_batch,
    "SHAPE": _shape,
    "STRIDED_SLICE": _strided_slice,
}
