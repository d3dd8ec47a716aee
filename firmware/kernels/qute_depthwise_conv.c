#include "qute_depthwise_conv.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qute_common.h"
#include "qute_simd.h"

/* Output channels accumulated together per output pixel (32-bit accumulators on the stack). */
#define QUTE_DW_CHUNK 32

static inline int32_t wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* The filter taps [*first, *last) of one dimension whose input coordinate origin + k * dilation
 * lies in [0, size). */
static inline void dw_taps_inside(int32_t origin, int32_t dilation, int32_t size, int32_t taps, int32_t *first,
                                  int32_t *last)
{
    const int32_t lo = origin >= 0 ? 0 : (-origin + dilation - 1) / dilation;
    const int32_t hi = size - origin <= 0 ? 0 : (size - origin + dilation - 1) / dilation;
    *first = lo;
    *last = hi < taps ? hi : taps;
}

/* The clipped window [ky0, ky1) x [kx0, kx1) of one output pixel. */
typedef struct {
    const int8_t *in;     /* input pixel (0, 0) of this batch */
    int32_t oy, ox;       /* input coordinates of filter tap (0, 0) */
    int32_t ky0, ky1, kx0, kx1;
} dw_window;

static inline int32_t requant(const qute_depthwise_conv_params *p, uint32_t acc, int32_t o)
{
    int32_t v = wrap_add(qute_requantize((int32_t)acc, p->multiplier[o], p->shift[o]), p->output_offset);
    return qute_clamp_s8(v, p->act_min, p->act_max);
}

/* Depth multiplier 1: four channels o..o+3 in registers over the window. offset is 0 when the
 * window lies wholly inside the input (acc_init then holds the offset's share). */
static inline void dw4(const qute_depthwise_conv_params *p, const dw_window *win, const int8_t *filter,
                       const uint32_t init[4], int32_t offset, int32_t o, int8_t *out)
{
    const int32_t c = p->input_c, kw = p->filter_w;
    uint32_t a0 = init[0], a1 = init[1], a2 = init[2], a3 = init[3];
    for (int32_t ky = win->ky0; ky < win->ky1; ++ky) {
        const int8_t *in_row = win->in + ((win->oy + ky * p->dilation_h) * p->input_w + win->ox + win->kx0 * p->dilation_w) * c + o;
        const int8_t *w_row = filter + (ky * kw + win->kx0) * c + o;
        for (int32_t k = 0; k < win->kx1 - win->kx0; ++k) {
            const int8_t *in = in_row + k * p->dilation_w * c;
            const int8_t *w = w_row + k * c;
            a0 += (uint32_t)((in[0] + offset) * w[0]);
            a1 += (uint32_t)((in[1] + offset) * w[1]);
            a2 += (uint32_t)((in[2] + offset) * w[2]);
            a3 += (uint32_t)((in[3] + offset) * w[3]);
        }
    }
    out[o] = (int8_t)requant(p, a0, o);
    out[o + 1] = (int8_t)requant(p, a1, o + 1);
    out[o + 2] = (int8_t)requant(p, a2, o + 2);
    out[o + 3] = (int8_t)requant(p, a3, o + 3);
}

static inline void dw1(const qute_depthwise_conv_params *p, const dw_window *win, const int8_t *filter,
                       uint32_t acc, int32_t offset, int32_t o, int8_t *out)
{
    const int32_t c = p->input_c, kw = p->filter_w;
    for (int32_t ky = win->ky0; ky < win->ky1; ++ky) {
        const int8_t *in_row = win->in + ((win->oy + ky * p->dilation_h) * p->input_w + win->ox + win->kx0 * p->dilation_w) * c + o;
        const int8_t *w_row = filter + (ky * kw + win->kx0) * c + o;
        for (int32_t k = 0; k < win->kx1 - win->kx0; ++k) {
            acc += (uint32_t)((in_row[k * p->dilation_w * c] + offset) * w_row[k * c]);
        }
    }
    out[o] = (int8_t)requant(p, acc, o);
}

/* Depth multiplier 1, one output pixel. */
static void dw_pixel_m1(const qute_depthwise_conv_params *p, const dw_window *win, int full, const int8_t *filter,
                        const int32_t *bias, int8_t *out)
{
    const int32_t oc = p->output_c;
    int32_t o = 0;
    if (full) {
        for (; o + 4 <= oc; o += 4) {
            const uint32_t init[4] = {(uint32_t)p->acc_init[o], (uint32_t)p->acc_init[o + 1],
                                      (uint32_t)p->acc_init[o + 2], (uint32_t)p->acc_init[o + 3]};
            dw4(p, win, filter, init, 0, o, out);
        }
        for (; o < oc; ++o) {
            dw1(p, win, filter, (uint32_t)p->acc_init[o], 0, o, out);
        }
        return;
    }
    for (; o + 4 <= oc; o += 4) {
        uint32_t init[4] = {0, 0, 0, 0};
        if (bias) {
            for (int j = 0; j < 4; ++j) {
                init[j] = (uint32_t)bias[o + j];
            }
        }
        dw4(p, win, filter, init, p->input_offset, o, out);
    }
    for (; o < oc; ++o) {
        dw1(p, win, filter, bias ? (uint32_t)bias[o] : 0u, p->input_offset, o, out);
    }
}

