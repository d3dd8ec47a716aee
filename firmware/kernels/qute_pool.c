#include "qute_pool.h"

#include <string.h>

#include "qute_common.h"
#include "qute_simd.h"

/* The window of output (oy, ox) clipped to the input: [y0, y1) x [x0, x1) in input coordinates. */
typedef struct {
    int32_t y0, y1, x0, x1;
} qute_window;

static qute_window pool_window(const qute_pool_params *p, int32_t oy, int32_t ox)
{
    qute_window w;
    int32_t iy = oy * p->stride_h - p->pad_h;
    int32_t ix = ox * p->stride_w - p->pad_w;
    w.y0 = QUTE_MAX(iy, 0);
    w.y1 = QUTE_MIN(iy + p->filter_h, p->in_h);
    w.x0 = QUTE_MAX(ix, 0);
    w.x1 = QUTE_MIN(ix + p->filter_w, p->in_w);
    return w;
}

/* acc / count rounded to nearest, halves away from zero (count > 0; C division truncates). */
static int32_t rounded_mean(int32_t acc, int32_t count)
{
    return acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
}

void qute_avg_pool_s8(const qute_pool_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in = input + b * p->in_h * p->in_w * p->depth;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                qute_window w = pool_window(p, oy, ox);
                /* the generator rejects ops with an empty window, as TFLM fails on them */
                int32_t count = (w.y1 - w.y0) * (w.x1 - w.x0);
                for (int32_t c = 0; c < p->depth; ++c) {
                    int32_t acc = 0;
                    for (int32_t y = w.y0; y < w.y1; ++y) {
                        for (int32_t x = w.x0; x < w.x1; ++x) {
                            acc += in[(y * p->in_w + x) * p->depth + c];
                        }
                    }
                    *output++ = qute_clamp_s8(rounded_mean(acc, count), p->act_min, p->act_max);
                }
            }
        }
    }
}

void qute_max_pool_s8(const qute_pool_params *p, const int8_t *input, int8_t *output)
{
#if QUTE_HAVE_SIMD
    const uint32_t lo4 = qute_splat_s8x4(p->act_min), hi4 = qute_splat_s8x4(p->act_max);
#endif
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *in = input + b * p->in_h * p->in_w * p->depth;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                qute_window w = pool_window(p, oy, ox);
                int32_t c = 0;
#if QUTE_HAVE_SIMD
                for (; c + 4 <= p->depth; c += 4, output += 4) { /* four channels per word */
                    uint32_t m = 0x80808080u;
                    for (int32_t y = w.y0; y < w.y1; ++y) {
                        for (int32_t x = w.x0; x < w.x1; ++x) {
                            m = qute_max_s8x4(m, qute_read_s8x4(in + (y * p->in_w + x) * p->depth + c));
                        }
                    }
                    m = qute_min_s8x4(qute_max_s8x4(m, lo4), hi4);
                    memcpy(output, &m, 4);
                }
#endif
                for (; c < p->depth; ++c) {
                    int32_t m = INT8_MIN;
                    for (int32_t y = w.y0; y < w.y1; ++y) {
                        for (int32_t x = w.x0; x < w.x1; ++x) {
                            m = QUTE_MAX(m, in[(y * p->in_w + x) * p->depth + c]);
                        }
                    }
                    *output++ = qute_clamp_s8(m, p->act_min, p->act_max);
                }
            }
        }
    }
}
