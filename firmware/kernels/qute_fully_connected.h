#ifndef QUTE_FULLY_CONNECTED_H
#define QUTE_FULLY_CONNECTED_H

#include <stdint.h>

/* One FULLY_CONNECTED op: output[b][o] = requant(bias[o] + sum_d (in[d] + input_offset) * w[o][d]).
 *
 * The generator folds bias[o] + input_offset * sum_d w[o][d] into acc_init[o] ahead of time, so
 * the inner loop is a plain int8 dot product; the integer result is the same. */
typedef struct {
    int32_t batches;
    int32_t accum_depth;   /* inputs per output */
    int32_t output_depth;
    int32_t output_offset; /* the output zero point */
    int32_t act_min;       /* fused activation, already in the output's quantized domain */
    int32_t act_max;
    const int32_t *acc_init; /* [output_depth] */
    /* One multiplier/shift for the tensor, or one per output channel (per_channel = 1). */
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t per_channel;
    /* 0: TFLite Micro's requantization (two roundings, qute_requantize). 1: LiteRT's, whose int8
     * FULLY_CONNECTED rounds the 64-bit product once (shift <= 30); the generator asks for it only
     * on models TFLite Micro cannot run, where LiteRT is the reference. */
    int32_t single_rounding;
} qute_fc_params;

/* filter is [output_depth][accum_depth], symmetric (zero point 0). */
void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, const int8_t *filter,
                             int8_t *output);

#endif
