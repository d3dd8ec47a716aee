"""Malformed models: one line and exit 2, never a traceback, a signal or a hang (tests/fuzz.py).

The fast slice: a few hundred deterministic mutants of the shipped default model and the MLPerf
Tiny models through `qute-codegen generate` (codegen.cli.main, in a worker process that a crash or
a hang cannot take down with the test), some through `qute build`'s model path (read, validate,
generate, TFLM reference) and `qute verify`; accepted mutants' C compiled with -Werror, a few run
under ASan/UBSan. bench/fuzz_soak.py runs thousands. Then the faults of issue 9 one by one, the TFLM
child process, and `qute verify --sanitize` reporting our own bug as such.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import fuzz
import numpy as np
import pytest
from fbmodels import ModelBuilder

from codegen import tflm
from codegen.ir import CodegenError

MODELS = fuzz.seed_models()
GENERATE_SLICE = 1000
BUILD_SLICE = 200
VERIFY_SLICE = 20
COMPILE_SAMPLE = 30
ASAN_SAMPLE = 4


def _bad(outcomes) -> list[str]:
    return [o.describe() for o in outcomes if o.bad]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-generate")
    items = list(fuzz.mutants(MODELS, GENERATE_SLICE, seed=0))
    return fuzz.run_all("generate", items, work, jobs=1, timeout=60), work


def test_mutants_are_varied():
    items = list(fuzz.mutants(MODELS, 200, seed=0))
    assert len({m.model for m in items}) == len(MODELS)
    kinds = {m.kind.split()[0] for m in items}
    assert {"flip", "truncate", "insert", "word", "shape", "op", "graph", "buffer"} <= kinds
    assert len(kinds) >= 15
    again = list(fuzz.mutants(MODELS, 5, seed=0, start=100))
    assert [m.data for m in again] == [m.data for m in items[100:105]], "mutants are a function of seed and index"


def test_generate_never_crashes(generated):
    outcomes, _ = generated
    assert not _bad(outcomes), "\n".join(_bad(outcomes)[:20])
    assert {o.code for o in outcomes} <= {0, 2}
    classes = {o.cls for o in outcomes}
    assert "ok" in classes and "error" in classes  # both paths exercised
    errors = [o for o in outcomes if o.cls.startswith("error")]
    assert all(len(o.detail.splitlines()) == 1 and o.detail.startswith("qute-codegen: error: ") for o in errors)


def test_accepted_mutants_compile_and_run_clean(generated):
    outcomes, work = generated
    accepted = [o for o in outcomes if o.cls == "ok"]
    assert len(accepted) >= 30
    # structural edits first (weight-byte flips rarely change the code), small models first (fast)
    sample = sorted(accepted, key=lambda o: (o.mutant.kind.startswith(("flip", "word", "insert")),
                                             len(o.mutant.data)))[:COMPILE_SAMPLE]
    failures = []
    for o in sample:
        err = fuzz.compile_generated(o.out)
        if err:
            failures.append(f"{o.describe()}: {err}")
    for o in sample[:ASAN_SAMPLE]:
        err = fuzz.sanitized_run(work / f"m{o.mutant.index}.tflite")
        if err:
            failures.append(f"{o.describe()} under ASan/UBSan: {err}")
    assert not failures, "\n".join(failures)


def test_build_model_path_never_crashes(tmp_path):
    items = list(fuzz.mutants(MODELS, BUILD_SLICE, seed=0, start=GENERATE_SLICE))
    outcomes = fuzz.run_all("build", items, tmp_path, jobs=1, timeout=60)
    assert not _bad(outcomes), "\n".join(_bad(outcomes)[:20])
    assert {o.code for o in outcomes} <= {0, 2}


def test_verify_never_crashes(tmp_path):
    small = {k: v for k, v in MODELS.items() if len(v) < 120_000}  # gcc time: the small models
    items = list(fuzz.mutants(small, VERIFY_SLICE, seed=0, start=GENERATE_SLICE + BUILD_SLICE))
    outcomes = fuzz.run_all("verify", items, tmp_path, jobs=1, timeout=120)
    assert not _bad(outcomes), "\n".join(_bad(outcomes)[:20])
    assert {o.code for o in outcomes} <= {0, 1, 2}


# --------------------------------------------------------------------------- the faults, one by one

def _generate(tflite: bytes, tmp_path: Path, capsys) -> tuple[int, str]:
    from codegen.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(tflite)
    code = main(["generate", str(path), "-o", str(tmp_path / "out")])
    return code, capsys.readouterr().err.strip()


def _chain(mutate=None) -> bytes:
    """input -> RELU -> RELU -> output; `mutate(builder, (x, h, y))` breaks it before packing."""
    b = ModelBuilder()
    x = b.input((1, 8), scale=0.1, zero_point=0)
    h = b.tensor((1, 8), scale=0.1, zero_point=0)
    y = b.output(b.tensor((1, 8), scale=0.1, zero_point=0))
    b.op("RELU", [x], [h])
    b.op("RELU", [h], [y])
    if mutate:
        mutate(b, (x, h, y))
    return b.build()


def _set(b, op, field, value):
    setattr(b.ops[op], field, np.array(value, np.int32))


def _quant(b, t, **kw):
    q = b.tensors[t].quantization
    for k, v in kw.items():
        setattr(q, k, v)


FAULTS = {
    "zero point outside int8": (lambda b, t: _quant(b, t[1], zeroPoint=np.array([200], np.int64)),
                                ["tensor 1", "zero point 200", "[-128, 127]"]),
    "constant written by an op": (lambda b, t: _set(b, 0, "outputs", [b.const(np.zeros((1, 8), np.int8), 0.1)]),
                                  ["op 0 (RELU v1)", "output 0", "a constant"]),
    "output redirected onto its own input": (lambda b, t: _set(b, 1, "outputs", [t[1]]),
                                             ["op 1 (RELU v1)", "also its own input"]),
    "op writes a model input": (lambda b, t: _set(b, 1, "outputs", [t[0]]), ["op 1 (RELU v1)", "a model input"]),
    "read before written": (lambda b, t: (b.ops.reverse()), ["op 0 (RELU v1)", "read before it is written",
                                                             "op 1 writes it later"]),
    "graph output never written": (lambda b, t: _set(b, 1, "outputs", [b.tensor((1, 8), scale=0.1)]),
                                   ["model output 0", "no op writes"]),
    "input index out of range": (lambda b, t: _set(b, 0, "inputs", [99]), ["op 0 (RELU v1)", "input 0 is tensor 99"]),
    "omitted required input": (lambda b, t: _set(b, 0, "inputs", [-1]), ["op 0 (RELU v1)", "input 0 may not be omitted"]),
    "tensor written twice": (lambda b, t: _set(b, 1, "outputs", [t[1]]) or _set(b, 1, "inputs", [t[0]]),
                             ["op 1 (RELU v1)", "which op 0 writes too"]),
    "nan scale": (lambda b, t: _quant(b, t[1], scale=np.array([np.nan], np.float32)), ["tensor 1", "scale nan"]),
    "negative scale": (lambda b, t: _quant(b, t[2], scale=np.array([-0.5], np.float32)), ["tensor 2", "scale -0.5"]),
    "zero scale": (lambda b, t: _quant(b, t[0], scale=np.array([0.0], np.float32)), ["tensor 0", "scale 0.0"]),
    "per-channel count": (lambda b, t: _quant(b, t[1], scale=np.full(3, 0.1, np.float32),
                                              zeroPoint=np.zeros(3, np.int64), quantizedDimension=1),
                          ["tensor 1", "3 per-channel scales", "has 8 channels"]),
    "quantized dimension out of range": (lambda b, t: _quant(b, t[1], scale=np.full(8, 0.1, np.float32),
                                                             zeroPoint=np.zeros(8, np.int64), quantizedDimension=5),
                                         ["tensor 1", "dimension 5"]),
    "scales and zero points disagree": (lambda b, t: _quant(b, t[1], zeroPoint=np.zeros(2, np.int64)),
                                        ["tensor 1", "1 quantization scales but 2 zero points"]),
    "no zero points": (lambda b, t: _quant(b, t[1], zeroPoint=np.zeros(0, np.int64)),  # TFLM aborts on it
                       ["tensor 1", "1 quantization scales but 0 zero points"]),
    "negative dimension": (lambda b, t: setattr(b.tensors[t[1]], "shape", np.array([1, -8], np.int32)),
                           ["tensor 1", "negative"]),
    "wrong arity": (lambda b, t: _set(b, 0, "inputs", [t[0], t[0]]), ["op 0 (RELU v1) has 2 inputs; RELU takes 1"]),
    "model output out of range": (lambda b, t: setattr(b, "outputs", [7000]), ["model output 0 is tensor 7000"]),
    "buffer out of range": (lambda b, t: setattr(b.tensors[t[1]], "buffer", 50), ["tensor 1", "buffer 50"]),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_one_line_naming_the_op(fault, tmp_path, capsys):
    mutate, fragments = FAULTS[fault]
    code, err = _generate(_chain(mutate), tmp_path, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    assert not (tmp_path / "out").exists()


def test_the_unbroken_chain_generates(tmp_path, capsys):
    code, err = _generate(_chain(), tmp_path, capsys)
    assert code == 0, err


def test_out_of_range_parameters_are_refused_not_emitted(tmp_path, capsys):
    """A requantization shift beyond 31 (an absurd scale) is refused; before, it was emitted and
    shifted an int32 by 41 under UBSan."""
    b = ModelBuilder()
    x = b.input((1, 4), scale=1e12, zero_point=0)
    w = b.const(np.ones((3, 4), np.int8), scale=1.0)
    y = b.output(b.tensor((1, 3), scale=1e-6, zero_point=0))
    b.op("FULLY_CONNECTED", [x, w, -1], [y])
    code, err = _generate(b.build(), tmp_path, capsys)
    assert code == 2 and "op 0 (FULLY_CONNECTED v1)" in err and "requantization factor" in err, err


def test_an_omitted_depthwise_bias_is_generated_but_kept_from_tflm(tmp_path, capsys):
    """[input, filter, -1] is a well-formed DEPTHWISE_CONV_2D that segfaults TFLM: the generator
    compiles it (tests/test_codegen_conv.py checks the bytes), the oracle refuses it, the arena
    report leaves TFLM out."""
    from qute import oracle
    from qute.errors import QuteError

    b = ModelBuilder()
    x = b.input((1, 4, 4, 2), scale=0.1, zero_point=0)
    w = b.const(np.ones((1, 3, 3, 2), np.int8), scale=np.full(2, 0.1, np.float32), quantized_dimension=3)
    y = b.output(b.tensor((1, 4, 4, 2), scale=0.2))
    b.op("DEPTHWISE_CONV_2D", [x, w, -1], [y], padding=0, depthMultiplier=1, strideH=1, strideW=1)
    code, err = _generate(b.build(), tmp_path, capsys)
    assert code == 0, err
    with pytest.raises(QuteError, match=r"op 0 \(DEPTHWISE_CONV_2D v1\): input 2 is omitted \(-1\), which crashes"):
        oracle.reference(b.build(), [np.zeros((1, 4, 4, 2), np.int8)])


def test_the_oracle_refuses_what_validation_refuses():
    from qute import oracle
    from qute.errors import QuteError

    bad = _chain(lambda b, t: _set(b, 1, "outputs", [t[1]]))
    with pytest.raises(QuteError, match="also its own input"):
        oracle.reference(bad, [np.zeros((1, 8), np.int8)])
    with pytest.raises(QuteError, match="also its own input"):
        oracle.random_inputs(bad, 1, 0)


# --------------------------------------------------------------------------- TFLM in a child process

def test_a_crash_in_the_child_is_one_error():
    with pytest.raises(tflm.TFLMCrash, match=r"TFLite Micro crashed on this model \(SIGABRT\) while testing"):
        tflm.run(os.abort, doing="testing")
    assert issubclass(tflm.TFLMCrash, CodegenError)  # exit 2 in both CLIs


def test_a_hang_in_the_child_is_one_error():
    t0 = time.monotonic()
    with pytest.raises(tflm.TFLMCrash, match="did not finish within 1 s"):
        tflm.run(time.sleep, 30, doing="testing", timeout=1)
    assert time.monotonic() - t0 < 10


def test_the_child_returns_results_and_raises_errors():
    assert tflm.run(sorted, [3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ValueError):
        tflm.run(int, "not a number")


def test_the_child_never_reruns_the_callers_main(tmp_path):
    """A script without a __main__ guard, or one read from stdin, calls the oracle: the TFLM child
    must not import the caller's main module again (multiprocessing's spawn and forkserver do)."""
    import subprocess

    script = ("from qute import oracle\n"
              f"d = open({str(fuzz.DEFAULT_MODEL)!r}, 'rb').read()\n"
              "print('ran', oracle.reference(d, oracle.random_inputs(d, 2, 0))[1])\n")
    (tmp_path / "noguard.py").write_text(script)
    for args, stdin in (([str(tmp_path / "noguard.py")], None), (["-"], script)):
        proc = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.splitlines() == ["ran tflm"], proc.stdout + proc.stderr


def test_tflm_crash_reaches_the_cli_as_one_line(tmp_path, capsys, monkeypatch):
    """What `qute-codegen generate` says when the arena probe's TFLM dies."""
    real_run = tflm.run

    def segv_child(fn, *args, doing="", timeout=0):
        return real_run(_segfault, doing=doing)

    monkeypatch.setattr(tflm, "run", segv_child)
    code, err = _generate(_chain(), tmp_path, capsys)
    assert code == 2, err
    assert err.startswith("qute-codegen: error: TFLite Micro crashed on this model (SIGSEGV) while measuring its arena")
    assert len(err.splitlines()) == 1


