#include "qute_add.h"

#include "qute_common.h"

static int8_t add_one(const qute_add_params *p, int8_t x, int8_t y)
{
    const int32_t shifted1 = (p->input1_offset + x) * ((int32_t)1 << p->left_shift);
    const int32_t shifted2 = (p->input2_offset + y) * ((int32_t)1 << p->left_shift);
    const int32_t scaled1 = qute_requantize(shifted1, p->input1_multiplier, p->input1_shift);
    const int32_t scaled2 = qute_requantize(shifted2, p->input2_multiplier, p->input2_shift);
    const int32_t raw = qute_requantize(scaled1 + scaled2, p->output_multiplier, p->output_shift) + p->output_offset;
    return qute_clamp_s8(raw, p->act_min, p->act_max);
}

void qute_add_s8(const qute_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    const qute_broadcast *b = &p->shape;
    const int32_t rows = qute_broadcast_rows(b);
    const int32_t inner = b->dims[b->ndims - 1];
    const int32_t s1 = b->stride1[b->ndims - 1];
    const int32_t s2 = b->stride2[b->ndims - 1];
    qute_broadcast_iter it;
    qute_broadcast_begin(&it);
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *in1 = input1 + it.offset1;
        const int8_t *in2 = input2 + it.offset2;
        for (int32_t i = 0; i < inner; ++i) {
            output[i] = add_one(p, in1[i * s1], in2[i * s2]);
        }
        output += inner;
        qute_broadcast_next_row(b, &it);
    }
}
