"""qute build --profile: per-op counts from the firmware, and qute run's per-op table.

The generated C is the same with and without profiling (only -DQUTE_PROFILE differs), and
without the define the hooks compile to nothing.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cliutil import qute
from elfcheck import symbols

from codegen.emit import generate
from codegen.host import kernels_dir
from codegen.reader import read_model
from codegen.report import build_report
from qute import transcript
from qute.build import default_dir
from qute.emulate import op_profile

have = {t: shutil.which(t) is not None for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")}
needs_gcc = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"]),
                               reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(not (have["arm-none-eabi-gcc"] and have["make"] and have["qemu-system-arm"]),
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed")

SAMPLES = 2
RESOLUTION = 40  # SysTick on mps2-an500 ticks every 40 instructions under -icount shift=0


def _default_model() -> bytes:
    return (default_dir() / "model.int8.tflite").read_bytes()


# --------------------------------------------------------------------------- the generated C


def test_every_op_that_runs_code_is_followed_by_its_hook():
    gen = generate(read_model(_default_model()))
    done = [int(k) for k in re.findall(r"QUTE_MODEL_OP_DONE\((\d+)\);", gen.source)]
    assert done == sorted(gen.kernels) and done
    assert f"#define QUTE_MODEL_NUM_OPS {len(done)}" in gen.header
    # without QUTE_PROFILE the macro is empty; with it, the hook the application defines
    assert "#define QUTE_MODEL_OP_DONE(k) ((void)0)" in gen.header
    assert "void qute_model_profile_op(int op_index);" in gen.header
    # each hook comes right after its op's kernel call
    for k in done:
        call = gen.source.index(f"/* {k}: ")
        assert gen.source.index(gen.kernels[k] + "(", call) < gen.source.index(f"QUTE_MODEL_OP_DONE({k});", call)


def test_report_names_the_kernel_of_each_op():
    rep = build_report(read_model(_default_model()))
    gen = generate(read_model(_default_model()))
    assert {r.index: r.kernel for r in rep.ops if r.kernel} == gen.kernels
    assert all(r.kernel.startswith("qute_") for r in rep.ops if r.macs)
    assert "qute_conv2d_s8" in rep.format() and rep.to_dict()["ops"][0]["kernel"] == rep.ops[0].kernel


@pytest.mark.skipif(not have["gcc"], reason="gcc not installed")
def test_without_the_define_the_hooks_cost_nothing(tmp_path):
    """The model compiled without QUTE_PROFILE is the same code as with the hook lines deleted."""
    gen = generate(read_model(_default_model()))
    asm = {}
    for name, source in (("hooks", gen.source), ("none", re.sub(r"\n *QUTE_MODEL_OP_DONE\(\d+\);", "", gen.source))):
        d = tmp_path / name
        d.mkdir()
        (d / "qute_model.h").write_text(gen.header)
        (d / "qute_model.c").write_text(source)
        subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-S", "-I", str(kernels_dir()),
                        "qute_model.c", "-o", "qute_model.s"], cwd=d, check=True)
        asm[name] = (d / "qute_model.s").read_text()
    assert "QUTE_MODEL_OP_DONE" not in asm["none"] and asm["hooks"] == asm["none"]
    # with it, the model calls the hook once per op
    d = tmp_path / "hooks"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-DQUTE_PROFILE", "-S", "-I",
                    str(kernels_dir()), "qute_model.c", "-o", "profiled.s"], cwd=d, check=True)
    assert len(re.findall(r"\bqute_model_profile_op\b", (d / "profiled.s").read_text())) >= len(gen.kernels)


# --------------------------------------------------------------------------- the transcript


def test_op_lines_parse_and_leave_the_other_lines_alone():
    sample = "QUTE sample=0 label=1 pred=1 heads=80 cycles=400 ucycles=40"
    text = "\r\n".join([
        "QUTE start format=2 board=b target=b model=abc samples=1 heads=1 classes=1 counter=instructions",
        transcript.op_line(0, 0, 120), transcript.op_line(0, 2, 240), sample, "QUTE done samples=1 crc32=00000000",
    ])
    t = transcript.parse(text)
    assert [(o.sample, o.index, o.cycles) for o in t.ops] == [(0, 0, 120), (0, 2, 240)]
    assert list(transcript.op_counts(t)) == [0] and len(t.samples) == 1 and t.complete
    plain = transcript.parse("\n".join(ln for ln in text.splitlines() if " op " not in ln))
    assert plain.ops == [] and plain.samples == t.samples and plain.done == t.done and plain.start == t.start
    with pytest.raises(transcript.TranscriptError):
        transcript.parse("QUTE op sample=0 index=x cycles=1")


def test_op_profile_table_and_missing_lines():
    prof = {"ops": [{"index": 0, "opcode": "CONV_2D", "kernel": "qute_conv2d_s8", "macs": 100},
                    {"index": 2, "opcode": "SOFTMAX", "kernel": "qute_softmax_s8", "macs": 0}]}
    lines = [transcript.op_line(s, k, c) for s, counts in enumerate([(300, 80), (500, 120)])
             for k, c in zip((0, 2), counts)]
    lines += ["QUTE sample=0 label=-1 pred=-1 heads=80 cycles=420", "QUTE sample=1 label=-1 pred=-1 heads=80 cycles=660"]
    t = transcript.parse("\n".join(lines))
    got = {s.index: s for s in t.samples}
    problems = []
    p = op_profile(prof, t, got, "instructions", problems)
    assert problems == [] and p["samples"] == 2
    assert [o["count"] for o in p["ops"]] == [400, 100] and p["ops"][0]["per_mac"] == 4.0 and p["ops"][1]["per_mac"] is None
    assert p["invoke"] == 540 and p["after_last_op"] == 40 and p["ops"][0]["share"] == pytest.approx(100 * 400 / 540)
    assert op_profile(None, t, got, "instructions", problems) is None
    t.ops = [o for o in t.ops if not (o.sample == 1 and o.index == 2)]
    p = op_profile(prof, t, got, "instructions", problems)
    assert p["samples"] == 1 and len(problems) == 1 and "sample 1" in problems[0]


# --------------------------------------------------------------------------- on the emulator


def _build(cwd: Path, name: str, *extra: str) -> Path:
    p = qute("build", "--board", "mps2-an500", "--emulator", "--samples", SAMPLES, "-o", name, *extra, cwd=cwd)
    assert p.returncode == 0, p.stderr + p.stdout
    return cwd / name


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    if not (have["arm-none-eabi-gcc"] and have["make"]):
        pytest.skip("arm-none-eabi-gcc not installed")
    cwd = tmp_path_factory.mktemp("profile")
    return _build(cwd, "profiled", "--profile"), _build(cwd, "plain")


@needs_qemu
def test_profiled_build_times_every_op_and_the_counts_add_up(builds):
    profiled, _ = builds
    m = json.loads((profiled / "build.json").read_text())
    assert "-DQUTE_PROFILE" in m["variants"]["emulator"]["defines"]
    gen = generate(read_model(_default_model()), weights16=m["model"]["weights_layout"] == "int16")
    ops = m["profile"]["ops"]
    assert [o["index"] for o in ops] == sorted(gen.kernels)
    assert [o["kernel"] for o in ops] == [gen.kernels[k] for k in sorted(gen.kernels)]

    p = qute("run", "--board", "mps2-an500", profiled)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "bit-exact: yes" in p.stdout and "per-op profile:" in p.stdout
    # one table row per op: index, opcode, kernel
    for o in ops:
        assert re.search(rf"^ +{o['index']} +{o['opcode']} +{o['kernel']} ", p.stdout, re.M), p.stdout

    t = transcript.parse((profiled / "transcript.txt").read_text())
    by_sample = transcript.op_counts(t)
    assert sorted(by_sample) == list(range(SAMPLES))
    for s in t.samples:
        counts = [o.cycles for o in by_sample[s.index]]
        assert [o.index for o in by_sample[s.index]] == [o["index"] for o in ops]
        assert all(c > 0 for c in counts)
        # the readings share the sample's counter: they add up to cycles= less the invoke's tail
        assert 0 <= s.cycles - sum(counts) <= 4 * RESOLUTION, (s.cycles, sum(counts))

    prof = json.loads((profiled / "profile.json").read_text())
    assert prof["samples"] == SAMPLES and prof["counter"] == "instructions"
    assert [o["index"] for o in prof["ops"]] == [o["index"] for o in ops]
    assert prof["invoke"] == pytest.approx(np.mean([s.cycles for s in t.samples]))
    assert prof["ops_total"] == pytest.approx(np.mean([sum(o.cycles for o in by_sample[s.index]) for s in t.samples]))
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(100 * prof["ops_total"] / prof["invoke"])
    for o in prof["ops"]:
        assert o["count"] > 0 and (o["per_mac"] is None) == (o["macs"] == 0)


@needs_qemu
def test_a_build_without_profile_is_unchanged(builds):
    profiled, plain = builds
    for f in ("src/qute_model.c", "src/qute_model.h", "src/qute_config.h", "src/qute_inputs.c", "app/qute_app.c"):
        assert (plain / f).read_text() == (profiled / f).read_text(), f
    m = json.loads((plain / "build.json").read_text())
    assert m["profile"] is None and "-DQUTE_PROFILE" not in m["variants"]["emulator"]["defines"]
    assert "qute_model_profile_op" not in symbols(plain / "firmware.elf")
    assert "qute_model_profile_op" in symbols(profiled / "firmware.elf")

    p = qute("run", "--board", "mps2-an500", plain)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "bit-exact: yes" in p.stdout and "per-op profile" not in p.stdout and "profile.json" not in p.stdout
    assert not (plain / "profile.json").exists()
    text = (plain / "transcript.txt").read_text()
    assert " op " not in text and transcript.parse(text).ops == []
    # the same outputs, and the same lines apart from the counts
    strip = re.compile(r" (u?cycles)=\d+")
    t_plain, t_prof = (strip.sub("", (b / "transcript.txt").read_text()) for b in (plain, profiled))
    assert t_plain.splitlines() == [ln for ln in t_prof.splitlines() if not ln.startswith("QUTE op ")]


@needs_qemu
def test_profile_on_a_board_build_with_its_emulator_variant(tmp_path):
    p = qute("build", "--board", "nucleo-f746", "--profile", "--samples", 1, "-o", "b", cwd=tmp_path)
    assert p.returncode == 0, p.stderr + p.stdout
    m = json.loads((tmp_path / "b" / "build.json").read_text())
    assert all("-DQUTE_PROFILE" in v["defines"] for v in m["variants"].values())
    assert "qute_model_profile_op" in symbols(tmp_path / "b" / "firmware.elf")  # the board's own (DWT) firmware
    r = qute("run", "--board", "nucleo-f746", tmp_path / "b")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "per-op profile:" in r.stdout and (tmp_path / "b" / "profile.json").is_file()
