"""qute build / run / flash: firmware for the boards, run under QEMU, checked byte for byte.

Fast tests use the embedded default model (firmware/default, no training); the slow ones train a
tiny QUTE model on digits once per module and build it for four boards.
"""

import json
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

import elfcheck
import numpy as np
import pytest
from cliutil import assert_user_error, qute
from heads import head_values, int_scores
from tiny import tiny_qute_run

from qute import oracle, transcript
from qute.errors import QuteError

ROOT = Path(__file__).resolve().parents[1]
K = 3
CLASSES = 10
SAMPLES = 60  # the acceptance asks for at least 50 inputs per board
HEAD_BYTES = 2  # qute's heads are int16 softmax outputs (qute.quantize.widen_heads)
EMULATED = ["mps2-an500", "mps2-an386", "netduinoplus2", "nucleo-f746"]

have = {t: shutil.which(t) is not None for t in ("arm-none-eabi-gcc", "qemu-system-arm", "gdb-multiarch", "make")}
needs_gcc = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"]),
                               reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"] and have["qemu-system-arm"]),
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed")
needs_gdb = pytest.mark.skipif(not have["gdb-multiarch"], reason="gdb-multiarch not installed")


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _qemu(elf: Path, machine: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-semihosting",
                           "-icount", "shift=0", "-kernel", str(elf)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)


def _check_against_oracle(build_dir: Path, stdout: str) -> int:
    """Independent of `qute run`: the firmware's bytes against qute.oracle on the embedded inputs."""
    m = json.loads((build_dir / "build.json").read_text())
    x = np.load(build_dir / "inputs.npz")["x"]
    ref, engine = oracle.reference((build_dir / "model.int8.tflite").read_bytes(), [x])
    assert engine == "tflm"
    t = transcript.parse(stdout)
    assert [s.index for s in t.samples] == list(range(len(x)))
    compared = 0
    for s in t.samples:
        assert len(s.heads) == len(m["outputs"])
        for head, o in zip(s.heads, m["outputs"]):
            want = np.ascontiguousarray(ref[o["flatbuffer_index"]][s.index].reshape(-1))
            assert want.dtype == np.dtype(o.get("dtype", "int8"))
            assert np.array_equal(head, want.view(np.int8)), (s.index, o["name"])  # the bytes, little-endian
            compared += head.size
    assert transcript.done_line(len(x), transcript.outputs_crc32([s.heads for s in t.samples]),
                                int(t.done["correct"]) if "correct" in t.done else None) == m["expected_done_line"]
    return compared


# --------------------------------------------------------------------------- the line format


def test_transcript_round_trip():
    text = (
        "boot noise\r\n"
        "QUTE start format=1 board=b target=t model=0123456789ab samples=2 heads=2 classes=3 counter=instructions\r\n"
        "QUTE sample=0 label=2 pred=2 conf=0.5000 heads=80ff7f,807f80 scores=3f000000,3e800000,3f317218,00000000 cycles=40\r\n"
        "QUTE sample=1 label=-1 pred=-1 heads=000102,030405 cycles=80\n"
        "QUTE done samples=2 correct=1 crc32=0000abcd\n"
    )
    t = transcript.parse(text)
    assert t.start["counter"] == "instructions" and t.complete and t.other == ["boot noise"]
    s0, s1 = t.samples
    assert s0.heads[0].tolist() == [-128, -1, 127] and s0.heads[0].dtype == np.int8
    assert s0.scores.dtype == np.float32 and s0.scores[0] == 0.5 and s0.conf == 0.5 and s0.cycles == 40
    assert s1.scores is None and s1.label == -1 and s1.heads[1].tolist() == [3, 4, 5]
    assert t.done == {"samples": "2", "correct": "1", "crc32": "0000abcd"}
    heads = [[np.array([1, 2], np.int8), np.array([-3], np.int8)], [np.array([4], np.int8)]]
    assert transcript.outputs_crc32(heads) == zlib.crc32(bytes([1, 2, 253, 4]))
    assert transcript.done_line(50, 0x1c07c2c7, 49) == "QUTE done samples=50 correct=49 crc32=1c07c2c7"
    for bad in ("QUTE sample=0 label=1 pred=1 heads=8 cycles=1", "QUTE sample=x label=1 pred=1 heads=80 cycles=1",
                "QUTE sample=0 label=1 pred=1 heads=80 scores=1,2 cycles=1", "QUTE what=1 ==", "QUTE bogus a=1"):
        with pytest.raises(transcript.TranscriptError):
            transcript.parse(bad)


