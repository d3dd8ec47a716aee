"""DEPTHWISE_CONV_2D: int8 activations, int8 symmetric per-channel weights, int32 bias.

The checks, padding and requantization are CONV_2D's (codegen.ops.conv.ConvBase); this module
owns the depthwise layout (filter [1, h, w, channels], output channel c * multiplier + m) and the
choice of depthwise kernel (firmware/kernels/qute_depthwise_conv.h):

- 3x3 filters with depth multiplier 1 (any stride, padding, dilation): qute_depthwise_conv2d_3x3_s8,
  which reads one weight stream laid out here (``pack_3x3``): per group of 4 channels the
  accumulator start values, the 9 taps as int16 pairs and the requantization words;
- everything else: qute_depthwise_conv2d_s8 with the filter as stored.
"""

from __future__ import annotations

import numpy as np

from codegen.ir import Graph, Op, Tensor
from codegen.ops import register
from codegen.ops.conv import ConvBase, wrap_int32
from codegen.quant import activation_range, conv_multipliers

GROUP_WORDS = 34  # QUTE_DW3X3_GROUP_WORDS
TAP_PAIRS = ((1, 2), (0, 4), (3, 5), (7, 8))  # taps (ky * 3 + kx) multiplied two at a time, in stream order
LONE_TAP = 6
RQ_FAST_SAT, RQ_FAST_CLAMP, RQ_EXACT = 0, 1, 2  # QUTE_DW_RQ_*
# one entry point per requantization mode, so a model links only the modes it uses
KERNELS_3X3 = {RQ_FAST_SAT: "qute_depthwise_conv2d_3x3_s8", RQ_FAST_CLAMP: "qute_depthwise_conv2d_3x3_clamp_s8",
               RQ_EXACT: "qute_depthwise_conv2d_3x3_exact_s8"}
FAST_SHIFTS = range(-22, 0)  # shifts the one-multiply-add requantization takes (see pack_3x3)


