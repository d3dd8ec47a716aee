"""The abstain flag and the accuracy-drop monitor on boards with no FPU: integer constants from
qute calibrate, the integer variant of the C monitor (qute_monitor_update_q16) against
qute.drift.simulate_int, and a tiny QUTE model on the Cortex-M3 mps2-an385 under QEMU that sees
an ID stream then a corrupted one, every flag and its first alarm where the host has them.
"""

import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cliutil import qute
from heads import head_values, int_scores
from hostapp import compile_app, have_host_gcc, run_app, same_lines_but_counts
from elfcheck import float_helpers, symbols
from tiny import tiny_calibrated_run

from qute import drift
from qute.calibrate import (
    abstain_threshold_int,
    accepted_int,
    choose_monitor_rho_sum,
    format_calibration,
    load_calibration,
)
from qute.errors import QuteError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "uncertainty"
K = 3
WINDOW = 10
PART = 25  # images per part of the embedded stream
BOARD = "mps2-an385"  # Cortex-M3, fpu = "none"
WARN = ["-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wfloat-conversion"]
LIMIT = 65535 * 65536  # the largest window sum: window QUTE_MONITOR_MAX_WINDOW, every confidence 1.0

have = {t: shutil.which(t) is not None for t in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "make", "gcc")}
needs_qemu = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"] and have["qemu-system-arm"]),
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed")


# --------------------------------------------------------------------------- the host mirror


def _reference_int(q16, window, rho_sum):
    """The integer monitor's rule sample by sample, independently of simulate_int's vectorised form."""
    ring, s, sums, alarms = [0] * window, 0, [], []
    for i, q in enumerate(int(v) for v in q16):
        q = min(q, 65536)
        s += q - ring[i % window]
        ring[i % window] = q
        full = i + 1 >= window
        sums.append(s if full else -1)
        alarms.append(full and s < rho_sum)
    return np.array(sums, dtype=np.int64), np.array(alarms, dtype=bool)


def test_simulate_int_follows_the_rule():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 65537, 400)
    q[:6] = [0, 65536, 65537, 2**32 - 1, 1, 2**31]  # above 1.0: clamped to 65536
    for window in (1, 2, 7, 100, 400):
        rho_sum = int(0.6 * window * 65536)
        sums, alarms = drift.simulate_int(q, window, rho_sum)
        want_s, want_a = _reference_int(q, window, rho_sum)
        assert np.array_equal(sums, want_s) and np.array_equal(alarms, want_a)
        assert np.all(sums[:window - 1] == -1) and not alarms[:window - 1].any()
    sums, alarms = drift.simulate_int(q[:3], 5, 2**32 - 1)  # never full: no sum, no alarm
    assert np.all(sums == -1) and not alarms.any() and drift.first_alarm(alarms) is None
    # ties: a sum equal to rho_sum does not alarm, one below does
    sums, alarms = drift.simulate_int([3, 3, 2, 4], 2, 6)
    assert sums.tolist() == [-1, 6, 5, 6] and alarms.tolist() == [False, False, True, False]
    for bad in ([-1], [0.5], [2**32]):
        with pytest.raises(QuteError, match="Q16 confidences"):
            drift.simulate_int(np.array(bad), 1, 0)
    for bad in (-1, 2**32, 0.5, True):
        with pytest.raises(QuteError, match="rho_sum"):
            drift.simulate_int([1], 1, bad)
    with pytest.raises(QuteError, match="window"):
        drift.simulate_int([1], 65536, 0)


