"""Inputs over the UART (qute build --inputs uart) and the device stage of qute eval.

The firmware reads "QUTI", a count and framed inputs from its console UART under QEMU; its
output bytes are checked against TFLite Micro, and a run's evaluation on the device must equal
the int8 stage's to the last bit.
"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from cliutil import assert_user_error, qute
from tiny import tiny_qute_run

from qute import oracle, transcript
from qute.emulate import qemu_command, run_process
from qute.transcript import READY_LINE, uart_payload

have_tools = all(shutil.which(t) for t in ("arm-none-eabi-gcc", "make", "qemu-system-arm"))
needs_qemu = pytest.mark.skipif(not have_tools, reason="qemu-system-arm or arm-none-eabi-gcc not installed")
K = 3


def test_uart_payload_frames_labels_and_values():
    x = np.array([[1, -2, 127], [-128, 0, 5]], dtype=np.int8)
    p = uart_payload(x, np.array([7, -1]))
    assert p[:4] == b"QUTI" and struct.unpack("<I", p[4:8]) == (2,)
    frame = 2 + 3
    assert len(p) == 8 + 2 * frame
    assert struct.unpack("<h3b", p[8:8 + frame]) == (7, 1, -2, 127)
    assert struct.unpack("<h3b", p[8 + frame:]) == (-1, -128, 0, 5)
    assert uart_payload(x)[8:10] == b"\xff\xff"  # no labels: -1 each
    assert uart_payload(np.zeros((0, 4), np.int8)) == b"QUTI\0\0\0\0"
    with pytest.raises(ValueError):
        uart_payload(x, np.array([1]))
    with pytest.raises(ValueError):
        uart_payload(x, np.array([1, 40000]))


# --------------------------------------------------------------------------- the default model, three consoles


@pytest.fixture(scope="module")
def uart_builds(tmp_path_factory):
    """The embedded default model with inputs over the UART, for three consoles and both score paths."""
    if not have_tools:
        pytest.skip("qemu-system-arm or arm-none-eabi-gcc not installed")
    cwd = tmp_path_factory.mktemp("uart")
    out = {}
    for board in ("mps2-an500", "netduinoplus2", "mps2-an385"):  # CMSDK UART, STM32F4 USART, integer-only path
        p = qute("build", "--board", board, "--emulator", "--inputs", "uart", "-o", board, cwd=cwd)
        assert p.returncode == 0, p.stderr
        assert "inputs read from the console UART" in p.stdout
        out[board] = cwd / board
    return out


@needs_qemu
@pytest.mark.parametrize("board", ["mps2-an500", "netduinoplus2", "mps2-an385"])
def test_uart_build_runs_bit_exact_and_saves_its_transcript(uart_builds, board):
    out = uart_builds[board]
    m = json.loads((out / "build.json").read_text())
    assert m["inputs"]["over"] == "uart"
    config = (out / "src" / "qute_config.h").read_text()
    assert not (out / "src" / "qute_inputs.c").exists() and "#define QUTE_INPUTS_UART 1" in config
    r = qute("run", "--board", board, out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 of 3,000 differ from the host reference (TFLite Micro), 50 inputs" in r.stdout
    assert "bit-exact: yes" in r.stdout
    saved = out / "transcript.txt"
    assert f"transcript:          {saved}" in r.stdout
    t = transcript.parse(saved.read_text())
    assert len(t.samples) == 50 and t.start["samples"] == "50"
    assert "QUTE done " + " ".join(f"{k}={v}" for k, v in t.done.items()) == m["expected_done_line"]


@needs_qemu
def test_uart_inputs_are_framed_resynchronised_and_any_number(uart_builds):
    """Bytes before "QUTI" are skipped; unlabelled inputs drop correct=; N need not be the build's."""
    out = uart_builds["mps2-an500"]
    tflite = (out / "model.int8.tflite").read_bytes()
    x = np.random.default_rng(5).integers(-128, 128, size=(7, 8, 8, 1), dtype=np.int8)
    noise = b"\x00QUT\x01QUQ\xffQUTQ"  # partial magics, an escape byte and a stray Q
    cmd = qemu_command("qemu-system-arm", "mps2-an500", out / "firmware.elf", uart_inputs=True)
    rc, text, err = run_process(cmd, 60, stdin=noise + uart_payload(x), send_after=READY_LINE)
    assert rc == 0, err
    t = transcript.parse(text)
    assert t.start["samples"] == "7" and [s.label for s in t.samples] == [-1] * 7
    assert "correct" not in t.done
    ref, engine = oracle.reference(tflite, [x])
    m = json.loads((out / "build.json").read_text())
    for s in t.samples:
        for head, o in zip(s.heads, m["outputs"]):
            assert np.array_equal(head, np.ascontiguousarray(ref[o["flatbuffer_index"]][s.index].reshape(-1)).view(np.int8))
    assert int(t.done["crc32"], 16) == transcript.outputs_crc32([s.heads for s in t.samples])


