"""qute quantize: full-int8 conversion, head matching by name, and the float-vs-TFLM report."""

import hashlib
import json
import os
import re
import tempfile

import numpy as np
import pytest
from cliutil import assert_user_error, qute
from tiny import tiny_qute_run

from qute import quantize as Q
from qute.errors import QuteError

K = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_qute_run(tmp_path_factory.mktemp("runs"), K)


@pytest.fixture(scope="module")
def quantized(trained):
    from qute.run import load_run

    run_dir, data, model = trained
    result = Q.quantize_run(load_run(run_dir), model=model, dataset=data)
    paths = Q.write_result(run_dir, result)
    return result, paths


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _flatbuffer(data):
    s = _schema()
    return s.Model.GetRootAs(bytearray(data), 0)


def _names(enum_cls):
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


# --------------------------------------------------------------------------- the flatbuffer


def test_model_is_full_int8_with_per_channel_weights(quantized):
    result, _ = quantized
    s = _schema()
    types, ops = _names(s.TensorType), _names(s.BuiltinOperator)
    m = _flatbuffer(result.tflite)
    assert m.SubgraphsLength() == 1
    g = m.Subgraphs(0)
    assert types[g.Tensors(g.Inputs(0)).Type()] == "INT8"
    assert g.OutputsLength() == K
    # the heads: int16 softmax outputs at 1/65536 (qute.quantize.widen_heads), everything else int8/int32
    outputs = [g.Tensors(g.Outputs(i)) for i in range(K)]
    assert all(types[t.Type()] == "INT16" for t in outputs)
    assert all(t.Quantization().ScaleAsNumpy().tolist() == [np.float32(1 / 65536)] for t in outputs)
    assert all(t.Quantization().ZeroPointAsNumpy().tolist() == [-32768] for t in outputs)
    assert not [types[g.Tensors(i).Type()] for i in range(g.TensorsLength())
                if types[g.Tensors(i).Type()] not in ("INT8", "INT32") and i not in [g.Outputs(k) for k in range(K)]]

    seen = {}
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        name = ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        assert name not in ("QUANTIZE", "DEQUANTIZE"), "int8 in and out: no float boundary inside the model"
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        seen[name] = seen.get(name, 0) + 1
        w = g.Tensors(op.Inputs(1))
        assert types[w.Type()] == "INT8", name
        assert m.Buffers(w.Buffer()).DataLength() == int(np.prod(w.ShapeAsNumpy())), "weights are constants in the file"
        if op.InputsLength() > 2 and op.Inputs(2) >= 0:
            assert types[g.Tensors(op.Inputs(2)).Type()] == "INT32", f"{name} bias"
        q = w.Quantization()
        assert np.all(q.ZeroPointAsNumpy() == 0), "symmetric weights"
        if name != "FULLY_CONNECTED":
            # per channel: one scale per output channel, on the output-channel axis
            axis = 0 if name == "CONV_2D" else 3  # OHWI / 1HWO
            assert q.QuantizedDimension() == axis
            assert q.ScaleLength() == w.ShapeAsNumpy()[axis] > 1
            assert len(set(q.ScaleAsNumpy().tolist())) > 1
        else:
            assert q.ScaleLength() in (1, w.ShapeAsNumpy()[0])  # TF 2.21: per channel here too
    assert seen.get("CONV_2D") and seen.get("FULLY_CONNECTED")
    assert result.report["weights"]["CONV_2D"] == "per-channel"
    assert result.report["weights"] == Q.weight_granularity(result.tflite)
    counts = Q.op_counts(result.tflite)
    assert {k: v for k, v in counts.items() if k in seen} == seen
    assert sum(counts.values()) == g.OperatorsLength()
    assert result.report["ops"] == Q.op_counts(result.tflite)


def test_output_heads_follows_the_signature_and_tensor_names(quantized):
    result, _ = quantized
    data = result.tflite
    order = Q.output_heads(data)
    assert sorted(order) == list(range(K))
    assert Q.output_heads(data, K) == order
    names = Q.signature_outputs(data)
    assert set(names) == {f"head_{k}" for k in range(K)}
    g = _flatbuffer(data).Subgraphs(0)
    heads = Q.head_names(K)
    flattened = sorted(heads)  # tf.nest flattens the serving dict by sorted key
    for k, i in enumerate(order):
        assert g.Outputs(i) == names[heads[k]]
        # the converter names outputs after the signature call: "StatefulPartitionedCall:j"
        # where j is the head's position in the flattened output dict
        tensor = g.Tensors(g.Outputs(i)).Name().decode()
        m = re.fullmatch(r"StatefulPartitionedCall(?:_\d+)?:(\d+)", tensor)
        assert m, tensor
        assert int(m.group(1)) == flattened.index(heads[k])
        assert result.report["outputs"][k] == {
            "head": heads[k], "output_index": i, "tensor": tensor, "dtype": "int16", **Q.output_params(data)[k].to_dict()
        }


