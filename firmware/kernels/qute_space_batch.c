#include "qute_space_batch.h"

#include <string.h>

void qute_space_to_batch_s8(const qute_space_batch_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t ob = 0; ob < p->out_b; ++ob) {
        int32_t b = ob % p->in_b;
        int32_t block = ob / p->in_b;
        int32_t shift_h = block / p->block_w;
        int32_t shift_w = block % p->block_w;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            int32_t y = oy * p->block_h + shift_h - p->pad_top;
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                int32_t x = ox * p->block_w + shift_w - p->pad_left;
                if (y < 0 || y >= p->in_h || x < 0 || x >= p->in_w) {
                    memset(output, (int)(int8_t)p->pad_value, (size_t)p->depth);
                } else {
                    memcpy(output, input + ((b * p->in_h + y) * p->in_w + x) * p->depth, (size_t)p->depth);
                }
                output += p->depth;
            }
        }
    }
}

void qute_batch_to_space_s8(const qute_space_batch_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t ib = 0; ib < p->in_b; ++ib) {
        int32_t ob = ib % p->out_b;
        int32_t block = ib / p->out_b;
        int32_t shift_h = block / p->block_w;
        int32_t shift_w = block % p->block_w;
        for (int32_t iy = 0; iy < p->in_h; ++iy) {
            int32_t y = iy * p->block_h + shift_h - p->pad_top;
            if (y < 0 || y >= p->out_h) {
                continue;
            }
            for (int32_t ix = 0; ix < p->in_w; ++ix) {
                int32_t x = ix * p->block_w + shift_w - p->pad_left;
                if (x < 0 || x >= p->out_w) {
                    continue;
                }
                memcpy(output + ((ob * p->out_h + y) * p->out_w + x) * p->depth,
                       input + ((ib * p->in_h + iy) * p->in_w + ix) * p->depth, (size_t)p->depth);
            }
        }
    }
}
