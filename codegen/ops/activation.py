"""Standalone activations on int8 tensors: RELU, RELU6, RELU_N1_TO_1, LOGISTIC, SOFTMAX.

Parameters follow TFLite Micro's Prepare functions exactly (ReluPrepare/CalculateReluOpData,
Relu6Prepare, CalculateArithmeticOpDataLogistic, CalculateSoftmaxParams); where TFLM's integer
kernels ignore a tensor parameter (RELU6's output quantization, LOGISTIC's output scale) so do we.
On models TFLM cannot run (``Graph.reference == "litert-ref"``) RELU, RELU6 and LOGISTIC follow
LiteRT's reference kernels instead; SOFTMAX needs no variant (LiteRT's is the same computation).
SOFTMAX may also write int16 (scale 1/65536, zero point -32768), as TFLM allows for an int8 input:
qute's int8 models give their heads that output, so that a probability below 1/512 is not 0.
"""

from __future__ import annotations

import math

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.ops import register
from codegen.ops.elementwise import int8_operand
from codegen.quant import f32, quantize_multiplier, round_away


def _unary(op: Op, g: Graph) -> tuple[Tensor, Tensor]:
    if len(op.inputs) < 1 or len(op.outputs) != 1:
        raise CodegenError(f"{op.describe()}: expected 1 input and 1 output")
    inp, out = int8_operand(op, g, op.inputs[0]), int8_operand(op, g, op.outputs[0])
    if inp.is_const:
        raise CodegenError(f"{op.describe()}: constant input (fold the op away first)")
    if inp.size != out.size:
        raise CodegenError(f"{op.describe()}: input and output sizes differ ({inp.size} vs {out.size})")
    return inp, out


def _roundf_div(value: float, scale: float) -> int:
    """static_cast<int32_t>(roundf(value / scale)) with float32 operands."""
    q = float(f32(value) / f32(scale))
    if not math.isfinite(q) or abs(q) > 2.0**31:
        raise CodegenError(f"{value} / {scale} does not fit an int32")
    return round_away(q)