def test_integer_threshold_and_rho_sum_rules():
    v = np.arange(1, 101, dtype=np.int64) * 600  # Q16 confidences
    thr, ok = abstain_threshold_int(v, "confidence", 0.95)
    assert thr == 6 * 600 and ok.sum() == 95 and np.array_equal(ok, accepted_int(v, "confidence", thr))
    thr, ok = abstain_threshold_int(v, "entropy", 0.9)  # lower is more certain
    assert thr == 90 * 600 and ok.sum() == 90 and np.array_equal(ok, v <= thr)
    tied = np.array([5, 7, 7, 7, 9], dtype=np.int64)  # the k-th most certain is a tie: all of it accepted
    thr, ok = abstain_threshold_int(tied, "margin", 0.4)
    assert thr == 7 and ok.sum() == 4 >= math.ceil(0.4 * 5)
    with pytest.raises(QuteError, match="integer"):
        abstain_threshold_int(np.array([0.5]), "confidence", 0.9)

    q = np.array([60000] * 30 + [30000] * 5 + [60000] * 30, dtype=np.int64)
    rho_sum, sums = choose_monitor_rho_sum(q, 10, 0.0)
    assert rho_sum == sums.min() and not (sums < rho_sum).any() and len(sums) == len(q) - 9
    rho_sum, sums = choose_monitor_rho_sum(q, 10, 0.1)
    assert (sums < rho_sum).sum() <= int(0.1 * len(sums))
    flat, _ = choose_monitor_rho_sum(np.full(20, 40000), 5, 0.5)  # every window ties: none alarms
    assert flat == 5 * 40000 and not drift.simulate_int(np.full(20, 40000), 5, flat)[1].any()
    with pytest.raises(QuteError, match="fewer than the monitor window"):
        choose_monitor_rho_sum(q, 100, 0.0)


# --------------------------------------------------------------------------- C against Python

_HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "qute_monitor.h"

/* stdin: records of (uint32 window, uint32 rho_sum, uint32 n, n uint32 Q16 values); stdout per
 * sample: uint32 window sum (0xffffffff while not full) and int32 state (-1 not full, 0, 1). */
