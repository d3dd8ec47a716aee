#ifndef QUTE_DEPTHWISE_CONV_H
#define QUTE_DEPTHWISE_CONV_H

#include <stdint.h>

/* int8 DEPTHWISE_CONV_2D (NHWC input and output, filter [1][filter_h][filter_w][output_c]).
 *
 * Output channel o = c * depth_multiplier + m reads input channel c only:
 *   output[b][y][x][o] = clamp(requant(bias[o] + sum (in[c] + input_offset) * w[ky][kx][o]) + output_offset)
 * over the filter taps inside the input (zero padding: taps outside are skipped, as TFLM's
 * reference kernel does), with in at row y*stride_h - pad_h + ky*dilation_h and column
 * x*stride_w - pad_w + kx*dilation_w.
 *
 * Two kernels, chosen per op by the code generator (codegen/ops/depthwise.py):
 * - qute_depthwise_conv2d_3x3_s8: 3x3 filters with depth multiplier 1, any stride, padding and
 *   dilation. Reads a weight stream laid out at compile time (below); 4 channels per word with
 *   the DSP extension's 16-bit multiply-accumulates, in plain C elsewhere, the same bytes.
 * - qute_depthwise_conv2d_s8: everything else (any filter size and depth multiplier).
 */

/* ---------------------------------------------------------------- the generic kernel */

typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t filter_h, filter_w;
    int32_t depth_multiplier; /* output_c = input_c * depth_multiplier */
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t input_offset;  /* minus the input zero point */
    int32_t output_offset; /* the output zero point */
    int32_t act_min;
    int32_t act_max;
    /* One per output channel. */
    const int32_t *multiplier;
    const int32_t *shift;
    /* One per output channel: bias[o] + input_offset * (sum of the filter taps of o), wrapped. */
    const int32_t *acc_init;
} qute_depthwise_conv_params;

/* bias may be NULL; filter is symmetric (zero point 0). */
void qute_depthwise_conv2d_s8(const qute_depthwise_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output);

/* ---------------------------------------------------------------- 3x3, depth multiplier 1 */

/* Channels go in groups of 4: group g < channels / 4 holds channels 4g .. 4g+3; when channels is
 * not a multiple of 4 one more group holds the last 4 channels (channels - 4 .. channels - 1,
 * overlapping the group before it, whose outputs it rewrites with the same values), or, with
 * fewer than 4 channels, channels 0 .. channels - 1 and zero lanes.
 *
 * Each group is QUTE_DW3X3_GROUP_WORDS int32 words (taps numbered ky*3 + kx):
 *   [0..3]    acc_init of lanes 0..3: bias + input_offset * (sum of the lane's 9 taps), wrapped
 *   [4..19]   the tap pairs (1, 2), (0, 4), (3, 5), (7, 8), 4 words each, one per lane:
 *             (w[a] | w[b] << 16), int16 halves, for SMLAD against (x[a], x[b])
 *   [20..21]  tap 6: (w[lane 0] | w[lane 2] << 16) and (w[lane 1] | w[lane 3] << 16)
 *   [22..33]  requantization: (m, k) of lanes 0..3, then four words e (see requant below)
 *
 * With the input offset in acc_init the taps are a plain dot product: a tap in the padding reads
 * the input zero point, which adds input_zero_point * w = -input_offset * w, exactly the share
 * of acc_init that TFLM's skipped tap never added.
 *
 * The requantization mode, one per op, is the entry point's (a model links only the modes it uses):
 *   QUTE_DW_RQ_FAST_SAT, qute_depthwise_conv2d_3x3_s8: the weights and acc_init are doubled (the
 *       accumulator is 2x for TFLM's x; |x| < 2^30 for every input), every channel's shift
 *       e = -shift is in 1..22, k = 2^(e-1) + output_zero_point * 2^e, and
 *       out = ssat8(SMMLAR(2x, m, k + (x < 0 ? -1 : 0)) >> e): TFLM's two roundings plus the
 *       output offset in one multiply-add (derivation in codegen/ops/depthwise.py, pack_3x3).
 *       Clamp [-128, 127].
 *   QUTE_DW_RQ_FAST_CLAMP, qute_depthwise_conv2d_3x3_clamp_s8: the same, clamped to
 *       [act_min, act_max].
 *   QUTE_DW_RQ_EXACT, qute_depthwise_conv2d_3x3_exact_s8: weights as they are,
 *       (m, k) = (multiplier, shift), e unused; out = clamp(qute_requantize(x, m, shift) +
 *       output_offset, act_min, act_max), any shift. */
#define QUTE_DW3X3_GROUP_WORDS 34
#define QUTE_DW_RQ_FAST_SAT 0
#define QUTE_DW_RQ_FAST_CLAMP 1
#define QUTE_DW_RQ_EXACT 2

typedef struct {
    int32_t batches;
    int32_t input_h, input_w, channels; /* output channels = channels */
    int32_t output_h, output_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t input_zero_point; /* what a tap in the padding reads */
    int32_t output_offset;    /* the output zero point (QUTE_DW_RQ_EXACT) */
    int32_t act_min, act_max;
    const int32_t *packed; /* the groups above */
} qute_dw_packed_params;

void qute_depthwise_conv2d_3x3_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output);
void qute_depthwise_conv2d_3x3_clamp_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output);
void qute_depthwise_conv2d_3x3_exact_s8(const qute_dw_packed_params *p, const int8_t *input, int8_t *output);

#endif
