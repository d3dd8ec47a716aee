#ifndef QUTE_ADD_H
#define QUTE_ADD_H

#include <stdint.h>

#include "qute_broadcast.h"

/* One int8 ADD, as TFLite Micro's reference kernel computes it: both inputs are shifted left by
 * 20, brought to a common scale with their own multipliers (each < 1), summed, and the sum
 * requantized to the output scale; then the fused activation clamps. The first two steps depend
 * on one int8 value each, so the generator computes them ahead of time: table1[q + 128] is input
 * 1's term for the value q (table2 likewise), and the kernel adds two table entries. */
typedef struct {
    int32_t output_offset; /* the output zero point */
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t act_min;
    int32_t act_max;
    qute_broadcast shape;
    const int32_t *table1; /* [256] */
    const int32_t *table2; /* [256] */
    /* fast = 1: output_shift <= -1 and {base_lo, base_hi} = 2^30 + 2^(30 + e) + output_offset *
     * 2^(31 + e) (e = -output_shift) cannot overflow for any sum of two table entries: the output
     * is qute_requantize_high(sum, output_multiplier, base) >> (e - 1), offset included. */
    int32_t fast;
    uint32_t base_lo;
    int32_t base_hi;
} qute_add_params;

void qute_add_s8(const qute_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);

#endif
