#ifndef QUTE_SPACE_BATCH_H
#define QUTE_SPACE_BATCH_H

#include <stdint.h>

/* SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND on NHWC int8 data (a 3-D NHC tensor is NH1C with a block
 * width of 1). Output batch b = (shift_h * block_w + shift_w) * in_batches + input batch. */
typedef struct {
    int32_t in_b;
    int32_t in_h;
    int32_t in_w;
    int32_t depth;
    int32_t out_b;
    int32_t out_h;
    int32_t out_w;
    int32_t block_h;
    int32_t block_w;
    int32_t pad_top;   /* SPACE_TO_BATCH_ND: padding; BATCH_TO_SPACE_ND: crops */
    int32_t pad_left;
    int32_t pad_value; /* SPACE_TO_BATCH_ND: the output zero point */
} qute_space_batch_params;

void qute_space_to_batch_s8(const qute_space_batch_params *p, const int8_t *input, int8_t *output);
void qute_batch_to_space_s8(const qute_space_batch_params *p, const int8_t *input, int8_t *output);

#endif