def _segfault():
    import ctypes

    ctypes.string_at(0)


# --------------------------------------------------------------------------- qute verify --sanitize

def test_sanitizer_report_is_found():
    from types import SimpleNamespace

    from codegen.host import _run_failure

    stderr = (b"=================================================================\n==1==ERROR: AddressSanitizer: "
              b"heap-buffer-overflow on address 0x6020 at pc 0x55\nREAD of size 1\n")
    e = _run_failure(SimpleNamespace(returncode=1, stderr=stderr))
    assert e.sanitizer == "ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6020 at pc 0x55"
    e = _run_failure(SimpleNamespace(returncode=1, stderr=b"qute_common.h:43:45: runtime error: shift exponent 41 is "
                                                          b"too large for 32-bit type 'unsigned int'\n"))
    assert e.sanitizer.endswith("runtime error: shift exponent 41 is too large for 32-bit type 'unsigned int'")
    assert _run_failure(SimpleNamespace(returncode=-11, stderr=b"")).sanitizer is None


def test_verify_calls_a_sanitizer_failure_a_bug_in_qute(monkeypatch, capsys):
    from codegen.host import HostRunError
    from qute import verify as V
    from qute.cli import main
    from qute.errors import RunFailure

    class Broken:
        output_tensors: list = []

        def run(self, inputs):
            raise HostRunError("generated model crashed (exit 1): ...",
                               "ERROR: AddressSanitizer: stack-buffer-overflow on address 0x7ff")

    tflite = fuzz.DEFAULT_MODEL.read_bytes()
    with pytest.raises(RunFailure, match="AddressSanitizer/UBSan: ERROR: AddressSanitizer: stack-buffer-overflow.*"
                                         "bug in qute"):
        V.run_c(tflite, V.model_inputs(tflite, 1), sanitize=True, host=Broken())

    def verify_fails(tflite, inputs, sanitize=False):
        if sanitize:
            raise RunFailure("the generated C failed under AddressSanitizer/UBSan: ERROR: AddressSanitizer: x. "
                             "This is a bug in qute, not in the model; please report it with the model")
        return V.VerifyResult(samples=1, reference="tflm", mismatches=0, total=1)

    monkeypatch.setattr(V, "verify", verify_fails)
    assert main(["verify", str(fuzz.DEFAULT_MODEL), "--samples", "1", "--sanitize"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("qute: the generated C failed under AddressSanitizer/UBSan") and "bug in qute" in err
    assert "Traceback" not in err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