int main(void)
{
    uint32_t hdr[3];
    qute_monitor m;
    uint32_t one;
    if (qute_monitor_init_q16(&m, &one, 0u, 0u) != -1 || qute_monitor_init_q16(&m, &one, 65536u, 0u) != -1) return 4;
    while (fread(hdr, 4, 3, stdin) == 3) {
        uint32_t window = hdr[0], n = hdr[2];
        uint32_t *ring = malloc(window * 4u);
        uint32_t *q = malloc(n * 4u + 4u);
        if (fread(q, 4, n, stdin) != n) return 2;
        if (qute_monitor_init_q16(&m, ring, window, hdr[1]) != 0) return 3;
        for (uint32_t i = 0; i < n; ++i) {
            uint32_t sum = 0xffffffffu;
            int32_t st = qute_monitor_update_q16(&m, q[i], &sum);
            if (st < 0 && sum != 0xffffffffu) return 5; /* untouched until the window is full */
            fwrite(&sum, 4, 1, stdout);
            fwrite(&st, 4, 1, stdout);
        }
        free(ring);
        free(q);
    }
    return 0;
}
"""


def _streams():
    """(window, rho_sum, uint32 Q16 stream): random, window 1, window = length, sums at the uint32
    limit, values above 1.0, and thresholds that tie with a window sum."""
    rng = np.random.default_rng(7)
    out = []
    for t in range(200):
        window = int(rng.choice([1, 2, 3, 10, 100, 257]))
        n = int(rng.integers(1, 3 * window + 40))
        if t % 7 == 0:
            n = window  # one full window, at the very last sample
        q = rng.integers(0, 65537, n).astype(np.uint32)
        if t % 3 == 0:  # what the integer path gives for K = 3: rdiv(S1 * 65536, 768)
            q = ((rng.integers(0, 766, n) * 65536 + 384) // 768).astype(np.uint32)
        if t % 5 == 0:
            q[n // 2:] //= 2  # a drop in the middle
        k = rng.integers(0, n, size=max(1, n // 20))
        q[k] = rng.choice(np.array([0, 65535, 65536, 65537, 2**31, 2**32 - 1], dtype=np.uint32), size=k.size)
        sums, _ = drift.simulate_int(q, window, 0)
        full = sums[sums >= 0]
        # rho_sum on an actual window sum (a tie: no alarm there), or just above one, or random
        pick = int(rng.choice(full)) if full.size else 0
        rho_sum = [pick, pick + 1, int(rng.integers(0, window * 65536 + 2))][t % 3]
        out.append((window, rho_sum, q))
    at_limit = np.full(65535 + 300, 65536, dtype=np.uint32)
    at_limit[65535 + 100:65535 + 110] = 2**32 - 1  # clamped to 65536: the sum stays exact
    at_limit[65535 + 200] = 65535  # one below: the sum drops by one
    out += [(65535, LIMIT, at_limit), (65535, LIMIT + 1, at_limit), (65535, LIMIT - 1, at_limit)]
    return out


@pytest.mark.skipif(not have["gcc"], reason="no host gcc")
def test_c_integer_monitor_equals_simulate_int(tmp_path):
    (tmp_path / "h.c").write_text(_HARNESS)
    exe = tmp_path / "h"
    # as a core with no FPU compiles it: the float API is not even there
    subprocess.run(["gcc", "-std=c99", "-O2", *WARN, "-DQUTE_UNCERTAINTY_INT", f"-I{SRC}", str(tmp_path / "h.c"),
                    str(SRC / "qute_monitor.c"), "-o", str(exe)], check=True)
    streams = _streams()
    payload = b"".join(struct.pack("<III", w, r, len(q)) + q.astype("<u4").tobytes() for w, r, q in streams)
    proc = subprocess.run([str(exe)], input=payload, capture_output=True, check=False)
    assert proc.returncode == 0, proc.returncode
    rec = np.frombuffer(proc.stdout, dtype=np.dtype([("sum", "<u4"), ("state", "<i4")]))
    assert len(rec) == sum(len(q) for *_, q in streams)
    pos, alarms_seen, ties = 0, 0, 0
    for window, rho_sum, q in streams:
        r = rec[pos:pos + len(q)]
        pos += len(q)
        sums, alarms = drift.simulate_int(q, window, rho_sum)
        full = sums >= 0
        assert np.array_equal(r["state"] >= 0, full)
        assert np.array_equal(r["sum"][full].astype(np.int64), sums[full])
        assert np.array_equal(r["state"] == 1, alarms)
        assert drift.first_alarm(r["state"] == 1) == drift.first_alarm(alarms)
        alarms_seen += int(alarms.sum())
        ties += int(np.sum(sums == rho_sum))
    assert alarms_seen > 0 and ties > 0 and pos == len(rec)
    limit = rec[-3 * (65535 + 300):].reshape(3, -1)
    assert limit["sum"][0, 65534] == LIMIT and limit["sum"][limit["state"] >= 0].max() == LIMIT  # no wrap-around
    assert not (limit["state"][0, :65535 + 200] == 1).any() and (limit["state"][1, 65534:] == 1).all()
    assert limit["sum"][0, 65535 + 200] == LIMIT - 1 and limit["state"][0, 65535 + 200] == 1


def test_integer_monitor_cross_compiles_for_cortex_m3_without_float(tmp_path):
    if not (have["arm-none-eabi-gcc"] and have["arm-none-eabi-nm"]):
        pytest.skip("no arm-none-eabi toolchain")
    flags = ["-std=c99", "-O2", "-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft", *WARN, f"-I{SRC}"]
    obj = tmp_path / "m.o"
    subprocess.run(["arm-none-eabi-gcc", *flags, "-DQUTE_UNCERTAINTY_INT", "-c", str(SRC / "qute_monitor.c"),
                    "-o", str(obj)], check=True)
    names = symbols(obj)
    assert {"qute_monitor_init_q16", "qute_monitor_update_q16"} <= set(names)
    assert "qute_monitor_update" not in names and float_helpers(obj) == []
    # the check can fail: the float API compiled for the same core calls the soft-float helpers
    subprocess.run(["arm-none-eabi-gcc", *flags, "-c", str(SRC / "qute_monitor.c"), "-o", str(obj)], check=True)
    assert {"__aeabi_fmul", "__aeabi_ui2f"} <= set(float_helpers(obj))


def test_transcript_integer_fields():
    from qute import transcript

    text = (
        "QUTE start format=2 board=b target=t model=0123456789ab samples=2 heads=1 classes=2 abstain_score=entropy "
        "abstain_threshold_int=700000 monitor_window=2 monitor_rho_sum=70000 counter=instructions\n"
        "QUTE sample=0 label=1 pred=1 conf=0.7500 heads=8040 iscores=49152,32768,590000,0 "
        "iscore=590000 abstain=0 window_sum=- alarm=0 cycles=5\n"
        "QUTE sample=1 label=0 pred=0 conf=0.5000 heads=4080 iscores=32768,0,726817,0 "
        "iscore=726817 abstain=1 window_sum=4294901760 alarm=1 cycles=5\n"
        "QUTE done samples=2 crc32=00000000\n"
    )
    t = transcript.parse(text)
    s0, s1 = t.samples
    assert t.start["monitor_rho_sum"] == "70000" and t.start["abstain_threshold_int"] == "700000"
    assert s0.iscore == 590000 and s0.window_sum is None and s0.abstain is False and s0.alarm is False
    assert s1.iscore == 726817 and s1.window_sum == 4294901760 and s1.abstain is True and s1.alarm is True
    assert s0.score is None and s0.window_mean is None  # the float fields stay apart
    for bad in ("QUTE sample=0 label=1 pred=1 heads=80 window_sum=0x10 cycles=1",
                "QUTE sample=0 label=1 pred=1 heads=80 window_sum=4294967296 cycles=1",
                "QUTE sample=0 label=1 pred=1 heads=80 iscore=1.5 cycles=1"):
        with pytest.raises(transcript.TranscriptError):
            transcript.parse(bad)


# --------------------------------------------------------------------------- calibrate, build, run on the M3


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny QUTE run (K=3, digits), quantized and calibrated with a window of 10 (~25 s)."""
    return tiny_calibrated_run(tmp_path_factory.mktemp("runs"), K, WINDOW)


