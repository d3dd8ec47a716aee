#ifndef QUTE_DEPTHWISE_CONV_H
#define QUTE_DEPTHWISE_CONV_H

#include <stdint.h>

/* One int8 DEPTHWISE_CONV_2D op (NHWC input and output, filter [1][filter_h][filter_w][output_c]).
 *
 * Output channel o = c * depth_multiplier + m reads input channel c only:
 *   output[b][y][x][o] = clamp(requant(bias[o] + sum (in[c] + input_offset) * w[ky][kx][o]) + output_offset)
 * over the filter taps inside the input (zero padding), as in qute_conv.h.
 */
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

#endif
