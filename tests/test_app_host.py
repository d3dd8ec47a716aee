"""The firmware application on the PC (tests/hostapp.py): the transcript of qute_app.c compiled with
the host's gcc (AddressSanitizer, UBSan) for a build must be the one the build expects, byte for
byte (qute.emulate.check against qute.expectation), for each of its settings: embedded or UART
inputs, float32 or integer-only scores, a model that is not an ensemble. The calibrated settings
are run the same way in tests/test_monitor.py and tests/test_monitor_int.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cliutil import qute
from hostapp import compile_app, have_host_gcc, run_app

from qute.boards import load_board
from qute.build import load_build
from qute.emulate import check
from qute.transcript import parse, uart_payload

pytestmark = pytest.mark.skipif(not (have_host_gcc and shutil.which("arm-none-eabi-gcc")),
                                reason="gcc and arm-none-eabi-gcc (to make the build) are needed")


def _build(tmp_path, name: str, *args) -> object:
    out = tmp_path / name
    p = qute("build", *args, "--emulator", "-o", out)
    assert p.returncode == 0, p.stderr + p.stdout
    return load_build(out)


@pytest.mark.parametrize("board", ["mps2-an500", "mps2-an385"])  # float32 scores; integer-only (no FPU)
def test_the_application_prints_what_the_build_expects(tmp_path, board):
    b = _build(tmp_path, "b", "--board", board, "--samples", "7")
    text = run_app(compile_app(b.path, tmp_path / "app"))
    r = check(b, parse(text), load_board(board))
    assert r.bit_exact, r.summary()
    assert r.bytes_compared == 7 * 30 * 2 and r.scores_compared == 7 * 4  # int16 heads
    assert r.scores_kind == ("int" if board == "mps2-an385" else "float32")
    assert r.correct == r.samples * r.accuracy and text.count("QUTE sample=") == 7
    # a corrupted output byte is caught, and counted once
    t = parse(text)
    first = next(ln for ln in text.splitlines() if ln.startswith("QUTE sample=3 "))
    head = first.split(" heads=")[1][:2]
    bad = text.replace(first, first.replace(" heads=" + head, " heads=" + ("00" if head != "00" else "01"), 1))
    r2 = check(b, parse(bad), load_board(board))
    assert r2.bytes_differing == 1 and not r2.bit_exact and len(t.samples) == 7


def test_the_application_reads_its_inputs_from_the_uart(tmp_path):
    b = _build(tmp_path, "u", "--board", "mps2-an500", "--samples", "5", "--inputs", "uart")
    x, y = b.inputs()
    exe = compile_app(b.path, tmp_path / "app")
    noise = b"\x00QU\xffQUT"  # bytes before the frame's "QUTI" are skipped
    text = run_app(exe, noise + uart_payload(x, y))
    assert text.startswith("QUTE ready inputs=uart input_bytes=64\r\n")
    r = check(b, parse(text), load_board("mps2-an500"))
    assert r.bit_exact, r.summary()
    # without labels the summary line has no correct=
    unlabelled = parse(run_app(exe, uart_payload(x)))
    assert "correct" not in unlabelled.done and unlabelled.done["samples"] == "5"
    assert all(np.array_equal(a, b) for u, s in zip(unlabelled.samples, parse(text).samples) for a, b in zip(u.heads, s.heads))


AUTOENCODER = Path(__file__).resolve().parents[2] / "shared" / "models" / "ad_autoencoder_int8.tflite"


@pytest.mark.skipif(not AUTOENCODER.is_file(), reason=f"{AUTOENCODER} not found (../shared/models)")
def test_a_model_that_is_not_an_ensemble_prints_its_bytes(tmp_path):
    b = _build(tmp_path, "c", "--board", "mps2-an500", str(AUTOENCODER), "--samples", "3")
    text = run_app(compile_app(b.path, tmp_path / "app"))
    t = parse(text)
    assert all(s.pred == -1 and s.scores is None for s in t.samples)
    r = check(b, t, load_board("mps2-an500"))
    assert r.bit_exact and r.scores_compared == 0, r.summary()
    assert np.all([len(s.heads) == len(b.manifest.outputs) for s in t.samples])


def _int8_head_ensemble() -> bytes:
    """Three int8 softmax heads (scale 1/256, zero point -128) over the same 10 logits: a model
    quantized before qute's heads were int16, which builds must still score."""
    from fbmodels import ModelBuilder

    b = ModelBuilder("int8 heads")
    x = b.input((1, 10), scale=0.1, zero_point=0)
    for beta in (1.0, 0.5, 2.0):
        o = b.output(b.tensor((1, 10), scale=1 / 256, zero_point=-128))
        b.op("SOFTMAX", [x], [o], beta=beta)
    return b.build()


@pytest.mark.parametrize("board", ["mps2-an500", "mps2-an385"])
def test_int8_heads_are_still_scored_on_both_paths(tmp_path, board):
    model = tmp_path / "int8_heads.tflite"
    model.write_bytes(_int8_head_ensemble())
    b = _build(tmp_path, "b", "--board", board, str(model), "--samples", "6")
    assert b.manifest.ensemble and {o["dtype"] for o in b.manifest.outputs} == {"int8"}
    assert "#define QUTE_HEAD_BITS 8 " in (b.path / "src" / "qute_config.h").read_text()
    r = check(b, parse(run_app(compile_app(b.path, tmp_path / "app"))), load_board(board))
    assert r.bit_exact, r.summary()
    assert r.bytes_compared == 6 * 30 and r.scores_compared == 6 * 4