@pytest.mark.slow
def test_calibrate_writes_the_integer_constants(calibrated):
    from qute.quantize import int8_heads
    from qute.uncertainty import summarize_int

    run_dir, data, stdout = calibrated
    c = json.loads((run_dir / "calibration.json").read_text())
    assert c["version"] == 2 and c["scores_from"] == "int8"
    assert c["integer_path"]["scale_q24"] == 256 and c["integer_path"]["zero_point"] == -32768  # int16 heads
    heads, _ = int8_heads((run_dir / "model.int8.tflite").read_bytes(), data.x_val, K)
    s = summarize_int(heads, 256, -32768)
    n = len(data.x_val)
    a, m = c["abstain"], c["monitor"]
    thr = a["threshold_int"]
    assert isinstance(thr, int) and a["threshold_int_format"] == "Q16" and 0 < thr < 65536
    # the ceil(0.95 n)-th largest Q16 confidence: fewer lie strictly above it, at least that many on or above
    assert np.sum(s.confidence_q16 > thr) < math.ceil(0.95 * n) <= np.sum(s.confidence_q16 >= thr)
    assert a["validation_accepted_int"] == int(np.sum(s.confidence_q16 >= thr))
    sums, alarms = drift.simulate_int(s.confidence_q16, WINDOW, m["rho_sum"])
    assert m["rho_sum"] == sums[WINDOW - 1:].min() and not alarms.any() and m["validation_alarms_int"] == 0
    assert f"accept when confidence (Q16) >= {thr}" in stdout and f"rho_sum = {m['rho_sum']}" in stdout
    cal = load_calibration(run_dir)
    assert cal.has_int and cal.threshold_int == thr and cal.rho_sum == m["rho_sum"]

    # a version 1 file (no integer constants) still loads, says so, and a half-integer one is refused
    old = json.loads(json.dumps(c))
    old["version"] = 1
    del old["abstain"]["threshold_int"], old["monitor"]["rho_sum"], old["integer_path"]
    p = run_dir.parent / "old.json"
    p.write_text(json.dumps(old))
    assert not load_calibration(p).has_int and load_calibration(p).rho == np.float32(m["rho"])
    assert "no integer constants" in format_calibration(old, p)
    old["monitor"]["rho_sum"] = m["rho_sum"]
    p.write_text(json.dumps(old))
    with pytest.raises(QuteError, match="damaged"):
        load_calibration(p)
    old["abstain"]["threshold_int"] = -5
    p.write_text(json.dumps(old))
    with pytest.raises(QuteError, match="damaged"):
        load_calibration(p)


