#include "qute_concat.h"

#include <string.h>

void qute_concat_s8(const qute_concat_params *p, const int8_t *const *inputs, int8_t *output)
{
    for (int32_t o = 0; o < p->outer; ++o) {
        for (int32_t i = 0; i < p->num_inputs; ++i) {
            memcpy(output, inputs[i] + o * p->row[i], (size_t)p->row[i]);
            output += p->row[i];
        }
    }
}
