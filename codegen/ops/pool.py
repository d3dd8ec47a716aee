"""AVERAGE_POOL_2D and MAX_POOL_2D (firmware/kernels/qute_pool.c)."""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op
from codegen.ops import check_dtypes, register
from codegen.quant import activation_range


def out_size(padding: str, size: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    """TFLite's ComputeOutSize."""
    effective = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    if padding == "VALID":
        return (size + stride - effective) // stride
    raise CodegenError(f"padding {padding!r} is not supported; supported: SAME, VALID")


def pad_before(stride: int, dilation: int, size: int, filter_size: int, out: int) -> int:
    """TFLite's ComputePaddingWithOffset: the padding ahead of the data (the odd extra goes after)."""
    effective = (filter_size - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2


@register
class Pool2D:
    opcodes = {"AVERAGE_POOL_2D": (1, 2, 3), "MAX_POOL_2D": (1, 2, 3)}
    header = "qute_pool.h"

    def _geometry(self, op: Op, g: Graph) -> dict:
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise CodegenError(f"{op.describe()}: input and output must be 4-D (NHWC)")
        o = op.options
        fh, fw, sh, sw = o.get("FilterHeight", 0), o.get("FilterWidth", 0), o.get("StrideH", 0), o.get("StrideW", 0)
        if min(fh, fw, sh, sw) < 1:
            raise CodegenError(f"{op.describe()}: filter {fh}x{fw} / stride {sh}x{sw} must be positive")
        padding = o.get("Padding", "SAME")
        n, h, w, c = inp.shape
        oh, ow = out_size(padding, h, fh, sh), out_size(padding, w, fw, sw)
        if out.shape != (n, oh, ow, c):
            raise CodegenError(f"{op.describe()}: output shape {list(out.shape)} should be {[n, oh, ow, c]}")
        ph, pw = pad_before(sh, 1, h, fh, oh), pad_before(sw, 1, w, fw, ow)
        # TFLM's average pool fails on a window that covers no input element
        ys = np.arange(oh) * sh - ph
        xs = np.arange(ow) * sw - pw
        if np.any(np.minimum(ys + fh, h) <= np.maximum(ys, 0)) or np.any(np.minimum(xs + fw, w) <= np.maximum(xs, 0)):
            raise CodegenError(f"{op.describe()}: a pooling window lies entirely in the padding")
        return dict(batches=n, in_h=h, in_w=w, depth=c, out_h=oh, out_w=ow, filter_h=fh, filter_w=fw,
                    stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw)

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g)
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        (si, zi), (so, zo) = inp.qparams(), out.qparams()
        # TFLM's PoolingPrepare: |scale difference| <= 1e-6 and equal zero points
        if abs(float(np.float32(si)) - float(np.float32(so))) > 1e-6 or zi != zo:
            raise CodegenError(
                f"{op.describe()}: input and output quantization differ (scale {si} vs {so}, zero point {zi} vs {zo}); "
                "TFLite Micro requires them equal for pooling"
            )
        self._geometry(op, g)
        activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        lo, hi = activation_range(op.options.get("FusedActivationFunction", "NONE"), g.tensor(op.outputs[0]), op)
        params = ctx.struct(op, "qute_pool_params", **self._geometry(op, g), act_min=lo, act_max=hi)
        fn = "qute_avg_pool_s8" if op.opcode == "AVERAGE_POOL_2D" else "qute_max_pool_s8"
        return [f"{fn}(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
