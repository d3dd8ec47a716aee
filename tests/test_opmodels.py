"""The op-model factory (tests/opmodels.py) and the reference oracle (qute/oracle.py).

Pins what TF 2.21's converter emits for each builder and how the TFLM oracle behaves on it, so a
change of TensorFlow or tflite-micro that moves either shows up here rather than as a mysterious
code-generator mismatch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import opmodels as om
import pytest

from qute import oracle

N_PER_BUILDER = 4
SEED = 20261101

# builders whose dilated conv the converter lowers to SPACE_TO_BATCH_ND/conv/BATCH_TO_SPACE_ND with
# wrong stored shapes: TFLM cannot be the oracle there
STB_BUILDERS = {"conv2d_dilated_same", "conv2d_dilated_valid", "depthwise_conv2d_dilated_same",
                "depthwise_conv2d_dilated_valid", "conv1d_dilated", "dilated_classifier"}
MLPERF = sorted((Path(__file__).resolve().parents[2] / "shared" / "models").glob("*.tflite"))


@functools.lru_cache(maxsize=None)
def models(name: str) -> tuple[om.OpModel, ...]:
    return tuple(om.random_models(name, N_PER_BUILDER, SEED))


@pytest.mark.parametrize("name", sorted(om.BUILDERS))
def test_builder_emits_its_ops_with_int8_io(name):
    for m in models(name):
        ops = om.op_codes(m.tflite)
        assert om.EMITS[name] <= set(ops), (ops, m)
        assert set(ops) <= om.ALLOWED[name], (ops, m)
        ins, outs = om.io_details(m.tflite)
        assert ins and outs
        for t in ins + outs:
            assert t["dtype"] == "int8", (t, m)
            assert len(t["scales"]) == 1 and len(t["zero_points"]) == 1, (t, m)
            assert t["shape"][0] == 1


def test_builders_are_reproducible():
    a = om.random_models("add", 2, seed=7)
    b = om.random_models("add", 2, seed=7)
    assert [m.config for m in a] == [m.config for m in b]
    assert [m.tflite for m in a] == [m.tflite for m in b]
    assert a[0].config != a[1].config
    # a recorded configuration replays to the same model
    assert om.make("add", a[0].config).tflite == a[0].tflite
    # overrides pin parts of a drawn configuration
    m = om.BUILDERS["conv2d"](3, padding="same", activation="relu6", strides=[1, 1], dilation=[1, 1])
    assert m.config["padding"] == "same" and m.config["activation"] == "relu6"
    (conv,) = om.operators(m.tflite)
    assert conv["options"]["Padding"] == _fb_enum("Padding", "SAME")
    assert conv["options"]["FusedActivationFunction"] == _fb_enum("ActivationFunctionType", "RELU6")


def _fb_enum(enum: str, name: str) -> int:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return getattr(getattr(fb, enum), name)


def test_conversion_without_cache_matches_cache(monkeypatch, tmp_path):
    """A cold conversion (own cache dir) gives the cached bytes: configs fully determine the model."""
    cached = om.random_models("relu", 1, seed=11)[0]
    monkeypatch.setenv("QUTE_OPMODELS_CACHE", str(tmp_path))
    fresh = om.make("relu", cached.config)
    assert fresh.tflite == cached.tflite
    assert len(list(tmp_path.glob("relu-*.tflite"))) == 1
    monkeypatch.setenv("QUTE_OPMODELS_CACHE", "off")
    assert om.cache_dir() is None


@pytest.mark.parametrize("name", [n for n in sorted(om.BUILDERS)
                                  if om.EMITS[n] & {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}])
def test_weights_are_per_channel(name):
    """Converter default: CONV_2D, DEPTHWISE_CONV_2D and (TF 2.21) FULLY_CONNECTED are per-channel."""
    for m in models(name):
        for op in om.operators(m.tflite):
            if op["op"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                continue
            x, w = op["inputs"][0], op["inputs"][1]
            bias = op["inputs"][2] if len(op["inputs"]) > 2 else None
            assert w["const"] and w["dtype"] == "int8"
            qdim = 3 if op["op"] == "DEPTHWISE_CONV_2D" else 0
            n_out = w["shape"][qdim]
            assert w["quantized_dimension"] == qdim
            assert len(w["scales"]) == n_out > 0, (op["op"], w, m)
            assert not w["zero_points"].any()
            assert (w["scales"] > 0).all()
            if bias is not None:
                assert bias["dtype"] == "int32" and len(bias["scales"]) == n_out
                np.testing.assert_allclose(bias["scales"], x["scales"][0] * w["scales"], rtol=1e-5)


def test_conv_options_cover_the_variety():
    seen = {"stride>1": False, "dilation>1": False, "SAME": False, "VALID": False, "no bias": False,
            "relu": False, "relu6": False, "mult>1": False}
    ms = om.random_models("conv2d", 12, seed=1) + om.random_models("depthwise_conv2d", 12, seed=1)
    for m in ms:
        (op,) = om.operators(m.tflite)
        o = op["options"]
        seen["stride>1"] |= max(o["StrideH"], o["StrideW"]) > 1
        seen["dilation>1"] |= max(o["DilationHFactor"], o["DilationWFactor"]) > 1
        seen["SAME"] |= o["Padding"] == _fb_enum("Padding", "SAME")
        seen["VALID"] |= o["Padding"] == _fb_enum("Padding", "VALID")
        seen["no bias"] |= not m.config["use_bias"]
        seen["relu"] |= o["FusedActivationFunction"] == _fb_enum("ActivationFunctionType", "RELU")
        seen["relu6"] |= o["FusedActivationFunction"] == _fb_enum("ActivationFunctionType", "RELU6")
        seen["mult>1"] |= o.get("DepthMultiplier", 1) > 1
        # dilation of a plain conv builder is the native dilation factor (static batch), not SPACE_TO_BATCH
        assert [o["DilationHFactor"], o["DilationWFactor"]] == m.config["dilation"]
        assert [o["StrideH"], o["StrideW"]] == m.config["strides"]
    assert all(seen.values()), seen


def test_fully_connected_rank3_keeps_num_dims():
    for m in models("fully_connected_rank3"):
        (op,) = om.operators(m.tflite)
        assert op["options"]["KeepNumDims"]
        assert len(op["outputs"][0]["shape"]) == 3
    for m in models("fully_connected"):
        (op,) = om.operators(m.tflite)
        assert not op["options"]["KeepNumDims"]
        # Dense without bias: the bias input is absent (-1), unlike convs, which always get one
        assert (len(op["inputs"]) > 2 and op["inputs"][2] is not None) == m.config["use_bias"]


def test_quantize_is_int8_to_int8_requantize():
    for m in models("quantize"):
        (q,) = [op for op in om.operators(m.tflite) if op["op"] == "QUANTIZE"]
        i, o = q["inputs"][0], q["outputs"][0]
        assert i["dtype"] == o["dtype"] == "int8"
        # the softmax/logistic output scale 1/256, zero point -128, moved to the concat's scale
        assert i["scales"][0] == pytest.approx(1 / 256) and i["zero_points"][0] == -128
        assert (o["scales"][0], o["zero_points"][0]) != (i["scales"][0], i["zero_points"][0])


def test_concat_inputs_share_the_output_scale():
    for m in models("concatenation"):
        op = [op for op in om.operators(m.tflite) if op["op"] == "CONCATENATION"][0]
        qs = {(float(t["scales"][0]), int(t["zero_points"][0])) for t in op["inputs"] + op["outputs"]}
        assert len(qs) == 1, (qs, m)


def test_add_inputs_have_their_own_scales():
    ms = models("add") + models("mul")
    distinct = 0
    for m in ms:
        ins, _ = om.io_details(m.tflite)
        distinct += ins[0]["scales"][0] != ins[1]["scales"][0]
    assert distinct >= len(ms) // 2


# ---------------------------------------------------------------------------------------------
# Oracle


@pytest.mark.parametrize("name", sorted(om.BUILDERS))
def test_reference_on_op_models(name):
    for k, m in enumerate(models(name)):
        xs = oracle.random_inputs(m.tflite, 3, seed=k)
        out, which = oracle.reference(m.tflite, xs)
        _, outs = oracle.model_io(m.tflite)
        assert len(out) == len(outs)
        for y, (shape, dtype) in zip(out, outs):
            assert y.dtype == dtype and y.shape == (3,) + shape[1:]
        if name in STB_BUILDERS:
            assert which == "litert-ref", m
            assert oracle.tflm_shape_problems(m.tflite), m
        else:
            assert which == "tflm", m
            assert not oracle.tflm_shape_problems(m.tflite)
            # a second call, and one interpreter reused across calls, give the same bytes
            assert oracle.same_bytes(out, oracle.reference(m.tflite, xs)[0])
            ip = oracle.tflm_interpreter(m.tflite)
            oracle.run_tflm(m.tflite, xs, ip)
            assert oracle.same_bytes(out, oracle.run_tflm(m.tflite, xs, ip))


def test_tflm_is_garbage_on_stored_shape_faults():
    """On the SPACE_TO_BATCH_ND lowering TFLM disagrees with LiteRT's reference kernels (which are right)."""
    disagree = 0
    for name in STB_BUILDERS:
        for m in models(name):
            xs = oracle.random_inputs(m.tflite, 2, seed=0)
            a = oracle.run_tflm(m.tflite, xs)
            b = oracle.run_litert_ref(m.tflite, xs)
            assert oracle.same_bytes(b, oracle.run_litert_ref(m.tflite, xs))
            disagree += not oracle.same_bytes(a, b)
    assert disagree >= len(STB_BUILDERS) * N_PER_BUILDER // 2