def test_output_heads_agrees_with_litert_signature_runner(quantized):
    from ai_edge_litert.interpreter import Interpreter

    data = quantized[0].tflite
    ip = Interpreter(model_content=data)
    position = {d["index"]: i for i, d in enumerate(ip.get_output_details())}
    runner = ip.get_signature_runner("serving_default")
    by_name = runner.get_output_details()
    assert [position[by_name[h]["index"]] for h in Q.head_names(K)] == Q.output_heads(data)


def test_each_int8_head_is_closest_to_its_own_float_head(quantized):
    result, _ = quantized
    fl, q = result.float_heads, result.int8_heads
    assert fl.shape == q.shape == (K, result.report["test_samples"], 10)
    dist = np.abs(fl[:, None] - q[None]).mean(axis=(2, 3))  # [float head, int8 head]
    assert list(np.argmin(dist, axis=0)) == list(range(K)), dist
    assert np.all(np.diag(dist) < 0.01), dist
    # dequantized softmax outputs are multiples of the output scale, close to a distribution
    assert np.all(q >= 0) and np.all(q <= 1)
    assert np.allclose(q.sum(axis=2), 1.0, atol=0.05)


def test_int8_heads_come_from_tflm(quantized, trained):
    result, _ = quantized
    _, data, _ = trained
    x = data.x_test[:20]
    in_p = Q.input_params(result.tflite)
    raw = Q.run_tflm(result.tflite, Q.quantize(x, in_p))
    assert len(raw) == K and all(r.dtype == np.int16 and r.shape == (20, 10) for r in raw)
    again = Q.run_tflm(result.tflite, Q.quantize(x, in_p))
    assert all(np.array_equal(a, b) for a, b in zip(raw, again)), "TFLM is deterministic on this model"
    order = Q.output_heads(result.tflite)
    for k, p in enumerate(Q.output_params(result.tflite)):
        assert np.array_equal(Q.dequantize(raw[order[k]], p), result.int8_heads[k][:20])
    with pytest.raises(QuteError, match="int8"):
        Q.run_tflm(result.tflite, x)


def test_widened_heads_keep_the_int8_probabilities_with_eight_more_bits(quantized, trained):
    """widen_heads changes only the heads' output tensors: on TFLM the int16 probabilities round to
    the converter's int8 ones (the same logits, 8 more bits), probabilities that int8 rounds to 0
    are not all 0 in int16, and widening twice, or a model without softmax heads, changes nothing."""
    result, _ = quantized
    run_dir, data, model = trained
    heads = Q.head_names(K)
    narrow = Q.convert(model, heads, data.x_train[:200])
    wide = Q.widen_heads(narrow, heads)
    assert Q.widen_heads(wide, heads) == wide
    assert Q.op_counts(wide) == Q.op_counts(narrow)
    assert [o.dtype for o in Q.run_tflm(narrow, np.zeros((1, 8, 8, 1), np.int8))] == [np.int8] * K
    x = Q.quantize(data.x_test, Q.input_params(narrow))
    out8, out16 = Q.run_tflm(narrow, x), Q.run_tflm(wide, x)
    for a, b in zip(out8, out16):
        p8 = (a.astype(np.int64) + 128) / 256
        p16 = (b.astype(np.int64) + 32768) / 65536
        top = a == 127  # int8 tops out at 255/256: a certain class is 1/256 short of int16's 65535/65536
        assert np.abs(p8 - p16)[~top].max() <= 1 / 512 + 1 / 65536
        assert np.all(p16[top] >= 255 / 256 - 1 / 512)
        assert np.any((a == -128) & (b > -32768)), "int16 keeps some of what int8 rounds to 0"
    # a head name with no softmax output behind it changes nothing
    assert Q.widen_heads(narrow, ["head_7"]) == narrow


# --------------------------------------------------------------------------- quantization maths


def test_input_quantization_covers_the_calibration_range(quantized):
    result, _ = quantized
    inp = result.report["input"]
    p = Q.input_params(result.tflite)
    assert (inp["scale"], inp["zero_point"]) == (p.scale, p.zero_point)
    cal = result.report["calibration"]
    # digits in model-input space span [0, 1]; the converter maps that range onto -128..127
    assert (cal["min"], cal["max"]) == (0.0, 1.0)
    lo, hi = inp["float_range"]
    assert lo <= cal["min"] + 1e-6 and hi >= cal["max"] - p.scale
    assert p.scale == pytest.approx(1 / 255, rel=1e-6) and p.zero_point == -128
    assert inp["test_clipped_fraction"] == 0.0
    assert inp["shape"] == [1, 8, 8, 1] and inp["dtype"] == "int8"


