#include "qute_conv.h"

#include <stddef.h>
#include <string.h>

#include "qute_common.h"
#include "qute_gemm.h"
#include "qute_simd.h"

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
    const qute_requant_params *rq = &p->gemm.rq;
    acc = wrap_add(qute_requantize(acc, rq->multiplier[o], rq->shift[o]), rq->output_offset);
    return qute_clamp_s8(acc, rq->act_min, rq->act_max);
}

void qute_conv2d_grouped_s8(const qute_conv_params *p, const int8_t *input, const int8_t *filter,
                            const int32_t *bias, int8_t *output)
{
    const int32_t kh = p->filter_h, kw = p->filter_w, fc = p->filter_c;
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
                        int32_t a0 = p->gemm.acc_init[o], a1 = p->gemm.acc_init[o + 1];
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
                        int32_t acc = full ? p->gemm.acc_init[o] : (bias ? bias[o] : 0);
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

/* ---- one group: matrix products (qute_gemm.h) ---- */

/* The input pixel under output pixel n (flattened over batch, rows, columns) of a 1x1 filter. */
static inline const int8_t *pixel_1x1(const qute_conv_params *p, const int8_t *input, int32_t n)
{
    const int32_t per_image = p->output_h * p->output_w;
    const int32_t b = n / per_image, r = n % per_image;
    const int32_t iy = (r / p->output_w) * p->stride_h, ix = (r % p->output_w) * p->stride_w;
    return input + ((b * p->input_h + iy) * p->input_w + ix) * p->input_c;
}

/* w16: the filter in qute_gemm.h's int16 layout; constant at each call (one loop per layout). */
QUTE_SPECIALISE void conv_1x1(const qute_conv_params *p, const int8_t *input, uint32_t *wide, int8_t *output,
                            const int w16)
{
    const int32_t oc = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w;
    const int dense = p->stride_h == 1 && p->stride_w == 1; /* then pixel n is input + n * input_c */
    int32_t n = 0;
    for (; n + 1 < pixels; n += 2) {
        const int8_t *in0 = dense ? input + n * p->input_c : pixel_1x1(p, input, n);
        const int8_t *in1 = dense ? in0 + p->input_c : pixel_1x1(p, input, n + 1);
        qute_gemm_2rows(&p->gemm, in0, in1, wide, output + n * oc, output + (n + 1) * oc, w16);
    }
    if (n < pixels) {
        qute_gemm_1row(&p->gemm, pixel_1x1(p, input, n), output + n * oc, w16);
    }
}

void qute_conv2d_1x1_s8(const qute_conv_params *p, const int8_t *input, uint32_t *wide, int8_t *output)
{
    conv_1x1(p, input, wide, output, 0);
}

void qute_conv2d_1x1_w16_s8(const qute_conv_params *p, const int8_t *input, uint32_t *wide, int8_t *output)
{
    conv_1x1(p, input, wide, output, 1);
}

static inline void fill_s8(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

static inline void copy_s8(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) { /* words: Cortex-M3 and up load and store them unaligned */
        memcpy(dst + i, src + i, 4);
    }
    for (; i < n; ++i) {
        dst[i] = src[i];
    }
}

/* The window of output pixel (y, x) of image in_b, in filter order (ky, kx, c), into row. */
static void im2col(const qute_conv_params *p, const int8_t *in_b, int32_t y, int32_t x, int8_t *row)
{
    const int32_t ih = p->input_h, iw = p->input_w, c = p->input_c, kw = p->filter_w;
    const int8_t pad = (int8_t)(-p->input_offset); /* the input's zero point */
    const int32_t oy = y * p->stride_h - p->pad_h, ox = x * p->stride_w - p->pad_w;
    const int whole_row = p->dilation_w == 1 && ox >= 0 && ox + kw <= iw;
    for (int32_t ky = 0; ky < p->filter_h; ++ky, row += kw * c) {
        const int32_t iy = oy + ky * p->dilation_h;
        if (iy < 0 || iy >= ih) {
            fill_s8(row, pad, kw * c);
            continue;
        }
        const int8_t *src = in_b + iy * iw * c;
        if (whole_row) {
            copy_s8(row, src + ox * c, kw * c);
            continue;
        }
        for (int32_t kx = 0; kx < kw; ++kx) {
            const int32_t ix = ox + kx * p->dilation_w;
            if (ix >= 0 && ix < iw) {
                copy_s8(row + kx * c, src + ix * c, c);
            } else {
                fill_s8(row + kx * c, pad, c);
            }
        }
    }
}

#if QUTE_HAVE_SIMD
/* Output pixel (y, x)'s window straight into lane `lane` (0 or 1) of the product's widened rows
 * (qute_gemm_2rows_wide_s8), for input channels a multiple of 4: every tap is whole words, so a
 * word is loaded, split into its two int16 pairs and stored once, with no int8 copy in between;
 * taps outside the input are the zero point's pairs. */
static void im2col_wide(const qute_conv_params *p, const int8_t *in_b, int32_t y, int32_t x, uint32_t *wide, int lane)
{
    const int32_t ih = p->input_h, iw = p->input_w, c = p->input_c, kw = p->filter_w, words = c / 4;
    const uint32_t zp4 = qute_splat_s8x4(-p->input_offset);
    const uint32_t ze = qute_sxtb16(zp4), zo = qute_sxtb16_ror8(zp4);
    const int32_t oy = y * p->stride_h - p->pad_h, ox = x * p->stride_w - p->pad_w;
    const int whole_row = p->dilation_w == 1 && ox >= 0 && ox + kw <= iw;
    uint32_t *dst = wide + 2 * lane;
    for (int32_t ky = 0; ky < p->filter_h; ++ky) {
        const int32_t iy = oy + ky * p->dilation_h;
        const int8_t *src = in_b + iy * iw * c;
        for (int32_t kx = 0; kx < kw;) {
            const int32_t ix = ox + kx * p->dilation_w;
            /* a run of taps: the whole row, one inside tap, or one padded tap */
            const int32_t taps = whole_row ? kw : 1;
            const int32_t n = taps * words;
            if (iy >= 0 && iy < ih && ix >= 0 && ix < iw) {
                const int8_t *s = src + ix * c;
                for (int32_t i = 0; i < n; ++i, dst += 4) {
                    const uint32_t v = qute_read_s8x4(s + 4 * i);
                    dst[0] = qute_sxtb16(v);
                    dst[1] = qute_sxtb16_ror8(v);
                }
            } else {
                for (int32_t i = 0; i < n; ++i, dst += 4) {
                    dst[0] = ze;
                    dst[1] = zo;
                }
            }
            kx += taps;
        }
    }
}
#endif

QUTE_SPECIALISE void conv_im2col(const qute_conv_params *p, const int8_t *input, int8_t *scratch, int8_t *output,
                               const int w16)
{
    const int32_t oc = p->output_c, ow = p->output_w;
    const int32_t depth = p->filter_h * p->filter_w * p->input_c, row_bytes = 4 * p->gemm.k4;
    int8_t *row0 = scratch, *row1 = scratch + row_bytes;
    uint32_t *wide = (uint32_t *)(void *)(scratch + 2 * row_bytes); /* 8-byte aligned: see qute_conv.h */
    /* the bytes past the window meet zero weights; set them once so they are defined */
    fill_s8(row0 + depth, 0, row_bytes - depth);
    fill_s8(row1 + depth, 0, row_bytes - depth);
    const int32_t per_image = p->output_h * ow, pixels = p->batches * per_image;
    const int32_t image_bytes = p->input_h * p->input_w * p->input_c;
    int32_t n = 0;
#if QUTE_HAVE_SIMD
    if (p->input_c % 4 == 0) { /* windows of whole words: gathered already widened */
        for (; n + 1 < pixels; n += 2) {
            const int32_t b0 = n / per_image, r0 = n % per_image, b1 = (n + 1) / per_image, r1 = (n + 1) % per_image;
            im2col_wide(p, input + b0 * image_bytes, r0 / ow, r0 % ow, wide, 0);
            im2col_wide(p, input + b1 * image_bytes, r1 / ow, r1 % ow, wide, 1);
            qute_gemm_2rows_wide(&p->gemm, wide, output + n * oc, output + (n + 1) * oc, w16);
        }
    }
#endif
    for (; n + 1 < pixels; n += 2) {
        const int32_t b0 = n / per_image, r0 = n % per_image, b1 = (n + 1) / per_image, r1 = (n + 1) % per_image;
        im2col(p, input + b0 * image_bytes, r0 / ow, r0 % ow, row0);
        im2col(p, input + b1 * image_bytes, r1 / ow, r1 % ow, row1);
        qute_gemm_2rows(&p->gemm, row0, row1, wide, output + n * oc, output + (n + 1) * oc, w16);
    }
    if (n < pixels) {
        const int32_t b = n / per_image, r = n % per_image;
        im2col(p, input + b * image_bytes, r / ow, r % ow, row0);
        qute_gemm_1row(&p->gemm, row0, output + n * oc, w16);
    }
}

void qute_conv2d_s8(const qute_conv_params *p, const int8_t *input, int8_t *scratch, int8_t *output)
{
    conv_im2col(p, input, scratch, output, 0);
}

void qute_conv2d_w16_s8(const qute_conv_params *p, const int8_t *input, int8_t *scratch, int8_t *output)
{
    conv_im2col(p, input, scratch, output, 1);
}
