#ifndef QUTE_ADD_H
#define QUTE_ADD_H

#include <stdint.h>

#include "qute_broadcast.h"

/* One int8 ADD, as TFLite Micro's reference kernel computes it: both inputs are shifted left by
 * left_shift (20), brought to a common scale with their own multipliers (each < 1), summed, and
 * the sum requantized to the output scale; then the fused activation clamps. */
typedef struct {
    int32_t input1_offset; /* minus the input zero points */
    int32_t input2_offset;
    int32_t output_offset; /* the output zero point */
    int32_t left_shift;
    int32_t input1_multiplier;
    int32_t input1_shift; /* <= 0 */
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t act_min;
    int32_t act_max;
    qute_broadcast shape;
} qute_add_params;

void qute_add_s8(const qute_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

#endif
