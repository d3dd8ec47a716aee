/* Ensemble scores of a QUTE model on the device: the C port of qute.uncertainty.summarize.
 *
 * Every value is float32, computed in exactly the order the Python reference fixes (see the
 * docstring of qute/uncertainty.py), so the device's scores equal the host's bit for bit. That
 * holds only when the compiler keeps that order: build with -ffp-contract=off (no fused
 * multiply-add) and without -ffast-math, and leave FPSCR.FZ at its reset value 0 (subnormals on).
 */
#ifndef QUTE_UNCERTAINTY_H
#define QUTE_UNCERTAINTY_H

#include <stdint.h>

typedef struct {
    int32_t predicted;        /* argmax of the mean over heads; ties -> lowest class index */
    float confidence;         /* largest mean probability */
    float margin;             /* largest minus second largest mean probability */
    float entropy;            /* predictive entropy H(mean), nats */
    float mutual_information; /* H(mean) - mean_k H(head_k), clipped at +0 */
} qute_scores;

/* int8 -> float32 (q - zero_point) * scale, as qute.int8_model.dequantize; _s16 for int16 heads. */
void qute_dequantize(const int8_t *q, int32_t n, float scale, int32_t zero_point, float *out);
void qute_dequantize_s16(const int16_t *q, int32_t n, float scale, int32_t zero_point, float *out);

/* log(x) in float32 by the fixed recipe of qute.uncertainty.log32 (x finite and > 0). */
float qute_log32(float x);

/* Entropy in nats of the n probabilities q[0..n-1] (terms below 2^-126 count as 0). */
float qute_entropy(const float *q, int32_t n);

/* Scores of one sample. probs holds the K heads' probability vectors one after the other
 * (probs[k * classes + c]); mean receives the mean over heads (classes floats). */
void qute_ensemble_scores(const float *probs, int32_t heads, int32_t classes, float *mean, qute_scores *out);

#endif
