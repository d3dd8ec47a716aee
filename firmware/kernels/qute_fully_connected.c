#include "qute_fully_connected.h"

#include "qute_common.h"

void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in = input + b * p->accum_depth;
        for (int32_t o = 0; o < p->output_depth; ++o) {
            const int8_t *w = filter + o * p->accum_depth;
            int32_t acc = 0;
            for (int32_t d = 0; d < p->accum_depth; ++d) {
                acc += (in[d] + p->input_offset) * w[d];
            }
            if (bias) {
                acc += bias[o];
            }
            int32_t c = p->per_channel ? o : 0;
            acc = qute_requantize(acc, p->multiplier[c], p->shift[c]) + p->output_offset;
            output[b * p->output_depth + o] = qute_clamp_s8(acc, p->act_min, p->act_max);
        }
    }
}
