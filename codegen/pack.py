"""Compile-time layouts of constant data for the kernels that read it in a layout of their own.

The matrix-product kernels (firmware/kernels/qute_gemm.h: CONV_2D and FULLY_CONNECTED) read
their filter as words of four int8 values, two output channels interleaved word by word, so one
load of a channel pair lines up with one word of input and the SIMD loop needs no shuffle; or,
in the int16 layout (twice the bytes), the same words already split into int16 lanes.
"""

from __future__ import annotations

import numpy as np

from codegen.quant import multiply_by_quantized_multiplier, precomputed_requant


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


def split_pairs(words: np.ndarray) -> np.ndarray:
    """pack_pairs' words -> the int16 layout (qute_gemm.h): each word becomes two, its bytes 0 and 2
    as int16 lanes (low lane first), then its bytes 1 and 3, as the SIMD loops' sxtb16 splits it."""
    b = np.asarray(words, "<i4").view(np.int8).reshape(-1, 4).astype(np.int32)
    even = (b[:, 0] & 0xFFFF) | (b[:, 2] << 16)
    odd = (b[:, 1] & 0xFFFF) | (b[:, 3] << 16)
    return np.stack([even, odd], axis=1).reshape(-1).astype(np.uint32).view(np.int32)


def _fast_requant(rows: np.ndarray, acc_init, mults: np.ndarray, shifts: np.ndarray, output_offset: int):
    """qute_gemm.h's rq.fast words (codegen.quant.precomputed_requant, one entry per channel), or
    None when some channel's reachable accumulator would overflow the form.

    A channel whose filter is all zeros has one output whatever the input: its words give that
    constant (multiplier 0, e = 1), however large its e; so has a channel whose multiplier is 0
    (a scale too small for TFLite's QuantizeMultiplier, which then gives shift 0).
    """
    rows = np.asarray(rows, np.int64)
    acc_init = np.asarray(acc_init, np.int64)
    reach = np.abs(acc_init) + 128 * np.abs(rows).sum(axis=1)
    words = []
    for c in range(len(rows)):
        i = c if len(mults) > 1 else 0  # one multiplier and shift for all channels, or one each
        m, shift = int(mults[i]), int(shifts[i])
        if not rows[c].any() or m == 0:
            value = multiply_by_quantized_multiplier(int(acc_init[c]), m, shift) + int(output_offset)
            entry = precomputed_requant(0, -1, value, 0)  # x * 0 + base: high word = value, e = 1
        else:
            entry = precomputed_requant(m, shift, int(output_offset), int(reach[c]))
        if entry is None:
            return None
        words.append(entry)
    return ((np.array(words, np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def gemm_struct(ctx, op, rows: np.ndarray, acc_init: np.ndarray, multipliers, shifts, output_offset: int,
                act_min: int, act_max: int, single_rounding: bool = False, packed: bool = True) -> str:
    """A qute_gemm_params initializer for `op`: packed filter (in the int16 layout when
    ctx.weights16), acc_init and requantization arrays declared through ctx. One multiplier and
    shift for all channels stays one (per_channel = 0). packed=False: no packed filter (a kernel
    that reads the filter as stored uses the rest)."""
    words = "NULL"
    if packed:
        pairs = pack_pairs(rows)
        words = ctx.packed_weights(op, 1, split_pairs(pairs) if ctx.weights16 else pairs)
    mults = np.asarray(multipliers, np.int32)
    shifts = np.asarray(shifts, np.int32)
    fast = "NULL"
    if not single_rounding and np.all(((shifts <= -1) & (shifts >= -31)) | (mults == 0)):
        table = _fast_requant(rows, acc_init, mults, shifts, output_offset)
        if table is not None:
            fast = ctx.array(op, "requant", table)
    return (
        "{ "
        f".k4 = {words_per_row(rows.shape[1]) if packed else 0}, .channels = {rows.shape[0]}, "
        f".weights = (const uint32_t *){words}, .acc_init = {ctx.array(op, 'acc_init', np.asarray(acc_init, np.int32))}, "
        f".rq = {{ .multiplier = {ctx.array(op, 'multiplier', mults)}, "
        f".shift = {ctx.array(op, 'shift', shifts)}, .per_channel = {int(len(mults) > 1)}, "
        f".output_offset = {int(output_offset)}, .act_min = {int(act_min)}, .act_max = {int(act_max)}, "
        f".single_rounding = {int(single_rounding)}, .fast = {fast} }} }}"
    )
