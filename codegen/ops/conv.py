"""CONV_2D and DEPTHWISE_CONV_2D: int8 activations, int8 symmetric (per-channel) weights, int32 bias.

Everything TFLM's Prepare computes is computed here, the same way: the padding
(ComputePaddingHeightWidth), the per-channel multipliers (PopulateConvolutionQuantizationParams,
a per-tensor filter scale broadcast to every output channel) and the fused activation's clamp.
On top of that, each output channel's ``acc_init = bias + input_offset * sum(filter)`` lets the
kernels skip the input offset wherever the filter window lies wholly inside the input.
"""

from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.ops import check_dtypes, register
from codegen.pack import gemm_struct, words_per_row
from codegen.quant import activation_range, conv_multipliers

PADDINGS = ("SAME", "VALID")
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def out_size(padding: str, size: int, taps: int, stride: int, dilation: int) -> int:
    """TFLM's ComputeOutSize (C integer division: operands are non-negative except a too-big VALID filter)."""
    effective = (taps - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    n = size + stride - effective
    return n // stride if n >= 0 else -((-n) // stride)


def pad_before(size: int, taps: int, stride: int, dilation: int, out: int) -> int:
    """TFLM's ComputePaddingWithOffset: the top/left padding (the odd extra row goes after)."""
    effective = (taps - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2


def wrap_int32(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.int64)
    return (((v + (1 << 31)) % (1 << 32)) - (1 << 31)).astype(np.int32)


class ConvBase:
    quantized_dim = 0

    def _fail(self, op: Op, what: str) -> CodegenError:
        return CodegenError(f"{op.describe()}: {what}")

    def _out_channels(self, w: Tensor) -> int:
        raise NotImplementedError

    def check(self, op: Op, g: Graph) -> None:
        if len(op.inputs) not in (2, 3) or len(op.outputs) != 1:
            raise self._fail(op, f"expected 2 or 3 inputs and 1 output, got {len(op.inputs)} and {len(op.outputs)}")
        check_dtypes(op, g, inputs=[0])
        inp, w, out = g.tensor(op.inputs[0]), g.tensor(op.inputs[1]), g.tensor(op.outputs[0])
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise self._fail(op, f"input and output must be 4-D (NHWC); got {list(inp.shape)} and {list(out.shape)}")
        if not w.is_const or w.dtype != "int8" or len(w.shape) != 4:
            raise self._fail(op, f"the filter must be a constant 4-D int8 tensor (got {w.dtype} {list(w.shape)}"
                                 f"{'' if w.is_const else ', not constant'}); supported: int8 per-channel symmetric weights")
        for t in (inp, out):
            if t.scale is None or len(t.scale) != 1:
                raise self._fail(op, f"tensor {t.index} ({t.name}) must have one scale and zero point (per-tensor)")
        oc = self._out_channels(w)
        if w.scale is None or len(w.scale) not in (1, oc):
            raise self._fail(op, f"the filter needs 1 or {oc} scales, has {0 if w.scale is None else len(w.scale)}")
        if len(w.scale) > 1 and w.quantized_dim != self.quantized_dim:
            raise self._fail(op, f"the filter is quantized along dimension {w.quantized_dim}; "
                                 f"supported: per-channel along dimension {self.quantized_dim} (output channels)")
        if np.any(w.zero_point != 0):
            raise self._fail(op, "the filter must be symmetric (zero point 0)")
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        if bias >= 0:
            b = g.tensor(bias)
            if not b.is_const or b.dtype != "int32" or b.size != oc:
                raise self._fail(op, f"the bias must be a constant int32 tensor of {oc} values "
                                     f"(got {b.dtype} {list(b.shape)}{'' if b.is_const else ', not constant'})")
        opts = op.options
        if opts.get("Padding") not in PADDINGS:
            raise self._fail(op, f"padding {opts.get('Padding')} is not supported; supported: {', '.join(PADDINGS)}")
        act = opts.get("FusedActivationFunction", "NONE")
        if act not in ACTIVATIONS:
            raise self._fail(op, f"fused activation {act} is not supported; supported: {', '.join(ACTIVATIONS)}")
        activation_range(act, out, op)  # TFLM refuses a clamp bound that overflows int32
        for key in ("StrideH", "StrideW", "DilationHFactor", "DilationWFactor"):
            if int(opts.get(key, 1)) < 1:
                raise self._fail(op, f"{key} = {opts.get(key)}; supported: integers >= 1")
        if inp.shape[0] != out.shape[0]:
            raise self._fail(op, f"input batch {inp.shape[0]} and output batch {out.shape[0]} differ")
        if out.shape[3] != oc:
            raise self._fail(op, f"the output has {out.shape[3]} channels, the filter {oc}")
        geo = self._geometry(op, g)
        if (geo["output_h"], geo["output_w"]) != (out.shape[1], out.shape[2]):
            raise self._fail(op, f"output {out.shape[1]}x{out.shape[2]} does not match the {opts['Padding']} padding "
                                 f"arithmetic ({geo['output_h']}x{geo['output_w']})")
        if geo["output_h"] < 1 or geo["output_w"] < 1:
            raise self._fail(op, "the filter window is larger than the (VALID-padded) input")
        self._check_channels(op, inp, w, oc)

    def _check_channels(self, op: Op, inp: Tensor, w: Tensor, oc: int) -> None:
        raise NotImplementedError

    def _geometry(self, op: Op, g: Graph) -> dict:
        inp, w = g.tensor(op.inputs[0]), g.tensor(op.inputs[1])
        o = op.options
        sh, sw = int(o.get("StrideH", 1)), int(o.get("StrideW", 1))
        dh, dw = int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))
        kh, kw = w.shape[1], w.shape[2]
        ih, iw = inp.shape[1], inp.shape[2]
        oh = out_size(o["Padding"], ih, kh, sh, dh)
        ow = out_size(o["Padding"], iw, kw, sw, dw)
        return dict(
            batches=inp.shape[0], input_h=ih, input_w=iw, input_c=inp.shape[3], filter_h=kh, filter_w=kw,
            output_h=oh, output_w=ow, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw,
            pad_h=pad_before(ih, kh, sh, dh, oh), pad_w=pad_before(iw, kw, sw, dw, ow),
        )

    def _common(self, op: Op, g: Graph, ctx, filter_sums: np.ndarray) -> dict:
        inp, w, out = g.tensor(op.inputs[0]), g.tensor(op.inputs[1]), g.tensor(op.outputs[0])
        oc = self._out_channels(w)
        mults, shifts = conv_multipliers(inp, w, out)
        if len(mults) == 1:  # a per-tensor filter scale applies to every output channel
            mults, shifts = mults * oc, shifts * oc
        in_offset = -inp.qparams()[1]
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        b = g.tensor(bias).data.reshape(-1).astype(np.int64) if bias >= 0 else np.zeros(oc, np.int64)
        lo, hi = activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)
        return dict(
            input_offset=in_offset,
            output_offset=out.qparams()[1],
            act_min=lo,
            act_max=hi,
            multiplier=ctx.array(op, "multiplier", np.array(mults, np.int32)),
            shift=ctx.array(op, "shift", np.array(shifts, np.int32)),
            acc_init=ctx.array(op, "acc_init", wrap_int32(b + in_offset * filter_sums.astype(np.int64))),
        )

    def _bias(self, op: Op, ctx) -> str:
        return ctx.weights(op, 2) if len(op.inputs) > 2 and op.inputs[2] >= 0 else "NULL"


