#include "qute_fully_connected.h"

#include <string.h>

#include "qute_common.h"
#include "qute_gemm.h"

QUTE_SPECIALISE void fully_connected(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output,
                                   const int w16)
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
        qute_gemm_1row(&p->gemm, row, output + b * units, w16);
    }
}

void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output)
{
    fully_connected(p, input, scratch, output, 0);
}

void qute_fully_connected_w16_s8(const qute_fc_params *p, const int8_t *input, int8_t *scratch, int8_t *output)
{
    fully_connected(p, input, scratch, output, 1);
}
