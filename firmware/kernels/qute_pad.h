#ifndef QUTE_PAD_H
#define QUTE_PAD_H

#include <stdint.h>

#define QUTE_PAD_DIMS 5

/* One PAD / PADV2 op: the input placed in an output filled with pad_value. Shapes are padded to
 * QUTE_PAD_DIMS dimensions with leading 1s; before[i] is the padding ahead of dimension i. */
typedef struct {
    int32_t in_dims[QUTE_PAD_DIMS];
    int32_t out_dims[QUTE_PAD_DIMS];
    int32_t before[QUTE_PAD_DIMS];
    int32_t pad_value; /* the output zero point, or PADV2's constant */
} qute_pad_params;

void qute_pad_s8(const qute_pad_params *p, const int8_t *input, int8_t *output);

#endif
