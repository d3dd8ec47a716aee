"""Quantization parameters computed exactly as TFLite Micro's Prepare functions compute them.

Bit-exactness starts here: the same float32/double operations in the same order, and C's
round-half-away-from-zero rather than Python's banker's rounding.
"""

from __future__ import annotations

import math

import numpy as np

from codegen.ir import CodegenError, Op, Tensor


def round_away(x: float) -> int:
    """std::round: halves go away from zero."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A double multiplier as a Q31 significand and a power-of-two exponent (TFLite's QuantizeMultiplier).

    As in TFLM's default (double-rounding) build: shifts above 30 stay (softmax can need 31); only
    the TFLITE_SINGLE_ROUNDING build clamps them.
    """
    if not (math.isfinite(real) and real >= 0.0):
        raise CodegenError(f"a requantization factor is {real!r}; it must be finite and not negative")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 31:
        # the kernels (and TFLM's) shift an int32 left by it: 32 and more is undefined behaviour
        raise CodegenError(f"a requantization factor is {real:g} (2^{shift}); at most 2^31 is supported "
                           "(a scale of the model is far too small or too large)")
    return q_fixed, shift


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLM's MultiplyByQuantizedMultiplier (two roundings, ties away from zero), on Python ints.

    For constants computed ahead of time (lookup tables); the kernels' qute_requantize is the
    same function in C."""
    left, right = max(shift, 0), max(-shift, 0)
    x = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)  # the int32 left shift wraps
    ab = x * multiplier
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = abs(ab + nudge) >> 31
    high = high if ab + nudge >= 0 else -high  # C division truncates toward zero
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def precomputed_requant(multiplier: int, shift: int, zero_point: int, reach: int) -> tuple[int, int, int, int] | None:
    """The constant words of the kernels' shorter form of MultiplyByQuantizedMultiplier plus an
    output zero point (qute_requantize_high in firmware/kernels/qute_common.h): (multiplier,
    base_lo, base_hi, e - 1), base = 2^30 + 2^(30 + e) + zero_point * 2^(31 + e), e = -shift; or
    None when shift is not in -31..-1 or some x with |x| <= reach could overflow the high word
    (the zero point rides in it: (hi + zp * 2^(e-1)) >> (e-1) = (hi >> (e-1)) + zp). Python
    integers: no step wraps."""
    if not -31 <= shift <= -1:
        return None
    e = -shift
    base = (1 << 30) + (1 << (30 + e)) + zero_point * (1 << (31 + e))
    high = (reach * multiplier + abs(base) + (1 << 31)) >> 32  # the largest |high word| of x * m + base - (x < 0) * 2^31
    if high + 1 >= 1 << 31 or not -(1 << 31) <= base >> 32 < 1 << 31:
        return None
    return multiplier, base & 0xFFFFFFFF, base >> 32, e - 1


def f32(x) -> np.float32:
    return np.float32(x)


def activation_range(activation: str, out: Tensor, what: Op | None = None) -> tuple[int, int]:
    """The fused activation's clamp in the output's int8 domain (CalculateActivationRangeQuantized)."""
    scale, zp = out.qparams()
    where = f"{what.describe()}: " if what else ""

    def quantize(v: float) -> int:
        # TFLM divides in float32 before rounding, and refuses the model (Prepare fails) when the
        # rounded quotient is outside int32, which it checks against (float)INT32_MIN/MAX
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            q = f32(v) / f32(scale)
        if not np.isfinite(q) or not -(2.0**31) <= round_away(float(q)) <= 2.0**31:
            raise CodegenError(f"{where}the fused {activation} bound {v} does not fit int32 at output scale "
                               f"{float(scale)!r}; TFLite Micro refuses such a model")
        return zp + round_away(float(q))

    lo, hi = -128, 127
    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, quantize(0.0)), hi
    if activation == "RELU6":
        return max(lo, quantize(0.0)), min(hi, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    raise CodegenError(f"{where}fused activation {activation} is not supported; supported: NONE, RELU, RELU6, RELU_N1_TO_1")


def conv_multipliers(inp: Tensor, weights: Tensor, out: Tensor) -> tuple[list[int], list[int]]:
    """Per-channel requantization of a conv-like op (PopulateConvolutionQuantizationParams)."""
    in_scale = float(f32(inp.qparams()[0]))
    out_scale = float(f32(out.qparams()[0]))
    mults, shifts = [], []
    for s in weights.scale:
        m, sh = quantize_multiplier(in_scale * float(f32(s)) / out_scale)
        mults.append(m)
        shifts.append(sh)
    return mults, shifts
