/* See qute_uncertainty.h. Step numbers refer to the docstring of qute/uncertainty.py. */
#include "qute_uncertainty.h"

#include <math.h> /* INFINITY (a constant: no libm) */
#include <string.h>

#define QUTE_TINY 0x1p-126f /* smallest normal float32 */

void qute_dequantize(const int8_t *q, int32_t n, float scale, int32_t zero_point, float *out)
{
    for (int32_t i = 0; i < n; ++i) {
        out[i] = (float)((int32_t)q[i] - zero_point) * scale;
    }
}

void qute_dequantize_s16(const int16_t *q, int32_t n, float scale, int32_t zero_point, float *out)
{
    for (int32_t i = 0; i < n; ++i) {
        out[i] = (float)((int32_t)q[i] - zero_point) * scale; /* exact below 2^24: the same float32 as numpy's */
    }
}

float qute_log32(float x)
{
    static const float ln2_hi = 0x1.62ep-1f, ln2_lo = 0x1.0bfbe8p-15f;
    static const float c3 = 0x1.555556p-1f, c5 = 0x1.99999ap-2f, c7 = 0x1.24924ap-2f, c9 = 0x1.c71c72p-3f;
    int subnormal = x < QUTE_TINY;
    if (subnormal) {
        x = x * 0x1p23f; /* exact */
    }
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = (int32_t)((bits >> 23) & 0xffu) - 127 - (subnormal ? 23 : 0);
    uint32_t mbits = (bits & 0x7fffffu) | 0x3f800000u;
    float m;
    memcpy(&m, &mbits, sizeof m);
    if (mbits >= 0x3fb504f3u) { /* m above about sqrt 2 */
        m = m * 0.5f;
        e += 1;
    }
    float fe = (float)e;
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float r = z * (c3 + z * (c5 + z * (c7 + z * c9)));
    float hfsq = (0.5f * f) * f;
    return fe * ln2_hi - ((hfsq - (s * (hfsq + r) + fe * ln2_lo)) - f);
}

float qute_entropy(const float *q, int32_t n)
{
    float h = 0.0f;
    for (int32_t c = 0; c < n; ++c) {
        float v = q[c] + 0.0f; /* step 1: -0 reads as +0 */
        if (v >= QUTE_TINY) {
            float term = v * qute_log32(v);
            h = h + term;
        }
    }
    return 0.0f - h;
}

void qute_ensemble_scores(const float *probs, int32_t heads, int32_t classes, float *mean, qute_scores *out)
{
    /* step 2: sequential sum over heads, then one division by K */
    for (int32_t c = 0; c < classes; ++c) {
        float s = probs[c] + 0.0f;
        for (int32_t k = 1; k < heads; ++k) {
            s = s + (probs[k * classes + c] + 0.0f);
        }
        mean[c] = s / (float)heads;
    }
    /* steps 3-4: first maximum, and the runner-up (equal to it on a tie) */
    int32_t best = 0;
    float top = mean[0], second = -INFINITY;
    for (int32_t c = 1; c < classes; ++c) {
        if (mean[c] > top) {
            second = top;
            top = mean[c];
            best = c;
        } else if (mean[c] > second) {
            second = mean[c];
        }
    }
    out->predicted = best;
    out->confidence = top;
    out->margin = top - second;
    /* steps 5-7 */
    float h_mean = qute_entropy(mean, classes);
    float e = qute_entropy(probs, classes);
    for (int32_t k = 1; k < heads; ++k) {
        e = e + qute_entropy(probs + k * classes, classes);
    }
    e = e / (float)heads;
    float mi = h_mean - e;
    out->entropy = h_mean;
    out->mutual_information = mi > 0.0f ? mi : 0.0f;
}
