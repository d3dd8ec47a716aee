"""The generator on models TFLite Micro cannot run (``Graph.reference == "litert-ref"``): each op must
give LiteRT's reference kernels' bytes there, and TFLM's everywhere else.

How the two kernel sets compare on the ops the generator supports (hundreds of random quantizations
and inputs each, hand-built and converter-made; see ``Graph.reference``):
- they differ on RELU6, RELU (float32 vs double quotient of the scales), FULLY_CONNECTED (rounding)
  and LOGISTIC (LiteRT looks the output up in a table it fills in float32; TFLM computes a fixed-point
  logistic: 286 of 512,000 bytes differ over 2,000 input scales from 1e-5 to 30, mostly by 1, by 2-4
  next to the zero point at scales 4-5 and by 128 at the zero point from scale 16, where TFLM's
  input radius is 0 and every input saturates). The generator switches all
  four; RELU, RELU6 and FULLY_CONNECTED are tested in tests/test_dilated.py, LOGISTIC here.
- int8 SOFTMAX is the same computation in both (same multiplier, shift, diff_min, fixed-point exp
  and reciprocal): no variant, pinned here. The differences seen at classifiers' softmax outputs
  came from the FULLY_CONNECTED before it.
- ADD, MUL, MEAN, AVERAGE_POOL_2D, MAX_POOL_2D, QUANTIZE, DEQUANTIZE, CONCATENATION, PAD, CONV_2D and
  DEPTHWISE_CONV_2D agree; one model of all of them in LiteRT mode is pinned here.

A model is put in LiteRT mode the way the converter does it: one op whose stored output shape is
wrong (here a RELU stored as [1, 6] on a [1, 5] input), which codegen.fold notes.
"""

from __future__ import annotations

import numpy as np
import opmodels as om
import pytest
import test_codegen_conv as conv_tests
import test_codegen_elementwise as ew
import test_codegen_layout as layout_tests
import test_codegen_pool as pool_tests
from fbmodels import ModelBuilder, merge
from hostcheck import check

from codegen.emit import generate
from codegen.fold import fold
from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from qute import oracle
from qute.verify import model_inputs, verify


def _wrong_shape() -> bytes:
    """A RELU whose output is stored as [1, 6] (really [1, 5]): TFLM cannot run a model holding it."""
    m = ModelBuilder("wrong stored shape")
    x = m.input((1, 5), 0.1, 0, name="xr")
    y = m.output(m.tensor((1, 6), "int8", 0.1, 0, name="yr"))
    m.op("RELU", [x], [y])
    return m.build()


def _litert_mode(*models: bytes) -> bytes:
    data = merge([*models, _wrong_shape()])
    assert fold(read_model(data)).reference == "litert-ref"
    return data


def _differing(a: list[np.ndarray], b: list[np.ndarray]) -> list[int]:
    return [int(np.count_nonzero(np.asarray(x).reshape(-1) != np.asarray(y).reshape(-1))) for x, y in zip(a, b)]


# ---------------------------------------------------------------------------------------------
# LOGISTIC


def _logistic_configs() -> list[tuple[float, int, int]]:
    """(input scale, input zero point, output zero point): scales over 1e-5..30, half of them above 4
    where TFLM's fixed point and LiteRT's float32 table part most often; every zero point kind."""
    r = np.random.default_rng(17)
    configs = []
    for k in range(48):
        lo, hi = (-5.0, 1.5) if k % 2 else (0.6, 1.5)
        configs.append((float(np.float32(10 ** r.uniform(lo, hi))), ew.rzp(r),
                        -128 if k % 3 else int(r.integers(-128, 128))))
    return configs + [(16.0, 0, -128), (4.0, -128, -128), (2.0**-20, 127, 0), (30.0, 127, 127)]


def _logistic_model(configs, out_zero_point=None) -> bytes:
    m = ModelBuilder("logistic configurations")
    for i, (s_in, z_in, z_out) in enumerate(configs):
        x = m.input((1, 256), s_in, z_in, name=f"x{i}")
        y = m.output(m.tensor((1, 256), "int8", 1 / 256, z_out if out_zero_point is None else out_zero_point,
                              name=f"y{i}"))
        m.op("LOGISTIC", [x], [y])
    return m.build()


def test_logistic_follows_litert_where_tflm_cannot_run():
    """Every int8 input through each configuration, one build per mode: LiteRT's table in LiteRT mode
    (any output zero point: LiteRT's Prepare only checks the scale), TFLM's fixed point otherwise."""
    configs = _logistic_configs()
    every = [np.arange(-128, 128, dtype=np.int8)[None]] * len(configs)
    lit = _litert_mode(_logistic_model(configs))
    ours = build_host(read_model(lit)).run(every + [np.zeros((1, 1, 5), np.int8)])
    want = oracle.run_litert_ref(lit, every + [np.zeros((1, 5), np.int8)])
    assert not any(_differing(ours, want)), _differing(ours, want)

    # TFLM mode, the same inputs (TFLM needs output zero point -128): TFLM's bytes, which are not LiteRT's
    tfl = _logistic_model(configs, out_zero_point=-128)
    assert fold(read_model(tfl)).reference == "tflm"
    ours = build_host(read_model(tfl)).run(every)
    tflm = oracle.run_tflm(tfl, every)
    assert not any(_differing(ours, tflm)), _differing(ours, tflm)
    apart = _differing(tflm, oracle.run_litert_ref(tfl, every))
    assert sum(apart) >= 20 and sum(d > 0 for d in apart) >= 10, apart


