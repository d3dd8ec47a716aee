#ifndef QUTE_LOGISTIC_H
#define QUTE_LOGISTIC_H

#include <stdint.h>

/* int8 LOGISTIC as TFLite Micro's reference kernel computes it: inputs beyond +-radius saturate;
 * the rest are rescaled to Q4.27, go through gemmlowp's fixed-point logistic, and come out as
 * Q0.8 with zero point -128 (the output scale is taken to be 1/256 whatever the tensor says). */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t input_range_radius;
    int32_t input_multiplier;
    int32_t input_left_shift;
} qute_logistic_params;

void qute_logistic_s8(const qute_logistic_params *p, const int8_t *input, int8_t *output);

/* int8 LOGISTIC as LiteRT's reference kernels compute it: a 256-entry table the generator fills
 * with LiteRT's float32 formula (SigmoidPrepare's LUTPopulate), indexed by the input byte. The
 * generator asks for it only on models TFLite Micro cannot run, where LiteRT is the reference. */
typedef struct {
    int32_t size;
    const int8_t *table; /* table[x + 128] is the output for input x */
} qute_lookup_params;

void qute_lookup_s8(const qute_lookup_params *p, const int8_t *input, int8_t *output);

#endif