# --------------------------------------------------------------------------- the C uncertainty port

_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "qute_uncertainty.h"
int main(void)
{
    int32_t hdr[3];
    if (fread(hdr, 4, 3, stdin) != 3) return 2;
    int32_t k = hdr[0], c = hdr[1], n = hdr[2];
    float *p = malloc(sizeof(float) * (size_t)(k * c)), *mean = malloc(sizeof(float) * (size_t)c);
    for (int32_t s = 0; s < n; ++s) {
        if (fread(p, sizeof(float), (size_t)(k * c), stdin) != (size_t)(k * c)) return 3;
        qute_scores sc;
        qute_ensemble_scores(p, k, c, mean, &sc);
        float out[4] = { sc.confidence, sc.margin, sc.entropy, sc.mutual_information };
        fwrite(&sc.predicted, 4, 1, stdout);
        fwrite(out, 4, 4, stdout);
    }
    free(p);
    free(mean);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc")
@pytest.mark.parametrize("k, c", [(1, 10), (3, 10), (5, 10), (4, 3)])
def test_uncertainty_c_port_equals_python_bit_for_bit(tmp_path, k, c):
    from qute.uncertainty import summarize

    src = ROOT / "firmware" / "uncertainty"
    (tmp_path / "h.c").write_text(_HARNESS)
    exe = tmp_path / "h"
    subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", f"-I{src}",
                    str(tmp_path / "h.c"), str(src / "qute_uncertainty.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(k * 100 + c)
    n = 100 + 10_000  # 100 edge cases, then 10,000 random head outputs
    probs = rng.dirichlet(np.full(c, 0.3), size=(k, n)).astype(np.float32)
    probs[:, :50] = (np.round(probs[:, :50] * 256) / 256).astype(np.float32)  # what int8 softmax heads give
    probs[:, 50:60] = 0.0
    probs[:, 50:60, c // 2] = 1.0  # certain
    probs[:, 60:70] = np.float32(0.1)  # ties everywhere
    probs[:, 70:80, :2] = np.float32(1e-40)  # subnormal terms
    probs[:, 80:90, c - 1] = -0.0
    probs[:, 90:100] = np.float32(0.5)  # ties for the top: margin 0
    payload = struct.pack("<3i", k, c, n) + np.ascontiguousarray(probs.transpose(1, 0, 2)).tobytes()
    out = subprocess.run([str(exe)], input=payload, capture_output=True, check=True).stdout
    rec = np.frombuffer(out, dtype=np.dtype([("pred", "<i4"), ("scores", "<u4", 4)]))
    want = summarize(probs)
    assert np.array_equal(rec["pred"], want.predicted)
    exp = np.stack([want.confidence, want.margin, want.entropy, want.mutual_information], axis=1).view(np.uint32)
    assert np.array_equal(rec["scores"], exp)


# --------------------------------------------------------------------------- the default model (no training)


@pytest.fixture(scope="module")
def an500(tmp_path_factory):
    """The embedded default model, emulator build for mps2-an500."""
    if not (have["arm-none-eabi-gcc"] and have["make"]):
        pytest.skip("arm-none-eabi-gcc not installed")
    cwd = tmp_path_factory.mktemp("default")
    p = qute("build", "--board", "mps2-an500", "--emulator", "-o", "an500", cwd=cwd)
    assert p.returncode == 0, p.stderr
    assert "embedded default model (digits QUTE" in p.stdout
    return cwd / "an500"


@needs_qemu
def test_default_model_runs_bit_exact_and_deterministic(an500):
    runs = [qute("run", "--board", "mps2-an500", an500) for _ in range(2)]
    for p in runs:
        assert p.returncode == 0, p.stderr + p.stdout
        assert "bit-exact: yes" in p.stdout
        assert "0 of 3,000 differ from the host reference (TFLite Micro), 50 inputs" in p.stdout
        assert "0 of 200 float32 values differ" in p.stdout
        assert "instructions per inference (QEMU -icount shift=0" in p.stdout and "not cycles" in p.stdout
        assert "uncertainty module:  mean " in p.stdout and "% of the model's " in p.stdout
    # -icount shift=0: the instruction counts are the same run after run
    counts = [[ln for ln in p.stdout.splitlines() if "mean" in ln and "min" in ln] for p in runs]
    assert counts[0] == counts[1] and counts[0]
    proc = _qemu(an500 / "firmware.elf", "mps2-an500")
    assert proc.returncode == 0
    assert _check_against_oracle(an500, proc.stdout.decode()) == 50 * K * CLASSES * HEAD_BYTES


def _overhead(stdout: str) -> tuple[float, float, float]:
    """(uncertainty, model, percent) from qute run's `uncertainty module:` line."""
    import re

    m = re.search(r"uncertainty module:  mean ([\d,]+) instructions per inference \(min [\d,]+, max [\d,]+\) = "
                  r"([\d.]+)% of the model's ([\d,]+)", stdout)
    assert m, stdout
    unc, pct, model = float(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3).replace(",", ""))
    return unc, model, pct


@needs_qemu
def test_uncertainty_overhead_is_measured_on_every_sample(an500):
    proc = _qemu(an500 / "firmware.elf", "mps2-an500")
    t = transcript.parse(proc.stdout.decode())
    assert len(t.samples) == 50
    assert all(s.ucycles is not None and s.ucycles > 0 and s.cycles > 0 for s in t.samples)
    assert all(s.ucycles < s.cycles for s in t.samples)
    p = qute("run", "--board", "mps2-an500", an500)
    assert p.returncode == 0, p.stderr + p.stdout
    unc, model, pct = _overhead(p.stdout)
    assert unc == pytest.approx(np.mean([s.ucycles for s in t.samples]), abs=0.5)
    assert model == pytest.approx(np.mean([s.cycles for s in t.samples]), abs=0.5)
    assert 0 < pct < 2 and pct == pytest.approx(100 * unc / model, abs=0.01)
    # older transcripts (no ucycles=) still parse
    old = "QUTE sample=0 label=1 pred=1 heads=80 cycles=5"
    assert transcript.parse_sample(old).ucycles is None


def _check_int_build(out: Path, samples: int) -> None:
    """An mps2-an385 (no FPU) build: integer scores on the device, bit for bit against summarize_int."""
    m = json.loads((out / "build.json").read_text())
    assert m["uncertainty_path"] == {"kind": "int", "scale_q24": 256, "zero_point": -32768, "exact_scale": True}
    assert all("-DQUTE_UNCERTAINTY_INT" in v["defines"] for v in m["variants"].values())
    assert sorted(p.name for p in (out / "uncertainty").iterdir()) == ["qute_uncertainty_int.c", "qute_uncertainty_int.h"]
    r = qute("run", "--board", "mps2-an385", out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert (f"0 of {samples * 4:,} integer values (Q16 confidence/margin, Q20 entropy/MI) differ from "
            f"qute.uncertainty.summarize_int") in r.stdout and "bit-exact: yes" in r.stdout
    assert 0 < _overhead(r.stdout)[2] < 3  # int16 heads: no 8-bit log table
    proc = _qemu(out / "firmware.elf", "mps2-an385")
    assert proc.returncode == 0
    assert _check_against_oracle(out, proc.stdout.decode()) == samples * K * CLASSES * HEAD_BYTES
    t = transcript.parse(proc.stdout.decode())
    want = int_scores(m["uncertainty_path"], head_values(m["outputs"], t.samples))
    got = np.stack([s.iscores for s in t.samples])
    assert all(s.scores is None for s in t.samples)
    assert np.array_equal(got, np.stack([want.confidence_q16, want.margin_q16, want.entropy_q20,
                                         want.mutual_information_q20], axis=1))
    assert [s.pred for s in t.samples] == want.predicted.tolist()
    # no soft-float helper anywhere in the image (so none from the uncertainty code; calibrated
    # builds: tests/test_monitor_int.py)
    names = elfcheck.symbols(out / "firmware.elf")
    assert "qute_ensemble_scores_int16" in names and "qute_ensemble_scores" not in names  # int16 heads
    assert elfcheck.float_helpers(out / "firmware.elf") == []


@needs_qemu
def test_mps2_an385_default_model_integer_scores_bit_exact(tmp_path):
    p = qute("build", "--board", "mps2-an385", "--emulator", "-o", "an385", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    _check_int_build(tmp_path / "an385", 50)


@needs_qemu
def test_run_without_build_dir_builds_the_default(tmp_path):
    p = qute("run", "--board", "mps2-an386", cwd=tmp_path)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "bit-exact: yes" in p.stdout
    assert _tree(tmp_path) == []  # built in a temporary folder


@needs_gcc
def test_memory_report_agrees_with_arm_none_eabi_size(tmp_path):
    p = qute("build", "--board", "nucleo-f746", "-o", "b", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    b = tmp_path / "b"
    mem = json.loads((b / "memory.json").read_text())
    for elf, m in (("firmware.elf", mem), ("emulator/firmware.elf", mem["emulator"])):
        berkeley = subprocess.run(["arm-none-eabi-size", str(b / elf)], capture_output=True, text=True, check=True).stdout
        text, data, bss = map(int, berkeley.splitlines()[1].split()[:3])
        assert (m["size"]["text"], m["size"]["data"], m["size"]["bss"]) == (text, data, bss)
        assert m["flash"]["used"] == text + data and m["ram"]["used"] == data + bss
        sysv = subprocess.run(["arm-none-eabi-size", "-A", str(b / elf)], capture_output=True, text=True, check=True).stdout
        sizes = {ln.split()[0]: int(ln.split()[1]) for ln in sysv.splitlines()[2:] if ln.split() and ln.split()[0].startswith(".")}
        assert {s["name"]: s["size"] for s in m["sections"]} == {n: v for n, v in sizes.items()
                                                                 if n in {s["name"] for s in m["sections"]}}
        assert sum(s["size"] for s in m["sections"]) == text + data + bss
    assert mem["flash"]["capacity"] == 1 << 20 and mem["ram"]["capacity"] == 320 << 10
    sp = mem["split"]
    assert sp["model_weights"] > 4000 and sp["arena"] > 1000 and sp["stack"] >= 8192 and sp["code"] > 1000
    assert sp["test_inputs"] == 50 * 64 + 50 * 2
    # the printed table is the same numbers
    z = mem["size"]
    assert f"arm-none-eabi-size firmware.elf: text {z['text']:,}  data {z['data']:,}  bss {z['bss']:,}" in p.stdout


@needs_gcc
def test_standalone_makefile_rebuilds_the_same_firmware(tmp_path):
    p = qute("build", "--board", "netduinoplus2", "-o", "b", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "b", copy)
    subprocess.run(["make", "clean"], cwd=copy, check=True, capture_output=True)
    assert not (copy / "firmware.elf").exists()
    proc = subprocess.run(["make", "-j2", "all", "emulator"], check=False, cwd=copy, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for f in ("firmware.bin", "firmware.hex", "emulator/firmware.bin"):
        assert (copy / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    make = (copy / "Makefile").read_text()
    for flag in ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-Wall -Wextra -Werror", "-std=c99",
                 "-ffunction-sections -fdata-sections", "--gc-sections", "-nostartfiles", "--specs=nano.specs"):
        assert flag in make, flag
    assert "QUTE_EMULATOR" in make


@needs_qemu
def test_nucleo_f746_build_has_board_firmware_emulator_variant_and_renode_test(tmp_path):
    p = qute("build", "--board", "nucleo-f746", "-o", "b", "--samples", "20", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    b = tmp_path / "b"
    for f in ("Makefile", "firmware.elf", "firmware.bin", "firmware.hex", "memory.json", "build.json", "src/qute_config.h",
              "src/qute_inputs.c", "app/qute_app.c", "app/qute_app.h",
              "src/qute_model.c", "src/qute_model.h", "nucleo-f746.ld", "emulator/firmware.elf",
              "nucleo-f746.resc", "nucleo-f746.robot", "platform/qute_platform.h", "uncertainty/qute_uncertainty.c"):
        assert (b / f).is_file(), f
    assert not list(b.glob("obj"))
    from qute.elf import Elf

    assert Elf(b / "firmware.elf").section(".isr_vector").addr == 0x08000000  # the STM32's flash
    assert Elf(b / "emulator/firmware.elf").section(".isr_vector").addr == 0  # mps2-an500's code memory
    assert (b / "firmware.bin").read_bytes()[:8] == Elf(b / "firmware.elf").read(0x08000000, 8)
    # the robot waits for exactly the summary line the emulated firmware prints
    proc = _qemu(b / "emulator" / "firmware.elf", "mps2-an500")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    done = [ln.strip() for ln in out.splitlines() if ln.startswith("QUTE done")]
    robot = (b / "nucleo-f746.robot").read_text()
    assert f"${{DONE}}          {done[0]}" in robot and "Wait For Line On Uart       ${DONE}" in robot
    assert "sysbus.usart3" in robot and "platforms/cpus/stm32f746.repl" in (b / "nucleo-f746.resc").read_text()
    assert "board=nucleo-f746 target=mps2-an500" in out
    r = qute("run", "--board", "nucleo-f746", b)
    assert r.returncode == 0 and "bit-exact: yes" in r.stdout
    assert "emulated as a variant on mps2-an500" in r.stdout


@needs_qemu
@needs_gdb
def test_flash_over_gdb_into_qemus_gdbstub(an500):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an500", "-S", "-gdb", f"tcp:127.0.0.1:{port}", "-nographic",
                          "-monitor", "none", "-semihosting", "-icount", "shift=0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):  # wait for the gdbstub to listen
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        p = qute("flash", "--board", "mps2-an500", "--probe", "gdb", "--gdb-server", f"127.0.0.1:{port}", an500)
        assert p.returncode == 0, p.stderr + p.stdout
        assert "written, verified and started" in p.stdout
        out, _ = q.communicate(timeout=120)
    finally:
        if q.poll() is None:
            q.kill()
            q.wait()
    assert q.returncode == 0
    assert _check_against_oracle(an500, out.decode()) == 50 * K * CLASSES * HEAD_BYTES


def _fake_tool(folder: Path, name: str, rc: int, message: str = "") -> None:
    """A stand-in for a flashing tool: records its arguments, prints message, exits rc."""
    script = folder / name
    quoted = "'" + message.replace("'", "'\\''") + "'"  # shell builtins only: PATH holds just the fakes
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{folder / (name + '.args')}'\n"
                      f"printf '%s\\n' {quoted}\nexit {rc}\n")
    script.chmod(0o755)


@needs_gcc
def test_flash_commands_and_auto_fallback(tmp_path):
    p = qute("build", "--board", "nucleo-f746", "-o", "b", "--samples", "5", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    b = (tmp_path / "b").resolve()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir)}
    for tool in ("openocd", "pyocd", "st-flash"):
        _fake_tool(bin_dir, tool, 0)
    for probe, tool, args in (
        ("openocd", "openocd", ["-f", "board/st_nucleo_f7.cfg", "-c", f"program {{{b}/firmware.elf}} verify reset exit"]),
        ("pyocd", "pyocd", ["flash", "-t", "stm32f746zgtx", f"{b}/firmware.elf"]),
        ("stlink", "st-flash", ["--reset", "write", f"{b}/firmware.bin", "0x08000000"]),
    ):
        r = qute("flash", "--board", "nucleo-f746", "--probe", probe, b, env=env)
        assert r.returncode == 0, r.stderr
        assert (bin_dir / f"{tool}.args").read_text().splitlines() == args
    # auto: openocd fails, pyocd is missing, st-flash fails: exit 1 listing all three
    _fake_tool(bin_dir, "openocd", 1, "Error: open failed")
    (bin_dir / "pyocd").unlink()
    _fake_tool(bin_dir, "st-flash", 255, "WARN usb.c: Couldn't find any ST-Link devices")
    r = qute("flash", "--board", "nucleo-f746", b, env=env)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()[-1]
    assert "tried openocd, pyocd, stlink" in err and "Error: open failed" in err
    assert "pyocd not installed (pip install pyocd)" in err and "Couldn't find any ST-Link" in err
    # auto stops at the first probe that works
    _fake_tool(bin_dir, "st-flash", 0)
    r = qute("flash", "--board", "nucleo-f746", b, env=env)
    assert r.returncode == 0 and "with stlink" in r.stdout
    # no tool at all: exit 2 naming the packages
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(qute("flash", "--board", "nucleo-f746", b, env={"PATH": str(empty)}),
                      "apt-get install openocd", "apt-get install stlink-tools")
    assert_user_error(qute("flash", "--board", "nucleo-f746", "--probe", "openocd", b, env={"PATH": str(empty)}),
                      "openocd not found; install it: apt-get install openocd")


# --------------------------------------------------------------------------- the fit check


def _big_arena_model(side: int = 128, channels: int = 16) -> bytes:
    """PAD 8x8 -> side x side, then a global MAX_POOL: a 256 KB activation, a few bytes of weights."""
    from fbmodels import ModelBuilder, padding

    b = ModelBuilder("qute fit-check model")
    x = b.input((1, 8, 8, channels), scale=0.02, zero_point=0, name="x")
    pad = (side - 8) // 2
    pads = b.const(np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32))
    big = b.tensor((1, side, side, channels), scale=0.02, zero_point=0, name="padded")
    b.op("PAD", [x, pads], [big])
    y = b.output(b.tensor((1, 1, 1, channels), scale=0.02, zero_point=0, name="pooled"))
    b.op("MAX_POOL_2D", [big], [y], padding=padding("VALID"), strideW=side, strideH=side, filterWidth=side,
         filterHeight=side)
    return b.build()


@needs_gcc
def test_a_model_too_big_for_the_board_fails_with_the_numbers(tmp_path):
    model = tmp_path / "big.tflite"
    model.write_bytes(_big_arena_model())
    p = qute("build", "--board", "nucleo-l432kc", model, "-o", tmp_path / "out" / "b")
    # the arena: the 256 KB activation and the 1 KB input (the output reuses the input's bytes)
    assert_user_error(p, "does not fit nucleo-l432kc", "needs 261 KB RAM, nucleo-l432kc has 64 KB",
                      "arena 257 KB (inputs and outputs included) + stack 4 KB")
    assert not (tmp_path / "out").exists()
    # MLPerf Tiny's visual wake words: too much flash for the L432KC's 256 KB
    vww = Path(__file__).resolve().parents[2] / "shared" / "models" / "vww_mobilenet_int8.tflite"
    if vww.is_file():
        p = qute("build", "--board", "nucleo-l432kc", vww, "--samples", "1", "-o", tmp_path / "vww")
        assert_user_error(p, "KB flash, nucleo-l432kc has 256 KB")
        # the figure moves with the kernels' packed layouts; it must be the flash it really needs
        assert int(re.search(r"needs (\d+) KB flash", p.stderr).group(1)) > 256
        assert not (tmp_path / "vww").exists()
    # the same model fits the F746's 320 KB (and runs)
    p = qute("build", "--board", "nucleo-f746", model, "--samples", "2", "-o", tmp_path / "f746")
    assert p.returncode == 0, p.stderr


@needs_gcc
def test_the_linkers_overflow_becomes_the_same_message(tmp_path, monkeypatch):
    import qute.build.core as B

    model = tmp_path / "big.tflite"
    model.write_bytes(_big_arena_model())
    monkeypatch.setattr(B, "check_fit_before_link", lambda *a: {})  # let it reach the linker
    with pytest.raises(QuteError, match=r"does not fit nucleo-l432kc: needs 262 KB RAM, nucleo-l432kc has 64 KB \(the linker's count\)"):
        B.build("nucleo-l432kc", str(model), tmp_path / "out", samples=2)
    assert _tree(tmp_path) == ["big.tflite"]


# --------------------------------------------------------------------------- bad input and failures


@needs_gcc
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, an500):
    out = tmp_path / "out"
    assert_user_error(qute("build", "--board", "nucleo-f999", "-o", out, cwd=tmp_path), "unknown board 'nucleo-f999'",
                      "nucleo-f746")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    assert_user_error(qute("build", "--board", "nucleo-f746", "-o", out, env={"PATH": str(empty)}, cwd=tmp_path),
                      "arm-none-eabi-gcc not found; install it: apt-get install gcc-arm-none-eabi")
    assert_user_error(qute("build", "--board", "nucleo-f746", tmp_path / "nope", "-o", out), "does not exist")
    assert_user_error(qute("build", "--board", "nucleo-f746", "--samples", "0", "-o", out, cwd=tmp_path), "--samples")
    (tmp_path / "garbage.tflite").write_bytes(b"not a model")
    assert_user_error(qute("build", "--board", "nucleo-f746", tmp_path / "garbage.tflite", "-o", out))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert_user_error(qute("build", "--board", "nucleo-f746", "-o", precious, cwd=tmp_path), "was not made by qute build")
    assert _tree(precious) == ["notes.txt"]
    assert not out.exists()

    # qute run / flash on broken build directories
    assert_user_error(qute("run", "--board", "mps2-an500", tmp_path / "missing"), "does not exist")
    assert_user_error(qute("run", "--board", "mps2-an500", precious), "is not a qute build")
    broken = tmp_path / "broken"
    shutil.copytree(an500, broken)
    (broken / "build.json").write_text("{not json")
    assert_user_error(qute("run", "--board", "mps2-an500", broken), "damaged")
    shutil.copy2(an500 / "build.json", broken / "build.json")
    (broken / "firmware.elf").unlink()
    assert_user_error(qute("run", "--board", "mps2-an500", broken), "missing firmware.elf")
    assert_user_error(qute("flash", "--board", "mps2-an500", "--probe", "gdb", "--gdb-server", "localhost:1", broken),
                      "missing firmware.elf")
    assert_user_error(qute("run", "--board", "nucleo-f746", an500), "built for mps2-an500, not nucleo-f746")
    assert_user_error(qute("run", "--board", "mps2-an500", an500, env={"PATH": str(empty)}),
                      "qemu-system-arm not found; install it: apt-get install qemu-system-arm")
    if shutil.which("renode-test") is None:
        assert_user_error(qute("run", "--board", "mps2-an500", "--emulator", "renode", an500),
                          "renode-test not found", "https://renode.io")
    assert_user_error(qute("flash", "--board", "mps2-an500", "--probe", "gdb", an500), "--gdb-server")
    assert_user_error(qute("flash", "--board", "mps2-an500", "--probe", "gdb", "--gdb-server", "nohost", an500),
                      "HOST:PORT")
    f746_emu = tmp_path / "f746-emu"
    assert qute("build", "--board", "nucleo-f746", "--emulator", "--samples", "2", "-o", f746_emu, cwd=tmp_path).returncode == 0
    assert_user_error(qute("flash", "--board", "nucleo-f746", f746_emu), "emulator build", "rebuild without --emulator")


@needs_qemu
def test_run_failures_exit_1(tmp_path, an500):
    # a time-out: 1 ms, less than QEMU takes to start (50 ms was not: an idle machine ran all 50
    # inputs within it)
    p = qute("run", "--board", "mps2-an500", "--timeout", "0.001", an500)
    assert p.returncode == 1 and "time-out" in p.stderr
    # a mismatch: the host compares against other inputs than the firmware ran
    tampered = tmp_path / "tampered"
    shutil.copytree(an500, tampered)
    with np.load(tampered / "inputs.npz") as z:
        x, y = z["x"].copy(), z["y"]
    x[7] = np.bitwise_not(x[7])
    np.savez(tampered / "inputs.npz", x=x, y=y)
    p = qute("run", "--board", "mps2-an500", tampered)
    assert p.returncode == 1 and "bit-exact: no" in p.stdout
    assert "of 3,000 differ" in p.stdout and " 0 of 3,000 differ" not in p.stdout
    # a crash: main() starts with an undefined instruction; the fault handler ends the program with status 3
    crashed = tmp_path / "crashed"
    shutil.copytree(an500, crashed)
    from qute.elf import Elf

    elf = Elf(crashed / "firmware.elf")
    main = elf.symbol("main")
    text = next(s for s in elf.alloc_sections() if s.addr <= (main.value & ~1) < s.addr + s.size)
    data = bytearray(elf.data)
    struct.pack_into("<H", data, text.offset + (main.value & ~1) - text.addr, 0xDE00)  # udf #0
    (crashed / "firmware.elf").write_bytes(bytes(data))
    p = qute("run", "--board", "mps2-an500", "--timeout", "60", crashed)
    assert p.returncode == 1 and "QEMU exited with status 1" in p.stderr


@needs_gcc
def test_qute_toml_names_the_model_and_board(tmp_path):
    model = tmp_path / "big.tflite"
    model.write_bytes(_big_arena_model(side=16, channels=4))
    (tmp_path / "qute.toml").write_text(f'[build]\nmodel = "{model}"\nboard = "mps2-an386"\nsamples = 3\n')
    p = qute("build", "--emulator", "-o", "b", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "b" / "build.json").read_text())
    assert m["board"] == "mps2-an386" and m["inputs"]["samples"] == 3 and not m["ensemble"]
    (tmp_path / "qute.toml").write_text("[train]\nepochs = 2\n")
    assert_user_error(qute("build", "--board", "mps2-an386", "-o", "c", cwd=tmp_path), "names no model")


# --------------------------------------------------------------------------- a trained QUTE model on four boards


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny QUTE model (K=3) trained on digits, saved as a run but not quantized (~15 s)."""
    return tiny_qute_run(tmp_path_factory.mktemp("runs"), K)[0]


@pytest.fixture(scope="module")
def f746_from_run(run_dir, tmp_path_factory):
    """`qute build` on a run with no int8 model: quantizes it first, then builds for nucleo-f746."""
    if not (have["arm-none-eabi-gcc"] and have["make"]):
        pytest.skip("arm-none-eabi-gcc not installed")
    assert not (run_dir / "model.int8.tflite").exists()
    out = tmp_path_factory.mktemp("f746") / "build"
    p = qute("build", "--board", "nucleo-f746", run_dir, "--samples", str(SAMPLES), "-o", out)
    assert p.returncode == 0, p.stderr
    assert (run_dir / "model.int8.tflite").is_file() and "quantizing it first" in p.stderr
    return out


@pytest.mark.slow
@needs_qemu
def test_build_quantizes_a_run_and_its_firmware_is_bit_exact(f746_from_run):
    m = json.loads((f746_from_run / "build.json").read_text())
    assert m["inputs"]["labelled"] and m["inputs"]["samples"] == SAMPLES and m["ensemble"] and m["classes"] == CLASSES
    assert [o["name"] for o in m["outputs"]] == [f"head_{k}" for k in range(K)]
    p = qute("run", "--board", "nucleo-f746", f746_from_run)  # what `make demo` does
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"0 of {SAMPLES * K * CLASSES * HEAD_BYTES:,} differ" in p.stdout and "bit-exact: yes" in p.stdout
    assert "accuracy:" in p.stdout and "uncertainty (mean):  confidence" in p.stdout


@pytest.mark.slow
@needs_qemu
def test_tiny_qute_model_on_mps2_an385_integer_path_bit_exact(f746_from_run, run_dir, tmp_path):
    out = tmp_path / "an385"
    p = qute("build", "--board", "mps2-an385", run_dir, "--emulator", "--samples", str(SAMPLES), "-o", out)
    assert p.returncode == 0, p.stderr
    _check_int_build(out, SAMPLES)


@pytest.mark.slow
@needs_qemu
@pytest.mark.parametrize("board", EMULATED)
def test_trained_model_bit_exact_under_qemu(f746_from_run, run_dir, tmp_path, board):
    out = tmp_path / board
    p = qute("build", "--board", board, run_dir, "--emulator", "--samples", str(SAMPLES), "-o", out)
    assert p.returncode == 0, p.stderr
    if board == "nucleo-f746":
        assert "emulator build: nucleo-f746 has no QEMU machine: emulated as a variant on mps2-an500" in p.stdout
        assert "same compiler flags as on nucleo-f746 (-mcpu=cortex-m7 -mthumb -mfpu=fpv5-sp-d16" in p.stdout
    r = qute("run", "--board", board, out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"0 of {SAMPLES * K * CLASSES * HEAD_BYTES:,} differ from the host reference (TFLite Micro), {SAMPLES} inputs" in r.stdout
    assert f"0 of {SAMPLES * 4:,} float32 values differ" in r.stdout and "bit-exact: yes" in r.stdout
    machine = json.loads((out / "build.json").read_text())["qemu_machine"]
    proc = _qemu(out / "firmware.elf", machine)
    assert proc.returncode == 0
    assert _check_against_oracle(out, proc.stdout.decode()) == SAMPLES * K * CLASSES * HEAD_BYTES
