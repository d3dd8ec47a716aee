"""Whole models, generated C against the oracle: the QUTE models of the training pipeline and the
MLPerf Tiny reference models."""

import json
import re
from pathlib import Path

import pytest
from cliutil import qute

from qute.verify import model_inputs, verify

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
MLPERF = sorted(MODELS.glob("*.tflite")) if MODELS.exists() else []




@pytest.mark.parametrize("path", MLPERF, ids=[p.stem for p in MLPERF])
def test_mlperf_models_are_bit_exact(path):
    tflite = path.read_bytes()
    result = verify(tflite, model_inputs(tflite, 8, seed=1))
    assert result.reference == "tflm"
    assert result.total > 0 and result.mismatches == 0, result.per_output


@pytest.mark.skipif(not MLPERF, reason="../shared/models not present")
def test_mlperf_model_is_clean_under_sanitizers():
    tflite = (MODELS / "kws_dscnn_int8.tflite").read_bytes()
    result = verify(tflite, model_inputs(tflite, 3, seed=2), sanitize=True)
    assert result.sanitized and result.mismatches == 0


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("verify") / "digits"
    for args in (["train", "--epochs", "6", "-K", "3", "-o", run], ["quantize", run, "--samples", "200"]):
        proc = qute(*args)
        assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
def test_qute_model_end_to_end(quantized_run):
    report = json.loads((quantized_run / "quantization.json").read_text())
    c = report["stages"]["c"]
    assert c["bytes_compared"] == report["test_samples"] * 3 * 10 * 2  # int16 heads
    assert c["bytes_differing_from_int8_tflm"] == 0
    assert c["agreement"] == report["stages"]["int8_tflm"]["agreement"]
    proc = qute("verify", quantized_run, "--samples", "50")
    assert proc.returncode == 0, proc.stderr
    assert "mismatching bytes: 0 of 6,000" in proc.stdout and "bit-exact: yes" in proc.stdout


@pytest.mark.parametrize("method", ["base", "ee-ensemble", "deep-ensemble"])
@pytest.mark.slow
def test_baselines_compile_bit_exact(tmp_path, method):
    from qute.config import TrainConfig
    from qute.data import load_dataset
    from qute.quantize import convert, head_names
    from qute.train import train

    data = load_dataset("digits", limit=300)
    result = train(TrainConfig(method=method, k=2, epochs=1), data)
    tflite = convert(result.model, head_names(result.spec.num_heads), data.x_train[:100])
    outcome = verify(tflite, model_inputs(tflite, 20, seed=3))
    assert outcome.mismatches == 0 and outcome.total == 20 * 10 * result.spec.num_heads


def test_verify_bad_input_exits_2(tmp_path):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for args, fragment in (
        ([tmp_path / "missing.tflite"], "does not exist"),
        ([empty], "empty"),
        ([MLPERF[0] if MLPERF else empty, "--samples", "-1"], "--samples"),
    ):
        proc = qute("verify", *args)
        assert proc.returncode == 2, proc.stderr
        assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verify_reports_a_mismatch(tmp_path, monkeypatch):
    """A wrong kernel must be caught: break the generated C on purpose and expect nonzero bytes."""
    if not MLPERF:
        pytest.skip("../shared/models not present")
    import codegen.emit as emit

    tflite = (MODELS / "ad_autoencoder_int8.tflite").read_bytes()
    original = emit.generate

    def broken(graph, prefix="qute_model", **options):
        gen = original(graph, prefix, **options)
        # every channel of the first op starts its accumulator 5000 off
        gen.source = re.sub(r"(op\d+_acc_init\[\d+\] = \{ )", r"\g<1>5000 + ", gen.source, count=1)
        gen.source = re.sub(r"(op\d+_acc_init\[\d+\] = \{ [^}]*)", lambda m: m.group(1).replace(", ", ", 5000 + "),
                            gen.source, count=1)
        return gen

    monkeypatch.setattr("codegen.host.generate", broken)
    result = verify(tflite, model_inputs(tflite, 4, seed=0))
    assert result.mismatches > 0