@needs_qemu
def test_uart_build_holds_no_inputs_in_flash(uart_builds, tmp_path):
    for args in (["--samples", "300", "-o", "emb"], ["--samples", "300", "--inputs", "uart", "-o", "uart300"]):
        p = qute("build", "--board", "mps2-an500", "--emulator", *args, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    flash = {name: json.loads((d / "memory.json").read_text())["flash"]["used"]
             for name, d in (("uart", uart_builds["mps2-an500"]), ("uart300", tmp_path / "uart300"),
                             ("embedded", tmp_path / "emb"))}
    assert flash["uart300"] == flash["uart"]  # --samples only fills inputs.npz
    assert flash["embedded"] - flash["uart"] > 300 * 64  # at least the images (the UART reader is ~130 B of code)


def test_bad_inputs_mode_is_a_user_error(tmp_path):
    assert_user_error(qute("build", "--board", "mps2-an500", "--inputs", "usb", cwd=tmp_path), "--inputs")


# --------------------------------------------------------------------------- qute eval --stages ...,device


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    if not have_tools:
        pytest.skip("qemu-system-arm or arm-none-eabi-gcc not installed")
    run_dir = tiny_qute_run(tmp_path_factory.mktemp("runs"), K)[0]
    p = qute("quantize", run_dir, "--samples", "200")
    assert p.returncode == 0, p.stderr
    return run_dir


@pytest.mark.slow
@needs_qemu
def test_eval_device_stage_equals_int8_to_the_last_bit(quantized_run):
    r = qute("eval", quantized_run, "--stages", "int8,device", "--board", "mps2-an500", "--ood", "noise",
             "--corruptions", "contrast,gaussian_noise", "--window", "50")
    assert r.returncode == 0, r.stderr + r.stdout
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("qute (")]
    assert len(rows) == 2 and rows[0].split()[2:] == rows[1].split()[2:], rows
    assert "int8 and device rows: identical" in r.stdout
    assert "0 of " in r.stdout and " output bytes differ from TFLite Micro, 0 of " in r.stdout
    stages = json.loads((quantized_run / "metrics.json").read_text())["stages"]
    assert stages["device"]["summary"] == stages["int8"]["summary"]
    dev = stages["device"]["device"]
    n_test = stages["int8"]["ood"]["samples"]  # synthetic OOD: as many images as the test set
    assert dev["inputs"] == n_test * 4  # ID, OOD, two corruption streams
    assert dev["output_bytes_compared"] == dev["inputs"] * K * 10 * 2 and dev["output_bytes_differing_from_tflm"] == 0
    assert dev["scores_compared"] == dev["inputs"] * 4 and dev["scores_differing_from_host"] == 0
    assert dev["counter"] == "instructions" and dev["per_inference_mean"] > 1000


@pytest.mark.slow
@needs_qemu
def test_device_stage_counts_a_wrong_byte(quantized_run, monkeypatch):
    """The comparison can fail: one flipped output byte from the firmware is counted and reported."""
    import qute.emulate
    from qute.device import DeviceStage
    from qute.run import load_run

    real = qute.emulate.execute

    def one_byte_off(*args, **kwargs):
        text, t = real(*args, **kwargs)
        t.samples[1].heads[2] = t.samples[1].heads[2].copy()
        t.samples[1].heads[2][3] ^= 1
        return text, t

    monkeypatch.setattr(qute.emulate, "execute", one_byte_off)
    x = np.random.default_rng(1).random((5, 8, 8, 1)).astype(np.float32)
    with DeviceStage(load_run(quantized_run), "mps2-an500") as dev:
        probs = dev(x)
    assert probs.shape == (K, 5, 10)
    assert dev.stats.bytes_compared == 5 * K * 10 * 2 and dev.stats.bytes_differing == 1  # int16 heads
    assert not dev.stats.exact and "1 of 300 output bytes differ" in dev.stats.summary()


