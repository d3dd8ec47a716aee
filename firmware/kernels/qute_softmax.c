#include "qute_softmax.h"

#include "qute_common.h"
#include "qute_fixedpoint.h"

#define QUTE_SOFTMAX_DIFF_INTEGER_BITS 5
#define QUTE_SOFTMAX_ACCUM_INTEGER_BITS 12

/* exp(beta * input_scale * diff) in Q0.31 for diff <= 0 (TFLM's
 * MultiplyByQuantizedMultiplierGreaterThanOne, then gemmlowp's exp_on_negative_values). */
static int32_t softmax_exp(const qute_softmax_params *p, int32_t diff)
{
    const int32_t shifted = (int32_t)((uint32_t)diff << p->input_left_shift);
    const int32_t scaled = qute_sat_rounding_doubling_high_mul(shifted, p->input_multiplier);
    return qute_fp_exp_on_negative_values(scaled, QUTE_SOFTMAX_DIFF_INTEGER_BITS);
}

static void softmax_row(const qute_softmax_params *p, const int8_t *in, int8_t *out)
{
    int32_t max_in_row = INT8_MIN;
    for (int32_t c = 0; c < p->depth; ++c) {
        max_in_row = QUTE_MAX(max_in_row, (int32_t)in[c]);
    }

    int32_t sum_of_exps = 0; /* Q12.19 */
    for (int32_t c = 0; c < p->depth; ++c) {
        const int32_t diff = (int32_t)in[c] - max_in_row;
        if (diff >= p->diff_min) {
            sum_of_exps = qute_fp_add(sum_of_exps, qute_fp_rescale(softmax_exp(p, diff), 0, QUTE_SOFTMAX_ACCUM_INTEGER_BITS));
        }
    }

    /* TFLM's GetReciprocal: 1 / sum as a Q0.31 scale and a power of two. */
    const int headroom_plus_one = qute_clz32((uint32_t)sum_of_exps);
    const int num_bits_over_unit = QUTE_SOFTMAX_ACCUM_INTEGER_BITS - headroom_plus_one;
    const uint32_t shifted_sum = headroom_plus_one < 32 ? (uint32_t)sum_of_exps << headroom_plus_one : 0u;
    const int32_t shifted_sum_minus_one = (int32_t)(shifted_sum - ((uint32_t)1 << 31));
    const int32_t shifted_scale = qute_fp_one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    /* TFLM aborts (TFLITE_CHECK) when exponent > 31, i.e. when the exps sum to 512 or more, which
     * needs a row of 512+ elements; a rounding shift by 32 or more of this int32 product is 0. */
    const int exponent = num_bits_over_unit + 31 - 8;

    for (int32_t c = 0; c < p->depth; ++c) {
        const int32_t diff = (int32_t)in[c] - max_in_row;
        if (diff >= p->diff_min) {
            const int32_t exp_in_0 = softmax_exp(p, diff);
            const int32_t unsat =
                exponent > 31 ? 0 : qute_rounding_divide_by_pot(qute_fp_mul(shifted_scale, exp_in_0), exponent);
            out[c] = qute_clamp_s8(unsat + INT8_MIN, INT8_MIN, INT8_MAX);
        } else {
            out[c] = INT8_MIN;
        }
    }
}

void qute_softmax_s8(const qute_softmax_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t r = 0; r < p->outer_size; ++r) {
        softmax_row(p, input + r * p->depth, output + r * p->depth);
    }
}
