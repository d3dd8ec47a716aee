"""The accuracy-drop monitor and the calibrated decisions: qute calibrate, the C ring buffer
(firmware/uncertainty/qute_monitor.c) against qute.drift.simulate, and a tiny QUTE model that
sees an ID stream then a strongly corrupted one under QEMU, its first alarm where the host's is.
"""

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cliutil import assert_user_error, qute
from hostapp import compile_app, have_host_gcc, run_app, same_lines_but_counts
from tiny import tiny_calibrated_run

from qute import drift
from qute.calibrate import abstain_threshold, accepted, choose_monitor_rho, f32_from_hex, f32_hex
from qute.errors import QuteError

ROOT = Path(__file__).resolve().parents[1]
K = 3
WINDOW = 20
PART = 40  # images per part of the embedded stream
CORRUPTION = "contrast:5"

have = {t: shutil.which(t) is not None for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")}
needs_qemu = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"] and have["qemu-system-arm"]),
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed")


# --------------------------------------------------------------------------- the host mirror


def _reference(conf, window, rho):
    """The monitor's rule written out sample by sample, independently of simulate's vectorised form."""
    ring, s, means, alarms = [0] * window, 0, [], []
    for i, c in enumerate(np.asarray(conf, dtype=np.float32)):
        q = 0 if not c > 0 else 65536 if c >= 1 else int(np.floor(np.float32(c) * np.float32(65536)))
        s += q - ring[i % window]
        ring[i % window] = q
        if i + 1 < window:
            means.append(np.float32(np.nan))
            alarms.append(False)
        else:
            m = (np.float32(s) / np.float32(window)) * np.float32(2.0**-16)
            means.append(m)
            alarms.append(bool(m < np.float32(rho)))
    return np.array(means, dtype=np.float32), np.array(alarms)


def test_simulate_follows_the_rule():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 300).astype(np.float32)
    conf[:5] = [0, 1, 1.5, -0.0, np.float32(1e-40)]
    for window in (1, 7, 100):
        means, alarms = drift.simulate(conf, window, np.float32(0.55))
        want_m, want_a = _reference(conf, window, np.float32(0.55))
        assert np.array_equal(means.view(np.uint32), want_m.view(np.uint32))
        assert np.array_equal(alarms, want_a)
        assert np.all(np.isnan(means[:window - 1])) and not alarms[:window - 1].any()
    means, alarms = drift.simulate(conf[:3], 5, 1.0)  # never full: no mean, no alarm
    assert np.all(np.isnan(means)) and not alarms.any() and drift.first_alarm(alarms) is None
    with pytest.raises(QuteError, match="window"):
        drift.simulate(conf, 0, 0.5)
    with pytest.raises(QuteError, match="window"):
        drift.simulate(conf, 70000, 0.5)


def test_threshold_and_rho_rules():
    v = np.arange(1, 101, dtype=np.float32) / np.float32(100)
    thr, ok = abstain_threshold(v, "confidence", 0.95)
    assert ok.sum() == 95 and thr == np.float32(0.06) and np.array_equal(ok, accepted(v, "confidence", thr))
    thr, ok = abstain_threshold(v, "entropy", 0.9)
    assert ok.sum() == 90 and thr == np.float32(0.9)
    thr, ok = abstain_threshold(v, "mi", 1.0)
    assert ok.all()
    rho, means = choose_monitor_rho(v[::-1], 10, 0.0)
    assert rho == means.min() and not (means < rho).any()
    rho, means = choose_monitor_rho(v[::-1], 10, 0.1)
    assert (means < rho).sum() <= int(0.1 * len(means))
    with pytest.raises(QuteError, match="fewer than the monitor window"):
        choose_monitor_rho(v, 101, 0.0)
    assert f32_from_hex(f32_hex(np.float32(0.1))) == np.float32(0.1)


# --------------------------------------------------------------------------- C against Python

_HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "qute_monitor.h"

/* stdin: records of (uint32 window, float rho, uint32 n, n floats); stdout per sample: float mean bits
 * (0xffffffff while not full) and int32 state (-1 not full, 0, 1). */
