#ifndef QUTE_ACTIVATION_H
#define QUTE_ACTIVATION_H

#include <stdint.h>

/* RELU (and RELU_N1_TO_1): TFLite Micro requantizes input -> output with one multiplier, then
 * clamps to the activation's range in the output domain. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier; /* input scale / output scale */
    int32_t shift;
    int32_t act_min;
    int32_t act_max;
} qute_relu_params;

void qute_relu_s8(const qute_relu_params *p, const int8_t *input, int8_t *output);

/* RELU6: TFLite Micro does not requantize; it clamps in the *input* domain between the input
 * zero point and 6.0 quantized with the input's scale (the output's parameters are ignored). */
typedef struct {
    int32_t size;
    int32_t lower;
    int32_t upper;
} qute_relu6_params;

void qute_relu6_s8(const qute_relu6_params *p, const int8_t *input, int8_t *output);

#endif
