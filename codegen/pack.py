"""Compile-time layouts of constant data for the kernels that read it in a layout of their own.

The matrix-product kernels (firmware/kernels/qute_gemm.h: CONV_2D and FULLY_CONNECTED) read
their filter as words of four int8 values, two output channels interleaved word by word, so one
load of a channel pair lines up with one word of input and the SIMD loop needs no shuffle.
"""

from __future__ import annotations

import numpy as np


def words_per_row(depth: int) -> int:
    return -(-depth // 4)


def pack_pairs(rows: np.ndarray) -> np.ndarray:
    """(channels, depth) int8 filter rows -> the int32 words qute_gemm.h documents.

    Each row is padded with zeros to whole words; channels 2j and 2j+1 alternate word by word; an
    odd last channel keeps its words in order. The words hold the bytes in memory order on a
    little-endian target (every Cortex-M and the host we build on).
    """
    rows = np.asarray(rows, np.int8)
    n, depth = rows.shape
    k4 = words_per_row(depth)
    padded = np.zeros((n, 4 * k4), np.int8)
    padded[:, :depth] = rows
    words = padded.view("<i4").reshape(n, k4)
    pairs = n // 2
    interleaved = words[: 2 * pairs].reshape(pairs, 2, k4).transpose(0, 2, 1).reshape(-1)
    return np.concatenate([interleaved, words[2 * pairs :].reshape(-1)]).astype(np.int32)


def unpack_pairs(words: np.ndarray, channels: int, depth: int) -> np.ndarray:
    """The inverse of pack_pairs (for tests and reports)."""
    k4 = words_per_row(depth)
    words = np.asarray(words, "<i4")
    pairs = channels // 2
    body = words[: 2 * pairs * k4].reshape(pairs, k4, 2).transpose(0, 2, 1).reshape(2 * pairs, k4)
    rows = np.concatenate([body, words[2 * pairs * k4 :].reshape(-1, k4)]) if channels % 2 else body
    return np.ascontiguousarray(rows.reshape(channels, k4)).view(np.int8).reshape(channels, 4 * k4)[:, :depth]


def gemm_struct(ctx, op, rows: np.ndarray, acc_init: np.ndarray, multipliers, shifts, output_offset: int,
                act_min: int, act_max: int, single_rounding: bool = False, packed: bool = True) -> str:
    """A qute_gemm_params initializer for `op`: packed filter, acc_init and requantization arrays
    declared through ctx. One multiplier and shift for all channels stays one (per_channel = 0).
    packed=False: no packed filter (a kernel that reads the filter as stored uses the rest)."""
    words = ctx.packed_weights(op, 1, pack_pairs(rows)) if packed else "NULL"
    mults = np.asarray(multipliers, np.int32)
    shifts = np.asarray(shifts, np.int32)
    fast = "NULL"
    if not single_rounding and np.all((shifts <= -1) & (shifts >= -31)):
        e = -shifts.astype(np.int64)
        base = (1 << 30) + (np.int64(1) << (30 + e))
        table = np.stack([mults.astype(np.int64), base & 0xFFFFFFFF, base >> 32, e - 1], axis=1)
        fast = ctx.array(op, "requant", ((table + 2**31) % 2**32 - 2**31).astype(np.int32))
    return (
        "{ "
        f".k4 = {words_per_row(rows.shape[1]) if packed else 0}, .channels = {rows.shape[0]}, "
        f".weights = (const uint32_t *){words}, .acc_init = {ctx.array(op, 'acc_init', np.asarray(acc_init, np.int32))}, "
        f".rq = {{ .multiplier = {ctx.array(op, 'multiplier', mults)}, "
        f".shift = {ctx.array(op, 'shift', shifts)}, .per_channel = {int(len(mults) > 1)}, "
        f".output_offset = {int(output_offset)}, .act_min = {int(act_min)}, .act_max = {int(act_max)}, "
        f".single_rounding = {int(single_rounding)}, .fast = {fast} }} }}"
    )
