#include "qute_reduce.h"

#include "qute_common.h"

static int32_t reduced_sum(const qute_mean_params *p, const int8_t *base)
{
    int32_t sum = 0;
    for (int32_t a = 0; a < p->red_size[0]; ++a) {
        for (int32_t b = 0; b < p->red_size[1]; ++b) {
            const int8_t *row = base + a * p->red_stride[0] + b * p->red_stride[1];
            for (int32_t c = 0; c < p->red_size[2]; ++c) {
                sum += row[c * p->red_stride[2]];
            }
        }
    }
    return sum;
}

static int8_t mean_of(const qute_mean_params *p, int32_t sum)
{
    /* TFLM forms this in 64 bits and narrows it to int32 */
    int32_t shifted = (int32_t)((int64_t)sum - (int64_t)p->input_zp * p->count);
    int32_t out = qute_requantize(shifted, p->multiplier, p->shift) + p->output_zp;
    return qute_clamp_s8(out, INT8_MIN, INT8_MAX);
}

void qute_mean_s8(const qute_mean_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->kept_size[0]; ++i) {
        for (int32_t j = 0; j < p->kept_size[1]; ++j) {
            for (int32_t k = 0; k < p->kept_size[2]; ++k) {
                const int8_t *base = input + i * p->kept_stride[0] + j * p->kept_stride[1] + k * p->kept_stride[2];
                *output++ = mean_of(p, reduced_sum(p, base));
            }
        }
    }
}
