#include "qute_conv.h"

#include <stddef.h>

#include "qute_common.h"

/* int32 addition that wraps instead of overflowing (what TFLM's int32 arithmetic does on every
 * target we build for); keeps the sanitizers quiet on pathological accumulators. */
static inline int32_t wrap_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; ++i) {
        acc += a[i] * b[i];
    }
    return acc;
}

/* Two filters against one input run: each input byte is loaded once. */
static inline void dot2_s8(const int8_t *a, const int8_t *b0, const int8_t *b1, int32_t n, int32_t *acc0,
                           int32_t *acc1)
{
    int32_t s0 = 0, s1 = 0;
    for (int32_t i = 0; i < n; ++i) {
        int32_t v = a[i];
        s0 += v * b0[i];
        s1 += v * b1[i];
    }
    *acc0 = wrap_add(*acc0, s0);
    *acc1 = wrap_add(*acc1, s1);
}

static inline int32_t dot_offset_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t i = 0; i < n; ++i) {
        acc += (a[i] + offset) * b[i];
    }
    return acc;
}

static inline int8_t finish(const qute_conv_params *p, int32_t acc, int32_t o)
{
    acc = wrap_add(qute_requantize(acc, p->multiplier[o], p->shift[o]), p->output_offset);
    return qute_clamp_s8(acc, p->act_min, p->act_max);
}

/* Two filters against two input runs (2x2 block: 4 loads per 4 multiply-accumulates). */
static inline void dot2x2_s8(const int8_t *a0, const int8_t *a1, const int8_t *b0, const int8_t *b1, int32_t n,
                             int32_t acc[4])
{
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int32_t i = 0; i < n; ++i) {
        int32_t x0 = a0[i], x1 = a1[i], w0 = b0[i], w1 = b1[i];
        s00 += x0 * w0;
        s01 += x0 * w1;
        s10 += x1 * w0;
        s11 += x1 * w1;
    }
    acc[0] = wrap_add(acc[0], s00);
    acc[1] = wrap_add(acc[1], s01);
    acc[2] = wrap_add(acc[2], s10);
    acc[3] = wrap_add(acc[3], s11);
}

/* The input pixel under output pixel n (flattened over batch, rows, columns) of a 1x1 filter. */
static inline const int8_t *pixel_1x1(const qute_conv_params *p, const int8_t *input, int32_t n)
{
    const int32_t per_image = p->output_h * p->output_w;
    const int32_t b = n / per_image, r = n % per_image;
    const int32_t iy = (r / p->output_w) * p->stride_h, ix = (r % p->output_w) * p->stride_w;
    return input + ((b * p->input_h + iy) * p->input_w + ix) * p->input_c;
}

/* 1x1 filter, no padding: every window is one whole input pixel, so the op is a matrix product
 * (output pixels x output channels) against acc_init, computed in 2x2 blocks. */
static void conv_1x1(const qute_conv_params *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    const int32_t fc = p->filter_c, oc = p->output_c;
    const int32_t groups = p->input_c / fc;
    const int32_t per_group = oc / groups;
    const int32_t pixels = p->batches * p->output_h * p->output_w;
    for (int32_t n = 0; n < pixels; n += 2) {
        const int two = n + 1 < pixels;
        const int8_t *px0 = pixel_1x1(p, input, n);
        const int8_t *px1 = two ? pixel_1x1(p, input, n + 1) : px0;
        int8_t *out0 = output + n * oc;
        int8_t *out1 = out0 + oc;
        for (int32_t g = 0; g < groups; ++g) {
            const int8_t *in0 = px0 + g * fc, *in1 = px1 + g * fc;
            const int32_t o_end = (g + 1) * per_group;
            int32_t o = g * per_group;
            for (; o + 1 < o_end; o += 2) {
                int32_t acc[4] = {p->acc_init[o], p->acc_init[o + 1], p->acc_init[o], p->acc_init[o + 1]};
                dot2x2_s8(in0, in1, filter + o * fc, filter + (o + 1) * fc, fc, acc);
                out0[o] = finish(p, acc[0], o);
                out0[o + 1] = finish(p, acc[1], o + 1);
                if (two) {
                    out1[o] = finish(p, acc[2], o);
                    out1[o + 1] = finish(p, acc[3], o + 1);
                }
            }
            if (o < o_end) {
                const int8_t *w = filter + o * fc;
                out0[o] = finish(p, wrap_add(p->acc_init[o], dot_s8(in0, w, fc)), o);
                if (two) {
                    out1[o] = finish(p, wrap_add(p->acc_init[o], dot_s8(in1, w, fc)), o);
                }
            }
        }
    }
}

