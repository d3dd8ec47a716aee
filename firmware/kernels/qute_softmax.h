#ifndef QUTE_SOFTMAX_H
#define QUTE_SOFTMAX_H

#include <stdint.h>

/* int8 SOFTMAX over the last dimension, as TFLite Micro's reference kernel computes it:
 * differences to the row maximum at or above diff_min are scaled by beta * input_scale into
 * Q5.26, exponentiated in fixed point, summed in Q12.19, and divided through a fixed-point
 * reciprocal. The output is int8 with scale 1/256 and zero point -128 (qute_softmax_s8) or int16
 * with scale 1/65536 and zero point -32768 (qute_softmax_s8_s16: the same computation, eight more
 * bits kept, so a class that int8 would round to probability 0 keeps its 1/65536 steps). */
typedef struct {
    int32_t outer_size; /* rows */
    int32_t depth;      /* elements per row (the last dimension) */
    int32_t input_multiplier;
    int32_t input_left_shift;
    int32_t diff_min;
} qute_softmax_params;

void qute_softmax_s8(const qute_softmax_params *p, const int8_t *input, int8_t *output);
void qute_softmax_s8_s16(const qute_softmax_params *p, const int8_t *input, int16_t *output);

#endif
