#include "qute_pad.h"

#include <string.h>

void qute_pad_s8(const qute_pad_params *p, const int8_t *input, int8_t *output)
{
    const int32_t *id = p->in_dims;
    const int32_t *od = p->out_dims;
    int32_t total = od[0] * od[1] * od[2] * od[3] * od[4];
    memset(output, (int)(int8_t)p->pad_value, (size_t)total);
    /* copy the input one innermost row at a time */
    int32_t row = id[4];
    for (int32_t a = 0; a < id[0]; ++a) {
        for (int32_t b = 0; b < id[1]; ++b) {
            for (int32_t c = 0; c < id[2]; ++c) {
                for (int32_t d = 0; d < id[3]; ++d) {
                    int32_t o = (((a + p->before[0]) * od[1] + b + p->before[1]) * od[2] + c + p->before[2]) * od[3] + d + p->before[3];
                    memcpy(output + o * od[4] + p->before[4], input, (size_t)row);
                    input += row;
                }
            }
        }
    }
}
