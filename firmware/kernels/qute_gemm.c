#include "qute_gemm.h"

#include <stddef.h>
#include <string.h>

#include "qute_common.h"
#include "qute_simd.h"

/* round(x * multiplier / 2^(31 - shift)), halves up, in one step; floor division written out so
 * that no negative value is shifted right */
static inline int32_t requantize_once(int32_t x, int32_t multiplier, int32_t shift)
{
    const int total = 31 - shift; /* 1..62: the generator keeps shift in -31..30 */
    const int64_t v = (int64_t)x * multiplier + ((int64_t)1 << (total - 1));
    return (int32_t)(v >= 0 ? v >> total : -((-(v + 1)) >> total) - 1);
}

typedef struct {
    int32_t output_offset, act_min, act_max, single_rounding;
    uint32_t act_min4, act_max4; /* act_min and act_max in each byte, for the blocks' clamp */
} out_rq;

static inline out_rq output_requant(const qute_requant_params *rq)
{
    const out_rq o = {rq->output_offset, rq->act_min, rq->act_max, rq->single_rounding,
                      qute_splat_s8x4(rq->act_min), qute_splat_s8x4(rq->act_max)};
    return o;
}

static inline int8_t clamp_out(const out_rq *o, int32_t v)
{
    /* wraps rather than overflows, as TFLM's int32 addition does on our targets */
    v = (int32_t)((uint32_t)v + (uint32_t)o->output_offset);
    return (int8_t)(v < o->act_min ? o->act_min : (v > o->act_max ? o->act_max : v));
}

/* The general requantization of channel c (any shift; TFLM's or LiteRT's rounding). Out of line:
 * rare, and inlined it would double the loops' code. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int8_t finish_general(const qute_requant_params *rq, const out_rq *o, int32_t c, int32_t acc)
{
    const int32_t i = rq->per_channel ? c : 0;
    const int32_t m = rq->multiplier[i], shift = rq->shift[i];
    return clamp_out(o, o->single_rounding ? requantize_once(acc, m, shift) : qute_requantize(acc, m, shift));
}

/* The fast form (qute_gemm.h, rq.fast): q = {multiplier, base_lo, base_hi, e - 1}, the output
 * zero point already in base. */
static inline int8_t finish_fast(const out_rq *o, const int32_t *q, int32_t x)
{
    const int32_t v = qute_requantize_high(x, q[0], (uint32_t)q[1], q[2]) >> q[3];
    return (int8_t)(v < o->act_min ? o->act_min : (v > o->act_max ? o->act_max : v));
}

/* Output c of a row. */
static inline int8_t finish(const qute_requant_params *rq, const out_rq *o, int32_t c, int32_t acc)
{
    if (rq->fast != NULL) { /* one entry per channel, even for one multiplier (qute_gemm.h) */
        return finish_fast(o, rq->fast + 4 * c, acc);
    }
    return finish_general(rq, o, c, acc);
}

#if defined(QUTE_SIMD_NATIVE) && defined(__OPTIMIZE__)
/* Blocks of four outputs, requantized together: each saturated to int8 (SSAT), the four packed
 * into one word, clamped to the fused activation four lanes at a time (SSUB8 + SEL for max, then
 * min) and stored as whole halfwords or a word: about 9 instructions an output, where one at a
 * time takes twice that. */
static inline int32_t fast_s8(const int32_t *q, int32_t x)
{
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(qute_requantize_high(x, q[0], (uint32_t)q[1], q[2]) >> q[3]));
    return r;
}

/* Bytes b0..b3 (low byte of each) as one word, b0 lowest. */
static inline uint32_t pack_bytes(int32_t b0, int32_t b1, int32_t b2, int32_t b3)
{
    uint32_t r = (uint32_t)b0;
    __asm__("bfi %0, %1, #8, #8\n\t"
            "bfi %0, %2, #16, #8\n\t"
            "bfi %0, %3, #24, #8"
            : "+r"(r)
            : "r"(b1), "r"(b2), "r"(b3));
    return r;
}

