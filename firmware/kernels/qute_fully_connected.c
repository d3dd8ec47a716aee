#include "qute_fully_connected.h"

#include <string.h>

#include "qute_gemm.h"

void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output)
{
    const int32_t depth = p->accum_depth, units = p->gemm.channels;
    if (scratch != NULL) {
        memset(scratch + depth, 0, (size_t)(4 * p->gemm.k4 - depth));
    }
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *row = input + b * depth;
        if (scratch != NULL) {
            memcpy(scratch, row, (size_t)depth);
            row = scratch;
        }
        qute_gemm_1row_s8(&p->gemm, row, output + b * units);
    }
}
