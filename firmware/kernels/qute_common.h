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

/* A body shared by several entry points that each pass it constants: inlined into every one, so
 * each gets its own loops (the compiler would otherwise keep one copy that tests them at run time). */
#if defined(__GNUC__)
#define QUTE_SPECIALISE static inline __attribute__((always_inline))
#else
#define QUTE_SPECIALISE static inline
#endif

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

/* x * multiplier * 2^shift, multiplier a Q31 fraction in [0.5, 1) (or 0), shift in [-31, 31]:
 * TFLM's MultiplyByQuantizedMultiplier, bit for bit, in one 64-bit multiply-accumulate.
 *
 * TFLM rounds twice: r1 = round(x * m / 2^31) (qute_sat_rounding_doubling_high_mul), then
 * round(r1 / 2^e) (qute_rounding_divide_by_pot), both ties away from zero. Written as floors,
 * r1 = floor((x*m + 2^30) / 2^31) and the second rounding adds 2^(e-1), less one when r1 < 0
 * (r1 < 0 only if x < 0, and where x < 0 but r1 = 0 both forms give 0); floor(floor(a / b) + c)
 * / d) = floor((a + c*b) / (b*d)) folds them into one shift of one 64-bit sum. The multiplier is
 * never INT32_MIN, so the saturating case of the doubling multiply cannot occur. The left shift
 * wraps like TFLM's int32 multiply. Checked against the two-step form in tests/test_kernels_host.py.
 */
static inline int32_t qute_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    if (shift >= 0) {
        const int32_t shifted = (int32_t)((uint32_t)x << shift);
        return (int32_t)(((int64_t)shifted * multiplier + ((int64_t)1 << 30)) >> 31);
    }
    const int e = -shift;
    const int64_t acc = (int64_t)x * multiplier + ((int64_t)1 << 30) + ((int64_t)1 << (30 + e)) +
                        (int64_t)(x >> 31) * ((int64_t)1 << 31);
    return (int32_t)(acc >> 32) >> (e - 1);
}

/* qute_requantize for shift <= -1 with its constant made ahead of time (the kernels' fast forms):
 * the high word of x * multiplier + base - (x < 0 ? 2^31 : 0), base = base_hi * 2^32 + base_lo =
 * 2^30 + 2^(30 + e), e = -shift, which the caller shifts right by e - 1. A base that also holds
 * output_zero_point * 2^(31 + e) gives the result plus the zero point, where the generator has
 * checked that no reachable x overflows the high word. */
static inline int32_t qute_requantize_high(int32_t x, int32_t multiplier, uint32_t base_lo, int32_t base_hi)
{
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP == 1 && defined(__OPTIMIZE__)
    /* four instructions; the compiler's 64-bit arithmetic takes more. t = x >> 31 (0 or -1); the
     * 64-bit (t, t << 31) is then 0 or -2^31, added to base in one ADDS/ADC pair. */
    uint32_t lo, t;
    int32_t hi;
    __asm__("asr %[t], %[x], #31\n\t"
            "adds %[lo], %[blo], %[t], lsl #31\n\t"
            "adc %[hi], %[bhi], %[t]\n\t"
            "smlal %[lo], %[hi], %[x], %[m]\n\t"
            : [lo] "=&r"(lo), [hi] "=&r"(hi), [t] "=&r"(t)
            : [x] "r"(x), [m] "r"(multiplier), [blo] "r"(base_lo), [bhi] "r"(base_hi)
            : "cc");
    return hi;
#else
    const int64_t base = (int64_t)(((uint64_t)(uint32_t)base_hi << 32) | base_lo);
    const int64_t sum = (int64_t)x * multiplier + base + (int64_t)(x >> 31) * ((int64_t)1 << 31);
    return (int32_t)(sum >> 32);
#endif
}

static inline int8_t qute_clamp_s8(int32_t x, int32_t lo, int32_t hi)
{
    return (int8_t)QUTE_MIN(QUTE_MAX(x, lo), hi);
}

#endif