/* Any depth multiplier: output channel o0 + j reads input channel (o0 + j) / mult. */
static inline void mac_mult_s8(uint32_t *acc, const int8_t *in, const int8_t *w, int32_t n, int32_t offset,
                               int32_t o0, int32_t mult)
{
    int32_t c = o0 / mult, m = o0 % mult;
    for (int32_t j = 0; j < n; ++j) {
        acc[j] += (uint32_t)((in[c] + offset) * w[j]);
        if (++m == mult) {
            m = 0;
            ++c;
        }
    }
}

void qute_depthwise_conv2d_s8(const qute_depthwise_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output)
{
    const int32_t kh = p->filter_h, kw = p->filter_w, oc = p->output_c, mult = p->depth_multiplier;
    /* unsigned: wraps like TFLM's int32 accumulator does in practice, without C overflow */
    uint32_t acc[QUTE_DW_CHUNK];
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * p->input_h * p->input_w * p->input_c;
        for (int32_t y = 0; y < p->output_h; ++y) {
            const int32_t oy = y * p->stride_h - p->pad_h;
            int32_t ky0, ky1;
            dw_taps_inside(oy, p->dilation_h, p->input_h, kh, &ky0, &ky1);
            for (int32_t x = 0; x < p->output_w; ++x) {
                const int32_t ox = x * p->stride_w - p->pad_w;
                int32_t kx0, kx1;
                dw_taps_inside(ox, p->dilation_w, p->input_w, kw, &kx0, &kx1);
                const int full = ky0 == 0 && ky1 == kh && kx0 == 0 && kx1 == kw;
                int8_t *out = output + ((b * p->output_h + y) * p->output_w + x) * oc;
                if (mult == 1) {
                    const dw_window win = {in_b, oy, ox, ky0, ky1, kx0, kx1};
                    dw_pixel_m1(p, &win, full, filter, bias, out);
                    continue;
                }
                /* Any depth multiplier: chunks of output channels accumulated on the stack. */
                const int32_t offset = full ? 0 : p->input_offset;
                for (int32_t o0 = 0; o0 < oc; o0 += QUTE_DW_CHUNK) {
                    const int32_t n = QUTE_MIN(QUTE_DW_CHUNK, oc - o0);
                    for (int32_t j = 0; j < n; ++j) {
                        acc[j] = (uint32_t)(full ? p->acc_init[o0 + j] : (bias ? bias[o0 + j] : 0));
                    }
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const int32_t iy = oy + ky * p->dilation_h;
                        for (int32_t kx = kx0; kx < kx1; ++kx) {
                            const int32_t ix = ox + kx * p->dilation_w;
                            const int8_t *in = in_b + (iy * p->input_w + ix) * p->input_c;
                            const int8_t *w = filter + (ky * kw + kx) * oc + o0;
                            mac_mult_s8(acc, in, w, n, offset, o0, mult);
                        }
                    }
                    for (int32_t j = 0; j < n; ++j) {
                        out[o0 + j] = (int8_t)requant(p, acc[j], o0 + j);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * 3x3, depth multiplier 1: qute_depthwise_conv2d_3x3_s8 (the weight stream is described in
 * qute_depthwise_conv.h).
 *
 * Work goes in groups: 4 channels of one output pixel, 9 taps of one input word each.
 * - Interior pixels (window inside the input, channels a multiple of 4) go in runs, the interior
 *   pixels of one output row: three row pointers, columns at 0, cs and 2 * cs (cs = dilation_w *
 *   channels), each pointer advancing one word per group.
 * - Every other pixel reads its taps through a table of 9 pointers: a tap in the padding points
 *   at a row of input zero points (a stack buffer of DW_ZROW words, channels in chunks of that
 *   many groups), whose products are exactly the share of acc_init that TFLM's skipped taps never
 *   add. The last 4 channels, when channels is not a multiple of 4, take one more such group (it
 *   overlaps the one before, whose bytes it rewrites unchanged); with fewer than 4 channels the
 *   taps are first copied to one word each.
 *
 * Both loops are assembly on Thumb-2 cores with the DSP extension for the fast requantization
 * modes (DW_ASM: Cortex-M4, M7, M33, M55): functions of their own, qute_dw3x3_run_* and
 * qute_dw3x3_table_*, that have the 14 registers to themselves (GCC, given the same loop as
 * intrinsics or inline asm, spills or cannot allocate it). Everywhere else, and for
 * QUTE_DW_RQ_EXACT, the loops are C: the SIMD operations of qute_simd.h (QUTE_HAVE_SIMD) or
 * plain per-channel products, the same arithmetic and the same bytes.
 */

#if defined(__GNUC__)
#define DW_INLINE static inline __attribute__((always_inline))
#define DW_NOINLINE static __attribute__((noinline))
#else
#define DW_INLINE static inline
#define DW_NOINLINE static
#endif

#if defined(QUTE_SIMD_NATIVE) && defined(__thumb2__)
#define DW_ASM 1
#else
#define DW_ASM 0
#endif

#define DW_GW QUTE_DW3X3_GROUP_WORDS
#define DW_RQ 22         /* first requantization word of a group */
#define DW_ZROW 64       /* words of input zero points: 256 bytes of stack, 64 groups per chunk */

/* ---- the requantization of one lane, in C */

DW_INLINE int32_t dw_requant(int32_t acc, const int32_t *q, int lane, const qute_dw_packed_params *p,
                             const int mode)
{
    const int32_t m = q[2 * lane], k = q[2 * lane + 1];
    if (mode == QUTE_DW_RQ_EXACT) {
        const int32_t v = wrap_add(qute_requantize(acc, m, k), p->output_offset);
        return qute_clamp_s8(v, p->act_min, p->act_max);
    }
    /* acc is twice TFLM's accumulator: the high word of (k + (acc < 0 ? -1 : 0)) * 2^32 + acc * m
     * + 2^31 (SMMLAR), shifted right by e */
    const int32_t e = q[8 + lane];
    const int64_t sum = (int64_t)(k + (acc >> 31)) * ((int64_t)1 << 32) + (int64_t)acc * m + ((int64_t)1 << 31);
    const int32_t v = (int32_t)(sum >> 32) >> e;
    if (mode == QUTE_DW_RQ_FAST_SAT) {
        return qute_clamp_s8(v, -128, 127);
    }
    return qute_clamp_s8(v, p->act_min, p->act_max);
}

/* ---- one group in C
 *
 * Taps go in pairs (qute_depthwise_conv.h): (1, 2), (0, 4), (3, 5), (7, 8), then tap 6 alone.
 * Pair (a, b) of lane c: acc += x_a[c] * lo16(word) + x_b[c] * hi16(word). */

#if QUTE_HAVE_SIMD
typedef int32_t dw_acc;
/* The pair at word index k of the group: inputs of taps a and b (4 channels each). The low
 * halves of the two words, then the high halves, make (a, b) pairs of channels 0/1 and 2/3. */
#define DW_PAIR(pa, pb, k)                                                                           \
    do {                                                                                             \
        const uint32_t xa_ = qute_read_s8x4(pa), xb_ = qute_read_s8x4(pb);                          \
        const uint32_t lo_ = (xa_ & 0xffffu) | (xb_ << 16), hi_ = (xb_ & 0xffff0000u) | (xa_ >> 16); \
        a0 = qute_smlad(qute_sxtb16(lo_), (uint32_t)wp[k], a0);                                     \
        a1 = qute_smlad(qute_sxtb16_ror8(lo_), (uint32_t)wp[(k) + 1], a1);                          \
        a2 = qute_smlad(qute_sxtb16(hi_), (uint32_t)wp[(k) + 2], a2);                               \
        a3 = qute_smlad(qute_sxtb16_ror8(hi_), (uint32_t)wp[(k) + 3], a3);                          \
    } while (0)
/* The lone tap at word index k: (w0 | w2 << 16), (w1 | w3 << 16). */
#define DW_TAP(ptr, k)                                                                               \
    do {                                                                                             \
        const uint32_t x_ = qute_read_s8x4(ptr);                                                     \
        const uint32_t even_ = qute_sxtb16(x_), odd_ = qute_sxtb16_ror8(x_);                        \
        const uint32_t w02_ = (uint32_t)wp[k], w13_ = (uint32_t)wp[(k) + 1];                        \
        a0 = qute_smlabb(even_, w02_, a0);                                                           \
        a2 = qute_smlatt(even_, w02_, a2);                                                           \
        a1 = qute_smlabb(odd_, w13_, a1);                                                            \
        a3 = qute_smlatt(odd_, w13_, a3);                                                            \
    } while (0)
#else
typedef uint32_t dw_acc; /* wraps like TFLM's int32 sums in practice, without C overflow */
#define DW_LO16(w) ((int32_t)(int16_t)(uint16_t)((uint32_t)(w) & 0xffffu))
#define DW_HI16(w) ((int32_t)(w) >> 16)
#define DW_PAIR(pa, pb, k)                                                                           \
    do {                                                                                             \
        const int8_t *xa_ = (pa), *xb_ = (pb);                                                       \
        a0 += (uint32_t)(xa_[0] * DW_LO16(wp[k]) + xb_[0] * DW_HI16(wp[k]));                         \
        a1 += (uint32_t)(xa_[1] * DW_LO16(wp[(k) + 1]) + xb_[1] * DW_HI16(wp[(k) + 1]));             \
        a2 += (uint32_t)(xa_[2] * DW_LO16(wp[(k) + 2]) + xb_[2] * DW_HI16(wp[(k) + 2]));             \
        a3 += (uint32_t)(xa_[3] * DW_LO16(wp[(k) + 3]) + xb_[3] * DW_HI16(wp[(k) + 3]));             \
    } while (0)
#define DW_TAP(ptr, k)                                                                               \
    do {                                                                                             \
        const int8_t *x_ = (ptr);                                                                    \
        const int32_t w02_ = wp[k], w13_ = wp[(k) + 1];                                             \
        a0 += (uint32_t)(x_[0] * DW_LO16(w02_));                                                     \
        a1 += (uint32_t)(x_[1] * DW_LO16(w13_));                                                     \
        a2 += (uint32_t)(x_[2] * DW_HI16(w02_));                                                     \
        a3 += (uint32_t)(x_[3] * DW_HI16(w13_));                                                     \
    } while (0)
#endif

/* n groups: tap k of group g at tap[k] + 4 * g, weight stream wp, 4 output bytes each at out. */
DW_INLINE void dw3x3_groups_c(const int8_t *const tap[9], const int32_t *wp, int32_t n, int8_t *out,
                              const qute_dw_packed_params *p, const int mode)
{
    for (int32_t off = 0; off < 4 * n; off += 4, wp += DW_GW, out += 4) {
        dw_acc a0 = (dw_acc)wp[0], a1 = (dw_acc)wp[1], a2 = (dw_acc)wp[2], a3 = (dw_acc)wp[3];
        DW_PAIR(tap[1] + off, tap[2] + off, 4);
        DW_PAIR(tap[0] + off, tap[4] + off, 8);
        DW_PAIR(tap[3] + off, tap[5] + off, 12);
        DW_PAIR(tap[7] + off, tap[8] + off, 16);
        DW_TAP(tap[6] + off, 20);
        const int32_t *q = wp + DW_RQ;
        out[0] = (int8_t)dw_requant((int32_t)a0, q, 0, p, mode);
        out[1] = (int8_t)dw_requant((int32_t)a1, q, 1, p, mode);
        out[2] = (int8_t)dw_requant((int32_t)a2, q, 2, p, mode);
        out[3] = (int8_t)dw_requant((int32_t)a3, q, 3, p, mode);
    }
}

/* ---- the two loops' parameters (the assembly reads them by offset) */

/* A run: output pixels of pixel_bytes / 4 groups each, from out to end, all of whose taps are
 * read from three row pointers (column stride cs); the next pixel's rows start skip bytes
 * after where the last group of the pixel before left them; out is contiguous. */
typedef struct {
    const int8_t *r0, *r1, *r2; /* 0, 4, 8 */
    int32_t cs;                 /* 12 */
    const int32_t *wp;          /* 16: the first group's words */
    int8_t *out;                /* 20 */
    const int8_t *end;          /* 24: out + pixels * pixel_bytes */
    int32_t pixel_bytes;        /* 28: 4 * groups per pixel */
    int32_t skip;               /* 32 */
    int32_t rewind;             /* 36: the bytes of one pixel's groups of weight stream */
    uint32_t lo4, hi4;          /* 40, 44: the clamp's bounds, four bytes each */
} dw_run;

/* A table: groups from out to end, tap k of the g-th at tap[k] + 4 * g. */
typedef struct {
    const int8_t *tap[9]; /* 0 .. 32 */
    const int32_t *wp;    /* 36 */
    int8_t *out;          /* 40 */
    const int8_t *end;    /* 44 */
    uint32_t lo4, hi4;    /* 48, 52 */
} dw_table;

/* ---- the two loops in assembly */

#if DW_ASM
/* the field offsets the assembly reads (a negative array size stops the build otherwise) */
typedef char dw_layout_check[offsetof(dw_run, end) == 24 && offsetof(dw_run, lo4) == 40 &&
                                     offsetof(dw_table, wp) == 36 && offsetof(dw_table, lo4) == 48
                                 ? 1
                                 : -1];

/* void qute_dw3x3_run_sat(const dw_run *), qute_dw3x3_run_clamp(const dw_run *),
 *      qute_dw3x3_run2_sat(const dw_run *), qute_dw3x3_run2_clamp(const dw_run *),
 *      qute_dw3x3_table_sat(const dw_table *), qute_dw3x3_table_clamp(const dw_table *):
 * the fast requantization; _clamp clamps the four bytes of each group bytewise to [lo4, hi4]
 * (SSUB8 sets the GE flags, SEL picks); run2 takes the groups two at a time (pixels of an even
 * number of groups).
 *
 * Registers: r4 wp, r5-r8 the accumulators of lanes 0-3, r9-r12 and lr scratch. wp advances by
 * one group at the group's first load, so the rest of the group is at negative offsets: the
 * tap pairs at -120, -104, -88, -72, the lone tap at -56, the requantization words at -48.
 * run: r0-r2 rows, r3 cs; stack [sp] the end of the pixel's output, [sp, #4] the dw_run,
 * [sp, #8] lo4 and hi4, [sp, #16] out, [sp, #20] run2's first group's bytes. table: r0 the
 * offset 4 * g, r1 out, r2 end, r3 the dw_table.
 *
 * A pair of taps a (r9) and b (r10): PKHBT/PKHTB put the low halves of the two input words
 * together, then the high halves, and SXTB16 makes the (a, b) pairs of each channel, which
 * SMLAD multiplies with the pair's weight word: 8 products in 14 instructions. */
#define DW_S_PAIR(woff01, woff23)                                                                    \
    "pkhbt r11, r9, r10, lsl #16\n"                                                                  \
    "pkhtb r10, r10, r9, asr #16\n"                                                                  \
    "sxtb16 r9, r11\n"                                                                               \
    "sxtb16 r11, r11, ror #8\n"                                                                      \
    "ldrd r12, lr, [r4, #" woff01 "]\n"                                                              \
    "smlad r5, r9, r12, r5\n"                                                                        \
    "smlad r6, r11, lr, r6\n"                                                                        \
    "sxtb16 r9, r10\n"                                                                               \
    "sxtb16 r10, r10, ror #8\n"                                                                      \
    "ldrd r12, lr, [r4, #" woff23 "]\n"                                                              \
    "smlad r7, r9, r12, r7\n"                                                                        \
    "smlad r8, r10, lr, r8\n"
/* the lone tap (r9) */
#define DW_S_LONE                                                                                    \
    "ldrd r12, lr, [r4, #-56]\n"                                                                     \
    "sxtb16 r10, r9, ror #8\n"                                                                       \
    "sxtb16 r9, r9\n"                                                                                \
    "smlabb r5, r9, r12, r5\n"                                                                       \
    "smlatt r7, r9, r12, r7\n"                                                                       \
    "smlabb r6, r10, lr, r6\n"                                                                       \
    "smlatt r8, r10, lr, r8\n"
/* lane a with shift register e: lr += (a < 0 ? -1 : 0); a = ssat8(SMMLAR(a, r12, lr) >> e) */
#define DW_S_RQ(a, e)                                                                                \
    "add lr, lr, " a ", asr #31\n"                                                                   \
    "smmlar " a ", " a ", r12, lr\n"                                                                 \
    "asr " a ", " a ", " e "\n"                                                                      \
    "ssat " a ", #8, " a "\n"
/* the four lanes, their bytes packed in r5 */
#define DW_S_REQUANT                                                                                 \
    "ldrd r9, r10, [r4, #-16]\n"                                                                     \
    "ldrd r12, lr, [r4, #-48]\n"                                                                     \
    DW_S_RQ("r5", "r9")                                                                              \
    "ldrd r12, lr, [r4, #-40]\n"                                                                     \
    DW_S_RQ("r6", "r10")                                                                             \
    "ldrd r9, r10, [r4, #-8]\n"                                                                      \
    "ldrd r12, lr, [r4, #-32]\n"                                                                     \
    DW_S_RQ("r7", "r9")                                                                              \
    "ldrd r12, lr, [r4, #-24]\n"                                                                     \
    DW_S_RQ("r8", "r10")                                                                             \
    "bfi r5, r6, #8, #8\n"                                                                           \
    "bfi r5, r7, #16, #8\n"                                                                          \
    "bfi r5, r8, #24, #8\n"
/* bytewise clamp of r5 to the bounds at [base, #off] */
#define DW_S_CLAMP(bounds)                                                                           \
    "ldrd r9, r10, " bounds "\n"                                                                     \
    "ssub8 r11, r5, r9\n"                                                                            \
    "sel r5, r5, r9\n"                                                                               \
    "ssub8 r11, r5, r10\n"                                                                           \
    "sel r5, r10, r5\n"
#define DW_S_HEAD(name)                                                                              \
    ".section .text." name ",\"ax\",%progbits\n"                                                     \
    ".syntax unified\n"                                                                              \
    ".thumb\n"                                                                                       \
    ".p2align 2\n"                                                                                   \
    ".global " name "\n"                                                                             \
    ".type " name ", %function\n"                                                                    \
    ".thumb_func\n"                                                                                  \
    name ":\n"
#define DW_S_TAIL(name) ".size " name ", . - " name "\n.text\n"

/* one group of a run, its four bytes in r5 */
#define DW_S_RUN_GROUP(clamp)                                                                        \
    "ldrd r5, r6, [r4], #136\n"                                                                      \
    "ldrd r7, r8, [r4, #-128]\n"                                                                     \
    "ldr r9, [r0, r3]\n"               /* taps 1, 2 */                                               \
    "ldr r10, [r0, r3, lsl #1]\n"                                                                    \
    DW_S_PAIR("-120", "-112")                                                                        \
    "ldr r9, [r0], #4\n"               /* taps 0, 4 */                                               \
    "ldr r10, [r1, r3]\n"                                                                            \
    DW_S_PAIR("-104", "-96")                                                                         \
    "ldr r10, [r1, r3, lsl #1]\n"      /* taps 3, 5 */                                               \
    "ldr r9, [r1], #4\n"                                                                             \
    DW_S_PAIR("-88", "-80")                                                                          \
    "ldr r9, [r2, r3]\n"               /* taps 7, 8 */                                               \
    "ldr r10, [r2, r3, lsl #1]\n"                                                                    \
    DW_S_PAIR("-72", "-64")                                                                          \
    "ldr r9, [r2], #4\n"               /* tap 6 */                                                   \
    DW_S_LONE                                                                                        \
    DW_S_REQUANT                                                                                     \
    clamp
/* groups one at a time: store, and on while the pixel lasts */
#define DW_S_RUN_ONE(clamp)                                                                          \
    DW_S_RUN_GROUP(clamp)                                                                            \
    "ldr r9, [sp, #16]\n"                                                                            \
    "str r5, [r9], #4\n"                                                                             \
    "str r9, [sp, #16]\n"
/* two at a time (an even number of groups per pixel, out word-aligned): the first's bytes
 * wait at [sp, #20] */
#define DW_S_RUN_TWO(clamp)                                                                          \
    DW_S_RUN_GROUP(clamp)                                                                            \
    "str r5, [sp, #20]\n"                                                                            \
    DW_S_RUN_GROUP(clamp)                                                                            \
    "ldr r9, [sp, #16]\n"                                                                            \
    "ldr r10, [sp, #20]\n"                                                                           \
    "strd r10, r5, [r9], #8\n"                                                                       \
    "str r9, [sp, #16]\n"
#define DW_S_RUN(name, body)                                                                         \
    DW_S_HEAD(name)                                                                                  \
    "push {r4-r11, lr}\n"                                                                            \
    "sub sp, sp, #24\n"                                                                              \
    "str r0, [sp, #4]\n"                                                                             \
    "ldrd r10, r11, [r0, #40]\n"                                                                     \
    "strd r10, r11, [sp, #8]\n"                                                                      \
    "ldrd r4, r9, [r0, #16]\n"                                                                       \
    "str r9, [sp, #16]\n"                                                                            \
    "ldr r10, [r0, #28]\n"                                                                           \
    "add r10, r9, r10\n"                                                                             \
    "str r10, [sp]\n"                                                                                \
    "ldr r3, [r0, #12]\n"                                                                            \
    "ldm r0, {r0, r1, r2}\n"                                                                         \
    "1:\n"                                                                                           \
    body                                                                                             \
    "ldr r10, [sp]\n"                                                                                \
    "cmp r9, r10\n"                                                                                  \
    "bne 1b\n"                                                                                       \
    /* the pixel is done: the next one, if any */                                                    \
    "ldr r11, [sp, #4]\n"                                                                            \
    "ldr r12, [r11, #24]\n"                                                                          \
    "cmp r9, r12\n"                                                                                  \
    "beq 2f\n"                                                                                       \
    "ldr r12, [r11, #28]\n"                                                                          \
    "add r10, r10, r12\n"                                                                            \
    "str r10, [sp]\n"                                                                                \
    "ldrd r12, lr, [r11, #32]\n"                                                                     \
    "sub r4, r4, lr\n"                                                                               \
    "add r0, r0, r12\n"                                                                              \
    "add r1, r1, r12\n"                                                                              \
    "add r2, r2, r12\n"                                                                              \
    "b 1b\n"                                                                                         \
    "2:\n"                                                                                           \
    "add sp, sp, #24\n"                                                                              \
    "pop {r4-r11, pc}\n"                                                                             \
    DW_S_TAIL(name)

/* tap k into register r: its pointer from the table, plus the offset */
#define DW_S_LOAD(r, k) "ldr " r ", [r3, #" k "]\nldr " r ", [" r ", r0]\n"
#define DW_S_TABLE(name, clamp)                                                                      \
    DW_S_HEAD(name)                                                                                  \
    "push {r4-r11, lr}\n"                                                                            \
    "mov r3, r0\n"                                                                                   \
    "ldr r4, [r3, #36]\n"                                                                            \
    "ldrd r1, r2, [r3, #40]\n"                                                                       \
    "movs r0, #0\n"                                                                                  \
    "1:\n"                                                                                           \
    "ldrd r5, r6, [r4], #136\n"                                                                      \
    "ldrd r7, r8, [r4, #-128]\n"                                                                     \
    DW_S_LOAD("r9", "4") DW_S_LOAD("r10", "8") DW_S_PAIR("-120", "-112")                             \
    DW_S_LOAD("r9", "0") DW_S_LOAD("r10", "16") DW_S_PAIR("-104", "-96")                             \
    DW_S_LOAD("r9", "12") DW_S_LOAD("r10", "20") DW_S_PAIR("-88", "-80")                             \
    DW_S_LOAD("r9", "28") DW_S_LOAD("r10", "32") DW_S_PAIR("-72", "-64")                             \
    DW_S_LOAD("r9", "24") DW_S_LONE                                                                  \
    DW_S_REQUANT                                                                                     \
    clamp                                                                                            \
    "str r5, [r1], #4\n"                                                                             \
    "add r0, r0, #4\n"                                                                               \
    "cmp r1, r2\n"                                                                                   \
    "bne 1b\n"                                                                                       \
    "pop {r4-r11, pc}\n"                                                                             \
    DW_S_TAIL(name)

__asm__(DW_S_RUN("qute_dw3x3_run_sat", DW_S_RUN_ONE(""))
        DW_S_RUN("qute_dw3x3_run_clamp", DW_S_RUN_ONE(DW_S_CLAMP("[sp, #8]")))
        DW_S_RUN("qute_dw3x3_run2_sat", DW_S_RUN_TWO(""))
        DW_S_RUN("qute_dw3x3_run2_clamp", DW_S_RUN_TWO(DW_S_CLAMP("[sp, #8]")))
        DW_S_TABLE("qute_dw3x3_table_sat", "")
        DW_S_TABLE("qute_dw3x3_table_clamp", DW_S_CLAMP("[r3, #48]")));

void qute_dw3x3_run_sat(const dw_run *run);
void qute_dw3x3_run_clamp(const dw_run *run);
void qute_dw3x3_run2_sat(const dw_run *run);
void qute_dw3x3_run2_clamp(const dw_run *run);
void qute_dw3x3_table_sat(const dw_table *table);
void qute_dw3x3_table_clamp(const dw_table *table);
#endif

/* ---- the two loops, any mode */

#define DW_GROUPS_FN(name, mode)                                                                     \
    DW_NOINLINE void name(const int8_t *const tap[9], const int32_t *wp, int32_t n, int8_t *out,     \
                          const qute_dw_packed_params *p)                                            \
    {                                                                                                \
        dw3x3_groups_c(tap, wp, n, out, p, mode);                                                    \
    }
#if !DW_ASM
DW_GROUPS_FN(dw3x3_groups_sat, QUTE_DW_RQ_FAST_SAT)
DW_GROUPS_FN(dw3x3_groups_clamp, QUTE_DW_RQ_FAST_CLAMP)
#endif
DW_GROUPS_FN(dw3x3_groups_exact, QUTE_DW_RQ_EXACT)

/* n groups in C, in requantization mode `mode` (a constant: each entry point below compiles its
 * own mode's path only, so a model links the loops of the modes it uses) */
DW_INLINE void dw3x3_groups(const int8_t *const tap[9], const int32_t *wp, int32_t n, int8_t *out,
                            const qute_dw_packed_params *p, const int mode)
{
#if !DW_ASM
    if (mode == QUTE_DW_RQ_FAST_SAT) {
        dw3x3_groups_sat(tap, wp, n, out, p);
        return;
    }
    if (mode == QUTE_DW_RQ_FAST_CLAMP) {
        dw3x3_groups_clamp(tap, wp, n, out, p);
        return;
    }
#endif
    (void)mode;
    dw3x3_groups_exact(tap, wp, n, out, p);
}

/* The run (at least one pixel, at least one group each). */
DW_INLINE void dw3x3_run(const dw_run *run, const qute_dw_packed_params *p, const int mode)
{
#if DW_ASM
    /* groups two at a time; run2 stores them with STRD, which needs a word-aligned out */
    const int two = run->pixel_bytes % 8 == 0 && ((uintptr_t)run->out & 3u) == 0;
    if (mode == QUTE_DW_RQ_FAST_SAT) {
        (two ? qute_dw3x3_run2_sat : qute_dw3x3_run_sat)(run);
        return;
    }
    if (mode == QUTE_DW_RQ_FAST_CLAMP) {
        (two ? qute_dw3x3_run2_clamp : qute_dw3x3_run_clamp)(run);
        return;
    }
#endif
    const int8_t *r[3] = {run->r0, run->r1, run->r2};
    const int32_t groups = run->pixel_bytes / 4;
    for (int8_t *out = run->out; out != run->end; out += run->pixel_bytes) {
        const int8_t *tap[9];
        for (int k = 0; k < 9; ++k) {
            tap[k] = r[k / 3] + (k % 3) * run->cs;
        }
        dw3x3_groups(tap, run->wp, groups, out, p, mode);
        for (int k = 0; k < 3; ++k) {
            r[k] += run->pixel_bytes + run->skip;
        }
    }
}

/* The table (at least one group). */
DW_INLINE void dw3x3_table(const dw_table *t, const qute_dw_packed_params *p, const int mode)
{
#if DW_ASM
    if (mode == QUTE_DW_RQ_FAST_SAT) {
        qute_dw3x3_table_sat(t);
        return;
    }
    if (mode == QUTE_DW_RQ_FAST_CLAMP) {
        qute_dw3x3_table_clamp(t);
        return;
    }
#endif
    dw3x3_groups(t->tap, t->wp, (int32_t)(t->end - t->out) / 4, t->out, p, mode);
}

/* ---- one output pixel through a table of taps */

/* A pixel whose window touches the padding, or any pixel whose channels are not a multiple of
 * 4 (interior: from group `first` on). Input row oy, column ox of tap (0, 0); zrow: DW_ZROW
 * words of input zero points; bounds: the clamp's lo4 and hi4. */
DW_INLINE void dw3x3_pixel(const qute_dw_packed_params *p, const int8_t *in_b, int32_t oy, int32_t ox,
                           int8_t *out, const uint32_t *zrow, const uint32_t *bounds, int32_t first, const int mode)
{
    const int32_t h = p->input_h, w = p->input_w, c = p->channels, full = c / 4;
    const int8_t *const z = (const int8_t *)zrow;
    const int8_t *row[3]; /* tap row ky's input row, or NULL in the padding */
    int32_t col[3];       /* tap column kx's byte offset in a row, or -1 in the padding */
    for (int32_t k = 0; k < 3; ++k) {
        const int32_t iy = oy + k * p->dilation_h, ix = ox + k * p->dilation_w;
        row[k] = iy >= 0 && iy < h ? in_b + iy * w * c : NULL;
        col[k] = ix >= 0 && ix < w ? ix * c : -1;
    }
    dw_table t;
    t.lo4 = bounds[0];
    t.hi4 = bounds[1];
    /* the taps at channel `at` (the first group's): their pixel + at, or the zero points */
    int32_t at = c < 4 ? 0 : first < full ? 4 * first : c - 4;
#define DW_TAB(k)                                                                                    \
    t.tap[k] = row[(k) / 3] != NULL && col[(k) % 3] >= 0 ? row[(k) / 3] + col[(k) % 3] + at : z
    DW_TAB(0); DW_TAB(1); DW_TAB(2); DW_TAB(3); DW_TAB(4); DW_TAB(5); DW_TAB(6); DW_TAB(7); DW_TAB(8);
#undef DW_TAB
    if (c < 4) { /* one word per tap: the channels, then zero points */
        uint32_t win[9];
        int8_t tmp[4];
        for (int k = 0; k < 9; ++k) {
            win[k] = zrow[0];
            if (t.tap[k] != z) {
                memcpy(win + k, t.tap[k], (size_t)c);
            }
            t.tap[k] = (const int8_t *)(win + k);
        }
        t.wp = p->packed;
        t.out = tmp;
        t.end = tmp + 4;
        dw3x3_table(&t, p, mode);
        memcpy(out, tmp, (size_t)c);
        return;
    }
    /* up to DW_ZROW groups at a time, then the last 4 channels when c is not a multiple of 4 */
    for (int32_t g0 = first;;) {
        const int32_t n = g0 < full ? QUTE_MIN(DW_ZROW, full - g0) : 1;
        t.wp = p->packed + g0 * DW_GW;
        t.out = out + at;
        t.end = t.out + 4 * n;
        dw3x3_table(&t, p, mode);
        if (g0 >= full) {
            return;
        }
        g0 += n;
        const int32_t next = g0 < full ? 4 * g0 : c - 4;
        if (g0 >= full && c % 4 == 0) {
            return;
        }
        for (int k = 0; k < 9; ++k) { /* the real taps move on to the next channel */
            if (t.tap[k] != z) {
                t.tap[k] += next - at;
            }
        }
        at = next;
    }
}

/* ---- the op */

DW_INLINE void dw3x3_op(const qute_dw_packed_params *p, const int8_t *input, int8_t *output, const int mode)
{
    const int32_t h = p->input_h, w = p->input_w, c = p->channels, oh = p->output_h, ow = p->output_w;
    const int32_t sh = p->stride_h, sw = p->stride_w, dh = p->dilation_h, dw = p->dilation_w;
    const int32_t cs = dw * c, rs = dh * w * c, full = c / 4;
    uint32_t zrow[DW_ZROW];
    const uint32_t zp4 = qute_splat_s8x4(p->input_zero_point);
    for (int32_t j = 0; j < DW_ZROW; ++j) {
        zrow[j] = zp4;
    }
    const uint32_t bounds[2] = {qute_splat_s8x4(p->act_min), qute_splat_s8x4(p->act_max)};
    /* output columns whose window lies inside the input: x_lo .. x_hi */
    const int32_t x_lo = (p->pad_w + sw - 1) / sw;
    const int32_t last = w - 1 - 2 * dw + p->pad_w;
    const int32_t x_hi = c < 4 || last < 0 ? -1 : QUTE_MIN(last / sw, ow - 1);
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * h * w * c;
        for (int32_t y = 0; y < oh; ++y) {
            const int32_t oy = y * sh - p->pad_h;
            const int rows_in = oy >= 0 && oy + 2 * dh < h;
            int8_t *out = output + (b * oh + y) * ow * c;
            for (int32_t x = 0; x < ow; ++x, out += c) {
                const int32_t ox = x * sw - p->pad_w;
                const int inside = rows_in && x >= x_lo && x <= x_hi;
                if (inside && c % 4 == 0) { /* the interior pixels x .. x_hi as one run */
                    const int32_t n = x_hi - x + 1;
                    const int8_t *r0 = in_b + (oy * w + ox) * c;
                    const dw_run run = {r0, r0 + rs, r0 + 2 * rs, cs, p->packed, out, out + n * c, c,
                                        (sw - 1) * c, full * DW_GW * 4, bounds[0], bounds[1]};
                    dw3x3_run(&run, p, mode);
                    x = x_hi;
                    out += (n - 1) * c;
                    continue;
                }
                int32_t first = 0;
                if (inside) { /* the whole groups as a run of one pixel, then the last 4 channels */
                    const int8_t *r0 = in_b + (oy * w + ox) * c;
                    const dw_run run = {r0, r0 + rs, r0 + 2 * rs, cs, p->packed, out, out + 4 * full, 4 * full,
                                        0, 0, bounds[0], bounds[1]};
                    dw3x3_run(&run, p, mode);
                    first = full;
                }
                dw3x3_pixel(p, in_b, oy, ox, out, zrow, bounds, first, mode);
            }
        }
    }
}

void qute_depthwise_conv2d_3x3_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output)
{
    dw3x3_op(p, input, output, QUTE_DW_RQ_FAST_SAT);
}

void qute_depthwise_conv2d_3x3_clamp_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output)
{
    dw3x3_op(p, input, output, QUTE_DW_RQ_FAST_CLAMP);
}

void qute_depthwise_conv2d_3x3_exact_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output)
{
    dw3x3_op(p, input, output, QUTE_DW_RQ_EXACT);
}