@register
class Conv2D(ConvBase):
    # Versions 1-8 differ in the types they admit (int8 is v3, grouped v6, int4 filters v7, int16
    # activations v4/v8); check() accepts int8 activations and int8 filters only.
    opcodes = {"CONV_2D": (1, 2, 3, 4, 5, 6, 7, 8)}
    header = "qute_conv.h"
    quantized_dim = 0

    def _out_channels(self, w: Tensor) -> int:
        return w.shape[0]

    def _check_channels(self, op: Op, inp: Tensor, w: Tensor, oc: int) -> None:
        ic, fc = inp.shape[3], w.shape[3]
        if fc < 1 or ic % fc != 0:
            raise self._fail(op, f"input channels {ic} are not a multiple of the filter's {fc}")
        groups = ic // fc
        if oc % groups != 0:
            raise self._fail(op, f"grouped convolution: {oc} output channels do not split into {groups} groups")

    def _kernel(self, op: Op, g: Graph) -> str:
        """The variant for this op's shape class (see firmware/kernels/qute_conv.h)."""
        inp, w = g.tensor(op.inputs[0]), g.tensor(op.inputs[1])
        if inp.shape[3] != w.shape[3]:
            return "qute_conv2d_grouped_s8"
        geo = self._geometry(op, g)
        if (geo["filter_h"], geo["filter_w"], geo["pad_h"], geo["pad_w"]) == (1, 1, 0, 0) and inp.shape[3] % 4 == 0:
            return "qute_conv2d_1x1_s8"
        return "qute_conv2d_s8"

    def scratch_bytes(self, op: Op, g: Graph) -> int:
        """qute_conv.h: the product's widened rows (both one-group kernels), after two im2col rows
        (qute_conv2d_s8)."""
        kernel = self._kernel(op, g)
        if kernel == "qute_conv2d_grouped_s8":
            return 0
        w = g.tensor(op.inputs[1])
        k4 = words_per_row(w.shape[1] * w.shape[2] * w.shape[3])
        return 16 * k4 + (2 * 4 * k4 if kernel == "qute_conv2d_s8" else 0)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        inp, w, out = g.tensor(op.inputs[0]), g.tensor(op.inputs[1]), g.tensor(op.outputs[0])
        geo = self._geometry(op, g)
        kernel = self._kernel(op, g)
        rows = w.data.reshape(w.shape[0], -1)
        oc = w.shape[0]
        mults, shifts = conv_multipliers(inp, w, out)
        in_offset = -inp.qparams()[1]
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        b = g.tensor(bias).data.reshape(-1).astype(np.int64) if bias >= 0 else np.zeros(oc, np.int64)
        acc_init = wrap_int32(b + in_offset * rows.astype(np.int64).sum(axis=1))
        lo, hi = activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)
        grouped = kernel == "qute_conv2d_grouped_s8"
        if grouped:  # the grouped kernel indexes the multipliers per channel
            mults, shifts = list(mults) * (oc // len(mults)), list(shifts) * (oc // len(shifts))
        # the grouped kernel reads the filter as stored
        gemm = gemm_struct(ctx, op, rows, acc_init, mults, shifts, out.qparams()[1], lo, hi, packed=not grouped)
        params = ctx.struct(
            op, "qute_conv_params",
            batches=geo["batches"], input_h=geo["input_h"], input_w=geo["input_w"], input_c=geo["input_c"],
            filter_h=geo["filter_h"], filter_w=geo["filter_w"], filter_c=w.shape[3],
            output_h=geo["output_h"], output_w=geo["output_w"], output_c=oc,
            stride_h=geo["stride_h"], stride_w=geo["stride_w"],
            dilation_h=geo["dilation_h"], dilation_w=geo["dilation_w"],
            pad_h=geo["pad_h"], pad_w=geo["pad_w"], input_offset=in_offset, gemm=gemm,
        )
        src, dst = ctx.ptr(op.inputs[0]), ctx.ptr(op.outputs[0])
        if ctx.weights16 and not grouped:
            kernel = kernel.replace("_s8", "_w16_s8")
        if grouped:
            return [f"{kernel}(&{params}, {src}, {ctx.weights(op, 1)}, {self._bias(op, ctx)}, {dst});"]
        if kernel.startswith("qute_conv2d_1x1_"):
            return [f"{kernel}(&{params}, {src}, (uint32_t *){ctx.scratch(op)}, {dst});"]
        return [f"{kernel}(&{params}, {src}, (int8_t *){ctx.scratch(op)}, {dst});"]