def test_logistic_output_scale_litert_refuses():
    """LiteRT's LOGISTIC Prepare fails unless the output scale is 1/256; TFLM ignores the scale."""
    m = ModelBuilder()
    x = m.input((1, 8), 0.05, 3, name="x")
    y = m.output(m.tensor((1, 8), "int8", 0.01, -128, name="y"))
    m.op("LOGISTIC", [x], [y])
    plain = m.build()
    assert generate(read_model(plain)).reference == "tflm"
    with pytest.raises(CodegenError, match=r"LOGISTIC.*output scale 0\.01.*LiteRT.*1/256"):
        generate(read_model(_litert_mode(plain)))


# ---------------------------------------------------------------------------------------------
# SOFTMAX


def test_softmax_is_the_same_kernel_in_both():
    """Random depths, ranks, input scales and betas plus the multiplier edges: TFLM and LiteRT give the
    same bytes, and the generated C gives them in either mode."""
    family, labels = ew.family(31, 40, ew.softmax_model)
    models = [family] + [m for m, _ in ew.softmax_edge_models()]
    plain = merge(models)
    labels = labels + [lab for _, lab in ew.softmax_edge_models()]
    xs = ew.inputs_for(plain, 30, seed=2)
    tflm, lite = oracle.run_tflm(plain, xs), oracle.run_litert_ref(plain, xs)
    assert not any(_differing(tflm, lite)), {labels[k]: d for k, d in enumerate(_differing(tflm, lite)) if d}
    ours = build_host(read_model(plain)).run(xs)
    assert not any(_differing(ours, tflm))

    lit = _litert_mode(plain)
    xs_lit = xs + [np.zeros((len(xs[0]), 5), np.int8)]
    ours = build_host(read_model(lit)).run(xs_lit)
    want = oracle.run_litert_ref(lit, xs_lit)
    bad = {labels[k]: d for k, d in enumerate(_differing(ours[:-1], want[:-1])) if d}
    assert not bad, bad


# ---------------------------------------------------------------------------------------------
# Every other op family


def test_ops_that_agree_give_litert_bytes_in_litert_mode():
    """One model: ADD, MUL, RELU, RELU6, QUANTIZE, DEQUANTIZE->QUANTIZE, pools, MEAN, PAD, CONCATENATION,
    CONV_2D and DEPTHWISE_CONV_2D at random quantizations, in LiteRT mode, against LiteRT."""
    r = np.random.default_rng(2027)
    parts = [ew.binary_model(r, "ADD")[0] for _ in range(6)] + [ew.binary_model(r, "MUL")[0] for _ in range(6)]
    parts += [ew.unary_model(r, op)[0] for op in ("RELU", "RELU6", "QUANTIZE") for _ in range(4)]
    parts += [ew.dequant_quant_model(r)[0] for _ in range(4)]
    parts.append(pool_tests.pool_model([pool_tests.draw_pool(r) for _ in range(8)]))
    parts.append(pool_tests.mean_model([pool_tests.draw_mean(r) for _ in range(8)]))
    parts.append(layout_tests.pad_model([layout_tests.draw_pad(r) for _ in range(6)]))
    parts.append(layout_tests.concat_model([layout_tests.draw_concat(r) for _ in range(6)]))
    # LiteRT's CONV_2D needs a bias tensor (its Prepare fails without one; TFLM's does not)
    convs = [dict(conv_tests.draw(r, "conv"), bias=True) for _ in range(6)]
    convs += [dict(conv_tests.draw(r, "depthwise"), bias_slot=False) for _ in range(6)]
    parts.append(conv_tests.conv_model(convs))
    data = _litert_mode(*parts)
    res = check(data, n=20, seed=4, engine="litert-ref")
    assert res.which == "litert-ref" and res.total > 20_000 and res.mismatches == 0, res


# ---------------------------------------------------------------------------------------------
# A converter-made classifier TFLM cannot run


N_CLASSIFIER_INPUTS = 220


def test_dilated_classifier_is_bit_exact_with_the_reference():
    """Keras Conv2D(dilation 2-3, unknown batch) -> Flatten -> Dense -> softmax or sigmoid, as the
    converter makes it (SPACE_TO_BATCH_ND, CONV_2D, BATCH_TO_SPACE_ND with wrong stored shapes): 0
    differing bytes against qute.oracle.reference, which is LiteRT's reference kernels here."""
    models = om.random_models("dilated_classifier", 8, seed=5)
    heads = {m.config["head"] for m in models}
    assert heads == {"softmax", "sigmoid"}, heads
    data = merge([m.tflite for m in models])
    ops = set(om.op_codes(data))
    assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "FULLY_CONNECTED", "SOFTMAX", "LOGISTIC"} <= ops, ops
    assert generate(read_model(data)).reference == "litert-ref"
    res = verify(data, model_inputs(data, N_CLASSIFIER_INPUTS, seed=9))
    assert res.reference == "litert-ref" and res.shape_notes, res.summary()
    assert res.samples == N_CLASSIFIER_INPUTS and res.mismatches == 0, (res.per_output, res.summary())