int main(void)
{
    uint32_t hdr[3];
    while (fread(hdr, 4, 3, stdin) == 3) {
        uint32_t window = hdr[0], n = hdr[2];
        float rho;
        memcpy(&rho, &hdr[1], 4);
        uint32_t *ring = malloc(window * 4u);
        float *conf = malloc(n * 4u + 4u);
        if (fread(conf, 4, n, stdin) != n) return 2;
        qute_monitor m;
        if (qute_monitor_init(&m, ring, window, rho) != 0) return 3;
        for (uint32_t i = 0; i < n; ++i) {
            float mean = 0.0f;
            int32_t st = qute_monitor_update(&m, conf[i], &mean);
            uint32_t bits = 0xffffffffu;
            if (st >= 0) memcpy(&bits, &mean, 4);
            fwrite(&bits, 4, 1, stdout);
            fwrite(&st, 4, 1, stdout);
        }
        free(ring);
        free(conf);
    }
    return 0;
}
"""


@pytest.mark.skipif(not have["gcc"], reason="no host gcc")
def test_c_monitor_equals_simulate_on_random_streams(tmp_path):
    src = ROOT / "firmware" / "uncertainty"
    (tmp_path / "h.c").write_text(_HARNESS)
    exe = tmp_path / "h"
    subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", f"-I{src}",
                    str(tmp_path / "h.c"), str(src / "qute_monitor.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(5)
    streams, payload = [], b""
    for t in range(300):
        window = int(rng.choice([1, 2, 3, 10, 100, 257, 1000]))
        n = int(rng.integers(1, 3 * window + 50))
        conf = rng.beta(rng.uniform(0.5, 8), rng.uniform(0.3, 3), n).astype(np.float32)
        if t % 3 == 0:  # what int8 heads give: multiples of 1/256 and their means
            conf = (np.round(conf * 256) / 256 / 3 * 3).astype(np.float32)
        if t % 5 == 0:  # a drop in the middle
            conf[n // 2:] *= np.float32(0.5)
        k = rng.integers(0, n, size=max(1, n // 20))
        conf[k] = rng.choice(np.array([0.0, 1.0, -0.0, 1e-40, 0.99999994, 1.5, -0.25, np.nan], dtype=np.float32), size=k.size)
        rho = np.float32(rng.uniform(0.3, 0.95))
        streams.append((window, rho, conf))
        payload += struct.pack("<IfI", window, rho, n) + conf.tobytes()
    out = subprocess.run([str(exe)], input=payload, capture_output=True, check=True).stdout
    rec = np.frombuffer(out, dtype=np.dtype([("mean", "<u4"), ("state", "<i4")]))
    assert len(rec) == sum(len(c) for _, _, c in streams)
    pos, alarms_seen = 0, 0
    for window, rho, conf in streams:
        r = rec[pos:pos + len(conf)]
        pos += len(conf)
        means, alarms = drift.simulate(conf, window, rho)
        full = ~np.isnan(means)
        assert np.array_equal(r["state"] >= 0, full)
        assert np.array_equal(r["mean"][full], means[full].view(np.uint32))
        assert np.array_equal(r["state"] == 1, alarms)
        assert drift.first_alarm(r["state"] == 1) == drift.first_alarm(alarms)
        alarms_seen += int(alarms.sum())
    assert alarms_seen > 0 and pos == len(rec)


# --------------------------------------------------------------------------- calibrate, build, run


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny QUTE run (K=3, digits), quantized, calibrated with a window of 20 (~30 s)."""
    run_dir, data, stdout = tiny_calibrated_run(tmp_path_factory.mktemp("runs"), K, WINDOW)
    assert "int8 model on TFLite Micro" in stdout and "calibration.json" in stdout
    return run_dir, data


