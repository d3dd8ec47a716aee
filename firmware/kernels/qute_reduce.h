#ifndef QUTE_REDUCE_H
#define QUTE_REDUCE_H

#include <stdint.h>

#define QUTE_REDUCE_GROUPS 3

/* One MEAN op on int8 data, with the reduced and the kept dimensions of the input regrouped ahead
 * of time (adjacent dimensions of the same kind merged, sizes padded with 1 and stride 0): output
 * element (k0, k1, k2) reduces the input at sum_i k_i * kept_stride[i] + sum_j r_j * red_stride[j].
 * Outputs come out in row-major order of the kept dimensions, whatever keep_dims says. */
typedef struct {
    int32_t kept_size[QUTE_REDUCE_GROUPS];
    int32_t kept_stride[QUTE_REDUCE_GROUPS];
    int32_t red_size[QUTE_REDUCE_GROUPS];
    int32_t red_stride[QUTE_REDUCE_GROUPS];
    int32_t count; /* input elements per output */
    /* output = clamp(requantize(sum - count * input_zp) + output_zp), with multiplier and shift
     * including the division by count (TFLM's QuantizedMeanOrSum) */
    int32_t input_zp;
    int32_t output_zp;
    int32_t multiplier;
    int32_t shift;
} qute_mean_params;

void qute_mean_s8(const qute_mean_params *p, const int8_t *input, int8_t *output);

#endif
