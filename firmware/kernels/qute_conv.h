#ifndef QUTE_CONV_H
#define QUTE_CONV_H

#include <stdint.h>

#include "qute_gemm.h"

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
    int32_t pad_h, pad_w;  /* top and left padding (TFLM's ComputePaddingHeightWidth) */
    int32_t input_offset;  /* minus the input zero point */
    /* The filter, acc_init (bias[o] + input_offset * sum of filter o, wrapped to int32) and the
     * requantization. The one-group kernels read the filter packed (qute_gemm.h); the grouped
     * kernel takes it unpacked as an argument and reads only acc_init and rq from here. */
    qute_gemm_params gemm;
} qute_conv_params;

/* The generator picks one kernel per op (qute-codegen report names it):
 *
 * qute_conv2d_1x1_s8: one group, 1x1 filter, no padding, input channels a multiple of 4. Each
 * output pixel's input is one input pixel, read in place: a matrix product, two pixels at a time.
 * wide: 16 * gemm.k4 bytes of scratch (qute_gemm.h).
 */
void qute_conv2d_1x1_s8(const qute_conv_params *p, const int8_t *input, uint32_t *wide, int8_t *output);

/* qute_conv2d_s8: one group, any filter, stride, dilation and padding. Two output pixels' windows
 * are copied into `scratch` (2 * gemm.k4 * 4 bytes, then 16 * gemm.k4 for the
 * product; 8-byte aligned), taps outside the input holding the input's
 * zero point, which adds exactly what TFLM's skipped taps add once acc_init carries the offset;
 * then the same product as the 1x1 kernel. */
void qute_conv2d_s8(const qute_conv_params *p, const int8_t *input, int8_t *scratch, int8_t *output);

/* qute_conv2d_1x1_w16_s8, qute_conv2d_w16_s8: the same two with the filter in qute_gemm.h's int16
 * layout (twice the flash, fewer instructions on cores with SIMD). */
void qute_conv2d_1x1_w16_s8(const qute_conv_params *p, const int8_t *input, uint32_t *wide, int8_t *output);
void qute_conv2d_w16_s8(const qute_conv_params *p, const int8_t *input, int8_t *scratch, int8_t *output);

/* qute_conv2d_grouped_s8: grouped convolution (input_c = groups * filter_c, groups > 1), filter
 * [output_c][filter_h][filter_w][filter_c] as stored; bias may be NULL. */
void qute_conv2d_grouped_s8(const qute_conv_params *p, const int8_t *input, const int8_t *filter,
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
