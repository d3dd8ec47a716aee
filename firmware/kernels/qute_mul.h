#ifndef QUTE_MUL_H
#define QUTE_MUL_H

#include <stdint.h>

#include "qute_broadcast.h"

/* One int8 MUL, as TFLite Micro's reference kernel computes it: the product of the offset
 * inputs, requantized once with in1_scale * in2_scale / out_scale, then clamped. */
typedef struct {
    int32_t input1_offset; /* minus the input zero points */
    int32_t input2_offset;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t act_min;
    int32_t act_max;
    qute_broadcast shape;
} qute_mul_params;

void qute_mul_s8(const qute_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

#endif
