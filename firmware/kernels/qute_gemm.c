#include "qute_gemm.h"

#include <stddef.h>

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
} out_rq;

static inline out_rq output_requant(const qute_requant_params *rq)
{
    const out_rq o = {rq->output_offset, rq->act_min, rq->act_max, rq->single_rounding};
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
/* The same where it counts most (the two-row product): with no fused activation left to clamp
 * (act_min -128, act_max 127), one saturating instruction. */
static inline int8_t finish_sat(const qute_requant_params *rq, const out_rq *o, int32_t c, int32_t acc)
{
    if (rq->fast != NULL && o->act_min == -128 && o->act_max == 127) {
        const int32_t *q = rq->fast + 4 * c;
        int32_t r;
        __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(qute_requantize_high(acc, q[0], (uint32_t)q[1], q[2]) >> q[3]));
        return (int8_t)r;
    }
    return finish(rq, o, c, acc);
}
#else
#define finish_sat finish
#endif

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
    if (k4 & 1) {
        __asm__ volatile(QUTE_DOT_2X2_STEP QUTE_DOT_2X2_OPERANDS);
    }
    if (k4 > 1) {
        __asm__ volatile("1:\n\t" QUTE_DOT_2X2_STEP QUTE_DOT_2X2_STEP "cmp %[x], %[end]\n\t"
                         "bne 1b\n\t" QUTE_DOT_2X2_OPERANDS);
    }
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
    : [end] "r"(end)                                                                                   \
    : "cc", "memory"

