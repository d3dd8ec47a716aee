#include "qute_quantize.h"

#include <math.h>

#include "qute_common.h"

void qute_requantize_s8(const qute_requantize_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t v = qute_requantize(input[i] - p->input_zero_point, p->multiplier, p->shift) + p->output_zero_point;
        output[i] = qute_clamp_s8(v, INT8_MIN, INT8_MAX);
    }
}

void qute_quantize_f32_s8(const qute_affine_params *p, const float *input, int8_t *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        float r = roundf(input[i] / p->scale);
        /* Saturate before converting, so that no out-of-range conversion happens in C. */
        r = r > 1000.0f ? 1000.0f : (r >= -1000.0f ? r : -1000.0f); /* NaN -> -1000 */
        output[i] = qute_clamp_s8((int32_t)r + p->zero_point, INT8_MIN, INT8_MAX);
    }
}

void qute_dequantize_s8_f32(const qute_affine_params *p, const int8_t *input, float *output)
{
    for (int32_t i = 0; i < p->size; ++i) {
        output[i] = p->scale * (float)(input[i] - p->zero_point);
    }
}