@pytest.mark.slow
def test_calibrate_writes_sensible_values(calibrated):
    from qute.quantize import int8_head_probs
    from qute.uncertainty import summarize

    run_dir, data = calibrated
    c = json.loads((run_dir / "calibration.json").read_text())
    assert c["scores_from"] == "int8" and c["model_sha256"]
    s = summarize(int8_head_probs((run_dir / "model.int8.tflite").read_bytes(), data.x_val, K))
    n = len(data.x_val)
    thr = f32_from_hex(c["abstain"]["threshold_f32"])
    assert float(thr) == c["abstain"]["threshold"]
    tpr = float(np.mean(s.confidence >= thr))
    # the threshold is the ceil(0.95 n)-th most confident value: fewer than 95% lie strictly above
    # it, and at least 95% are accepted (more when several share the threshold's value)
    assert tpr >= 0.95 and float(np.mean(s.confidence > thr)) < 0.95
    assert np.sum(s.confidence > thr) < np.ceil(0.95 * n) <= np.sum(s.confidence >= thr)
    assert tpr == c["abstain"]["validation_tpr"]
    rho = f32_from_hex(c["monitor"]["rho_f32"])
    means, alarms = drift.simulate(s.confidence, WINDOW, rho)
    assert not alarms.any() and rho == np.nanmin(means) and c["monitor"]["validation_alarms"] == 0
    assert c["monitor"]["window"] == WINDOW and 0 < rho < 1

    # other scores: lower is more certain
    p = qute("calibrate", run_dir, "--score", "entropy", "--target-tpr", "0.9", "--window", WINDOW, "--false-alarm", "0.1")
    assert p.returncode == 0, p.stderr
    e = json.loads((run_dir / "calibration.json").read_text())
    thr = f32_from_hex(e["abstain"]["threshold_f32"])
    assert 0.9 <= float(np.mean(s.entropy <= thr)) <= 0.9 + 1 / n and e["abstain"]["accept_when"] == "<="
    means, alarms = drift.simulate(s.confidence, WINDOW, f32_from_hex(e["monitor"]["rho_f32"]))
    assert alarms.sum() <= int(0.1 * (n - WINDOW + 1))
    # put the confidence calibration back for the tests below
    (run_dir / "calibration.json").write_text(json.dumps(c, indent=2) + "\n")


@pytest.mark.slow
def test_calibrate_bad_input_is_one_line(calibrated, tmp_path):
    run_dir, _ = calibrated
    before = (run_dir / "calibration.json").read_text()
    assert_user_error(qute("calibrate", tmp_path / "nope"), "nope")
    assert_user_error(qute("calibrate", run_dir, "--target-tpr", "1.5"), "--target-tpr")
    assert_user_error(qute("calibrate", run_dir, "--false-alarm", "1"), "--false-alarm")
    assert_user_error(qute("calibrate", run_dir, "--window", "100000"), "window")
    assert_user_error(qute("calibrate", run_dir, "--window", "5000"), "fewer than the monitor window")
    assert (run_dir / "calibration.json").read_text() == before


@pytest.mark.slow
@needs_qemu
def test_device_monitor_alarms_where_the_host_does(calibrated, tmp_path):
    from qute.emulate import run as run_emulator

    run_dir, _ = calibrated
    cal = json.loads((run_dir / "calibration.json").read_text())
    out = tmp_path / "an500"
    p = qute("build", "--board", "mps2-an500", run_dir, "--emulator", "--samples", PART,
             "--stream", f"id,corrupt:{CORRUPTION}", "-o", out)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "calibration (" in p.stdout and "monitor alarm when the mean of the last 20" in p.stdout

    # the calibration round-trips: manifest and generated qute_config.h carry calibration.json's constants
    m = json.loads((out / "build.json").read_text())
    mc = m["calibration"]
    assert mc["threshold_f32"] == cal["abstain"]["threshold_f32"] and mc["rho_f32"] == cal["monitor"]["rho_f32"]
    assert mc["window"] == WINDOW and mc["score"] == "confidence" and m["inputs"]["samples"] == 2 * PART
    config = (out / "src" / "qute_config.h").read_text()
    lit = {k: float.fromhex(re.search(rf"#define {k} (\S+)f ", config).group(1))
           for k in ("QUTE_ABSTAIN_THRESHOLD", "QUTE_MONITOR_RHO")}
    assert np.float32(lit["QUTE_ABSTAIN_THRESHOLD"]) == f32_from_hex(cal["abstain"]["threshold_f32"])
    assert lit["QUTE_ABSTAIN_THRESHOLD"] == cal["abstain"]["threshold"]
    assert lit["QUTE_MONITOR_RHO"] == cal["monitor"]["rho"]
    assert f"#define QUTE_MONITOR_WINDOW {WINDOW}u" in config and "#define QUTE_CALIBRATED 1" in config

    r = run_emulator("mps2-an500", out)
    mon = r.monitor
    assert r.bit_exact, r.summary()
    assert mon["differing"] == 0 and mon["first_alarm_device"] == mon["first_alarm_host"]
    assert mon["first_alarm_device"] is not None and mon["first_alarm_device"] >= PART, r.summary()
    assert "first alarm device sample" in r.summary()

    # the command line says the same
    p = qute("run", out)
    assert p.returncode == 0 and "bit-exact: yes" in p.stdout, p.stdout + p.stderr
    assert f"first alarm device sample {mon['first_alarm_device']}, host sample {mon['first_alarm_host']}" in p.stdout

    # the transcript: format 2, the constants on the start line; a device that disagrees is caught
    from qute.boards import load_board
    from qute.build import load_build
    from qute.emulate import check, qemu_command, run_process
    from qute.transcript import FORMAT, parse

    rc, text, _ = run_process(qemu_command("qemu-system-arm", "mps2-an500", out / "firmware.elf"), 120)
    t = parse(text)
    assert rc == 0 and t.start["format"] == str(FORMAT) == "2"
    assert t.start["abstain_threshold"] == mc["threshold_f32"] and t.start["monitor_rho"] == mc["rho_f32"]
    assert t.start["monitor_window"] == str(WINDOW) and t.start["abstain_score"] == "confidence"
    # the same application compiled for the PC (tests/hostapp.py) prints the same lines, counts aside
    if have_host_gcc:
        host_text = run_app(compile_app(out, tmp_path / "app"))
        assert same_lines_but_counts(host_text, text)
    assert all(s.window_mean is None and not s.alarm for s in t.samples[:WINDOW - 1])
    assert all(s.window_mean is not None for s in t.samples[WINDOW - 1:])
    first = mon["first_alarm_device"]
    bad = text.replace(f"QUTE sample={first} ", f"QUTE sample={first} X", 1)
    line = next(ln for ln in bad.splitlines() if ln.startswith(f"QUTE sample={first} X"))
    bad = bad.replace(line, line.replace("X", "").replace(" alarm=1", " alarm=0"))
    r2 = check(load_build(out), parse(bad), load_board("mps2-an500"))
    assert not r2.bit_exact and r2.monitor["alarm_differing"] == 1
    later = [s.index for s in t.samples if s.alarm and s.index > first]
    assert r2.monitor["first_alarm_device"] == (later[0] if later else None) != r2.monitor["first_alarm_host"]


