#include "qute_activation.h"

#include "qute_common.h"

void qute_relu_s8(const qute_relu_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t v = p->output_zero_point +
                          qute_requantize(input[i] - p->input_zero_point, p->multiplier, p->shift);
        output[i] = qute_clamp_s8(v, p->act_min, p->act_max);
    }
}

void qute_relu6_s8(const qute_relu6_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t v = input[i];
        output[i] = (int8_t)(v > p->upper ? p->upper : v < p->lower ? p->lower : v);
    }
}
