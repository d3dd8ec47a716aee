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

/* What a row's outputs are made from: its maximum and 1 / (sum of its exps) as TFLM's
 * GetReciprocal gives it, a Q0.31 scale and a power of two. */
typedef struct {
    int32_t max_in_row;
    int32_t shifted_scale;
    int num_bits_over_unit;
} softmax_row_sum;

static softmax_row_sum softmax_sum(const qute_softmax_params *p, const int8_t *in)
{
    softmax_row_sum r;
    r.max_in_row = INT8_MIN;
    for (int32_t c = 0; c < p->depth; ++c) {
        r.max_in_row = QUTE_MAX(r.max_in_row, (int32_t)in[c]);
    }

    int32_t sum_of_exps = 0; /* Q12.19 */
    for (int32_t c = 0; c < p->depth; ++c) {
        const int32_t diff = (int32_t)in[c] - r.max_in_row;
        if (diff >= p->diff_min) {
            sum_of_exps = qute_fp_add(sum_of_exps, qute_fp_rescale(softmax_exp(p, diff), 0, QUTE_SOFTMAX_ACCUM_INTEGER_BITS));
        }
    }

    const int headroom_plus_one = qute_clz32((uint32_t)sum_of_exps);
    r.num_bits_over_unit = QUTE_SOFTMAX_ACCUM_INTEGER_BITS - headroom_plus_one;
    const uint32_t shifted_sum = headroom_plus_one < 32 ? (uint32_t)sum_of_exps << headroom_plus_one : 0u;
    const int32_t shifted_sum_minus_one = (int32_t)(shifted_sum - ((uint32_t)1 << 31));
    r.shifted_scale = qute_fp_one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    return r;
}

/* The probability of element c, in units of 2^-out_bits before the zero point is added (it may
 * reach 2^out_bits for a certain class: the caller's clamp takes it to the top code).
 * TFLM aborts (TFLITE_CHECK) when the shift exceeds 31, i.e. when the exps sum to 2^(out_bits+1)
 * or more, which needs a row of that many elements; a rounding shift by 32 or more of this int32
 * product is 0. Elements below diff_min have probability 0. */
static int32_t softmax_unsat(const qute_softmax_params *p, const softmax_row_sum *r, int32_t in_c, int out_bits)
{
    const int32_t diff = in_c - r->max_in_row;
    if (diff < p->diff_min) {
        return 0;
    }
    const int exponent = r->num_bits_over_unit + 31 - out_bits;
    return exponent > 31 ? 0 : qute_rounding_divide_by_pot(qute_fp_mul(r->shifted_scale, softmax_exp(p, diff)), exponent);
}

void qute_softmax_s8(const qute_softmax_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t row = 0; row < p->outer_size; ++row) {
        const int8_t *in = input + row * p->depth;
        int8_t *out = output + row * p->depth;
        const softmax_row_sum r = softmax_sum(p, in);
        for (int32_t c = 0; c < p->depth; ++c) {
            out[c] = qute_clamp_s8(softmax_unsat(p, &r, in[c], 8) + INT8_MIN, INT8_MIN, INT8_MAX);
        }
    }
}

void qute_softmax_s8_s16(const qute_softmax_params *p, const int8_t *input, int16_t *output)
{
    for (int32_t row = 0; row < p->outer_size; ++row) {
        const int8_t *in = input + row * p->depth;
        int16_t *out = output + row * p->depth;
        const softmax_row_sum r = softmax_sum(p, in);
        for (int32_t c = 0; c < p->depth; ++c) {
            out[c] = (int16_t)QUTE_MIN(QUTE_MAX(softmax_unsat(p, &r, in[c], 16) + INT16_MIN, INT16_MIN), INT16_MAX);
        }
    }
}