/* Each signed byte of v clamped to [the byte of lo4, the byte of hi4]. */
static inline uint32_t clamp_bytes(uint32_t v, uint32_t lo4, uint32_t hi4)
{
    return qute_min_s8x4(qute_max_s8x4(v, lo4), hi4);
}

/* Channels c and c + 1 of two rows (s: row 0 then row 1), the fast form. */
static inline void finish_2x2_fast(const int32_t *fast, const out_rq *o, int32_t c, const int32_t s[4],
                                   int8_t *out0, int8_t *out1)
{
    const int32_t *q0 = fast + 4 * c, *q1 = q0 + 4;
    const uint32_t v = clamp_bytes(pack_bytes(fast_s8(q0, s[0]), fast_s8(q1, s[1]), fast_s8(q0, s[2]), fast_s8(q1, s[3])),
                                   o->act_min4, o->act_max4);
    const uint16_t v0 = (uint16_t)v, v1 = (uint16_t)(v >> 16);
    memcpy(out0 + c, &v0, 2);
    memcpy(out1 + c, &v1, 2);
}

/* Channels c..c + 3 of one row, the fast form. */
static inline void finish_1x4_fast(const int32_t *fast, const out_rq *o, int32_t c, const int32_t s[4], int8_t *out)
{
    const int32_t *q = fast + 4 * c;
    const uint32_t v = clamp_bytes(pack_bytes(fast_s8(q, s[0]), fast_s8(q + 4, s[1]), fast_s8(q + 8, s[2]),
                                              fast_s8(q + 12, s[3])),
                                   o->act_min4, o->act_max4);
    memcpy(out + c, &v, 4);
}
#else
static inline void finish_2x2_fast(const int32_t *fast, const out_rq *o, int32_t c, const int32_t s[4],
                                   int8_t *out0, int8_t *out1)
{
    out0[c] = finish_fast(o, fast + 4 * c, s[0]);
    out0[c + 1] = finish_fast(o, fast + 4 * c + 4, s[1]);
    out1[c] = finish_fast(o, fast + 4 * c, s[2]);
    out1[c + 1] = finish_fast(o, fast + 4 * c + 4, s[3]);
}

static inline void finish_1x4_fast(const int32_t *fast, const out_rq *o, int32_t c, const int32_t s[4], int8_t *out)
{
    for (int j = 0; j < 4; ++j) {
        out[c + j] = finish_fast(o, fast + 4 * (c + j), s[j]);
    }
}
#endif

/* Channels c and c + 1 of two rows (s: row 0's two, then row 1's). */
QUTE_SPECIALISE void finish_2x2(const qute_requant_params *rq, const out_rq *o, int32_t c, const int32_t s[4],
                              int8_t *out0, int8_t *out1)
{
    if (rq->fast != NULL) {
        finish_2x2_fast(rq->fast, o, c, s, out0, out1);
        return;
    }
    out0[c] = finish_general(rq, o, c, s[0]);
    out0[c + 1] = finish_general(rq, o, c + 1, s[1]);
    out1[c] = finish_general(rq, o, c, s[2]);
    out1[c + 1] = finish_general(rq, o, c + 1, s[3]);
}

/* Channels c..c + 3 of one row. */
QUTE_SPECIALISE void finish_1x4(const qute_requant_params *rq, const out_rq *o, int32_t c, const int32_t s[4], int8_t *out)
{
    if (rq->fast != NULL) {
        finish_1x4_fast(rq->fast, o, c, s, out);
        return;
    }
    for (int j = 0; j < 4; ++j) {
        out[c + j] = finish_general(rq, o, c + j, s[j]);
    }
}

#if QUTE_HAVE_SIMD

/* The two rows' words split into pairs once, for every channel pair to use: per input word,
 * {row 0 bytes 0 and 2, row 0 bytes 1 and 3, row 1 bytes 0 and 2, row 1 bytes 1 and 3}. */
