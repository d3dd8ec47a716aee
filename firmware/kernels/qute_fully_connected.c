#include "qute_fully_connected.h"

#include "qute_common.h"

/* round(x * multiplier / 2^(31 - shift)), halves up, in one step; floor division written out so
 * that no negative value is shifted right */
static int32_t requantize_once(int32_t x, int32_t multiplier, int32_t shift)
{
    const int total = 31 - shift; /* 1..62: the generator keeps shift in -31..30 */
    const int64_t v = (int64_t)x * multiplier + ((int64_t)1 << (total - 1));
    return (int32_t)(v >= 0 ? v >> total : -((-(v + 1)) >> total) - 1);
}

static int8_t requant(const qute_fc_params *p, int32_t o, int32_t acc)
{
    int32_t c = p->per_channel ? o : 0;
    acc = (p->single_rounding ? requantize_once(acc, p->multiplier[c], p->shift[c])
                              : qute_requantize(acc, p->multiplier[c], p->shift[c])) + p->output_offset;
    return qute_clamp_s8(acc, p->act_min, p->act_max);
}

void qute_fully_connected_s8(const qute_fc_params *p, const int8_t *input, const int8_t *filter,
                             int8_t *output)
{
    const int32_t depth = p->accum_depth;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in = input + b * depth;
        int8_t *out = output + b * p->output_depth;
        int32_t o = 0;
        /* Four output rows share each load of the input. */
        for (; o + 4 <= p->output_depth; o += 4) {
            const int8_t *w0 = filter + o * depth;
            const int8_t *w1 = w0 + depth;
            const int8_t *w2 = w1 + depth;
            const int8_t *w3 = w2 + depth;
            int32_t a0 = p->acc_init[o], a1 = p->acc_init[o + 1];
            int32_t a2 = p->acc_init[o + 2], a3 = p->acc_init[o + 3];
            for (int32_t d = 0; d < depth; ++d) {
                int32_t x = in[d];
                a0 += x * w0[d];
                a1 += x * w1[d];
                a2 += x * w2[d];
                a3 += x * w3[d];
            }
            out[o] = requant(p, o, a0);
            out[o + 1] = requant(p, o + 1, a1);
            out[o + 2] = requant(p, o + 2, a2);
            out[o + 3] = requant(p, o + 3, a3);
        }
        for (; o < p->output_depth; ++o) {
            const int8_t *w = filter + o * depth;
            int32_t acc = p->acc_init[o];
            for (int32_t d = 0; d < depth; ++d) {
                acc += in[d] * w[d];
            }
            out[o] = requant(p, o, acc);
        }
    }
}
