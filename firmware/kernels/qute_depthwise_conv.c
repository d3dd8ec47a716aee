#include "qute_depthwise_conv.h"

#include <stddef.h>

#include "qute_common.h"
#include "qute_conv.h" /* qute_window */

/* Output channels accumulated together per output pixel (32-bit accumulators on the stack). */
#define QUTE_DW_CHUNK 32

static inline int32_t wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* acc[j] += in[j] * w[j]: depth multiplier 1, whole window inside the input. */
static inline void mac_s8(uint32_t *acc, const int8_t *in, const int8_t *w, int32_t n)
{
    for (int32_t j = 0; j < n; ++j) {
        acc[j] += (uint32_t)(in[j] * w[j]);
    }
}

/* acc[j] += (in[j] + offset) * w[j]: depth multiplier 1, window clipped by the padding. */
static inline void mac_offset_s8(uint32_t *acc, const int8_t *in, const int8_t *w, int32_t n, int32_t offset)
{
    for (int32_t j = 0; j < n; ++j) {
        acc[j] += (uint32_t)((in[j] + offset) * w[j]);
    }
}

/* Any depth multiplier: output channel o0 + j reads input channel (o0 + j) / mult. */
static inline void mac_mult_s8(uint32_t *acc, const int8_t *in, const int8_t *w, int32_t n, int32_t offset,
                               int32_t o0, int32_t mult)
{
    int32_t c = o0 / mult, m = o0 % mult;
    for (int32_t j = 0; j < n; ++j) {
        acc[j] += (uint32_t)((in[c] + offset) * w[j]);
        if (++m == mult) {
            m = 0;
            ++c;
        }
    }
}

void qute_depthwise_conv2d_s8(const qute_depthwise_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output)
{
    const int32_t kh = p->filter_h, kw = p->filter_w, oc = p->output_c, mult = p->depth_multiplier;
    /* unsigned: wraps like TFLM's int32 accumulator does in practice, without C overflow */
    uint32_t acc[QUTE_DW_CHUNK];
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in_b = input + b * p->input_h * p->input_w * p->input_c;
        for (int32_t y = 0; y < p->output_h; ++y) {
            const int32_t oy = y * p->stride_h - p->pad_h;
            int32_t ky0, ky1;
            qute_window(oy, p->dilation_h, p->input_h, kh, &ky0, &ky1);
            for (int32_t x = 0; x < p->output_w; ++x) {
                const int32_t ox = x * p->stride_w - p->pad_w;
                int32_t kx0, kx1;
                qute_window(ox, p->dilation_w, p->input_w, kw, &kx0, &kx1);
                const int full = ky0 == 0 && ky1 == kh && kx0 == 0 && kx1 == kw;
                const int32_t offset = full ? 0 : p->input_offset;
                int8_t *out = output + ((b * p->output_h + y) * p->output_w + x) * oc;
                for (int32_t o0 = 0; o0 < oc; o0 += QUTE_DW_CHUNK) {
                    const int32_t n = QUTE_MIN(QUTE_DW_CHUNK, oc - o0);
                    for (int32_t j = 0; j < n; ++j) {
                        acc[j] = (uint32_t)(full ? p->acc_init[o0 + j] : (bias ? bias[o0 + j] : 0));
                    }
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const int32_t iy = oy + ky * p->dilation_h;
                        for (int32_t kx = kx0; kx < kx1; ++kx) {
                            const int32_t ix = ox + kx * p->dilation_w;
                            const int8_t *in = in_b + (iy * p->input_w + ix) * p->input_c;
                            const int8_t *w = filter + (ky * kw + kx) * oc + o0;
                            if (mult != 1) {
                                mac_mult_s8(acc, in, w, n, offset, o0, mult);
                            } else if (full) {
                                mac_s8(acc, in + o0, w, n);
                            } else {
                                mac_offset_s8(acc, in + o0, w, n, offset);
                            }
                        }
                    }
                    for (int32_t j = 0; j < n; ++j) {
                        const int32_t o = o0 + j;
                        int32_t v = wrap_add(qute_requantize((int32_t)acc[j], p->multiplier[o], p->shift[o]), p->output_offset);
                        out[o] = qute_clamp_s8(v, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}