static inline void widen_2rows(const int8_t *a0, const int8_t *a1, int32_t k4, uint32_t *wide)
{
    for (int32_t i = 0; i < k4; ++i, wide += 4) {
        const uint32_t x0 = qute_read_s8x4(a0 + 4 * i), x1 = qute_read_s8x4(a1 + 4 * i);
        wide[0] = qute_sxtb16(x0);
        wide[1] = qute_sxtb16_ror8(x0);
        wide[2] = qute_sxtb16(x1);
        wide[3] = qute_sxtb16_ror8(x1);
    }
}

/* Int8 word j of the int8 layout as its two pairs; under the int16 layout (w16) they are stored
 * split, as words 2j and 2j + 1. */
static inline void split_word(const uint32_t *w, int32_t j, int w16, uint32_t *e, uint32_t *o)
{
    if (w16) {
        *e = w[2 * j];
        *o = w[2 * j + 1];
    } else {
        *e = qute_sxtb16(w[j]);
        *o = qute_sxtb16_ror8(w[j]);
    }
}

#if defined(QUTE_SIMD_NATIVE) && defined(__OPTIMIZE__)

/* Two rows (widened) x two channels, in assembly: the loop needs thirteen registers (four sums,
 * two pointers and an end, six operands); in C the compiler spills. Per input word: 15
 * instructions for 16 multiply-accumulates, unrolled twice. (Not at -O0, where the compiler keeps
 * a frame pointer and cannot give up thirteen registers.) */
#define QUTE_DOT_2X2_STEP                                                                              \
    "ldrd %[w0], %[w1], [%[w]], #8\n\t"                                                                \
    "sxtb16 %[t0], %[w0]\n\t"                                                                          \
    "sxtb16 %[w0], %[w0], ror #8\n\t"                                                                  \
    "sxtb16 %[t1], %[w1]\n\t"                                                                          \
    "sxtb16 %[w1], %[w1], ror #8\n\t"                                                                  \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"                                                                \
    "smlad %[s00], %[xe], %[t0], %[s00]\n\t"                                                           \
    "smlad %[s00], %[xo], %[w0], %[s00]\n\t"                                                           \
    "smlad %[s01], %[xe], %[t1], %[s01]\n\t"                                                           \
    "smlad %[s01], %[xo], %[w1], %[s01]\n\t"                                                           \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"                                                                \
    "smlad %[s10], %[xe], %[t0], %[s10]\n\t"                                                           \
    "smlad %[s10], %[xo], %[w0], %[s10]\n\t"                                                           \
    "smlad %[s11], %[xe], %[t1], %[s11]\n\t"                                                           \
    "smlad %[s11], %[xo], %[w1], %[s11]\n\t"

#define QUTE_DOT_2X2_OPERANDS                                                                          \
    : [w] "+r"(w), [x] "+r"(x), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10), [s11] "+r"(s11),     \
      [w0] "=&r"(w0), [w1] "=&r"(w1), [t0] "=&r"(t0), [t1] "=&r"(t1), [xe] "=&r"(xe), [xo] "=&r"(xo)       \
    : [end] "r"(end)                                                                                   \
    : "cc", "memory"

static inline void dot_2x2(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4])
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    const uint32_t *const end = x + 4 * k4;
    uint32_t w0, w1, t0, t1, xe, xo;
    if (k4 <= 0) {
        return;
    }
    __asm__ volatile("sub %[t0], %[end], %[x]\n\t" /* an odd number of words: one step first */
                     "tst %[t0], #16\n\t"
                     "beq 1f\n\t" QUTE_DOT_2X2_STEP "cmp %[x], %[end]\n\t"
                     "beq 2f\n\t"
                     "1:\n\t" QUTE_DOT_2X2_STEP QUTE_DOT_2X2_STEP "cmp %[x], %[end]\n\t"
                     "bne 1b\n\t"
                     "2:\n\t" QUTE_DOT_2X2_OPERANDS);
    s[0] = s00;
    s[1] = s01;
    s[2] = s10;
    s[3] = s11;
}

