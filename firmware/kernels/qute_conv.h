#ifndef QUTE_CONV_H
#define QUTE_CONV_H

#include <stdint.h>

/* One int8 CONV_2D op (NHWC input and output, filter [output_c][filter_h][filter_w][filter_c]).
 *
 *   output[b][y][x][o] = clamp(requant(bias[o] + sum (in + input_offset) * w[o]) + output_offset)
 *
 * summed over the filter taps that fall inside the input (zero padding: taps outside are
 * skipped, as TFLM's reference kernel does), with in at row y*stride_h - pad_h + ky*dilation_h and
 * column x*stride_w - pad_w + kx*dilation_w, channel group*filter_c + c. Grouped convolution:
 * groups = input_c / filter_c, output channel o belongs to group o / (output_c / groups).
 */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t filter_h, filter_w, filter_c; /* filter_c: input channels per group */
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w; /* top and left padding (TFLM's ComputePaddingHeightWidth) */
    int32_t input_offset;  /* minus the input zero point */
    int32_t output_offset; /* the output zero point */
    int32_t act_min;       /* fused activation, in the output's quantized domain */
    int32_t act_max;
    /* One per output channel. */
    const int32_t *multiplier;
    const int32_t *shift;
    /* One per output channel: bias[o] + input_offset * (sum of filter o), wrapped to int32. Used
     * where the whole filter window lies inside the input, so the inner loop is a plain int8 dot
     * product. */
    const int32_t *acc_init;
} qute_conv_params;

/* bias may be NULL; filter is symmetric (zero point 0). */
void qute_conv2d_s8(const qute_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output);

/* The filter taps [*first, *last) of one dimension whose input coordinate
 * origin + k * dilation lies in [0, size). Shared with the depthwise kernel. */
static inline void qute_window(int32_t origin, int32_t dilation, int32_t size, int32_t taps,
                               int32_t *first, int32_t *last)
{
    int32_t lo = origin >= 0 ? 0 : (-origin + dilation - 1) / dilation;
    int32_t hi = size - origin <= 0 ? 0 : (size - origin + dilation - 1) / dilation;
    *first = lo;
    *last = hi < taps ? hi : taps;
}

#endif
