"""qute monitor (a stream through the device's accuracy-drop monitor, its first alarm against the
host's) and qute report (one self-contained HTML page), on a tiny QUTE run that went through
quantize, calibrate and eval on the command line.
"""

import json
import re
import shutil

import numpy as np
import pytest
from cliutil import assert_user_error, qute
from tiny import tiny_qute_run

from qute.monitor import stream_parts, window_accuracy

K = 3
WINDOW = 20
PART = 40  # images per part of the stream

have = {t: shutil.which(t) is not None for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make")}
needs_qemu = pytest.mark.skipif(not all(have.values()), reason="qemu-system-arm, arm-none-eabi-gcc or make not installed")

RUN_FILES = ("config.json", "history.json", "model.keras", "normalisation.json")


# --------------------------------------------------------------------------- quick ones


def test_window_accuracy_and_stream_parts():
    acc = window_accuracy([1, 1, 0, 1, 0, 0], 3)
    assert np.isnan(acc[:2]).all() and np.allclose(acc[2:], [2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert np.isnan(window_accuracy([1, 0], 3)).all()
    parts = stream_parts("digits stream of test images 0..39: ID, 40..79: contrast severity 5", 80)
    assert parts == [{"start": 0, "end": 39, "what": "ID"}, {"start": 40, "end": 79, "what": "contrast severity 5"}]
    assert stream_parts("digits test split, first 50 of 359 images", 50) == [{"start": 0, "end": 49, "what": "ID"}]


def test_bad_paths_exit_2_with_one_line(tmp_path):
    assert_user_error(qute("report", tmp_path / "nope"), "nope", "qute train")
    assert_user_error(qute("monitor", tmp_path / "nope", "--board", "mps2-an500", "--stream", "id"), "nope")
    (tmp_path / "empty").mkdir()
    assert_user_error(qute("report", tmp_path / "empty"), "not a complete qute run")


# --------------------------------------------------------------------------- on a tiny run


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Tiny QUTE run (K=3, digits) -> qute quantize -> qute calibrate (window 20) -> qute eval of the
    float, int8 and device stages (~1 min)."""
    run_dir, _, _ = tiny_qute_run(tmp_path_factory.mktemp("runs"), K)
    for args in (("quantize", run_dir, "--samples", "200"),
                 ("calibrate", run_dir, "--window", WINDOW),
                 ("eval", run_dir, "--corruptions", "gaussian_noise", "--window", "50", "--ood", "noise",
                  "--stages", "float,int8,device", "--board", "mps2-an500")):
        p = qute(*args)
        assert p.returncode == 0, p.stderr + p.stdout
    return run_dir


@pytest.mark.slow
def test_report_is_one_self_contained_page(pipeline, tmp_path):
    out = tmp_path / "page" / "report.html"
    p = qute("report", pipeline, "-o", out)
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"wrote {out}" in p.stdout
    assert sorted(x.name for x in out.parent.iterdir()) == ["report.html"]
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'src="http' not in page and "href=" not in page and "<link" not in page and "<script" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for header in ("F1", "NLL", "Brier", "ECE", "AUROC fail", "AUROC OOD", "AUPRC drop", "gaussian_noise"):
        assert f"<th>{header}</th>" in page or f"<td>{header}</td>" in page, header
    for stage in ("float", "int8_tflm", "c"):
        assert f"<td>{stage}</td>" in page, stage
    for row in ("qute", "qute (int8)", "qute (device)"):  # the evaluation table, one row per stage
        assert f"<td>{row}</td>" in page, row
    assert "device row: mps2-an500 firmware on QEMU mps2-an500" in page and "0 of " in page
    assert "rho" in page and "3f" in page  # the calibration's float32 bit patterns
    # no build yet: listed as missing, with the command that makes it
    assert "qute build --board" in page and "qute monitor" in page
    assert "missing (listed in the page)" in p.stdout

    # a missing piece is listed, not skipped
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in RUN_FILES:
        shutil.copy2(pipeline / f, bare / f)
    p = qute("report", bare, "--no-eval")
    assert p.returncode == 0, p.stderr + p.stdout
    page = (bare / "report.html").read_text()
    for cmd in (f"qute eval {bare}", f"qute quantize {bare}", f"qute calibrate {bare}"):
        assert cmd in page and cmd in p.stdout, cmd

    assert_user_error(qute("report", pipeline, "-o", tmp_path), "is a directory")
    assert_user_error(qute("report", pipeline, "--build", tmp_path / "nobuild"), "--build", "qute build")


@pytest.mark.slow
@needs_qemu
def test_monitor_first_alarm_matches_the_host(pipeline, tmp_path):
    out = tmp_path / "mon"
    p = qute("monitor", pipeline, "--board", "mps2-an500", "--stream", "id,corrupt:contrast:5",
             "--samples", PART, "-o", out)
    assert p.returncode == 0, p.stderr + p.stdout
    assert f"ID part ends at sample {PART - 1}" in p.stdout
    m = re.search(r"first alarm: device (sample (\d+)|none), host \(qute.drift.simulate\) (sample (\d+)|none): match", p.stdout)
    assert m and m.group(1) == m.group(3), p.stdout
    tl = json.loads((out / "monitor.json").read_text())
    assert tl["first_alarm_device"] == tl["first_alarm_host"] and tl["match"] and tl["differing_from_host"] == 0
    assert tl["first_alarm_device"] is not None, p.stdout  # contrast 5 collapses the tiny model's confidence
    assert m.group(2) == str(tl["first_alarm_device"])
    assert tl["samples"] == 2 * PART and tl["id_end"] == PART - 1 and tl["window"] == WINDOW
    ps = tl["per_sample"]
    assert ps["alarm_device"] == ps["alarm_host"] and len(ps["window_accuracy"]) == 2 * PART
    assert ps["window_mean_device"] == ps["window_mean_host"]
    assert (out / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "transcript.txt").is_file() and (out / "build" / "build.json").is_file()

    # the existing stream build works as the argument too
    p = qute("monitor", out / "build")
    assert p.returncode == 0 and f"device sample {tl['first_alarm_device']}" in p.stdout, p.stderr + p.stdout

    # the report picks the timeline, the build's memory and the latency from the saved transcript
    p = qute("report", pipeline, "--build", out / "build", "--transcript", out / "transcript.txt", "-o", tmp_path / "r.html")
    assert p.returncode == 0, p.stderr + p.stdout
    page = (tmp_path / "r.html").read_text()
    assert "instructions per inference" in page and ".text" in page and "Accuracy-drop timeline" in page

    # bad input: one line, exit 2
    assert_user_error(qute("monitor", pipeline, "--board", "mps2-an500", "--stream", "id,corrupt:nope"), "unknown corruption")
    assert_user_error(qute("monitor", pipeline, "--board", "mps2-an500"), "--stream")
    assert_user_error(qute("monitor", out / "build", "--stream", "id"), "is a build")
    uncal = tmp_path / "uncal"
    uncal.mkdir()
    for f in RUN_FILES + ("model.int8.tflite",):
        shutil.copy2(pipeline / f, uncal / f)
    assert_user_error(qute("monitor", uncal, "--board", "mps2-an500", "--stream", "id,corrupt:contrast:5"),
                      f"run qute calibrate {uncal}")