/* One row x four channels (two packed pairs, wa and wb): each input word is split once for four
 * channels. 21 instructions per word for 16 multiply-accumulates, unrolled twice. */
#define QUTE_DOT_1X4_PAIR(wp, sa, sb)                                                                  \
    "ldrd %[w0], %[w1], [%[" wp "]], #8\n\t"                                                           \
    "sxtb16 %[t], %[w0]\n\t"                                                                           \
    "sxtb16 %[w0], %[w0], ror #8\n\t"                                                                  \
    "smlad %[" sa "], %[xe], %[t], %[" sa "]\n\t"                                                        \
    "smlad %[" sa "], %[x], %[w0], %[" sa "]\n\t"                                                        \
    "sxtb16 %[t], %[w1]\n\t"                                                                           \
    "sxtb16 %[w1], %[w1], ror #8\n\t"                                                                  \
    "smlad %[" sb "], %[xe], %[t], %[" sb "]\n\t"                                                        \
    "smlad %[" sb "], %[x], %[w1], %[" sb "]\n\t"

#define QUTE_DOT_1X4_STEP                                                                              \
    "ldr %[x], [%[a]], #4\n\t"                                                                         \
    "sxtb16 %[xe], %[x]\n\t"                                                                           \
    "sxtb16 %[x], %[x], ror #8\n\t" QUTE_DOT_1X4_PAIR("wa", "s0", "s1") QUTE_DOT_1X4_PAIR("wb", "s2", "s3")

#define QUTE_DOT_1X4_OPERANDS                                                                          \
    : [wa] "+r"(wa), [wb] "+r"(wb), [a] "+r"(a), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),          \
      [s3] "+r"(s3), [w0] "=&r"(w0), [w1] "=&r"(w1), [x] "=&r"(x), [xe] "=&r"(xe), [t] "=&r"(t)           \
    : [end] "m"(end)                                                                                   \
    : "cc", "memory"

static inline void dot_1x4(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int8_t *const end = a + 4 * k4;
    uint32_t w0, w1, x, xe, t;
    if (k4 <= 0) {
        return;
    }
    /* the end read from memory at each test: in a register it would leave none for a frame
     * pointer (-fno-omit-frame-pointer) */
    __asm__ volatile("ldr %[t], %[end]\n\t"
                     "sub %[t], %[t], %[a]\n\t" /* an odd number of words: one step first */
                     "tst %[t], #4\n\t"
                     "beq 1f\n\t" QUTE_DOT_1X4_STEP "ldr %[t], %[end]\n\t"
                     "cmp %[a], %[t]\n\t"
                     "beq 2f\n\t"
                     "1:\n\t" QUTE_DOT_1X4_STEP QUTE_DOT_1X4_STEP "ldr %[t], %[end]\n\t"
                     "cmp %[a], %[t]\n\t"
                     "bne 1b\n\t"
                     "2:\n\t" QUTE_DOT_1X4_OPERANDS);
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

/* The same two loops on int16 weights (qute_gemm.h's second layout): the weights come split and
 * one LDM loads a channel pair's four words (so they sit in r8-r11), so a word of input costs 11
 * instructions for 16 multiply-accumulates in the two-row loop and 13 in the one-row loop. */
#define QUTE_DOT_2X2_W16_STEP                                                                          \
    "ldmia %[w]!, {r8, r9, r10, r11}\n\t" /* a0, a1, b0, b1 */                                          \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"                                                                \
    "smlad %[s00], %[xe], %[a0], %[s00]\n\t"                                                           \
    "smlad %[s00], %[xo], %[a1], %[s00]\n\t"                                                           \
    "smlad %[s01], %[xe], %[b0], %[s01]\n\t"                                                           \
    "smlad %[s01], %[xo], %[b1], %[s01]\n\t"                                                           \
    "ldrd %[xe], %[xo], [%[x]], #8\n\t"                                                                \
    "smlad %[s10], %[xe], %[a0], %[s10]\n\t"                                                           \
    "smlad %[s10], %[xo], %[a1], %[s10]\n\t"                                                           \
    "smlad %[s11], %[xe], %[b0], %[s11]\n\t"                                                           \
    "smlad %[s11], %[xo], %[b1], %[s11]\n\t"

#define QUTE_DOT_2X2_W16_OPERANDS                                                                      \
    : [w] "+r"(w), [x] "+r"(x), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10), [s11] "+r"(s11),     \
      [a0] "=&r"(a0), [a1] "=&r"(a1), [b0] "=&r"(b0), [b1] "=&r"(b1), [xe] "=&r"(xe), [xo] "=&r"(xo)       \
    : [end] "r"(end)                                                                                   \
    : "cc", "memory"

