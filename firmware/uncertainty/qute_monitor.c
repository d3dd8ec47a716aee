/* The accuracy-drop monitor (see qute_monitor.h; host mirrors: qute.drift.simulate and
 * qute.drift.simulate_int). */
#include "qute_monitor.h"

static int init_ring(qute_monitor *m, uint32_t *ring, uint32_t window)
{
    if (window == 0u || window > QUTE_MONITOR_MAX_WINDOW) {
        return -1;
    }
    m->ring = ring;
    m->window = window;
    m->count = 0u;
    m->next = 0u;
    m->sum = 0u;
    m->rho_sum = 0u;
    for (uint32_t i = 0; i < window; ++i) {
        ring[i] = 0u;
    }
    return 0;
}

/* The one place both variants share: -1 until the window is full, then 0. */
static int push(qute_monitor *m, uint32_t q)
{
    m->sum = m->sum - m->ring[m->next] + q; /* the slot holds 0 until the window is full */
    m->ring[m->next] = q;
    m->next = (m->next + 1u == m->window) ? 0u : m->next + 1u;
    if (m->count < m->window) {
        ++m->count;
        if (m->count < m->window) {
            return -1;
        }
    }
    return 0;
}

#if !defined(QUTE_UNCERTAINTY_INT)
int qute_monitor_init(qute_monitor *m, uint32_t *ring, uint32_t window, float rho)
{
    if (init_ring(m, ring, window) != 0) {
        return -1;
    }
    m->rho = rho;
    return 0;
}

uint32_t qute_monitor_q16(float confidence)
{
    if (!(confidence > 0.0f)) { /* also NaN */
        return 0u;
    }
    if (confidence >= 1.0f) {
        return 65536u;
    }
    return (uint32_t)(confidence * 65536.0f);
}

int qute_monitor_update(qute_monitor *m, float confidence, float *mean)
{
    if (push(m, qute_monitor_q16(confidence)) != 0) {
        return -1;
    }
    float avg = ((float)m->sum / (float)m->window) * (1.0f / 65536.0f);
    *mean = avg;
    return (avg < m->rho) ? 1 : 0;
}
#endif

int qute_monitor_init_q16(qute_monitor *m, uint32_t *ring, uint32_t window, uint32_t rho_sum)
{
    if (init_ring(m, ring, window) != 0) {
        return -1;
    }
#if !defined(QUTE_UNCERTAINTY_INT)
    m->rho = 0.0f;
#endif
    m->rho_sum = rho_sum;
    return 0;
}

int qute_monitor_update_q16(qute_monitor *m, uint32_t q16, uint32_t *sum)
{
    /* the clamp keeps window * q16 below 2^32 whatever the caller passes */
    if (push(m, q16 > QUTE_MONITOR_Q16_ONE ? QUTE_MONITOR_Q16_ONE : q16) != 0) {
        return -1;
    }
    *sum = m->sum;
    return (m->sum < m->rho_sum) ? 1 : 0;
}