def test_eval_stage_errors_are_user_errors(tmp_path):
    run_dir = tmp_path / "nothing"
    assert_user_error(qute("eval", run_dir, "--stages", "float,gpu"), "unknown stage 'gpu'", "device")
    assert_user_error(qute("eval", run_dir, "--board", "mps2-an500"), "--board is for the device stage")
    assert_user_error(qute("eval", run_dir, "--stages", "int8,int8"), "twice")


@pytest.mark.slow
@needs_qemu
def test_device_stage_needs_an_int8_model_and_a_known_board(quantized_run, tmp_path):
    assert_user_error(qute("eval", quantized_run, "--stages", "device", "--board", "nucleo-f999"), "nucleo-f999")
    bare = tmp_path / "bare"
    shutil.copytree(quantized_run, bare)
    (bare / "model.int8.tflite").unlink()
    assert_user_error(qute("eval", bare, "--stages", "device"), "no model.int8.tflite", "qute quantize")


@needs_qemu
def test_qemu_console_passes_every_byte_value(uart_builds):
    """All 256 byte values reach the firmware unchanged (no Ctrl-A escapes, no CR/LF translation)."""
    out = uart_builds["mps2-an500"]
    x = (np.arange(4 * 64) % 256).astype(np.uint8).view(np.int8).reshape(4, 8, 8, 1)
    cmd = qemu_command("qemu-system-arm", "mps2-an500", out / "firmware.elf", uart_inputs=True)
    rc, text, err = run_process(cmd, 60, stdin=uart_payload(x, np.arange(4)), send_after=READY_LINE)
    assert rc == 0, err
    t = transcript.parse(text)
    assert t.ready == {"inputs": "uart", "input_bytes": "64"}
    ref, _ = oracle.reference((out / "model.int8.tflite").read_bytes(), [x])
    m = json.loads((out / "build.json").read_text())
    assert [s.label for s in t.samples] == [0, 1, 2, 3]
    for s in t.samples:
        for head, o in zip(s.heads, m["outputs"]):
            assert np.array_equal(head, np.ascontiguousarray(ref[o["flatbuffer_index"]][s.index].reshape(-1)).view(np.int8))


@pytest.mark.slow
@needs_qemu
def test_qute_run_saves_the_transcript_the_report_reads(quantized_run):
    build = quantized_run / "build-an500"
    assert qute("build", "--board", "mps2-an500", quantized_run, "--emulator", "--samples", "20", "-o", build).returncode == 0
    r = qute("run", build)
    assert r.returncode == 0, r.stderr + r.stdout
    p = qute("report", quantized_run, "--no-eval", "-o", quantized_run / "r.html")
    assert p.returncode == 0, p.stderr + p.stdout
    page = (quantized_run / "r.html").read_text()
    assert "instructions per inference" in page and f"from {build / 'transcript.txt'}" in page


# --------------------------------------------------------------------------- qute run --port (QEMU behind a null modem stands in for the board)


def _null_modem():
    """Two pseudo-terminals joined back to back, like `socat pty,raw pty,raw`: (path a, path b, stop)."""
    import os
    import select
    import threading
    import tty

    ma, sa = os.openpty()
    mb, sb = os.openpty()
    for fd in (sa, sb):
        tty.setraw(fd)
    stop = threading.Event()

    def pump():
        while not stop.is_set():
            ready, _, _ = select.select([ma, mb], [], [], 0.1)
            for src in ready:
                try:
                    data = os.read(src, 4096)
                except OSError:
                    continue
                os.write(mb if src == ma else ma, data)
        for fd in (ma, mb, sa, sb):
            os.close(fd)

    threading.Thread(target=pump, daemon=True).start()
    return os.ttyname(sa), os.ttyname(sb), stop