static inline void dot_2x2_w16(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4])
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    const uint32_t *const end = x + 4 * k4;
    /* one LDM loads a pair's four weight words; it names its registers in ascending order */
    register uint32_t a0 __asm__("r8"), a1 __asm__("r9"), b0 __asm__("r10"), b1 __asm__("r11");
    uint32_t xe, xo;
    if (k4 <= 0) {
        return;
    }
    __asm__ volatile("sub %[a0], %[end], %[x]\n\t" /* an odd number of words: one step first */
                     "tst %[a0], #16\n\t"
                     "beq 1f\n\t" QUTE_DOT_2X2_W16_STEP "cmp %[x], %[end]\n\t"
                     "beq 2f\n\t"
                     "1:\n\t" QUTE_DOT_2X2_W16_STEP QUTE_DOT_2X2_W16_STEP "cmp %[x], %[end]\n\t"
                     "bne 1b\n\t"
                     "2:\n\t" QUTE_DOT_2X2_W16_OPERANDS);
    s[0] = s00;
    s[1] = s01;
    s[2] = s10;
    s[3] = s11;
}

#define QUTE_DOT_1X4_W16_PAIR(wp, sa, sb)                                                              \
    "ldmia %[" wp "]!, {r8, r9, r10, r11}\n\t" /* t0..t3 */                                             \
    "smlad %[" sa "], %[xe], %[t0], %[" sa "]\n\t"                                                       \
    "smlad %[" sa "], %[x], %[t1], %[" sa "]\n\t"                                                        \
    "smlad %[" sb "], %[xe], %[t2], %[" sb "]\n\t"                                                       \
    "smlad %[" sb "], %[x], %[t3], %[" sb "]\n\t"

#define QUTE_DOT_1X4_W16_STEP                                                                          \
    "ldr %[x], [%[a]], #4\n\t"                                                                         \
    "sxtb16 %[xe], %[x]\n\t"                                                                           \
    "sxtb16 %[x], %[x], ror #8\n\t" QUTE_DOT_1X4_W16_PAIR("wa", "s0", "s1")                             \
        QUTE_DOT_1X4_W16_PAIR("wb", "s2", "s3")

#define QUTE_DOT_1X4_W16_OPERANDS                                                                      \
    : [wa] "+r"(wa), [wb] "+r"(wb), [a] "+r"(a), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),          \
      [s3] "+r"(s3), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [x] "=&r"(x),        \
      [xe] "=&r"(xe)                                                                                   \
    : [end] "m"(end)                                                                                   \
    : "cc", "memory"

