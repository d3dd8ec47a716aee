"""ADD and MUL on int8 tensors, with numpy broadcasting and constant operands.

Parameters are computed as TFLite Micro's Prepare computes them (CalculateOpDataAdd,
CalculateOpDataMul): double arithmetic on the float32 scales, QuantizeMultiplier, and the fused
activation clamp of CalculateActivationRangeQuantized.
"""

from __future__ import annotations


import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.ops import register
from codegen.quant import activation_range, multiply_by_quantized_multiplier, precomputed_requant, quantize_multiplier

MAX_DIMS = 6  # QUTE_BROADCAST_MAX_DIMS


def int8_operand(op: Op, g: Graph, t: int) -> Tensor:
    """An int8, per-tensor quantized operand (activation or constant)."""
    x = g.tensor(t)
    if x.dtype != "int8":
        raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) is {x.dtype}; supported: int8 "
                           "(quantize the model to full int8)")
    if x.scale is None or len(x.scale) == 0:
        raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) has no quantization parameters")
    if len(x.scale) > 1:
        raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) is quantized per channel; "
                           "supported: one scale and zero point per tensor")
    if not float(x.scale[0]) > 0.0:
        raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) has scale {float(x.scale[0])}; it must be positive")
    return x


def broadcast_layout(op: Op, shape1: tuple, shape2: tuple, out_shape: tuple) -> dict:
    """The collapsed broadcast walk of qute_broadcast: dims and element strides of both inputs.

    Dimensions of extent 1 are dropped and neighbours with the same broadcast pattern merged, so
    equal shapes become one dimension and a per-channel constant two."""
    try:
        full = tuple(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    except ValueError:
        raise CodegenError(f"{op.describe()}: input shapes {list(shape1)} and {list(shape2)} do not broadcast") from None
    if int(np.prod(full, dtype=np.int64)) != int(np.prod(out_shape, dtype=np.int64)) or \
            tuple(d for d in full if d != 1) != tuple(d for d in out_shape if d != 1):
        raise CodegenError(f"{op.describe()}: output shape {list(out_shape)} is not the broadcast of "
                           f"{list(shape1)} and {list(shape2)}")
    n = len(full)
    s1 = (1,) * (n - len(shape1)) + tuple(shape1)
    s2 = (1,) * (n - len(shape2)) + tuple(shape2)
    groups: list[list] = []  # [extent, uses1, uses2]
    for d in range(n):
        if full[d] == 1:
            continue
        pattern = (s1[d] != 1, s2[d] != 1)
        if groups and (groups[-1][1], groups[-1][2]) == pattern:
            groups[-1][0] *= full[d]
        else:
            groups.append([full[d], *pattern])
    if not groups:
        groups = [[1, True, True]]
    if len(groups) > MAX_DIMS:
        raise CodegenError(f"{op.describe()}: broadcasting {list(shape1)} with {list(shape2)} needs {len(groups)} "
                           f"dimensions after collapsing; supported: at most {MAX_DIMS}")
    dims = [g[0] for g in groups]
    strides = []
    for k in (1, 2):
        st, acc = [0] * len(groups), 1
        for i in range(len(groups) - 1, -1, -1):
            if groups[i][k]:
                st[i] = acc
                acc *= groups[i][0]
        strides.append(st)
    return {"ndims": len(dims), "dims": dims, "stride1": strides[0], "stride2": strides[1]}


def broadcast_initializer(layout: dict) -> str:
    def arr(v, pad):
        return "{ " + ", ".join(str(int(x)) for x in list(v) + [pad] * (MAX_DIMS - len(v))) + " }"

    return (f"{{ .ndims = {layout['ndims']}, .dims = {arr(layout['dims'], 1)}, "
            f".stride1 = {arr(layout['stride1'], 0)}, .stride2 = {arr(layout['stride2'], 0)} }}")


class _Binary:
    # the kernels read element i before writing it: the output may overwrite a same-sized input
    inplace = (0, 1)
    kernel = ""  # qute_add / qute_mul: the kernel is <kernel>_s8, its parameters <kernel>_params

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        p = ctx.struct(op, f"{self.kernel}_params", **self.params(op, g))
        return [f"{self.kernel}_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.inputs[1])}, {ctx.ptr(op.outputs[0])});"]

    def operands(self, op: Op, g: Graph):
        if len(op.inputs) != 2 or len(op.outputs) != 1:
            raise CodegenError(f"{op.describe()}: expected 2 inputs and 1 output")
        a, b = (int8_operand(op, g, t) for t in op.inputs)
        out = int8_operand(op, g, op.outputs[0])
        if out.is_const:
            raise CodegenError(f"{op.describe()}: constant output")
        if a.is_const and b.is_const:
            raise CodegenError(f"{op.describe()}: both inputs are constant (fold the op away first)")
        layout = broadcast_layout(op, a.shape, b.shape, out.shape)
        act = op.options.get("FusedActivationFunction", "NONE")
        return a, b, out, layout, act


@register
class Add(_Binary):
    opcodes = {"ADD": (1, 2, 3, 4, 5)}
    kernel = "qute_add"
    header = "qute_add.h"
    LEFT_SHIFT = 20  # int8 (TFLM uses 15 for int16)

    def params(self, op: Op, g: Graph) -> tuple[dict, list[tuple[int, int, int]]]:
        """The struct's scalar fields, and each input's (zero point, multiplier, shift) for its table."""
        a, b, out, layout, act = self.operands(op, g)
        s1, s2, so = (float(np.float32(t.qparams()[0])) for t in (a, b, out))
        twice_max = 2.0 * max(s1, s2)
        reals = (s1 / twice_max, s2 / twice_max, twice_max / ((1 << self.LEFT_SHIFT) * so))
        mults = []
        for what, real in zip(("input 1", "input 2", "output"), reals):
            if not 0.0 < real < 1.0:
                raise CodegenError(f"{op.describe()}: the {what} rescale factor is {real:g}; TFLite Micro needs it in "
                                   "(0, 1) (the output scale is too small for the inputs')")
            m, sh = quantize_multiplier(real)
            if sh > 0:
                raise CodegenError(f"{op.describe()}: the {what} rescale factor {real!r} rounds up to 1")
            mults.append((m, sh))
        lo, hi = activation_range(act, out, op)
        return {
            "output_offset": out.qparams()[1],
            "output_multiplier": mults[2][0],
            "output_shift": mults[2][1],
            "act_min": lo,
            "act_max": hi,
            "shape": broadcast_initializer(layout),
        }, [(t.qparams()[1], m, sh) for t, (m, sh) in zip((a, b), mults[:2])]

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        fields, inputs = self.params(op, g)
        # each input's int8 value -> its rescaled term, TFLM's two steps ((q - zero point) << 20, then
        # its multiplier) done ahead of time: 256 int32 per input, one load per element at run time
        t1, t2 = ([multiply_by_quantized_multiplier((q - zp) << self.LEFT_SHIFT, m, sh) for q in range(-128, 128)]
                  for zp, m, sh in inputs)
        fields["table1"] = ctx.array(op, "table1", np.array(t1, np.int32))
        fields["table2"] = ctx.array(op, "table2", np.array(t2, np.int32))
        # the output zero point rides in the high word (qute_add.h) if no sum of two entries can overflow it
        fast = precomputed_requant(fields["output_multiplier"], fields["output_shift"], fields["output_offset"],
                                   max(map(abs, t1)) + max(map(abs, t2)))
        fields.update(fast=0, base_lo=0, base_hi=0)
        if fast is not None:
            fields.update(fast=1, base_lo=f"{fast[1]}u", base_hi=fast[2])
        p = ctx.struct(op, "qute_add_params", **fields)
        return [f"qute_add_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.inputs[1])}, {ctx.ptr(op.outputs[0])});"]



@register
class Mul(_Binary):
    opcodes = {"MUL": (1, 2, 3, 4, 5, 6, 7)}
    kernel = "qute_mul"
    header = "qute_mul.h"

    def params(self, op: Op, g: Graph) -> dict:
        a, b, out, layout, act = self.operands(op, g)
        s1, s2, so = (float(np.float32(t.qparams()[0])) for t in (a, b, out))
        m, sh = quantize_multiplier(s1 * s2 / so)
        if sh > 30:
            raise CodegenError(f"{op.describe()}: the output scale is too small for the inputs' (multiplier 2^{sh})")
        lo, hi = activation_range(act, out, op)
        return {
            "input1_offset": -a.qparams()[1],
            "input2_offset": -b.qparams()[1],
            "output_offset": out.qparams()[1],
            "output_multiplier": m,
            "output_shift": sh,
            "act_min": lo,
            "act_max": hi,
            "shape": broadcast_initializer(layout),
        }