static inline void dot_1x4(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int8_t *const end = a + 4 * k4;
    uint32_t w0, w1, x, xe, t;
    if (k4 & 1) {
        __asm__ volatile(QUTE_DOT_1X4_STEP QUTE_DOT_1X4_OPERANDS);
    }
    if (k4 > 1) {
        __asm__ volatile("1:\n\t" QUTE_DOT_1X4_STEP QUTE_DOT_1X4_STEP "cmp %[a], %[end]\n\t"
                         "bne 1b\n\t" QUTE_DOT_1X4_OPERANDS);
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

#else

/* Two rows (widened) x two channels: each weight word is split once and used for both rows. */
static inline void dot_2x2(const uint32_t *w, const uint32_t *x, int32_t k4, int32_t s[4])
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    for (int32_t i = 0; i < k4; ++i, w += 2, x += 4) {
        const uint32_t w0e = qute_sxtb16(w[0]), w0o = qute_sxtb16_ror8(w[0]);
        const uint32_t w1e = qute_sxtb16(w[1]), w1o = qute_sxtb16_ror8(w[1]);
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
static inline void dot_1x4(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    for (int32_t i = 0; i < k4; ++i) {
        const uint32_t x = qute_read_s8x4(a + 4 * i);
        const uint32_t xe = qute_sxtb16(x), xo = qute_sxtb16_ror8(x);
        const uint32_t a0 = wa[2 * i], a1 = wa[2 * i + 1], b0 = wb[2 * i], b1 = wb[2 * i + 1];
        s0 = qute_smlad(xo, qute_sxtb16_ror8(a0), qute_smlad(xe, qute_sxtb16(a0), s0));
        s1 = qute_smlad(xo, qute_sxtb16_ror8(a1), qute_smlad(xe, qute_sxtb16(a1), s1));
        s2 = qute_smlad(xo, qute_sxtb16_ror8(b0), qute_smlad(xe, qute_sxtb16(b0), s2));
        s3 = qute_smlad(xo, qute_sxtb16_ror8(b1), qute_smlad(xe, qute_sxtb16(b1), s3));
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

#endif

/* One row x one channel whose k4 words are consecutive. */
static inline int32_t dot_1x1(const uint32_t *w, const int8_t *a, int32_t k4, int32_t s)
{
    for (int32_t i = 0; i < k4; ++i) {
        const uint32_t wv = w[i], x = qute_read_s8x4(a + 4 * i);
        s = qute_smlad(qute_sxtb16(x), qute_sxtb16(wv), s);
        s = qute_smlad(qute_sxtb16_ror8(x), qute_sxtb16_ror8(wv), s);
    }
    return s;
}

#else

/* Byte k of packed word i: the words hold int8 values in memory order on every target. */
static inline int32_t wbyte(const uint32_t *w, int32_t i, int b)
{
    return ((const int8_t *)(w + i))[b];
}

static inline void dot_2x2_rows(const uint32_t *w, const int8_t *a0, const int8_t *a1, int32_t k4, int32_t s[4])
{
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int32_t i = 0; i < k4; ++i) {
        for (int b = 0; b < 4; ++b) {
            const int32_t x0 = a0[4 * i + b], x1 = a1[4 * i + b];
            const int32_t v0 = wbyte(w, 2 * i, b), v1 = wbyte(w, 2 * i + 1, b);
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

static inline void dot_1x2(const uint32_t *w, const int8_t *a, int32_t k4, int32_t s[2])
{
    int32_t s0 = 0, s1 = 0;
    for (int32_t i = 0; i < k4; ++i) {
        for (int b = 0; b < 4; ++b) {
            const int32_t x = a[4 * i + b];
            s0 += x * wbyte(w, 2 * i, b);
            s1 += x * wbyte(w, 2 * i + 1, b);
        }
    }
    s[0] = (int32_t)((uint32_t)s[0] + (uint32_t)s0);
    s[1] = (int32_t)((uint32_t)s[1] + (uint32_t)s1);
}

static inline void dot_1x4(const uint32_t *wa, const uint32_t *wb, const int8_t *a, int32_t k4, int32_t s[4])
{
    dot_1x2(wa, a, k4, s);
    dot_1x2(wb, a, k4, s + 2);
}

static inline int32_t dot_1x1(const uint32_t *w, const int8_t *a, int32_t k4, int32_t s)
{
    int32_t sum = 0;
    for (int32_t i = 0; i < 4 * k4; ++i) {
        sum += a[i] * wbyte(w, i / 4, (int)(i % 4));
    }
    return (int32_t)((uint32_t)s + (uint32_t)sum);
}

#endif

/* Every channel pair against two rows: on SIMD cores as widened pairs in `wide` (widen_2rows'
 * layout), elsewhere as the int8 rows in0 and in1. */
static void rows2(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, const uint32_t *wide,
                  int8_t *out0, int8_t *out1)
{
    /* locals: the int8 stores below may alias anything, so fields read through g would be reloaded */
    const qute_requant_params rq = g->rq;
    const out_rq o = output_requant(&rq);
    const int32_t k4 = g->k4, channels = g->channels;
    const int32_t *acc_init = g->acc_init;
    const uint32_t *w = g->weights;
#if QUTE_HAVE_SIMD
    (void)in0;
    (void)in1;
#else
    (void)wide;
#endif
    int32_t c = 0;
    for (; c + 1 < channels; c += 2, w += 2 * k4) {
        int32_t s[4] = {acc_init[c], acc_init[c + 1], acc_init[c], acc_init[c + 1]};
#if QUTE_HAVE_SIMD
        dot_2x2(w, wide, k4, s);
#else
        dot_2x2_rows(w, in0, in1, k4, s);
#endif
        out0[c] = finish_sat(&rq, &o, c, s[0]);
        out1[c] = finish_sat(&rq, &o, c, s[2]);
        out0[c + 1] = finish_sat(&rq, &o, c + 1, s[1]);
        out1[c + 1] = finish_sat(&rq, &o, c + 1, s[3]);
    }
    if (c < channels) { /* the lone channel: its words are consecutive */
        int32_t s0 = acc_init[c], s1 = acc_init[c];
#if QUTE_HAVE_SIMD
        for (int32_t i = 0; i < k4; ++i) {
            const uint32_t we = qute_sxtb16(w[i]), wo = qute_sxtb16_ror8(w[i]);
            s0 = qute_smlad(wide[4 * i + 1], wo, qute_smlad(wide[4 * i], we, s0));
            s1 = qute_smlad(wide[4 * i + 3], wo, qute_smlad(wide[4 * i + 2], we, s1));
        }
#else
        s0 = dot_1x1(w, in0, k4, s0);
        s1 = dot_1x1(w, in1, k4, s1);
#endif
        out0[c] = finish(&rq, &o, c, s0);
        out1[c] = finish(&rq, &o, c, s1);
    }
}

void qute_gemm_2rows_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                        int8_t *out0, int8_t *out1)
{
#if QUTE_HAVE_SIMD
    widen_2rows(in0, in1, g->k4, wide);
#endif
    rows2(g, in0, in1, wide, out0, out1);
}

#if QUTE_HAVE_SIMD
void qute_gemm_2rows_wide_s8(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1)
{
    rows2(g, NULL, NULL, wide, out0, out1);
}
#endif

void qute_gemm_1row_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out)
{
    const qute_requant_params rq = g->rq;
    const out_rq o = output_requant(&rq);
    const int32_t k4 = g->k4, channels = g->channels;
    const int32_t *acc_init = g->acc_init;
    const uint32_t *w = g->weights;
    int32_t c = 0;
    for (; c + 3 < channels; c += 4, w += 4 * k4) {
        int32_t s[4] = {acc_init[c], acc_init[c + 1], acc_init[c + 2], acc_init[c + 3]};
        dot_1x4(w, w + 2 * k4, in, k4, s);
        for (int j = 0; j < 4; ++j) {
            out[c + j] = finish(&rq, &o, c + j, s[j]);
        }
    }
    /* the last one to three channels: a pair's words alternate (stride 2), a lone channel's not */
    for (; c < channels; ++c) {
        const int32_t pair = c + 1 < channels || (c % 2 == 1);
        int32_t acc = acc_init[c];
        if (pair) {
            const uint32_t *wc = w + (c % 2);
            for (int32_t i = 0; i < k4; ++i) {
                acc = dot_1x1(wc + 2 * i, in + 4 * i, 1, acc);
            }
        } else {
            acc = dot_1x1(w, in, k4, acc);
        }
        out[c] = finish(&rq, &o, c, acc);
        if (c % 2 == 1) {
            w += 2 * k4;
        }
    }
}