def group_channels(channels: int) -> list[list[int]]:
    """The channels of each group of 4 lanes (qute_depthwise_conv.h): 4g .. 4g+3, then the last
    4 channels when channels is not a multiple of 4, or every channel when there are fewer than 4
    (the lanes past them unused, marked -1)."""
    groups = [list(range(4 * g, 4 * g + 4)) for g in range(channels // 4)]
    if channels % 4:
        groups.append(list(range(channels - 4, channels)) if channels >= 4 else
                      list(range(channels)) + [-1] * (4 - channels))
    return groups


def requant_mode(filt: np.ndarray, acc_init: np.ndarray, mults, shifts, act_min: int, act_max: int) -> int:
    """RQ_FAST_* when every channel's requantization fits the fast form (pack_3x3), else RQ_EXACT."""
    taps = np.abs(filt.reshape(-1, filt.shape[-1]).astype(np.int64)).sum(axis=0)
    bound = np.abs(np.asarray(acc_init, np.int64)) + 128 * taps  # |accumulator| for any int8 input
    fast = all(int(m) == 0 or int(s) in FAST_SHIFTS for m, s in zip(mults, shifts)) and bool(np.all(bound < 2**30))
    if not fast:
        return RQ_EXACT
    return RQ_FAST_SAT if (act_min, act_max) == (-128, 127) else RQ_FAST_CLAMP


def pack_3x3(filt: np.ndarray, acc_init: np.ndarray, mults, shifts, output_zp: int, mode: int) -> np.ndarray:
    """The weight stream of qute_depthwise_conv2d_3x3_s8: filt [3, 3, channels] int8, acc_init,
    multipliers and shifts per channel -> int32 words, GROUP_WORDS per group.

    Fast requantization (RQ_FAST_*; requant_mode checks the conditions): the weights and acc_init
    are doubled, so the kernel's accumulator is x' = 2x for TFLM's accumulator x (no overflow:
    |x| < 2^30 for every int8 input). TFLM's result plus the output zero point is, for e = -shift
    in 1..22, floor(S / 2^(31+e)) with S = x*m + 2^30 + 2^(30+e) - (x < 0 ? 2^31 : 0) +
    zp*2^(31+e) (qute_requantize's sum, with the zero point as a multiple of the divisor), i.e.
    floor(2S / 2^(32+e)) where 2S = (k - (x < 0)) * 2^32 + x'*m + 2^31, k = 2^(e-1) + zp*2^e: SMMLAR's
    high word of k' * 2^32 + x'*m + 2^31, then an arithmetic shift by e. |x'*m| < 2^62 keeps that
    high word within 2^30 + 2^(e-1) + 128*2^e + 1 < 2^31 for e <= 22. A channel whose multiplier
    is 0 gives the zero point whatever its shift: it takes e = 1.
    Lane words: (m, k) per lane, then the four e. Exact requantization (RQ_EXACT): (m, shift)
    per lane, then four zeros.
    """
    channels = filt.shape[2]
    scale = 1 if mode == RQ_EXACT else 2
    taps = filt.reshape(9, channels).astype(np.int64) * scale
    groups = group_channels(channels)
    out = np.zeros((len(groups), GROUP_WORDS), np.int64)
    for g, lanes in enumerate(groups):
        for lane, c in enumerate(lanes):
            if c < 0:  # an unused lane: zero weights, requantized to the zero point
                m, sh, init, w = 0, -1, 0, np.zeros(9, np.int64)
            else:
                m, sh, init, w = int(mults[c]), int(shifts[c]), int(acc_init[c]) * scale, taps[:, c]
            out[g, lane] = init
            for j, (a, b) in enumerate(TAP_PAIRS):  # lane's word: tap a low, tap b high
                out[g, 4 + 4 * j + lane] = (int(w[a]) & 0xFFFF) | ((int(w[b]) & 0xFFFF) << 16)
            # the lone tap: (lane 0 | lane 2 << 16), (lane 1 | lane 3 << 16)
            out[g, 20 + (lane & 1)] |= (int(w[LONE_TAP]) & 0xFFFF) << (16 if lane >= 2 else 0)
            q = 22 + 2 * lane
            if mode == RQ_EXACT:
                out[g, q:q + 2] = (m, sh)
            else:
                e = 1 if m == 0 else -sh
                assert 1 <= e <= 22
                out[g, q:q + 2] = (m, (1 << (e - 1)) + output_zp * (1 << e))
                out[g, 30 + lane] = e
    return ((out + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32).reshape(-1)


@register
class DepthwiseConv2D(ConvBase):
    # v3 is int8 per-channel; the other versions differ in admitted types (hybrid, int16, int4),
    # which check() rejects.
    opcodes = {"DEPTHWISE_CONV_2D": (1, 2, 3, 4, 5, 6, 7)}
    header = "qute_depthwise_conv.h"
    quantized_dim = 3

    def _out_channels(self, w: Tensor) -> int:
        return w.shape[3]

    def _check_channels(self, op: Op, inp: Tensor, w: Tensor, oc: int) -> None:
        if w.shape[0] != 1:
            raise self._fail(op, f"the filter must be [1, h, w, channels], got {list(w.shape)}")
        ic = inp.shape[3]
        mult = int(op.options.get("DepthMultiplier", 0))
        # TFLM's kernel trusts the option (output channel = c * multiplier + m) and only
        # DCHECKs it against the shapes: a model where they disagree would run out of bounds.
        if mult < 1 or ic * mult != oc:
            raise self._fail(op, f"depth_multiplier {mult} does not match {ic} input and {oc} output channels")

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        w = g.tensor(op.inputs[1])
        geo = self._geometry(op, g)
        sums = w.data.reshape(-1, w.shape[3]).astype(np.int64).sum(axis=0)
        if int(op.options["DepthMultiplier"]) == 1 and (geo["filter_h"], geo["filter_w"]) == (3, 3):
            return self._emit_3x3(op, g, ctx, w, geo, sums)
        params = ctx.struct(
            op, "qute_depthwise_conv_params",
            batches=geo["batches"], input_h=geo["input_h"], input_w=geo["input_w"], input_c=geo["input_c"],
            filter_h=geo["filter_h"], filter_w=geo["filter_w"],
            depth_multiplier=int(op.options["DepthMultiplier"]),
            output_h=geo["output_h"], output_w=geo["output_w"], output_c=w.shape[3],
            stride_h=geo["stride_h"], stride_w=geo["stride_w"],
            dilation_h=geo["dilation_h"], dilation_w=geo["dilation_w"],
            pad_h=geo["pad_h"], pad_w=geo["pad_w"],
            **self._common(op, g, ctx, sums),
        )
        return [
            f"qute_depthwise_conv2d_s8(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.weights(op, 1)}, "
            f"{self._bias(op, ctx)}, {ctx.ptr(op.outputs[0])});"
        ]

    def _emit_3x3(self, op: Op, g: Graph, ctx, w: Tensor, geo: dict, sums: np.ndarray) -> list[str]:
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        channels = w.shape[3]
        mults, shifts = conv_multipliers(inp, w, out)
        if len(mults) == 1:  # a per-tensor filter scale applies to every output channel
            mults, shifts = mults * channels, shifts * channels
        in_offset = -inp.qparams()[1]
        out_zp = out.qparams()[1]
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        b = g.tensor(bias).data.reshape(-1).astype(np.int64) if bias >= 0 else np.zeros(channels, np.int64)
        acc_init = wrap_int32(b + in_offset * sums.astype(np.int64))
        lo, hi = activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)
        filt = w.data.reshape(3, 3, channels)
        mode = requant_mode(filt, acc_init, mults, shifts, lo, hi)
        packed = pack_3x3(filt, acc_init, mults, shifts, out_zp, mode)
        params = ctx.struct(
            op, "qute_dw_packed_params",
            batches=geo["batches"], input_h=geo["input_h"], input_w=geo["input_w"], channels=channels,
            output_h=geo["output_h"], output_w=geo["output_w"],
            stride_h=geo["stride_h"], stride_w=geo["stride_w"],
            dilation_h=geo["dilation_h"], dilation_w=geo["dilation_w"],
            pad_h=geo["pad_h"], pad_w=geo["pad_w"],
            input_zero_point=-in_offset, output_offset=out_zp, act_min=lo, act_max=hi,
            packed=ctx.packed_weights(op, 1, packed),
        )
        return [f"{KERNELS_3X3[mode]}(&{params}, {ctx.ptr(op.inputs[0])}, {ctx.ptr(op.outputs[0])});"]
