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

/* The clipped window [ky0, ky1) x [kx0, kx1) of one output pixel. */
typedef struct {
    const int8_t *in;     /* input pixel (0, 0) of this batch */
    int32_t oy, ox;       /* input coordinates of filter tap (0, 0) */
    int32_t ky0, ky1, kx0, kx1;
} dw_window;

static inline int32_t requant(const qute_depthwise_conv_params *p, uint32_t acc, int32_t o)
{
    int32_t v = wrap_add(qute_requantize((int32_t)acc, p->multiplier[o], p->shift[o]), p->output_offset);
    return qute_clamp_s8(v, p->act_min, p->act_max);
}

/* Depth multiplier 1: four channels o..o+3 in registers over the window. offset is 0 when the
 * window lies wholly inside the input (acc_init then holds the offset's share). */
static inline void dw4(const qute_depthwise_conv_params *p, const dw_window *win, const int8_t *filter,
                       const uint32_t init[4], int32_t offset, int32_t o, int8_t *out)
{
    const int32_t c = p->input_c, kw = p->filter_w;
    uint32_t a0 = init[0], a1 = init[1], a2 = init[2], a3 = init[3];
    for (int32_t ky = win->ky0; ky < win->ky1; ++ky) {
        const int8_t *in_row = win->in + ((win->oy + ky * p->dilation_h) * p->input_w + win->ox + win->kx0 * p->dilation_w) * c + o;
        const int8_t *w_row = filter + (ky * kw + win->kx0) * c + o;
        for (int32_t k = 0; k < win->kx1 - win->kx0; ++k) {
            const int8_t *in = in_row + k * p->dilation_w * c;
            const int8_t *w = w_row + k * c;
            a0 += (uint32_t)((in[0] + offset) * w[0]);
            a1 += (uint32_t)((in[1] + offset) * w[1]);
            a2 += (uint32_t)((in[2] + offset) * w[2]);
            a3 += (uint32_t)((in[3] + offset) * w[3]);
        }
    }
    out[o] = (int8_t)requant(p, a0, o);
    out[o + 1] = (int8_t)requant(p, a1, o + 1);
    out[o + 2] = (int8_t)requant(p, a2, o + 2);
    out[o + 3] = (int8_t)requant(p, a3, o + 3);
}

static inline void dw1(const qute_depthwise_conv_params *p, const dw_window *win, const int8_t *filter,
                       uint32_t acc, int32_t offset, int32_t o, int8_t *out)
{
    const int32_t c = p->input_c, kw = p->filter_w;
    for (int32_t ky = win->ky0; ky < win->ky1; ++ky) {
        const int8_t *in_row = win->in + ((win->oy + ky * p->dilation_h) * p->input_w + win->ox + win->kx0 * p->dilation_w) * c + o;
        const int8_t *w_row = filter + (ky * kw + win->kx0) * c + o;
        for (int32_t k = 0; k < win->kx1 - win->kx0; ++k) {
            acc += (uint32_t)((in_row[k * p->dilation_w * c] + offset) * w_row[k * c]);
        }
    }
    out[o] = (int8_t)requant(p, acc, o);
}

/* Depth multiplier 1, one output pixel. */
static void dw_pixel_m1(const qute_depthwise_conv_params *p, const dw_window *win, int full, const int8_t *filter,
                        const int32_t *bias, int8_t *out)
{
    const int32_t oc = p->output_c;
    int32_t o = 0;
    if (full) {
        for (; o + 4 <= oc; o += 4) {
            const uint32_t init[4] = {(uint32_t)p->acc_init[o], (uint32_t)p->acc_init[o + 1],
                                      (uint32_t)p->acc_init[o + 2], (uint32_t)p->acc_init[o + 3]};
            dw4(p, win, filter, init, 0, o, out);
        }
        for (; o < oc; ++o) {
            dw1(p, win, filter, (uint32_t)p->acc_init[o], 0, o, out);
        }
        return;
    }
    for (; o + 4 <= oc; o += 4) {
        uint32_t init[4] = {0, 0, 0, 0};
        if (bias) {
            for (int j = 0; j < 4; ++j) {
                init[j] = (uint32_t)bias[o + j];
            }
        }
        dw4(p, win, filter, init, p->input_offset, o, out);
    }
    for (; o < oc; ++o) {
        dw1(p, win, filter, bias ? (uint32_t)bias[o] : 0u, p->input_offset, o, out);
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
                int8_t *out = output + ((b * p->output_h + y) * p->output_w + x) * oc;
                if (mult == 1) {
                    const dw_window win = {in_b, oy, ox, ky0, ky1, kx0, kx1};
                    dw_pixel_m1(p, &win, full, filter, bias, out);
                    continue;
                }
                /* Any depth multiplier: chunks of output channels accumulated on the stack. */
                const int32_t offset = full ? 0 : p->input_offset;
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
                            mac_mult_s8(acc, in, w, n, offset, o0, mult);
                        }
                    }
                    for (int32_t j = 0; j < n; ++j) {
                        out[o0 + j] = (int8_t)requant(p, acc[j], o0 + j);
                    }
                }
            }
        }
    }
}
