/* The accuracy-drop monitor (see qute_monitor.h; host mirror: qute.monitor.simulate). */
#include "qute_monitor.h"

int qute_monitor_init(qute_monitor *m, uint32_t *ring, uint32_t window, float rho)
{
    if (window == 0u || window > QUTE_MONITOR_MAX_WINDOW) {
        return -1;
    }
    m->ring = ring;
    m->window = window;
    m->count = 0u;
    m->next = 0u;
    m->sum = 0u;
    m->rho = rho;
    for (uint32_t i = 0; i < window; ++i) {
        ring[i] = 0u;
    }
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
    uint32_t q = qute_monitor_q16(confidence);
    m->sum = m->sum - m->ring[m->next] + q; /* the slot holds 0 until the window is full */
    m->ring[m->next] = q;
    m->next = (m->next + 1u == m->window) ? 0u : m->next + 1u;
    if (m->count < m->window) {
        ++m->count;
        if (m->count < m->window) {
            return -1;
        }
    }
    float avg = ((float)m->sum / (float)m->window) * (1.0f / 65536.0f);
    *mean = avg;
    return (avg < m->rho) ? 1 : 0;
}