@register
class Relu:
    """RELU (TFLM) and RELU_N1_TO_1 (no TFLM kernel: TFLite's reference ReluX, which is the same
    requantize-then-clamp with bounds -1 and 1)."""

    opcodes = {"RELU": (1, 2, 3), "RELU_N1_TO_1": (1, 2, 3)}
    inplace = (0,)  # element i is read before it is written
    header = "qute_activation.h"

    def params(self, op: Op, g: Graph) -> dict:
        inp, out = _unary(op, g)
        (s_in, zp_in), (s_out, zp_out) = inp.qparams(), out.qparams()
        if op.opcode == "RELU_N1_TO_1" or g.reference == "litert-ref":
            # LiteRT's ReluPrepare divides the float32 scales in float32; TFLM's RELU in double.
            # The multipliers differ in their low bits, and now and then so does an output byte.
            m, sh = quantize_multiplier(float(f32(s_in) / f32(s_out)))
        else:
            m, sh = quantize_multiplier(float(f32(s_in)) / float(f32(s_out)))
        if sh > 30:
            raise CodegenError(f"{op.describe()}: input/output scale ratio too large")
        if op.opcode == "RELU":
            lo, hi = max(-128, zp_out + _roundf_div(0.0, s_out)), 127
        else:
            lo = max(-128, zp_out + _roundf_div(-1.0, s_out))
            hi = min(127, zp_out + _roundf_div(1.0, s_out))
        return {"size": inp.size, "input_zero_point": zp_in, "output_zero_point": zp_out,
                "multiplier": m, "shift": sh, "act_min": lo, "act_max": hi}

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        p = ctx.struct(op, "qute_relu_params", **self.params(op, g))
        return [f"qute_relu_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]


@register
class Relu6:
    opcodes = {"RELU6": (1, 2, 3)}
    inplace = (0,)  # element i is read before it is written
    header = "qute_activation.h"

    def params(self, op: Op, g: Graph) -> dict:
        inp, _ = _unary(op, g)
        scale, zp = inp.qparams()
        # FloatToQuantizedType<int8_t>(6.0f, scale, zp): round(6.0f / scale) + zp, clamped to int8
        six = min(127, max(-128, _roundf_div(6.0, scale) + zp))
        return {"size": inp.size, "lower": zp, "upper": six}

    def requantizing_params(self, op: Op, g: Graph) -> dict:
        """LiteRT's RELU6 (ReluPrepare + QuantizedReluX): requantize to the output, then clamp to
        the output's 0 and 6. The multiplier comes from a float32 quotient of the scales."""
        inp, out = _unary(op, g)
        (s_in, zp_in), (s_out, zp_out) = inp.qparams(), out.qparams()
        m, sh = quantize_multiplier(float(f32(s_in) / f32(s_out)))
        if sh > 30:
            raise CodegenError(f"{op.describe()}: input/output scale ratio too large")
        return {"size": inp.size, "input_zero_point": zp_in, "output_zero_point": zp_out, "multiplier": m,
                "shift": sh, "act_min": max(-128, zp_out + _roundf_div(0.0, s_out)),
                "act_max": min(127, zp_out + _roundf_div(6.0, s_out))}

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)
        if g.reference == "litert-ref":
            self.requantizing_params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        if g.reference == "litert-ref":
            # TFLM cannot run this model (see Graph.reference); its RELU6, which clamps without
            # requantizing, is not the behaviour to reproduce then
            p = ctx.struct(op, "qute_relu_params", **self.requantizing_params(op, g))
            return [f"qute_relu_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
        p = ctx.struct(op, "qute_relu6_params", **self.params(op, g))
        return [f"qute_relu6_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]


def input_radius(integer_bits: int, left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLite's CalculateInputRadius (double arithmetic, floored)."""
    if left_shift < 0:
        raise CodegenError(f"input scale too small (left shift {left_shift})")
    rescaled = 1.0 * ((1 << integer_bits) - 1) * float(1 << (total_signed_bits - integer_bits)) / float(1 << left_shift)
    return int(math.floor(rescaled))


@register
class Logistic:
    opcodes = {"LOGISTIC": (1, 2, 3)}
    inplace = (0,)  # element i is read before it is written
    header = "qute_logistic.h"
    INPUT_INTEGER_BITS = 4

    def params(self, op: Op, g: Graph) -> dict:
        inp, out = _unary(op, g)
        if out.qparams()[1] != -128:
            raise CodegenError(f"{op.describe()}: output zero point {out.qparams()[1]}; TFLite Micro needs -128")
        scale, zp = inp.qparams()
        real = float(f32(scale)) * float(1 << (31 - self.INPUT_INTEGER_BITS))
        q, left_shift = math.frexp(real)
        # TFLM rounds q * 2^31 itself (no QuantizeMultiplier): a float32 scale has 24 significant
        # bits, so this never reaches 2^31.
        multiplier = round_away(q * (1 << 31))
        if multiplier >= 1 << 31:
            raise CodegenError(f"{op.describe()}: input multiplier overflows")
        # left_shift > 30 gives radius 0: every input saturates and the multiply never runs
        radius = input_radius(self.INPUT_INTEGER_BITS, left_shift)
        return {"size": inp.size, "input_zero_point": zp, "input_range_radius": radius,
                "input_multiplier": multiplier, "input_left_shift": left_shift}

    def litert_table(self, op: Op, g: Graph) -> np.ndarray:
        """LiteRT's int8 LOGISTIC (SigmoidPrepare + LUTPopulate, which its reference kernels use too):
        for every input byte v, in float32, round(1 / (1 + exp(-scale_in * (v - zp_in))) / scale_out)
        + zp_out, halves away from zero, clamped to int8. exp is correctly rounded to float32 here;
        LiteRT's expf (glibc, under 0.502 ULP) gave the same table on 3,000 scales from 1e-5 to 30.
        LiteRT refuses an output scale other than 1/256 (Prepare fails); it ignores the output zero
        point's value, as the table does not."""
        inp, out = _unary(op, g)
        (s_in, zp_in), (s_out, zp_out) = inp.qparams(), out.qparams()
        if f32(s_out) != f32(1.0 / 256.0):
            raise CodegenError(f"{op.describe()}: output scale {s_out:.6g}; LiteRT, the reference for this model "
                               "(see the stored-shape notes), needs 1/256")
        values = np.arange(-128, 128, dtype=np.int64)
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            x = f32(s_in) * (values - zp_in).astype(np.float32)  # float32 product, as in C
            e = np.array([_expf(-float(v)) for v in x], np.float32)
            y = np.float32(1.0) / (np.float32(1.0) + e)
            rescaled = y * (np.float32(1.0) / f32(s_out))
        if not np.all(np.isfinite(rescaled)):
            raise CodegenError(f"{op.describe()}: input scale {s_in} gives a non-finite logistic table")
        q = [round_away(float(v)) + zp_out for v in rescaled]
        return np.clip(np.array(q, np.int64), -128, 127).astype(np.int8)

    def check(self, op: Op, g: Graph) -> None:
        if g.reference == "litert-ref":
            self.litert_table(op, g)
        else:
            self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        if g.reference == "litert-ref":
            # TFLM cannot run this model (see Graph.reference): LiteRT's float32 lookup table, which
            # differs from TFLM's fixed-point logistic on ~1 byte in 1,800 (see Graph.reference)
            table = ctx.array(op, "table", self.litert_table(op, g))
            _, out = _unary(op, g)
            p = ctx.struct(op, "qute_lookup_params", size=out.size, table=table)
            return [f"qute_lookup_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
        p = ctx.struct(op, "qute_logistic_params", **self.params(op, g))
        return [f"qute_logistic_s8(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]


def _expf(x: float) -> np.float32:
    """exp(x) correctly rounded to float32 (x a float32 value); overflow is infinity, as in C."""
    if x > 100.0:  # beyond float32's range (exp(88.73) overflows it)
        return np.float32(np.inf)
    return np.float32(math.exp(x))


@register
class Softmax:
    opcodes = {"SOFTMAX": (1, 2, 3)}
    header = "qute_softmax.h"
    SCALED_DIFF_INTEGER_BITS = 5

    # the output quantizations TFLite Micro's SoftmaxPrepare accepts for an int8 input
    OUTPUTS = {"int8": (1.0 / 256, -128, "qute_softmax_s8"), "int16": (1.0 / 65536, -32768, "qute_softmax_s8_s16")}

    def params(self, op: Op, g: Graph) -> dict:
        if len(op.inputs) < 1 or len(op.outputs) != 1:
            raise CodegenError(f"{op.describe()}: expected 1 input and 1 output")
        inp = int8_operand(op, g, op.inputs[0])
        out = g.tensor(op.outputs[0])
        if out.dtype not in self.OUTPUTS:
            raise CodegenError(f"{op.describe()}: output is {out.dtype}; supported: int8 or int16")
        if inp.is_const:
            raise CodegenError(f"{op.describe()}: constant input (fold the op away first)")
        if out.scale is None or len(out.scale) != 1 or out.zero_point is None or len(out.zero_point) != 1:
            raise CodegenError(f"{op.describe()}: the output needs one scale and one zero point")
        if inp.shape != out.shape or len(inp.shape) < 1:
            raise CodegenError(f"{op.describe()}: input and output shapes differ")
        s_out, zp_out = out.qparams()
        want_scale, want_zp, _ = self.OUTPUTS[out.dtype]
        if zp_out != want_zp or f32(s_out) != f32(want_scale):
            raise CodegenError(f"{op.describe()}: {out.dtype} output quantization (scale {s_out}, zero point {zp_out}); "
                               f"TFLite Micro needs scale 1/{round(1 / want_scale)} and zero point {want_zp}")
        beta = float(f32(op.options.get("Beta", 1.0)))
        # PreprocessSoftmaxScaling: min(beta * input_scale * 2^(31 - 5), 2^31 - 1), in double
        real = min(beta * float(f32(inp.qparams()[0])) * float(1 << (31 - self.SCALED_DIFF_INTEGER_BITS)),
                   float((1 << 31) - 1))
        if not real > 1.0:
            raise CodegenError(f"{op.describe()}: beta * input scale = {real / 2**26:g} is too small for TFLite Micro")
        multiplier, left_shift = quantize_multiplier(real)
        diff_min = -input_radius(self.SCALED_DIFF_INTEGER_BITS, left_shift)
        depth = int(inp.shape[-1])
        return {"outer_size": inp.size // depth if depth else 0, "depth": depth, "input_multiplier": multiplier,
                "input_left_shift": left_shift, "diff_min": diff_min}

    def check(self, op: Op, g: Graph) -> None:
        self.params(op, g)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        # One kernel for both references: LiteRT's SoftmaxPrepare for its reference kernels computes
        # the same multiplier, left shift and diff_min (PreprocessSoftmaxScaling, CalculateInputRadius)
        # and its reference_ops::Softmax the same exp, sum and reciprocal; both abort on a row whose
        # exps sum to 512 or more. Measured: 0 differing bytes in 11 million (depth 1-400, input scale
        # 1e-4 to 5, beta 0.03 to 30).
        p = ctx.struct(op, "qute_softmax_params", **self.params(op, g))
        kernel = self.OUTPUTS[g.tensor(op.outputs[0]).dtype][2]
        return [f"{kernel}(&{p}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]

