#include "qute_add.h"

#include "qute_common.h"

void qute_add_s8(const qute_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    const qute_broadcast *b = &p->shape;
    const int32_t rows = qute_broadcast_rows(b);
    const int32_t inner = b->dims[b->ndims - 1];
    const int32_t s1 = b->stride1[b->ndims - 1];
    const int32_t s2 = b->stride2[b->ndims - 1];
    /* locals: the int8 stores below may alias the parameters */
    const int32_t *t1 = p->table1 + 128, *t2 = p->table2 + 128;
    const int32_t m = p->output_multiplier, shift = p->output_shift, offset = p->output_offset;
    const int32_t lo = p->act_min, hi = p->act_max;
    const int32_t fast = p->fast, base_hi = p->base_hi, e1 = -shift - 1;
    const uint32_t base_lo = p->base_lo;
    qute_broadcast_iter it;
    qute_broadcast_begin(&it);
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *in1 = input1 + it.offset1;
        const int8_t *in2 = input2 + it.offset2;
        if (fast && s1 == 1 && s2 == 1) {
            for (int32_t i = 0; i < inner; ++i) {
                const int32_t v = qute_requantize_high(t1[in1[i]] + t2[in2[i]], m, base_lo, base_hi) >> e1;
                output[i] = qute_clamp_s8(v, lo, hi);
            }
        } else {
            for (int32_t i = 0; i < inner; ++i) {
                const int32_t raw = qute_requantize(t1[in1[i * s1]] + t2[in2[i * s2]], m, shift) + offset;
                output[i] = qute_clamp_s8(raw, lo, hi);
            }
        }
        output += inner;
        qute_broadcast_next_row(b, &it);
    }
}
