/* Walking two inputs against one output under numpy-style broadcasting.
 *
 * The code generator collapses the shapes beforehand (adjacent dimensions with the same
 * broadcast pattern merge into one), so an elementwise op on equal shapes is one dimension with
 * strides 1 and 1, a tensor-plus-scalar op is one dimension with strides 1 and 0, and a
 * [N,H,W,C] + [C] bias-like op is two dimensions. The output is written contiguously, one
 * innermost-dimension row at a time.
 */
#ifndef QUTE_BROADCAST_H
#define QUTE_BROADCAST_H

#include <stdint.h>

#define QUTE_BROADCAST_MAX_DIMS 6

typedef struct {
    int32_t ndims;                             /* 1..QUTE_BROADCAST_MAX_DIMS */
    int32_t dims[QUTE_BROADCAST_MAX_DIMS];     /* output extents, outermost first */
    int32_t stride1[QUTE_BROADCAST_MAX_DIMS];  /* input 1 element strides; 0 where broadcast */
    int32_t stride2[QUTE_BROADCAST_MAX_DIMS];  /* input 2 element strides; 0 where broadcast */
} qute_broadcast;

typedef struct {
    int32_t index[QUTE_BROADCAST_MAX_DIMS];
    int32_t offset1; /* element offsets of the current row's first element */
    int32_t offset2;
} qute_broadcast_iter;

static inline void qute_broadcast_begin(qute_broadcast_iter *it)
{
    for (int d = 0; d < QUTE_BROADCAST_MAX_DIMS; ++d) {
        it->index[d] = 0;
    }
    it->offset1 = 0;
    it->offset2 = 0;
}

/* Rows: the output is walked one innermost-dimension row at a time. */
static inline int32_t qute_broadcast_rows(const qute_broadcast *b)
{
    int32_t n = 1;
    for (int d = 0; d < b->ndims - 1; ++d) {
        n *= b->dims[d];
    }
    return n;
}

/* Moves to the next row (row-major order over all but the innermost dimension). */
static inline void qute_broadcast_next_row(const qute_broadcast *b, qute_broadcast_iter *it)
{
    for (int d = b->ndims - 2; d >= 0; --d) {
        it->offset1 += b->stride1[d];
        it->offset2 += b->stride2[d];
        if (++it->index[d] < b->dims[d]) {
            return;
        }
        it->offset1 -= b->stride1[d] * b->dims[d];
        it->offset2 -= b->stride2[d] * b->dims[d];
        it->index[d] = 0;
    }
}

#endif
