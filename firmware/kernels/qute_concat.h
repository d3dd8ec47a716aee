#ifndef QUTE_CONCAT_H
#define QUTE_CONCAT_H

#include <stdint.h>

/* One CONCATENATION op: the tensors seen as [outer][row_i] and joined row by row. Inputs and
 * output share one quantization (TFLM requires it), so bytes are copied as they are. */
typedef struct {
    int32_t num_inputs;
    int32_t outer;          /* product of the dimensions before the axis */
    const int32_t *row;     /* per input: its axis dimension times the dimensions after the axis */
} qute_concat_params;

void qute_concat_s8(const qute_concat_params *p, const int8_t *const *inputs, int8_t *output);

#endif
