/* The few SIMD operations the int8 kernels use, for cores with the DSP extension (Cortex-M4, M7,
 * M33, M55), and the same operations in portable C.
 *
 * A kernel written with these runs the same arithmetic on every target: on a DSP core each call is
 * one instruction, elsewhere (Cortex-M0/M3, the host) a few lines of C. The host build can
 * force the SIMD code path with -DQUTE_SIMD_EMULATE, so the tests check the kernels' SIMD loops
 * (blocking, tails, weight layout) on the host against TFLite Micro, and under QEMU on the real
 * instructions. QUTE_HAVE_SIMD says which path a kernel takes; -DQUTE_NO_SIMD turns it off.
 *
 * A "pair" is a 32-bit word holding two int16 lanes. qute_sxtb16(w) takes bytes 0 and 2 of w
 * sign-extended, qute_sxtb16_ror8(w) bytes 1 and 3: four int8 values become two pairs, and two
 * operands split the same way line up lane for lane, so no shuffle is needed before qute_smlad.
 */
#ifndef QUTE_SIMD_H
#define QUTE_SIMD_H

#include <stdint.h>
#include <string.h>

#if !defined(QUTE_NO_SIMD) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP == 1
#define QUTE_HAVE_SIMD 1
#define QUTE_SIMD_NATIVE 1
#elif !defined(QUTE_NO_SIMD) && defined(QUTE_SIMD_EMULATE)
#define QUTE_HAVE_SIMD 1
#else
#define QUTE_HAVE_SIMD 0
#endif

/* The int8 value x in all four bytes of a word. */
static inline uint32_t qute_splat_s8x4(int32_t x)
{
    return (uint32_t)(uint8_t)x * 0x01010101u;
}

/* Four int8 values as one word, from any address (Cortex-M4/M7 load unaligned words). */
static inline uint32_t qute_read_s8x4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if defined(QUTE_SIMD_NATIVE)

static inline uint32_t qute_sxtb16(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}

static inline uint32_t qute_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* acc + lo(a) * lo(b) + hi(a) * hi(b), wrapping like the int32 sums of the plain C. */
static inline int32_t qute_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

/* acc + lo(a) * lo(b) and acc + hi(a) * hi(b): one lane each. */
static inline int32_t qute_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

static inline int32_t qute_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

/* Lane-wise maximum and minimum of four signed bytes: SSUB8 sets a lane's GE flag where a >= b,
 * SEL then picks that lane from the first operand or the second. */
static inline uint32_t qute_max_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r, t;
    __asm__("ssub8 %1, %2, %3\n\tsel %0, %2, %3" : "=r"(r), "=&r"(t) : "r"(a), "r"(b) : "cc");
    return r;
}

static inline uint32_t qute_min_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r, t;
    __asm__("ssub8 %1, %2, %3\n\tsel %0, %3, %2" : "=r"(r), "=&r"(t) : "r"(a), "r"(b) : "cc");
    return r;
}

#else

static inline uint32_t qute_pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
}

static inline int32_t qute_lane_lo(uint32_t x)
{
    return (int16_t)(uint16_t)(x & 0xffffu);
}

static inline int32_t qute_lane_hi(uint32_t x)
{
    return (int16_t)(uint16_t)(x >> 16);
}

static inline uint32_t qute_sxtb16(uint32_t x)
{
    return qute_pack16((int8_t)(uint8_t)(x & 0xffu), (int8_t)(uint8_t)((x >> 16) & 0xffu));
}

static inline uint32_t qute_sxtb16_ror8(uint32_t x)
{
    return qute_pack16((int8_t)(uint8_t)((x >> 8) & 0xffu), (int8_t)(uint8_t)(x >> 24));
}

static inline int32_t qute_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const uint32_t sum = (uint32_t)acc + (uint32_t)(qute_lane_lo(a) * qute_lane_lo(b)) +
                         (uint32_t)(qute_lane_hi(a) * qute_lane_hi(b));
    return (int32_t)sum;
}

static inline int32_t qute_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(qute_lane_lo(a) * qute_lane_lo(b)));
}

static inline int32_t qute_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(qute_lane_hi(a) * qute_lane_hi(b)));
}

static inline uint32_t qute_max_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    for (int i = 0; i < 32; i += 8) {
        const int8_t x = (int8_t)(uint8_t)(a >> i), y = (int8_t)(uint8_t)(b >> i);
        r |= (uint32_t)(uint8_t)(x >= y ? x : y) << i;
    }
    return r;
}

/* each lane's {max, min} is {a, b}: the minimum is what the maximum leaves */
static inline uint32_t qute_min_s8x4(uint32_t a, uint32_t b)
{
    return a ^ b ^ qute_max_s8x4(a, b);
}

#endif

#endif