static inline void dot_1x4_w16(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int8_t *const end = a + 4 * k4;
    register uint32_t t0 __asm__("r8"), t1 __asm__("r9"), t2 __asm__("r10"), t3 __asm__("r11");
    uint32_t x, xe;
    if (k4 <= 0) {
        return;
    }
    /* the end read from memory at each test, as in dot_1x4 */
    __asm__ volatile("ldr %[t0], %[end]\n\t"
                     "sub %[t0], %[t0], %[a]\n\t" /* an odd number of words: one step first */
                     "tst %[t0], #4\n\t"
                     "beq 1f\n\t" QUTE_DOT_1X4_W16_STEP "ldr %[t0], %[end]\n\t"
                     "cmp %[a], %[t0]\n\t"
                     "beq 2f\n\t"
                     "1:\n\t" QUTE_DOT_1X4_W16_STEP QUTE_DOT_1X4_W16_STEP "ldr %[t0], %[end]\n\t"
                     "cmp %[a], %[t0]\n\t"
                     "bne 1b\n\t"
                     "2:\n\t" QUTE_DOT_1X4_W16_OPERANDS);
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

#else

/* Two rows (widened) x two channels: each weight word is split once and used for both rows. */
static inline void dot_2x2_any(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4], int w16)
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    for (int32_t i = 0; i < k4; ++i, x += 4) {
        uint32_t w0e, w0o, w1e, w1o;
        split_word(w, 2 * i, w16, &w0e, &w0o);
        split_word(w, 2 * i + 1, w16, &w1e, &w1o);
        s00 = qute_smlad(x[1], w0o, qute_smlad(x[0], w0e, s00));
        s01 = qute_smlad(x[1], w1o, qute_smlad(x[0], w1e, s01));
        s10 = qute_smlad(x[3], w0o, qute_smlad(x[2], w0e, s10));
        s11 = qute_smlad(x[3], w1o, qute_smlad(x[2], w1e, s11));
    }
    s[0] = s00;
    s[1] = s01;
    s[2] = s10;
    s[3] = s11;
}

/* One row x four channels: two pairs. */
static inline void dot_1x4_any(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4],
                               int w16)
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    for (int32_t i = 0; i < k4; ++i) {
        const uint32_t x = qute_read_s8x4(a + 4 * i);
        const uint32_t xe = qute_sxtb16(x), xo = qute_sxtb16_ror8(x);
        uint32_t e, o;
        split_word(wa, 2 * i, w16, &e, &o);
        s0 = qute_smlad(xo, o, qute_smlad(xe, e, s0));
        split_word(wa, 2 * i + 1, w16, &e, &o);
        s1 = qute_smlad(xo, o, qute_smlad(xe, e, s1));
        split_word(wb, 2 * i, w16, &e, &o);
        s2 = qute_smlad(xo, o, qute_smlad(xe, e, s2));
        split_word(wb, 2 * i + 1, w16, &e, &o);
        s3 = qute_smlad(xo, o, qute_smlad(xe, e, s3));
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

static inline void dot_2x2(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4])
{
    dot_2x2_any(w, x, k4, s, 0);
}

static inline void dot_2x2_w16(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4])
{
    dot_2x2_any(w, x, k4, s, 1);
}

static inline void dot_1x4(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    dot_1x4_any(wa, wb, a, k4, s, 0);
}

static inline void dot_1x4_w16(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    dot_1x4_any(wa, wb, a, k4, s, 1);
}

#endif


/* One row x one channel whose words are `stride` int8-layout words apart. */
static inline int32_t dot_1x1(const uint32_t *w, int32_t stride, const int8_t *a, int32_t k4, int32_t s, int w16)
{
    for (int32_t i = 0; i < k4; ++i) {
        const uint32_t x = qute_read_s8x4(a + 4 * i);
        uint32_t e, o;
        split_word(w, i * stride, w16, &e, &o);
        s = qute_smlad(qute_sxtb16(x), e, s);
        s = qute_smlad(qute_sxtb16_ror8(x), o, s);
    }
    return s;
}

#else

/* Byte b of int8-layout word j: the words hold int8 values in memory order on every target; under
 * the int16 layout (w16) word j is stored as words 2j (bytes 0 and 2) and 2j + 1 (bytes 1 and
 * 3), each the low lane first. */