void qute_conv2d_s8(const qute_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output)
{
    const int32_t kh = p->filter_h, kw = p->filter_w, fc = p->filter_c;
    if (kh == 1 && kw == 1 && p->pad_h == 0 && p->pad_w == 0) {
        conv_1x1(p, input, filter, output);
        return;
    }
    const int32_t groups = p->input_c / fc;
    const int32_t per_group = p->output_c / groups;
    const int32_t filter_size = kh * kw * fc;
    /* With one group and no column dilation, the valid taps of one filter row read one
     * contiguous run of the input row. */
    const int contiguous = groups == 1 && p->dilation_w == 1;
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
                const int32_t taps = kx1 - kx0;
                int8_t *out = output + ((b * p->output_h + y) * p->output_w + x) * p->output_c;
                for (int32_t g = 0; g < groups; ++g) {
                    const int32_t o_end = (g + 1) * per_group;
                    int32_t o = g * per_group;
                    /* Whole window inside the input: two output channels per pass over it. */
                    for (; full && o + 1 < o_end; o += 2) {
                        const int8_t *w0 = filter + o * filter_size, *w1 = w0 + filter_size;
                        int32_t a0 = p->acc_init[o], a1 = p->acc_init[o + 1];
                        for (int32_t ky = 0; ky < kh; ++ky) {
                            const int8_t *in = in_b + ((oy + ky * p->dilation_h) * p->input_w + ox) * p->input_c + g * fc;
                            const int32_t row = ky * kw * fc;
                            if (contiguous) {
                                dot2_s8(in, w0 + row, w1 + row, kw * fc, &a0, &a1);
                                continue;
                            }
                            for (int32_t k = 0; k < kw; ++k) {
                                dot2_s8(in + k * p->dilation_w * p->input_c, w0 + row + k * fc, w1 + row + k * fc, fc,
                                        &a0, &a1);
                            }
                        }
                        out[o] = finish(p, a0, o);
                        out[o + 1] = finish(p, a1, o + 1);
                    }
                    for (; o < o_end; ++o) {
                        const int8_t *w_o = filter + o * filter_size;
                        int32_t acc = full ? p->acc_init[o] : (bias ? bias[o] : 0);
                        for (int32_t ky = ky0; ky < ky1; ++ky) {
                            const int32_t iy = oy + ky * p->dilation_h;
                            const int8_t *in = in_b + (iy * p->input_w + ox + kx0 * p->dilation_w) * p->input_c + g * fc;
                            const int8_t *w = w_o + (ky * kw + kx0) * fc;
                            if (contiguous) {
                                acc = wrap_add(acc, full ? dot_s8(in, w, taps * fc)
                                                         : dot_offset_s8(in, w, taps * fc, p->input_offset));
                                continue;
                            }
                            for (int32_t k = 0; k < taps; ++k) {
                                const int8_t *in_k = in + k * p->dilation_w * p->input_c;
                                acc = wrap_add(acc, full ? dot_s8(in_k, w + k * fc, fc)
                                                         : dot_offset_s8(in_k, w + k * fc, fc, p->input_offset));
                            }
                        }
                        out[o] = finish(p, acc, o);
                    }
                }
            }
        }
    }
}
