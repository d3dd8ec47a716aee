#ifndef QUTE_FULLY_CONNECTED_H
#define QUTE_FULLY_CONNECTED_H

#include <stdint.h>

/* One FULLY_CONNECTED op: output[b][o] = requant(bias[o] + sum_d (in + input_offset) * w[o][d]). */
typedef struct {
    int32_t batches;
    int32_t accum_depth;   /* inputs per output */
    int32_t output_depth;
    int32_t input_offset;  /* minus the input zero point */
    int32_t output_offset; /* the output zero point */
    int32_t act_min;       /* fused activation, already in the output's quantized domain */
    int32_t act_max;
    /* One multiplier/shift for the tensor, or one per output channel (per_channel = 1). */
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t per_channel;
} qute_fc_params;

/* bias may be NULL. filter is [output_depth][accum_depth], symmetric (zero point 0). */
void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output);

#endif