@pytest.mark.slow
@needs_qemu
def test_m3_abstain_flags_and_alarms_match_the_host(calibrated, tmp_path):
    from qute.boards import load_board
    from qute.build import load_build
    from qute.emulate import check, qemu_command, run_process
    from qute.emulate import run as run_emulator
    from qute.transcript import parse

    run_dir, _, _ = calibrated
    cal = json.loads((run_dir / "calibration.json").read_text())
    thr, rho_sum = cal["abstain"]["threshold_int"], cal["monitor"]["rho_sum"]
    out = tmp_path / "an385"
    p = qute("build", "--board", BOARD, run_dir, "--emulator", "--samples", PART,
             "--stream", "id,corrupt:contrast:5", "-o", out)
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"integer-only: abstain when confidence (Q16) < {thr}; monitor alarm when the sum of the last {WINDOW}" in p.stdout

    # the calibration round-trips: manifest and generated qute_config.h carry calibration.json's integers
    m = json.loads((out / "build.json").read_text())
    mc = m["calibration"]
    assert mc["arithmetic"] == "int" and mc["threshold_int"] == thr and mc["rho_sum"] == rho_sum
    assert mc["window"] == WINDOW and mc["score_field_int"] == "confidence_q16" and "threshold_f32" not in mc
    config = (out / "src" / "qute_config.h").read_text()
    assert re.search(rf"#define QUTE_ABSTAIN_THRESHOLD_INT \({thr}\) ", config)
    assert re.search(rf"#define QUTE_MONITOR_RHO_SUM {rho_sum}u ", config)
    assert f"#define QUTE_MONITOR_WINDOW {WINDOW}u" in config and "#define QUTE_INTEGER_PATH 1" in config
    assert "float" not in re.sub(r"/\*.*?\*/", "", config, flags=re.DOTALL)  # the code, not the comments
    assert sorted(f.name for f in (out / "uncertainty").iterdir()) == [
        "qute_monitor.c", "qute_monitor.h", "qute_uncertainty_int.c", "qute_uncertainty_int.h"]
    # no floating point in the image
    names = symbols(out / "firmware.elf")
    assert "qute_monitor_update_q16" in names and "qute_monitor_update" not in names
    assert float_helpers(out / "firmware.elf") == []

    r = run_emulator(BOARD, out)
    mon = r.monitor
    assert r.bit_exact, r.summary()
    assert mon["arithmetic"] == "int" and mon["differing"] == 0
    assert mon["first_alarm_device"] == mon["first_alarm_host"] and mon["first_alarm_device"] is not None
    assert mon["first_alarm_device"] >= PART, r.summary()  # none in the ID part (false_alarm 0)

    # independently of qute run: every flag, score and sum from the device's own heads
    rc, text, _ = run_process(qemu_command("qemu-system-arm", BOARD, out / "firmware.elf"), 120)
    t = parse(text)
    assert rc == 0 and t.start["abstain_threshold_int"] == str(thr) and t.start["monitor_rho_sum"] == str(rho_sum)
    assert t.start["monitor_window"] == str(WINDOW) and t.start["abstain_score"] == "confidence"
    # the same application compiled for the PC (tests/hostapp.py) prints the same lines, counts aside
    if have_host_gcc:
        host_text = run_app(compile_app(out, tmp_path / "app"))
        assert same_lines_but_counts(host_text, text)
    m = json.loads((out / "build.json").read_text())
    want = int_scores(m["uncertainty_path"], head_values(m["outputs"], t.samples))
    sums, alarms = drift.simulate_int(want.confidence_q16, WINDOW, rho_sum)
    assert [s.iscore for s in t.samples] == want.confidence_q16.tolist()
    assert [s.abstain for s in t.samples] == (want.confidence_q16 < thr).tolist()
    assert [-1 if s.window_sum is None else s.window_sum for s in t.samples] == sums.tolist()
    assert [s.alarm for s in t.samples] == alarms.tolist() and alarms.any()

    # the command line says the same; a device that disagrees is caught
    p = qute("run", out)
    assert p.returncode == 0 and "bit-exact: yes" in p.stdout, p.stdout + p.stderr
    first = mon["first_alarm_device"]
    assert f"first alarm device sample {first}, host sample {first}" in p.stdout
    assert "0 window sum(s) and 0 alarm state(s) differ from qute.drift.simulate_int" in p.stdout
    board = load_board(BOARD)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"QUTE sample={first} "))
    flipped = check(load_build(out), parse(text.replace(line, line.replace(" alarm=1", " alarm=0"))), board)
    assert not flipped.bit_exact and flipped.monitor["alarm_differing"] == 1
    assert flipped.monitor["first_alarm_device"] == first + 1 != flipped.monitor["first_alarm_host"]
    s = t.samples[first].window_sum
    off = check(load_build(out), parse(text.replace(line, line.replace(f"window_sum={s} ", f"window_sum={s + 1} "))), board)
    assert not off.bit_exact and off.monitor["mean_differing"] == 1 and off.monitor["alarm_differing"] == 0

    # qute monitor from the run, as a user starts it: build, QEMU, timeline, device against simulate_int
    p = qute("monitor", run_dir, "--board", BOARD, "--stream", "id,corrupt:contrast:5", "--samples", PART,
             "-o", tmp_path / "mon")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "monitor (integer-only): window m=10, alarm when the sum of the window's Q16 confidences" in p.stdout
    assert f"first alarm: device sample {first}, host (qute.drift.simulate_int) sample {first}: match" in p.stdout
    tl = json.loads((tmp_path / "mon" / "monitor.json").read_text())
    assert tl["arithmetic"] == "int" and tl["rho_sum"] == rho_sum and tl["match"]
    assert tl["per_sample"]["window_sum_device"] == tl["per_sample"]["window_sum_host"]


@pytest.mark.slow
@needs_qemu
def test_m3_build_from_a_version_1_calibration_leaves_the_monitor_out(calibrated, tmp_path):
    run_dir, _, _ = calibrated
    path = run_dir / "calibration.json"
    keep = path.read_text()
    c = json.loads(keep)
    c["version"] = 1
    del c["abstain"]["threshold_int"], c["monitor"]["rho_sum"], c["integer_path"]
    try:
        path.write_text(json.dumps(c))
        p = qute("build", "--board", BOARD, run_dir, "--emulator", "--samples", 3, "-o", tmp_path / "b")
    finally:
        path.write_text(keep)
    assert p.returncode == 0, p.stderr
    notes = [ln for ln in p.stdout.splitlines() if ln.startswith("no calibration:")]
    assert len(notes) == 1 and "has no FPU" in notes[0] and "no integer constants" in notes[0]
    config = (tmp_path / "b" / "src" / "qute_config.h").read_text()
    assert "#define QUTE_CALIBRATED 0" in config and "QUTE_MONITOR" not in config
    assert json.loads((tmp_path / "b" / "build.json").read_text())["calibration"] is None
