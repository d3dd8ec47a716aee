/* Ensemble scores of a QUTE model on the device, integer-only path (no FPU, no float at all):
 * for Cortex-M0/M3 cores. Bit-exact C port of qute.uncertainty.summarize_int; the steps I1..I8
 * referred to below are written down in qute/uncertainty.py.
 *
 * Fixed-point formats:
 *   confidence_q16, margin_q16        probability in Q16 (1.0 = 65536), exact round-half-up of
 *                                     the true mean probabilities (error <= 2^-17)
 *   entropy_q20, mutual_information_q20  nats in Q20 (1.0 nat = 1048576), within 2e-6 nats of
 *                                     the float64 values of the same int8 inputs when the heads
 *                                     are softmax outputs (measured max 1.4e-6; for arbitrary
 *                                     vectors 2e-6 * their probability mass), see
 *                                     tests/test_uncertainty_int.py
 *   qute_int_log2_q20(n)              log2(n) in Q20, rounded (within 0.51 ulp of Q20)
 *
 * The head scale is an unsigned Q24 multiplier: scale = scale_q24 / 2^24 (1 <= scale_q24 <= 2^24).
 * A qute model's heads are int16 softmax outputs with scale 1/65536 and zero point -32768
 * (scale_q24 = QUTE_INT_SCALE_Q24_S16, qute_ensemble_scores_int16). Models quantized before
 * that have int8 heads with scale 1/256 and zero point -128: scale_q24 =
 * QUTE_INT_SCALE_Q24_DEFAULT, zero_point = QUTE_INT_ZERO_POINT_DEFAULT, which takes a
 * table-driven fast path with the same results.
 */
#ifndef QUTE_UNCERTAINTY_INT_H
#define QUTE_UNCERTAINTY_INT_H

#include <stdint.h>

#define QUTE_INT_SCALE_Q24_DEFAULT 65536u /* 1/256 */
#define QUTE_INT_ZERO_POINT_DEFAULT (-128)
#define QUTE_INT_SCALE_Q24_S16 256u /* 1/65536: int16 softmax heads, zero point -32768 */
#define QUTE_INT_MAX_HEADS_X_CLASSES 8192 /* K * C limit: no int64 overflow below it */

typedef struct {
    int32_t predicted;              /* argmax of the per-class sums over heads; ties -> lowest index */
    int32_t confidence_q16;         /* largest mean probability, Q16 */
    int32_t margin_q16;             /* largest minus second largest mean probability, Q16 */
    int32_t entropy_q20;            /* predictive entropy H(mean), nats in Q20 */
    int32_t mutual_information_q20; /* H(mean) - mean_k H(head_k), clipped at 0, nats in Q20 */
} qute_scores_int;

/* log2(n) in Q20 for 1 <= n < 2^31 (step I5); 0 for n = 0. */
int32_t qute_int_log2_q20(uint32_t n);

/* Scores of one sample. q holds the K heads' int8 outputs one after the other
 * (q[k * classes + c]); sums receives sum_k clamp(q - zero_point) per class (classes int32).
 * Returns 0, or -1 (out untouched) if heads < 1, classes < 2, heads * classes > 8192,
 * scale_q24 outside [1, 2^24] or zero_point outside [-128, 127]. */
int qute_ensemble_scores_int(const int8_t *q, int32_t heads, int32_t classes, uint32_t scale_q24,
                             int32_t zero_point, int32_t *sums, qute_scores_int *out);

/* The same for int16 heads (zero_point in [-32768, 32767]). */
int qute_ensemble_scores_int16(const int16_t *q, int32_t heads, int32_t classes, uint32_t scale_q24,
                               int32_t zero_point, int32_t *sums, qute_scores_int *out);

#endif