@pytest.mark.slow
@needs_qemu
def test_a_build_without_calibration_says_so(tmp_path):
    p = qute("build", "--board", "mps2-an500", "--emulator", "--samples", "5", "-o", tmp_path / "b")
    assert p.returncode == 0, p.stderr
    assert "no calibration:" in p.stdout
    config = (tmp_path / "b" / "src" / "qute_config.h").read_text()
    assert "#define QUTE_CALIBRATED 0" in config and "QUTE_MONITOR" not in config
    assert_user_error(qute("build", "--board", "mps2-an500", "--emulator", "--stream", "id", "-o", tmp_path / "c"),
                      "--stream needs a run directory")


def test_transcript_format_2_fields():
    from qute import transcript

    text = (
        "QUTE start format=2 board=b target=t model=0123456789ab samples=3 heads=1 classes=2 abstain_score=entropy "
        "abstain_threshold=3f000000 monitor_window=2 monitor_rho=3f400000 counter=instructions\n"
        "QUTE sample=0 label=1 pred=1 conf=0.7500 heads=8040 scores=3f400000,3f000000,3f000000,00000000 "
        "score=3f000000 abstain=0 window_mean=- alarm=0 cycles=5\n"
        "QUTE sample=1 label=0 pred=0 conf=0.5000 heads=4080 scores=3f000000,00000000,3f317218,00000000 "
        "score=3f317218 abstain=1 window_mean=3f200000 alarm=1 cycles=5\n"
        "QUTE sample=2 label=0 pred=0 conf=0.5000 heads=4080 cycles=5\n"  # format 1 fields only still parse
        "QUTE done samples=3 crc32=00000000\n"
    )
    t = transcript.parse(text)
    s0, s1, s2 = t.samples
    assert t.start["monitor_rho"] == "3f400000" and t.start["abstain_score"] == "entropy"
    assert s0.window_mean is None and s0.alarm is False and s0.abstain is False and s0.score == np.float32(0.5)
    assert s1.window_mean == np.float32(0.625) and s1.alarm is True and s1.abstain is True
    assert s2.abstain is None and s2.alarm is None and s2.window_mean is None and s2.score is None
    for bad in ("QUTE sample=0 label=1 pred=1 heads=80 abstain=2 cycles=1",
                "QUTE sample=0 label=1 pred=1 heads=80 window_mean=0.5 cycles=1",
                "QUTE sample=0 label=1 pred=1 heads=80 score=zz cycles=1"):
        with pytest.raises(transcript.TranscriptError):
            transcript.parse(bad)
