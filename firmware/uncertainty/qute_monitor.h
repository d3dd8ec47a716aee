/* The accuracy-drop monitor: a ring buffer of the last `window` ensemble confidences, O(1) per
 * sample, raising an alarm while the full window's mean confidence is below rho.
 *
 * Exact arithmetic, mirrored bit for bit by qute.drift.simulate on the host:
 *   q      = (uint32_t)(confidence * 65536.0f)   Q16, truncated (exact: the product by 2^16 is exact)
 *   sum    = sum - q_oldest + q                  uint32, exact (window <= QUTE_MONITOR_MAX_WINDOW)
 *   mean   = ((float)sum / (float)window) * (1.0f / 65536.0f)   float32, round to nearest
 *   alarm  = mean < rho                          only once `window` confidences have been seen
 * No running float sum, so no rounding accumulates however long the stream.
 *
 * Cores with no FPU (-DQUTE_UNCERTAINTY_INT) use the integer variant instead, mirrored by
 * qute.drift.simulate_int: the Q16 confidence comes straight from the integer-only scores
 * (qute_scores_int.confidence_q16), and the alarm is decided on the exact sum itself,
 *   alarm  = sum < rho_sum                       uint32 comparison, once the window is full
 * which is "mean < rho_sum / (window * 2^16)" without a division, so nothing is rounded at all.
 * Such builds compile the float API out: not even an unused soft-float helper can reach the image.
 */
#ifndef QUTE_MONITOR_H
#define QUTE_MONITOR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QUTE_MONITOR_MAX_WINDOW 65535u /* 65535 * 65536 < 2^32: the sum cannot overflow */
#define QUTE_MONITOR_Q16_ONE 65536u    /* confidence 1.0; larger Q16 values are clamped to it */

typedef struct {
    uint32_t *ring;   /* window slots, caller-owned */
    uint32_t window;  /* m */
    uint32_t count;   /* confidences seen, saturating at window */
    uint32_t next;    /* slot the next confidence goes to */
    uint32_t sum;     /* exact sum of the Q16 values in the ring */
#if !defined(QUTE_UNCERTAINTY_INT)
    float rho;        /* alarm threshold on the window's mean confidence */
#endif
    uint32_t rho_sum; /* integer variant: alarm threshold on the window's sum */
} qute_monitor;

#if !defined(QUTE_UNCERTAINTY_INT)
/* Returns 0, or -1 when window is 0 or above QUTE_MONITOR_MAX_WINDOW. */
int qute_monitor_init(qute_monitor *m, uint32_t *ring, uint32_t window, float rho);

/* The Q16 value of a confidence in [0, 1] (values outside are clamped; NaN reads as 0). */
uint32_t qute_monitor_q16(float confidence);

/* Adds one confidence. Returns -1 while the window is not yet full (*mean untouched), else
 * 1 on an alarm (mean < rho) or 0, with the window's mean confidence in *mean. */
int qute_monitor_update(qute_monitor *m, float confidence, float *mean);
#endif

/* Integer variant. Returns 0, or -1 when window is 0 or above QUTE_MONITOR_MAX_WINDOW. */
int qute_monitor_init_q16(qute_monitor *m, uint32_t *ring, uint32_t window, uint32_t rho_sum);

/* Adds one Q16 confidence (above QUTE_MONITOR_Q16_ONE: clamped). Returns -1 while the window is
 * not yet full (*sum untouched), else 1 on an alarm (sum < rho_sum) or 0, with the window's sum
 * of Q16 confidences in *sum. */
int qute_monitor_update_q16(qute_monitor *m, uint32_t q16, uint32_t *sum);

#ifdef __cplusplus
}
#endif

#endif /* QUTE_MONITOR_H */
