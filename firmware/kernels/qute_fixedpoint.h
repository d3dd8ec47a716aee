/* gemmlowp-style fixed-point arithmetic for the transcendental int8 kernels (softmax, logistic).
 *
 * A value is a raw int32 with a number of integer bits chosen by the caller: Q(ib).(31 - ib).
 * Every function reproduces, operation for operation, the arithmetic TensorFlow Lite Micro's
 * reference kernels get from gemmlowp's fixedpoint.h (same polynomial, same Newton-Raphson
 * steps, same constants, same rounding), because the int8 outputs must match TFLM bit for bit.
 *
 * Plain additions and subtractions wrap (gemmlowp relies on two's complement); they are done on
 * unsigned values here so that no signed overflow can happen in C.
 */
#ifndef QUTE_FIXEDPOINT_H
#define QUTE_FIXEDPOINT_H

#include <stdint.h>

#include "qute_common.h"

static inline int32_t qute_fp_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t qute_fp_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* Product of two fixed-point numbers: the integer bits add up. */
static inline int32_t qute_fp_mul(int32_t a, int32_t b)
{
    return qute_sat_rounding_doubling_high_mul(a, b);
}

/* (a + b) / 2 rounded half away from zero, without overflow. */
static inline int32_t qute_fp_rounding_half_sum(int32_t a, int32_t b)
{
    int64_t sum = (int64_t)a + (int64_t)b;
    int64_t sign = sum >= 0 ? 1 : -1;
    return (int32_t)((sum + sign) / 2);
}

/* x * 2^exponent, exponent > 0, saturating to the int32 range. */
static inline int32_t qute_fp_saturating_shift_left(int32_t x, int exponent)
{
    int32_t threshold = (int32_t)((((int64_t)1) << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((int64_t)x * ((int64_t)1 << exponent));
}

/* x * 2^exponent for any sign of exponent: saturating left shift or rounding right shift. */
static inline int32_t qute_fp_multiply_by_pot(int32_t x, int exponent)
{
    if (exponent > 0) {
        return qute_fp_saturating_shift_left(x, exponent);
    }
    if (exponent < 0) {
        return qute_rounding_divide_by_pot(x, -exponent);
    }
    return x;
}

/* The same real value moved from src_bits to dst_bits integer bits. */
static inline int32_t qute_fp_rescale(int32_t x, int src_bits, int dst_bits)
{
    return qute_fp_multiply_by_pot(x, src_bits - dst_bits);
}

/* Leading zero bits of a 32-bit word (32 for 0). */
static inline int qute_clz32(uint32_t x)
{
    if (x == 0) {
        return 32;
    }
#if defined(__GNUC__)
    return __builtin_clz(x);
#else
    {
        int n = 0;
        while (!(x & 0x80000000u)) {
            x <<= 1;
            ++n;
        }
        return n;
    }
#endif
}

#define QUTE_FP_ONE_Q0 INT32_MAX /* 1.0 in Q0.31, saturated */

/* exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor polynomial around -1/8. */
static inline int32_t qute_fp_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;   /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883; /* 1/3 */
    int32_t x = qute_fp_add(a, (int32_t)1 << 28); /* a + 1/8 */
    int32_t x2 = qute_fp_mul(x, x);
    int32_t x3 = qute_fp_mul(x2, x);
    int32_t x4 = qute_fp_mul(x2, x2);
    int32_t x4_over_4 = qute_rounding_divide_by_pot(x4, 2);
    int32_t poly = qute_rounding_divide_by_pot(
        qute_fp_add(qute_fp_mul(qute_fp_add(x4_over_4, x3), constant_1_over_3), x2), 1);
    return qute_fp_add(constant_term, qute_fp_mul(constant_term, qute_fp_add(x, poly)));
}

/* exp(a) for a <= 0 with `integer_bits` (1..29) integer bits in a; result in Q0.31. Softmax uses
 * Q5.26, logistic Q4.27 (gemmlowp's template parameter, a run-time argument here). */
static inline int32_t qute_fp_exp_on_negative_values(int32_t a, int integer_bits)
{
    static const int32_t barrel[7] = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1)   */
        290630308,  /* exp(-2)   */
        39332535,   /* exp(-4)   */
        720401,     /* exp(-8)   */
        242,        /* exp(-16)  */
    };
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t mask = one_quarter - 1;
    int32_t a_mod_quarter_minus_one_quarter = qute_fp_sub(a & mask, one_quarter);
    int32_t result = qute_fp_exp_on_interval_between_negative_one_quarter_and_0_excl(
        qute_fp_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0));
    int32_t remainder = qute_fp_sub(a_mod_quarter_minus_one_quarter, a);
    for (int exponent = -2; exponent <= 4; ++exponent) {
        if (integer_bits > exponent) {
            int shift = fractional_bits + exponent;
            if ((uint32_t)remainder & ((uint32_t)1 << shift)) {
                result = qute_fp_mul(result, barrel[exponent + 2]);
            }
        }
    }
    if (integer_bits > 5) {
        int32_t clamp = -(int32_t)((uint32_t)1 << (36 - integer_bits)); /* -32.0 */
        if (a < clamp) {
            result = 0;
        }
    }
    if (a == 0) {
        result = QUTE_FP_ONE_Q0;
    }
    return result;
}

/* 1 / (1 + a) for a in [0, 1), Q0.31 in and out: three Newton-Raphson steps in Q2.29. */
static inline int32_t qute_fp_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t constant_48_over_17 = 1515870810;
    const int32_t constant_neg_32_over_17 = -1010580540;
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t half_denominator = qute_fp_rounding_half_sum(a, QUTE_FP_ONE_Q0);
    int32_t x = qute_fp_add(constant_48_over_17, qute_fp_mul(half_denominator, constant_neg_32_over_17));
    for (int i = 0; i < 3; ++i) {
        int32_t half_denominator_times_x = qute_fp_mul(half_denominator, x);
        int32_t one_minus = qute_fp_sub(one_q2, half_denominator_times_x);
        /* Q2 * Q2 = Q4, back to Q2 */
        x = qute_fp_add(x, qute_fp_rescale(qute_fp_mul(x, one_minus), 4, 2));
    }
    /* x / 2 read as Q1.30, rescaled to Q0.31 */
    return qute_fp_rescale(x, 1, 0);
}

/* 1 / (1 + exp(-a)), a with `integer_bits` integer bits; result in Q0.31. */
static inline int32_t qute_fp_logistic(int32_t a, int integer_bits)
{
    if (a == 0) {
        return (int32_t)1 << 30; /* one half */
    }
    int32_t abs_a = a > 0 ? a : -a;
    int32_t result_if_positive =
        qute_fp_one_over_one_plus_x_for_x_in_0_1(qute_fp_exp_on_negative_values(-abs_a, integer_bits));
    if (a > 0) {
        return result_if_positive;
    }
    return qute_fp_sub(QUTE_FP_ONE_Q0, result_if_positive);
}

#endif