def _qemu_on_a_serial_line(elf: Path, paused: bool = False):
    """QEMU with its console on one end of a null modem: (process, the other end's path, monitor socket, stop)."""
    import subprocess
    import tempfile

    qemu_end, our_end, stop = _null_modem()
    mon = Path(tempfile.mkdtemp()) / "mon.sock"
    cmd = ["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-chardev", f"serial,id=line,path={qemu_end}",
           "-serial", "chardev:line", "-semihosting", "-icount", "shift=0", "-monitor", f"unix:{mon},server=on,wait=off",
           *(["-S"] if paused else []), "-kernel", str(elf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, our_end, mon, stop


def _monitor_command(sock: Path, command: str) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        got = b""
        while b"(qemu)" not in got:  # the monitor ignores input sent before its first prompt
            got += s.recv(4096)
        s.sendall(command.encode() + b"\n")
        got = b""
        while b"(qemu)" not in got:  # and a command is done when the next prompt comes
            got += s.recv(4096)


@needs_qemu
def test_run_over_a_serial_port_feeds_a_uart_build_one_frame_at_a_time(uart_builds):
    out = uart_builds["mps2-an500"]
    proc, pty, _mon, stop = _qemu_on_a_serial_line(out / "firmware.elf")
    try:
        r = qute("run", out, "--port", pty, timeout=120)
    finally:
        proc.kill()
        proc.wait()
        stop.set()
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"on mps2-an500, read over {pty}" in r.stdout
    assert "0 of 3,000 differ from the host reference (TFLite Micro), 50 inputs" in r.stdout and "bit-exact: yes" in r.stdout


@needs_qemu
def test_run_over_a_serial_port_waits_for_the_reset_of_an_embedded_build(tmp_path):
    import subprocess
    import sys
    import time

    p = qute("build", "--board", "mps2-an500", "--emulator", "--samples", "8", "-o", "emb", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    proc, pty, mon, stop = _qemu_on_a_serial_line(tmp_path / "emb" / "firmware.elf", paused=True)
    try:
        run = subprocess.Popen([sys.executable, "-m", "qute", "run", str(tmp_path / "emb"), "--port", pty, "--timeout", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        asked = run.stderr.readline()  # qute run has opened the port and asks for a reset
        time.sleep(0.5)
        _monitor_command(mon, "cont")  # "press reset": the paused firmware starts
        stdout, stderr = run.communicate(timeout=120)
        stderr = asked + stderr
    finally:
        proc.kill()
        proc.wait()
        stop.set()
    assert run.returncode == 0, stderr + stdout
    assert "reset the board" in stderr and "bit-exact: yes" in stdout
    assert (tmp_path / "emb" / "transcript.txt").is_file()


def test_run_port_errors_are_one_line(tmp_path, uart_builds):
    out = uart_builds["mps2-an500"]
    assert_user_error(qute("run", out, "--port", tmp_path / "ttyNONE"), "cannot open", "ttyNONE")
    (tmp_path / "plain").write_text("")
    assert_user_error(qute("run", out, "--port", tmp_path / "plain"), "is not a serial port")
    assert_user_error(qute("run", "--board", "mps2-an500", "--port", "/dev/null"), "--port needs the BUILD_DIR")
    assert_user_error(qute("run", out, "--port", "/dev/null", "--baud", "12345"), "--baud 12345")


def test_device_scores_are_compared_bit_for_bit_on_both_paths():
    from types import SimpleNamespace

    from qute.expectation import FloatPath, IntPath, scores_differing
    from qute.uncertainty import summarize, summarize_int

    heads = np.random.default_rng(4).integers(-128, 128, size=(3, 6, 10)).astype(np.int8)
    for path, host in ((IntPath({"kind": "int", "scale_q24": 65536, "zero_point": -128}), summarize_int(heads)),
                       (FloatPath(), summarize((heads.astype(np.float32) + 128) / 256))):
        integer = path.kind == "int"
        rows = path.rows(host)
        field = "iscores" if integer else "scores"
        samples = [SimpleNamespace(**{field: r.copy()}) for r in rows]
        assert scores_differing(samples, path, host) == 0
        if integer:
            samples[2].iscores[1] += 1
        else:
            samples[2].scores[1] = np.nextafter(samples[2].scores[1], np.float32(2))  # one ulp off
        setattr(samples[4], field, None)  # a line without scores counts all four
        assert scores_differing(samples, path, host) == 1 + 4
