"""QUANTIZE (int8 -> int8 requantization; float32 -> int8) and DEQUANTIZE (int8 -> float32).

As TFLite Micro's PrepareQuantizeReference / EvalQuantizeReference and Dequantize compute them.
A float32 tensor can only live inside the graph (the generated API is int8 in and out).
"""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.ops import register
from codegen.quant import f32, quantize_multiplier


def _tensor(op: Op, g: Graph, t: int, dtypes: tuple[str, ...], quantized: bool) -> Tensor:
    x = g.tensor(t)
    if x.dtype not in dtypes:
        raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) is {x.dtype}; supported: {', '.join(dtypes)}")
    if quantized:
        if x.scale is None or len(x.scale) != 1:
            raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) needs one scale and zero point (per tensor)")
        if not float(x.scale[0]) > 0.0:
            raise CodegenError(f"{op.describe()}: tensor {t} ({x.name}) has a non-positive scale")
    return x


def _float_literal(x: float) -> str:
    return repr(float(np.float32(x))) + "f"


@register
class Quantize:
    opcodes = {"QUANTIZE": (1, 2, 3)}
    inplace = (0,)  # element i is read before it is written
    header = "qute_quantize.h"

    def params(self, op: Op, g: Graph) -> tuple[str, dict]:
        inp = _tensor(op, g, op.inputs[0], ("int8", "float32"), quantized=False)
        out = _tensor(op, g, op.outputs[0], ("int8",), quantized=True)
        if inp.is_const:
            raise CodegenError(f"{op.describe()}: constant input (fold the op away first)")
        if inp.size != out.size:
            raise CodegenError(f"{op.describe()}: input and output sizes differ")
        s_out, zp_out = out.qparams()
        if inp.dtype == "float32":
            return "f32", {"size": inp.size, "zero_point": zp_out, "scale": _float_literal(s_out)}
        _tensor(op, g, op.inputs[0], ("int8",), quantized=True)
        s_in, zp_in = inp.qparams()
        m, sh = quantize_multiplier(float(f32(s_in)) / float(f32(s_out)))
        if sh > 30:
            raise CodegenError(f"{op.describe()}: input/output scale ratio too large")
        return "s8", {"size": inp.size, "input_zero_point": zp_in, "output_zero_point": zp_out,
                      "multiplier": m, "shift": sh}

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        kind, fields = self.params(op, g)
        src, dst = ctx.ptr(op.inputs[0]), ctx.ptr(op.outputs[0])
        if kind == "f32":
            p = ctx.struct(op, "qute_affine_params", **fields)
            return [f"qute_quantize_f32_s8(&{p}, {src}, {dst});"]
        p = ctx.struct(op, "qute_requantize_params", **fields)
        return [f"qute_requantize_s8(&{p}, {src}, {dst});"]


@register
class Dequantize:
    opcodes = {"DEQUANTIZE": (1, 2, 3, 4, 5, 6)}
    header = "qute_quantize.h"

    def params(self, op: Op, g: Graph) -> dict:
        inp = _tensor(op, g, op.inputs[0], ("int8",), quantized=True)
        out = _tensor(op, g, op.outputs[0], ("float32",), quantized=False)
        if inp.is_const:
            raise CodegenError(f"{op.describe()}: constant input (fold the op away first)")
        if inp.size != out.size:
            raise CodegenError(f"{op.describe()}: input and output sizes differ")
        scale, zp = inp.qparams()
        return {"size": inp.size, "zero_point": zp, "scale": _float_literal(scale)}

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        p = ctx.struct(op, "qute_affine_params", **self.params(op, g))
        return [f"qute_dequantize_s8_f32(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