def test_tflm_relu6_does_not_requantize():
    """TFLM's int8 RELU6 clamps in the input's quantized domain and copies, ignoring the output's
    scale and zero point (which the converter makes differ); LiteRT's reference requantizes. TFLM's
    bytes are the ones the generated code must match."""
    for m in models("relu6"):
        if m.config["source"] != "input":
            continue
        (op,) = om.operators(m.tflite)
        i = op["inputs"][0]
        s, z = float(i["scales"][0]), int(i["zero_points"][0])
        x = oracle.random_inputs(m.tflite, 2, seed=3)
        out, which = oracle.reference(m.tflite, x)
        assert which == "tflm"
        six = int(np.clip(z + round(6.0 / s), -128, 127))
        expect = np.clip(x[0], z, six).astype(np.int8)
        np.testing.assert_array_equal(out[0], expect)


def test_oracle_batches_and_multiple_inputs():
    m = models("add")[0]
    xs = oracle.random_inputs(m.tflite, 4, seed=5)
    assert len(xs) == 2 and all(x.dtype == np.int8 and x.shape[0] == 4 for x in xs)
    batch = oracle.run_tflm(m.tflite, xs)
    single = [oracle.run_tflm(m.tflite, [x[i:i + 1] for x in xs]) for i in range(4)]
    for i in range(4):
        assert oracle.same_bytes([y[i:i + 1] for y in batch], single[i])
    assert oracle.same_bytes(batch, oracle.run_litert_ref(m.tflite, xs))
    # inputs are positional: swapping them changes the answer (unless the scales happen to match)
    ins, _ = om.io_details(m.tflite)
    if ins[0]["shape"] == ins[1]["shape"] and ins[0]["scales"][0] != ins[1]["scales"][0]:
        assert not oracle.same_bytes(batch, oracle.run_tflm(m.tflite, xs[::-1]))
    with pytest.raises(ValueError):
        oracle.run_tflm(m.tflite, xs[:1])
    with pytest.raises(ValueError):
        oracle.run_tflm(m.tflite, [xs[0], xs[1][:2]])
    with pytest.raises(ValueError):
        oracle.run_tflm(m.tflite, [x.astype(np.int16) for x in xs])


@pytest.mark.parametrize("path", MLPERF, ids=[p.stem for p in MLPERF])
def test_mlperf_models_run_through_reference(path):
    data = path.read_bytes()
    ops = om.op_codes(data)
    assert {"CONV_2D", "FULLY_CONNECTED"} & set(ops)
    xs = oracle.random_inputs(data, 2, seed=0)
    out, which = oracle.reference(data, xs)
    assert which == "tflm"
    _, outs = oracle.model_io(data)
    assert [y.shape for y in out] == [(2,) + s[1:] for s, _ in outs]
    assert all(y.dtype == np.int8 for y in out)

