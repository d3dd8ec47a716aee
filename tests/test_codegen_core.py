"""The code generator's reader, planner, emitter and CLI, independent of any one op family."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cliutil import qute

from codegen.emit import generate
from codegen.fold import fold
from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_file, read_model

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
AUTOENCODER = MODELS / "ad_autoencoder_int8.tflite"
needs_models = pytest.mark.skipif(not AUTOENCODER.exists(), reason="../shared/models not present")


def codegen_cli(*args):
    return qute(*args, module="codegen")


def test_codegen_never_imports_tensorflow():
    code = (
        "import sys, codegen.reader, codegen.emit, codegen.host, codegen.report, codegen.cli;"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"\x00" * 64, "not a .tflite model"),
        (b"PK\x03\x04 definitely a zip file", "not a .tflite model"),
    ],
)
def test_bad_bytes_are_one_clear_error(data, message):
    with pytest.raises(CodegenError, match=message):
        read_model(data)


@needs_models
def test_truncated_model_is_an_error():
    data = AUTOENCODER.read_bytes()
    with pytest.raises(CodegenError, match="truncated or corrupt"):
        read_model(data[: len(data) // 3])


@needs_models
def test_reader_sees_the_whole_model():
    g = read_file(AUTOENCODER)
    assert [op.opcode for op in g.ops] == ["FULLY_CONNECTED"] * 10
    w = g.tensor(g.ops[0].inputs[1])
    assert w.dtype == "int8" and w.is_const and w.shape == (128, 640)
    assert g.tensor(g.inputs[0]).shape == (1, 640)


@needs_models
def test_same_model_same_c():
    g = read_file(AUTOENCODER)
    a, b = generate(g), generate(read_file(AUTOENCODER))
    assert a.source == b.source and a.header == b.header


@needs_models
@pytest.mark.parametrize("path", sorted(MODELS.glob("*.tflite")) if MODELS.exists() else [])
def test_plan_never_overlaps_live_tensors(path):
    """The plan generate() uses, inputs, outputs and scratch in the arena, run on an abstract arena
    (tests/plancheck.py): nothing is overwritten before its last read, outputs survive the run."""
    from plancheck import check_plan

    from codegen import ops
    from codegen.emit import output_order, plan_for

    g = fold(read_file(path))
    try:
        generate(g)  # skips models whose ops are not all supported yet
    except CodegenError as e:
        pytest.skip(str(e))
    p = plan_for(g)
    lows = {op.index: ops.lowering_for(op) for op in g.ops}
    aliases = {i for i, low in lows.items() if getattr(low, "alias", False)}
    check_plan(g, p, aliases, output_order(g), {i: low.inplace for i, low in lows.items() if getattr(low, "inplace", ())})
    # every non-constant tensor has a home, and the arena is no bigger than all of them side by side
    tensors = {t for op in g.ops for t in op.inputs + op.outputs if t >= 0 and not g.tensor(t).is_const}
    assert tensors | set(g.inputs) | set(g.outputs) <= set(p.offset)
    blocks = sum(g.tensor(t).nbytes + 4 for t in tensors) + sum(n + 8 for n in p.scratch_bytes.values())
    assert p.arena_size <= blocks


@needs_models
def test_autoencoder_is_bit_exact_with_tflm(tmp_path):
    from tflite_micro.python.tflite_micro import runtime

    data = AUTOENCODER.read_bytes()
    host = build_host(read_model(data), tmp_path)
    x = np.random.default_rng(0).integers(-128, 128, size=(10, 1, 640), dtype=np.int8)
    (ours,) = host.run([x])
    ip = runtime.Interpreter.from_bytes(data)
    mismatches = 0
    for s in range(len(x)):
        ip.set_input(x[s], 0)
        ip.invoke()
        mismatches += int(np.sum(ip.get_output(0).reshape(-1) != ours[s].reshape(-1)))
    assert mismatches == 0


@needs_models
def test_cli_generate_and_report(tmp_path):
    out = tmp_path / "gen"
    proc = codegen_cli("generate", AUTOENCODER, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "qute_model.h").is_file() and (out / "qute_model.c").is_file() and (out / "report.json").is_file()
    assert "TFLite Micro for the same model" in proc.stdout
    header = (out / "qute_model.h").read_text()
    assert "void qute_model_invoke(const int8_t *input, int8_t *const outputs[]);" in header
    rep = codegen_cli("report", AUTOENCODER)
    assert rep.returncode == 0 and "FULLY_CONNECTED" in rep.stdout


@pytest.mark.parametrize("content", [b"", b"garbage bytes that are no model"])
def test_cli_bad_model_exits_2_and_writes_nothing(tmp_path, content):
    model = tmp_path / "bad.tflite"
    model.write_bytes(content)
    proc = codegen_cli("generate", model, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


def test_cli_missing_file_exits_2(tmp_path):
    proc = codegen_cli("report", tmp_path / "nope.tflite")
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_elementwise_ops_run_in_place_and_stay_bit_exact():
    """x -> ADD(x, x) -> RELU -> MUL(t, t) -> QUANTIZE -> out: every op overwrites its input (the
    model input first, which is dead once ADD has read it), so the arena holds one buffer for the
    input, the intermediates and the output, and the bytes still match."""
    from fbmodels import ModelBuilder
    from hostcheck import check

    b = ModelBuilder()
    shape = (1, 6, 7, 5)
    x = b.input(shape, scale=0.05, zero_point=3)
    t1 = b.tensor(shape, scale=0.09, zero_point=-4)
    t2 = b.tensor(shape, scale=0.09, zero_point=-128)
    t3 = b.tensor(shape, scale=0.2, zero_point=-100)
    out = b.tensor(shape, scale=0.15, zero_point=10)
    b.op("ADD", [x, x], [t1])
    b.op("RELU", [t1], [t2])
    b.op("MUL", [t2, t2], [t3])
    b.op("QUANTIZE", [t3], [out])
    b.output(out)
    tflite = b.build()
    gen = generate(read_model(tflite))
    assert gen.arena_size == 6 * 7 * 5 + 2  # one buffer, aligned to 4
    # ADD reads it twice and rewrites it; RELU reads and rewrites it; MUL reads it twice and
    # rewrites it; QUANTIZE reads and rewrites it
    assert gen.source.count("(arena + 0)") == 3 + 2 + 3 + 2
    result = check(tflite, n=20, seed=4)
    assert result.mismatches == 0 and result.total > 0


def _float_model() -> bytes:
    from fbmodels import ModelBuilder

    b = ModelBuilder()
    x = b.input((1, 4), dtype="float32")
    y = b.tensor((1, 4), dtype="float32")
    b.op("ADD", [x, x], [y])
    b.output(y)
    return b.build()


def _tanh_model() -> bytes:
    from fbmodels import ModelBuilder

    b = ModelBuilder()
    x = b.input((1, 8), scale=0.05, zero_point=0)
    y = b.tensor((1, 8), scale=1 / 128, zero_point=0)
    b.op("TANH", [x], [y])
    b.output(y)
    return b.build()


@pytest.mark.parametrize(
    "make, fragments",
    [
        (_float_model, ["float32", "int8", "quantize the model to full int8"]),
        (_tanh_model, ["op 0 (TANH", "not supported", "CONV_2D", "SOFTMAX"]),
    ],
)
def test_float_and_unsupported_models_are_one_clear_error(tmp_path, make, fragments):
    model = tmp_path / "model.tflite"
    model.write_bytes(make())
    with pytest.raises(CodegenError) as e:
        generate(read_model(model.read_bytes()))
    for f in fragments:
        assert f in str(e.value)
    proc = codegen_cli("generate", model, "-o", tmp_path / "out")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    verify = qute("verify", model)
    assert verify.returncode == 2 and "Traceback" not in verify.stderr
