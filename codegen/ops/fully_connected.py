from __future__ import annotations

import numpy as np

from codegen.ir import CodegenError, Graph, Op
from codegen.ops import check_dtypes, register
from codegen.pack import gemm_struct, words_per_row
from codegen.quant import activation_range, f32, quantize_multiplier


@register
class FullyConnected:
    opcodes = {"FULLY_CONNECTED": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)}
    header = "qute_fully_connected.h"

    def check(self, op: Op, g: Graph) -> None:
        check_dtypes(op, g, inputs=[0])
        w = g.tensor(op.inputs[1])
        if not w.is_const or w.dtype != "int8" or len(w.shape) != 2:
            raise CodegenError(f"{op.describe()}: weights must be a constant 2-D int8 tensor")
        if w.zero_point is not None and np.any(w.zero_point != 0):
            raise CodegenError(f"{op.describe()}: weights must be symmetric (zero point 0)")
        if op.options.get("WeightsFormat", 0) != 0:
            raise CodegenError(f"{op.describe()}: only the default weights format is supported")
        inp, out = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        for t in (inp, out):
            if t.scale is None or len(t.scale) != 1:
                raise CodegenError(f"{op.describe()}: tensor {t.index} ({t.name}) must have one scale and zero point")
        depth, units = w.shape[1], w.shape[0]
        if depth < 1 or units < 1:
            raise CodegenError(f"{op.describe()}: the weights' shape {list(w.shape)} has an empty dimension")
        if w.scale is None or len(w.scale) not in (1, units):
            raise CodegenError(f"{op.describe()}: the weights need 1 or {units} scales, "
                               f"have {0 if w.scale is None else len(w.scale)}")
        if len(w.scale) > 1 and w.quantized_dim != 0:
            raise CodegenError(f"{op.describe()}: the weights are quantized along dimension {w.quantized_dim}; "
                               "supported: per-channel along dimension 0 (output units)")
        if inp.size % depth:
            raise CodegenError(f"{op.describe()}: the input's {inp.size} values are not rows of {depth}")
        # the kernel writes batches x units values: a smaller output would be written past its end
        if out.size != inp.size // depth * units:
            raise CodegenError(f"{op.describe()}: the output has {out.size} values; {inp.size // depth} rows of "
                               f"{units} units make {inp.size // depth * units}")
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = g.tensor(op.inputs[2])
            if not b.is_const or b.dtype != "int32" or b.size != units:
                raise CodegenError(f"{op.describe()}: the bias must be a constant int32 tensor of {units} values "
                                   f"(got {b.dtype} {list(b.shape)}{'' if b.is_const else ', not constant'})")
        activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        inp, w, out = g.tensor(op.inputs[0]), g.tensor(op.inputs[1]), g.tensor(op.outputs[0])
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        depth = w.shape[1]
        # TFLM's GetQuantizedConvolutionMultipler: a double product of the float32 scales
        in_scale = float(f32(inp.qparams()[0]))
        out_scale = float(f32(out.qparams()[0]))
        mults, shifts = zip(*(quantize_multiplier(in_scale * float(f32(s)) / out_scale) for s in w.scale))
        # LiteRT's int8 FULLY_CONNECTED (through ruy) rounds once where TFLM rounds twice: followed
        # only where LiteRT is the reference (codegen.ir.Graph.reference)
        single = g.reference == "litert-ref"
        if single and max(shifts) > 30:
            raise CodegenError(f"{op.describe()}: a requantization factor of 2^{max(shifts)} or more; "
                               "LiteRT's single-rounding FULLY_CONNECTED supports up to 2^30")
        lo, hi = activation_range(op.options.get("FusedActivationFunction", "NONE"), out, op)
        # bias + input_offset * sum(w), wrapped to int32 as the kernel's accumulator would be
        acc_init = -inp.qparams()[1] * w.data.astype(np.int64).sum(axis=1)
        if bias >= 0:
            acc_init += g.tensor(bias).data.astype(np.int64).reshape(-1)
        acc_init = ((acc_init + 2**31) % 2**32 - 2**31).astype(np.int32)
        gemm = gemm_struct(ctx, op, w.data, acc_init, mults, shifts, out.qparams()[1], lo, hi, single_rounding=single)
        params = ctx.struct(op, "qute_fc_params", batches=inp.size // depth, accum_depth=depth, gemm=gemm)
        scratch = f"(int8_t *){ctx.scratch(op)}" if self.scratch_bytes(op, g) else "NULL"
        kernel = "qute_fully_connected_w16_s8" if ctx.weights16 else "qute_fully_connected_s8"
        return [f"{kernel}(&{params}, {ctx.ptr(op.inputs[0])}, {scratch}, {ctx.ptr(op.outputs[0])});"]

    def scratch_bytes(self, op: Op, g: Graph) -> int:
        """Rows whose length is not whole words are copied, zero-padded, into one word-padded row."""
        depth = g.tensor(op.inputs[1]).shape[1]
        return 0 if depth % 4 == 0 else 4 * words_per_row(depth)
