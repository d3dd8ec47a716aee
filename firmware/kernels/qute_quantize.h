#ifndef QUTE_QUANTIZE_H
#define QUTE_QUANTIZE_H

#include <stdint.h>

/* QUANTIZE int8 -> int8: TFLite Micro's Requantize with input_scale / output_scale. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier;
    int32_t shift;
} qute_requantize_params;

void qute_requantize_s8(const qute_requantize_params *p, const int8_t *input, int8_t *output);

/* QUANTIZE float32 -> int8: round(x / scale) (float division, halves away from zero) + zero point,
 * clamped. DEQUANTIZE int8 -> float32: scale * (x - zero point) in float. */
typedef struct {
    int32_t size;
    int32_t zero_point;
    float scale;
} qute_affine_params;

void qute_quantize_f32_s8(const qute_affine_params *p, const float *input, int8_t *output);
void qute_dequantize_s8_f32(const qute_affine_params *p, const int8_t *input, float *output);

#endif
