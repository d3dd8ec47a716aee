/* Fixed-point arithmetic shared by the int8 kernels.
 *
 * These follow TensorFlow Lite Micro's reference kernels operation for operation (gemmlowp's
 * rounding rules, TFLM's default double-rounding requantization), because every output byte must
 * equal TFLM's. Shifts of negative values are arithmetic on every compiler we target (GCC and
 * Clang on Arm and x86), as TFLM assumes too.
 */
#ifndef QUTE_COMMON_H
#define QUTE_COMMON_H

#include <stdint.h>

#define QUTE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QUTE_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Round-to-nearest high half of 2*a*b, saturating the one overflowing case (INT32_MIN^2). */
static inline int32_t qute_sat_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    /* C division truncates toward zero, which is what gemmlowp relies on here. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^exponent rounded to nearest, ties away from zero. */
static inline int32_t qute_rounding_divide_by_pot(int32_t x, int exponent)
{
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * multiplier * 2^shift, multiplier a Q31 fraction in [0.5, 1): TFLM's
 * MultiplyByQuantizedMultiplier. The left shift wraps like TFLM's int32 multiply. */
static inline int32_t qute_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    int32_t shifted = (int32_t)((uint32_t)x << left);
    return qute_rounding_divide_by_pot(qute_sat_rounding_doubling_high_mul(shifted, multiplier), right);
}

static inline int8_t qute_clamp_s8(int32_t x, int32_t lo, int32_t hi)
{
    return (int8_t)QUTE_MIN(QUTE_MAX(x, lo), hi);
}

#endif
