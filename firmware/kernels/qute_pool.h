#ifndef QUTE_POOL_H
#define QUTE_POOL_H

#include <stdint.h>

/* One AVERAGE_POOL_2D or MAX_POOL_2D op on NHWC int8 data. Input and output share scale and zero
 * point (TFLM requires it), so no requantization happens: only the fused activation's clamp. */
typedef struct {
    int32_t batches;
    int32_t in_h;
    int32_t in_w;
    int32_t depth;
    int32_t out_h;
    int32_t out_w;
    int32_t filter_h;
    int32_t filter_w;
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_h;   /* rows of padding above the input (TFLM's padding_values.height) */
    int32_t pad_w;   /* columns of padding left of the input */
    int32_t act_min; /* fused activation, in the output's quantized domain */
    int32_t act_max;
} qute_pool_params;

/* Mean over the window's in-bounds elements only, rounded half away from zero. */
void qute_avg_pool_s8(const qute_pool_params *p, const int8_t *input, int8_t *output);

/* Maximum over the window's in-bounds elements. */
void qute_max_pool_s8(const qute_pool_params *p, const int8_t *input, int8_t *output);

#endif
