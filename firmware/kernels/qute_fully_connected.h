#ifndef QUTE_FULLY_CONNECTED_H
#define QUTE_FULLY_CONNECTED_H

#include <stdint.h>

#include "qute_gemm.h"

/* One FULLY_CONNECTED op: output[b][o] = requant(bias[o] + sum_d (in[d] + input_offset) * w[o][d]).
 *
 * The generator folds bias[o] + input_offset * sum_d w[o][d] into gemm.acc_init ahead of time and
 * packs the weights for the matrix product (qute_gemm.h), so the kernel is that product over
 * the input rows, one row at a time (each row reads every weight once). */
typedef struct {
    int32_t batches;     /* input rows */
    int32_t accum_depth; /* inputs per output */
    qute_gemm_params gemm;
} qute_fc_params;

/* scratch: NULL when accum_depth is a multiple of 4 (rows are read in place), else
 * 4 * gemm.k4 bytes, where each row is copied and zero-padded to whole words. */
void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output);

/* The same with the weights in qute_gemm.h's int16 layout. */
void qute_fully_connected_w16_s8(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output);

#endif