static inline int32_t wbyte(const uint32_t *w, int32_t j, int b, int w16)
{
    if (w16) {
        return ((const int16_t *)(w + 2 * j + (b & 1)))[b >> 1];
    }
    return ((const int8_t *)(w + j))[b];
}

static inline void dot_2x2_rows(const uint32_t *w, const int8_t *a0, const int8_t *a1, int32_t k4, int32_t s[4],
                                int w16)
{
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int32_t i = 0; i < k4; ++i) {
        for (int b = 0; b < 4; ++b) {
            const int32_t x0 = a0[4 * i + b], x1 = a1[4 * i + b];
            const int32_t v0 = wbyte(w, 2 * i, b, w16), v1 = wbyte(w, 2 * i + 1, b, w16);
            s00 += x0 * v0;
            s01 += x0 * v1;
            s10 += x1 * v0;
            s11 += x1 * v1;
        }
    }
    s[0] = (int32_t)((uint32_t)s[0] + (uint32_t)s00);
    s[1] = (int32_t)((uint32_t)s[1] + (uint32_t)s01);
    s[2] = (int32_t)((uint32_t)s[2] + (uint32_t)s10);
    s[3] = (int32_t)((uint32_t)s[3] + (uint32_t)s11);
}

static inline void dot_1x2(const uint32_t *w, const int8_t *a, int32_t k4, int32_t s[2], int w16)
{
    int32_t s0 = 0, s1 = 0;
    for (int32_t i = 0; i < k4; ++i) {
        for (int b = 0; b < 4; ++b) {
            const int32_t x = a[4 * i + b];
            s0 += x * wbyte(w, 2 * i, b, w16);
            s1 += x * wbyte(w, 2 * i + 1, b, w16);
        }
    }
    s[0] = (int32_t)((uint32_t)s[0] + (uint32_t)s0);
    s[1] = (int32_t)((uint32_t)s[1] + (uint32_t)s1);
}

/* One row x one channel whose words are `stride` int8-layout words apart. */
static inline int32_t dot_1x1(const uint32_t *w, int32_t stride, const int8_t *a, int32_t k4, int32_t s, int w16)
{
    int32_t sum = 0;
    for (int32_t i = 0; i < k4; ++i) {
        for (int b = 0; b < 4; ++b) {
            sum += a[4 * i + b] * wbyte(w, i * stride, b, w16);
        }
    }
    return (int32_t)((uint32_t)s + (uint32_t)sum);
}

#endif

/* Every channel pair against two rows: on SIMD cores as widened pairs in `wide` (widen_2rows'
 * layout), elsewhere as the int8 rows in0 and in1. w16: the filter in the int16 layout; a
 * constant at every call, so each layout gets its own loop. */
QUTE_SPECIALISE void rows2(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, const uint32_t *wide,
                         int8_t *out0, int8_t *out1, const int w16)
{
    /* locals: the int8 stores below may alias anything, so fields read through g would be reloaded */
    const qute_requant_params rq = g->rq;
    const out_rq o = output_requant(&rq);
    const int32_t k4 = g->k4, channels = g->channels;
    const int32_t *acc_init = g->acc_init;
    const uint32_t *w = g->weights;
    const int32_t scale = w16 ? 2 : 1; /* stored words per int8-layout word */
#if QUTE_HAVE_SIMD
    (void)in0;
    (void)in1;
#else
    (void)wide;
#endif
    int32_t c = 0;
    for (; c + 1 < channels; c += 2, w += 2 * scale * k4) {
        int32_t s[4] = {acc_init[c], acc_init[c + 1], acc_init[c], acc_init[c + 1]};
#if QUTE_HAVE_SIMD
        if (w16) {
            dot_2x2_w16(w, wide, k4, s);
        } else {
            dot_2x2(w, wide, k4, s);
        }
#else
        dot_2x2_rows(w, in0, in1, k4, s, w16);
#endif
        finish_2x2(&rq, &o, c, s, out0, out1);
    }
    if (c < channels) { /* the lone channel: its words are consecutive */
        int32_t s0 = acc_init[c], s1 = acc_init[c];
#if QUTE_HAVE_SIMD
        for (int32_t i = 0; i < k4; ++i) {
            uint32_t we, wo;
            split_word(w, i, w16, &we, &wo);
            s0 = qute_smlad(wide[4 * i + 1], wo, qute_smlad(wide[4 * i], we, s0));
            s1 = qute_smlad(wide[4 * i + 3], wo, qute_smlad(wide[4 * i + 2], we, s1));
        }
#else
        s0 = dot_1x1(w, 1, in0, k4, s0, w16);
        s1 = dot_1x1(w, 1, in1, k4, s1, w16);
#endif
        out0[c] = finish(&rq, &o, c, s0);
        out1[c] = finish(&rq, &o, c, s1);
    }
}