def test_quantize_rounds_half_away_from_zero_and_clamps():
    p = Q.QuantParams(scale=0.5, zero_point=3)
    x = np.array([0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 0.0, 1000.0, -1000.0, 0.2, -0.2], np.float32)
    # x / scale = 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0, 2000, -2000, 0.4, -0.4
    assert Q.quantize(x, p).tolist() == [4, 2, 5, 1, 6, 0, 3, 127, -128, 3, 3]
    assert Q.quantize(x, p).dtype == np.int8
    q = np.array([-128, 3, 127], np.int8)
    assert Q.dequantize(q, p).tolist() == [-65.5, 0.0, 62.0]
    assert Q.dequantize(q, p).dtype == np.float32


def test_quantize_matches_tflm_quantize_kernel_on_ties():
    """A float-input model whose only arithmetic is TFLM's QUANTIZE, fed exact .5 ties."""
    import keras
    import tensorflow as tf

    inp = keras.Input((8,), name="input")
    model = keras.Model(inp, keras.layers.Reshape((2, 4))(inp))
    cal = np.random.default_rng(0).uniform(-1, 1, (50, 8)).astype(np.float32)
    cal[0, :2] = (-1, 1)
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda x: {"head_0": model(x)}, [tf.TensorSpec((1, 8), tf.float32, name="input")])
        archive.write_out(folder, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(folder)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([cal[i : i + 1]] for i in range(len(cal)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.float32
        conv.inference_output_type = tf.int8
        data = conv.convert()
    assert Q.op_counts(data) == {"QUANTIZE": 1, "RESHAPE": 1}
    p = Q.output_params(data)[0]
    x = ((np.arange(-4, 4) + 0.5) * np.float32(p.scale)).astype(np.float32)
    assert np.all(np.abs(x / np.float32(p.scale) % 1 - 0.5) == 0), "exact ties"
    from tflite_micro.python.tflite_micro import runtime

    ip = runtime.Interpreter.from_bytes(data)
    ip.set_input(x[None], 0)
    ip.invoke()
    tflm = ip.get_output(0).reshape(-1)
    assert tflm.tolist() == Q.quantize(x, p).tolist()
    assert tflm.tolist() != np.clip(np.round(x / np.float32(p.scale)) + p.zero_point, -128, 127).astype(int).tolist()


def test_calibration_indices_are_seeded_distinct_and_capped():
    a = Q.calibration_indices(1000, 500)
    assert np.array_equal(a, Q.calibration_indices(1000, 500))
    assert len(set(a.tolist())) == 500 and a.max() < 1000
    assert not np.array_equal(a, Q.calibration_indices(1000, 500, seed=1))
    assert sorted(Q.calibration_indices(30, 500).tolist()) == list(range(30))
    for bad in (0, -3, True, 2.5):
        with pytest.raises(QuteError, match="samples"):
            Q.calibration_indices(1000, bad)


def test_not_a_tflite_file_is_a_user_error():
    with pytest.raises(QuteError, match="TFLite"):
        Q.output_heads(b"not a model at all")


# --------------------------------------------------------------------------- the report


def test_report_compares_float_and_int8(quantized):
    result, paths = quantized
    rep = result.report
    n = rep["test_samples"]
    assert list(rep["stages"]) == ["float", "int8_tflm", "c"]
    c = rep["stages"]["c"]
    assert c["bytes_differing_from_int8_tflm"] == 0 and c["bytes_compared"] == rep["test_samples"] * K * 10 * 2  # int16 heads: two bytes a value
    assert c["flips"] == rep["stages"]["int8_tflm"]["flips"]
    fl, q = rep["stages"]["float"], rep["stages"]["int8_tflm"]
    for stage in (fl, q):
        for key in ("accuracy", "nll", "ece"):
            assert np.isfinite(stage[key])
        assert 0 <= stage["ece"] <= 1 and len(stage["head_accuracy"]) == K
    assert fl["accuracy"] > 0.7, "the fixture model should have learned digits"
    assert q["agreement"] >= 0.9
    assert abs(q["accuracy"] - fl["accuracy"]) <= 0.05
    assert len(q["head_agreement"]) == K and min(q["head_agreement"]) >= 0.9
    # the flip list is the agreement, sample by sample
    assert len(q["flips"]) == round((1 - q["agreement"]) * n)
    mean_f, mean_q = result.float_heads.mean(axis=0), result.int8_heads.mean(axis=0)
    disagree = np.flatnonzero(mean_f.argmax(1) != mean_q.argmax(1))
    assert set(q["flips"]) <= set(range(n))
    # (a float32 sum in another order may break an exact tie differently: allow none here)
    assert q["flips"] == disagree.tolist()
    assert q["head_agreement"] == [float(np.mean(result.float_heads[k].argmax(1) == result.int8_heads[k].argmax(1))) for k in range(K)]
    assert rep["calibration"]["samples"] == 500 and rep["calibration"]["split"] == "train"
    assert rep["heads"] == ["head_0", "head_1"] and rep["method"] == "qute"
    assert rep["tflm_arena_bytes_host"] is None or rep["tflm_arena_bytes_host"] > 1000

    model_path, report_path = paths
    assert model_path.name == "model.int8.tflite" and report_path.name == "quantization.json"
    assert model_path.read_bytes() == result.tflite
    on_disk = json.loads(report_path.read_text())
    assert on_disk["tflite_sha256"] == hashlib.sha256(result.tflite).hexdigest() == rep["tflite_sha256"]
    assert on_disk["stages"]["int8_tflm"]["flips"] == q["flips"]
    assert not [p for p in model_path.parent.iterdir() if p.name.startswith(".")], "no temporary files left"
    assert oct(model_path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_stage_report_slot_for_later_stages(quantized):
    result, _ = quantized
    table = Q.format_table(result.report)
    assert "int8_tflm" in table and "agreement" in table
    # a later stage (generated C) plugs in with the same function and shows up as a column
    rep = json.loads(json.dumps(result.report))
    rep["stages"]["c"] = Q.stage_report(result.y_test, result.int8_heads, reference=result.float_heads)
    assert rep["stages"]["c"]["agreement"] == rep["stages"]["int8_tflm"]["agreement"]
    assert Q.format_table(rep).splitlines()[0].split() == ["float", "int8_tflm", "c"]


# --------------------------------------------------------------------------- the command line






def test_cli_quantize_prints_the_table(trained, quantized):
    run_dir = trained[0]
    (run_dir / "model.int8.tflite").unlink()
    proc = qute("quantize", run_dir, "--samples", "100")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["float", "int8_tflm", "c"]
    assert any(line.startswith("c: 0 of ") and "differ from TFLite Micro" in line for line in lines)
    assert any(line.startswith("agreement") for line in lines)
    assert any(line.startswith("head_1 agreement") for line in lines)
    assert "input int8: scale" in proc.stdout and "wrote" in lines[-1]
    assert "Traceback" not in proc.stderr
    report = json.loads((run_dir / "quantization.json").read_text())
    assert report["calibration"]["samples"] == 100
    assert report["stages"]["int8_tflm"]["agreement"] >= 0.9
    data = (run_dir / "model.int8.tflite").read_bytes()
    assert hashlib.sha256(data).hexdigest() == report["tflite_sha256"]
    assert len(Q.output_heads(data)) == K


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["quantize", "{tmp}/nope"], ["does not exist"]),
        (["quantize", "{tmp}"], ["not a complete qute run"]),
        (["quantize", "{run}", "--samples", "0"], ["--samples", "got 0"]),
        (["quantize", "{run}", "--samples", "-5"], ["--samples", "got -5"]),
        (["quantize", "{run}", "--samples", "many"], ["many"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, fragments):
    run = tmp_path / "not-needed"  # samples are checked before the run is read
    proc = qute(*[a.format(tmp=tmp_path, run=run) for a in args])
    assert_user_error(proc, *fragments)


@pytest.mark.slow
def test_eval_puts_the_int8_stage_beside_the_float_one(trained, quantized):
    run_dir = trained[0]
    proc = qute("eval", run_dir, "--stages", "float,int8", "--corruptions", "gaussian_noise", "--window", "50")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].split()[0] == "qute" and lines[3].startswith("qute (int8) ")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    f, q = metrics["stages"]["float"]["summary"], metrics["stages"]["int8"]["summary"]
    assert metrics["summary"] == f
    assert abs(f["accuracy"] - q["accuracy"]) <= 0.05 and 0 <= q["ece"] <= 1
    assert set(metrics["stages"]["int8"]["corruptions"]) == {"gaussian_noise"}


def test_eval_rejects_an_unknown_stage(tmp_path):
    assert_user_error(qute("eval", tmp_path, "--stages", "float,tpu"), "tpu", "float, int8, device")
