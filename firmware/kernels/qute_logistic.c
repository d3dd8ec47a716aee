#include "qute_logistic.h"

#include "qute_common.h"
#include "qute_fixedpoint.h"

#define QUTE_LOGISTIC_INPUT_INTEGER_BITS 4
#define QUTE_LOGISTIC_OUTPUT_INTEGER_BITS 8

static int8_t logistic_one(const qute_logistic_params *p, int8_t x)
{
    const int32_t input = (int32_t)x - p->input_zero_point;
    if (input <= -p->input_range_radius) {
        return INT8_MIN;
    }
    if (input >= p->input_range_radius) {
        return INT8_MAX;
    }
    const int32_t input_q4 = qute_requantize(input, p->input_multiplier, p->input_left_shift);
    const int32_t output_q0 = qute_fp_logistic(input_q4, QUTE_LOGISTIC_INPUT_INTEGER_BITS);
    const int32_t output_q23 = qute_rounding_divide_by_pot(output_q0, 31 - QUTE_LOGISTIC_OUTPUT_INTEGER_BITS);
    return qute_clamp_s8(output_q23 - 128, INT8_MIN, INT8_MAX);
}

void qute_logistic_s8(const qute_logistic_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        output[i] = logistic_one(p, input[i]);
    }
}

void qute_lookup_s8(const qute_lookup_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        output[i] = p->table[(int32_t)input[i] + 128];
    }
}