/* One body per layout, shared by the entry points below (each kept once in the image). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void rows2_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, const uint32_t *wide,
                     int8_t *out0, int8_t *out1)
{
    rows2(g, in0, in1, wide, out0, out1, 0);
}

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void rows2_w16(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, const uint32_t *wide,
                      int8_t *out0, int8_t *out1)
{
    rows2(g, in0, in1, wide, out0, out1, 1);
}

void qute_gemm_2rows_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                        int8_t *out0, int8_t *out1)
{
#if QUTE_HAVE_SIMD
    widen_2rows(in0, in1, g->k4, wide);
#endif
    rows2_s8(g, in0, in1, wide, out0, out1);
}

void qute_gemm_2rows_w16_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                            int8_t *out0, int8_t *out1)
{
#if QUTE_HAVE_SIMD
    widen_2rows(in0, in1, g->k4, wide);
#endif
    rows2_w16(g, in0, in1, wide, out0, out1);
}

#if QUTE_HAVE_SIMD
void qute_gemm_2rows_wide_s8(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1)
{
    rows2_s8(g, NULL, NULL, wide, out0, out1);
}

void qute_gemm_2rows_wide_w16_s8(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1)
{
    rows2_w16(g, NULL, NULL, wide, out0, out1);
}
#endif

QUTE_SPECIALISE void row1(const qute_gemm_params *g, const int8_t *in, int8_t *out, const int w16)
{
    const qute_requant_params rq = g->rq;
    const out_rq o = output_requant(&rq);
    const int32_t k4 = g->k4, channels = g->channels;
    const int32_t *acc_init = g->acc_init;
    const uint32_t *w = g->weights;
    const int32_t scale = w16 ? 2 : 1;
    int32_t c = 0;
    for (; c + 3 < channels; c += 4, w += 4 * scale * k4) {
        int32_t s[4] = {acc_init[c], acc_init[c + 1], acc_init[c + 2], acc_init[c + 3]};
#if QUTE_HAVE_SIMD
        if (w16) {
            dot_1x4_w16(w, w + 2 * scale * k4, in, k4, s);
        } else {
            dot_1x4(w, w + 2 * k4, in, k4, s);
        }
#else
        dot_1x2(w, in, k4, s, w16);
        dot_1x2(w + 2 * scale * k4, in, k4, s + 2, w16);
#endif
        finish_1x4(&rq, &o, c, s, out);
    }
    /* the last one to three channels: a pair's words alternate (stride 2), a lone channel's not */
    for (; c < channels; ++c) {
        const int32_t pair = c + 1 < channels || (c % 2 == 1);
        const int32_t acc = pair ? dot_1x1(w + scale * (c % 2), 2, in, k4, acc_init[c], w16)
                                 : dot_1x1(w, 1, in, k4, acc_init[c], w16);
        out[c] = finish(&rq, &o, c, acc);
        if (c % 2 == 1) {
            w += 2 * scale * k4;
        }
    }
}

void qute_gemm_1row_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out)
{
    row1(g, in, out, 0);
}

void qute_gemm_1row_w16_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out)
{
    row1(g, in, out, 1);
}
