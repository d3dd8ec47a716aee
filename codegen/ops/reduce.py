"""MEAN (firmware/kernels/qute_reduce.c), as TFLite Micro's reduce_common.cc computes it for int8.

Every int8 MEAN goes through reference_ops::QuantizedMeanOrSum: QuantizeMultiplier(in_scale /
out_scale) (double quotient of the float32 scales), then the multiplier folded with 1/count (shifted
left by floor(log2(count)), that shift clamped to <= 32 and to <= 31 + shift so the final shift
stays >= -31, and integer-divided by count), applied to sum - count * input_zero_point, plus the
output zero point, clamped to int8.

Older TFLM sources (and the brief's description) special-case identical input and output
quantization with reference_ops::Mean, a truncating sum / count. The TFLM this project tests against
(tflite-micro 0.dev20261023, g8f6596d) does not: with identical quantization its bytes are the
requantized ones (measured: truncation disagrees on ~40 % of outputs, the requantizing path on none).

TFLM's reduce iterates with a 5-entry index (kMaxNumberOfAxis): inputs of up to 5 dimensions, any
set of axes (duplicates and negative axes resolved as ResolveAxis does). Outputs come out in the
order of the kept dimensions, so keep_dims changes only the stored shape, never the bytes.
"""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op
from codegen.ops import check_dtypes, register
from codegen.quant import f32, quantize_multiplier

MAX_DIMS = 5
GROUPS = 3


def resolve_axes(op: Op, g: Graph) -> list[int]:
    axis = g.tensor(op.inputs[1])
    if not axis.is_const or axis.dtype != "int32":
        raise CodegenError(f"{op.describe()}: the axis input must be a constant int32 tensor")
    rank = len(g.tensor(op.inputs[0]).shape)
    out: list[int] = []
    for a in axis.data.reshape(-1).tolist():
        r = a + rank if a < 0 else a
        if not 0 <= r < rank:
            raise CodegenError(f"{op.describe()}: axis {a} is out of range for a {rank}-D input")
        if r not in out:
            out.append(r)
    return out


def mean_multiplier(in_scale: float, out_scale: float, count: int) -> tuple[int, int]:
    """QuantizedMeanOrSum's output multiplier and shift, 1/count included."""
    mult, shift = quantize_multiplier(float(f32(in_scale)) / float(f32(out_scale)))
    s = min(count.bit_length() - 1, 32, 31 + shift)
    # s >= 0: quantize_multiplier's shift is never below -31
    return (mult << s) // count, shift - s


def groups(shape: tuple[int, ...], axes: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(size, stride) of the kept and of the reduced dimensions, adjacent ones of a kind merged."""
    strides = [int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape))]
    dims = [(shape[i], strides[i], i in axes) for i in range(len(shape)) if shape[i] != 1]
    merged: list[list] = []
    for size, stride, red in dims:
        if merged and merged[-1][2] == red:
            merged[-1][0] *= size
            merged[-1][1] = stride
        else:
            merged.append([size, stride, red])
    kept = [(s, st) for s, st, r in merged if not r]
    red = [(s, st) for s, st, r in merged if r]
    return kept, red


def _pad(gs: list[tuple[int, int]]) -> tuple[str, str]:
    gs = [(1, 0)] * (GROUPS - len(gs)) + gs
    return "{" + ", ".join(str(s) for s, _ in gs) + "}", "{" + ", ".join(str(st) for _, st in gs) + "}"


@register
class Mean:
    opcodes = {"MEAN": (1, 2, 3)}
    header = "qute_reduce.h"

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g, inputs=[0])
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        if len(inp.shape) > MAX_DIMS:
            raise CodegenError(f"{op.describe()}: input is {len(inp.shape)}-D; TFLite Micro's MEAN supports up to {MAX_DIMS}-D")
        axes = resolve_axes(op, g)
        want = int(np.prod([d for i, d in enumerate(inp.shape) if i not in axes], dtype=np.int64))
        if out.size != want:
            raise CodegenError(f"{op.describe()}: output shape {list(out.shape)} does not match reducing axes {axes}")
        if inp.size == 0:
            raise CodegenError(f"{op.describe()}: empty input")
        kept, red = groups(inp.shape, axes)
        if len(kept) > GROUPS or len(red) > GROUPS:
            raise CodegenError(f"{op.describe()}: axes {axes} of shape {list(inp.shape)} are not supported")

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        axes = resolve_axes(op, g)
        kept, red = groups(inp.shape, axes)
        count = int(np.prod([inp.shape[a] for a in axes], dtype=np.int64))
        (si, zi), (so, zo) = inp.qparams(), out.qparams()
        mult, shift = mean_multiplier(si, so, count)
        ks, kst = _pad(kept)
        rs, rst = _pad(red)
        params = ctx.struct(
            op, "qute_mean_params",
            kept_size=ks, kept_stride=kst, red_size=rs, red_stride=rst,
            count=count, input_zp=zi, output_zp=zo, multiplier=mult, shift=shift,
        )
        return [f"qute_mean_s8(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
