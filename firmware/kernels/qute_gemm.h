#ifndef QUTE_GEMM_H
#define QUTE_GEMM_H

#include <stdint.h>

/* The matrix product under CONV_2D (1x1 directly, larger filters through im2col) and
 * FULLY_CONNECTED: rows of int8 inputs against int8 filter rows, requantized to int8.
 *
 *   out[r][c] = clamp(requant(acc_init[c] + sum_k in[r][k] * w[c][k]) + output_offset)
 *
 * The input offset is already in acc_init (bias + input_offset * sum_k w[c][k]), so the inner
 * loops are plain dot products.
 *
 * Filter layout (codegen/pack.py makes it at compile time): each row is padded with zeros to
 * k4 words (4 int8 values each), and output channels go in pairs: for channels 2j and 2j+1 the
 * words alternate, w[2j] word 0, w[2j+1] word 0, w[2j] word 1, ... (2 * k4 words per pair); an
 * odd last channel has its k4 words alone. One pair's two words are read together and line up
 * with one input word, so the SIMD loop needs no shuffle. Input rows must be readable to
 * k4 * 4 bytes: the bytes past the row's end meet zero weights and do not count.
 *
 * The int16 layout (the _w16_ entry points, for cores with SIMD and flash to spare): the same
 * words in the same order, each stored split as two words: its bytes 0 and 2 as int16 (low
 * lane first), then its bytes 1 and 3. Twice the flash; the loops then load weights ready for the
 * dual multiply-accumulate instead of splitting every word again for every pixel pair. */

/* Requantization of one op's outputs, shared by the kernels built on this product. */
typedef struct {
    const int32_t *multiplier; /* one per output channel, or one for all (per_channel = 0) */
    const int32_t *shift;
    int32_t per_channel;
    int32_t output_offset; /* the output zero point */
    int32_t act_min;       /* fused activation, in the output's quantized domain */
    int32_t act_max;
    /* 0: TFLite Micro's two roundings (qute_requantize). 1: LiteRT's FULLY_CONNECTED, which rounds
     * the 64-bit product once (shift <= 30); asked for only where LiteRT is the reference. */
    int32_t single_rounding;
    /* NULL, or (when every shift is in -31..-1, single_rounding is 0 and no reachable accumulator
     * overflows the form, as in the models we have seen) four words per output channel, also
     * under one multiplier (a channel's entry can differ, see the end), for a shorter exact form
     * of TFLM's two roundings plus the output offset: {multiplier, base_lo, base_hi, e - 1} with
     * e = -shift and base = 2^30 + 2^(30 + e) + output_offset * 2^(31 + e) split into 32-bit
     * halves. The output before the clamp is the high word of x * multiplier + base -
     * (x < 0 ? 2^31 : 0), shifted right by e - 1: qute_requantize's single 64-bit sum
     * (qute_common.h), its constant made ahead of time (codegen/pack.py; a channel whose filter
     * is all zeros gets multiplier 0 and its constant output in base). */
    const int32_t *fast;
} qute_requant_params;

typedef struct {
    int32_t k4;              /* words per row: ceil(depth / 4) */
    int32_t channels;        /* output channels */
    const uint32_t *weights; /* packed as above */
    const int32_t *acc_init; /* [channels] */
    qute_requant_params rq;
} qute_gemm_params;

/* Two input rows: out0[c] from in0, out1[c] from in1, every channel c. `wide`: 4 * k4 words
 * (16 * k4 bytes, word-aligned) where cores with SIMD first split both rows into int16 pairs
 * once, so the loop over channel pairs only splits weights (15 instructions per 16
 * multiply-accumulates instead of 19); unused elsewhere. */
void qute_gemm_2rows_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                        int8_t *out0, int8_t *out1);

/* The same on two rows a caller has already widened into `wide` in that layout (per input word:
 * row 0's bytes 0 and 2, row 0's bytes 1 and 3, then row 1's): on cores with SIMD only, for a
 * convolution that widens its windows as it gathers them. */
void qute_gemm_2rows_wide_s8(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1);

/* One input row. */
void qute_gemm_1row_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out);

/* The three above with the filter in the int16 layout. */
void qute_gemm_2rows_w16_s8(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                            int8_t *out0, int8_t *out1);
void qute_gemm_2rows_wide_w16_s8(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1);
void qute_gemm_1row_w16_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out);

/* For kernels that come in both layouts: one of the pair above, w16 a constant at each call. */
static inline void qute_gemm_2rows(const qute_gemm_params *g, const int8_t *in0, const int8_t *in1, uint32_t *wide,
                                   int8_t *out0, int8_t *out1, const int w16)
{
    if (w16) {
        qute_gemm_2rows_w16_s8(g, in0, in1, wide, out0, out1);
    } else {
        qute_gemm_2rows_s8(g, in0, in1, wide, out0, out1);
    }
}

static inline void qute_gemm_2rows_wide(const qute_gemm_params *g, const uint32_t *wide, int8_t *out0, int8_t *out1,
                                        const int w16)
{
    if (w16) {
        qute_gemm_2rows_wide_w16_s8(g, wide, out0, out1);
    } else {
        qute_gemm_2rows_wide_s8(g, wide, out0, out1);
    }
}

static inline void qute_gemm_1row(const qute_gemm_params *g, const int8_t *in, int8_t *out, const int w16)
{
    if (w16) {
        qute_gemm_1row_w16_s8(g, in, out);
    } else {
        qute_gemm_1row_s8(g, in, out);
    }
}

#endif
