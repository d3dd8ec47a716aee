"""Every int8 kernel variant against TFLite Micro, byte for byte, on randomised shapes (issue 10).

The code generator picks one compile-time specialised kernel per op (qute_conv2d_1x1_s8,
qute_conv2d_s8 (im2col), qute_depthwise_conv2d_3x3_s8, ...), each with a SIMD path (Arm DSP
instructions on Cortex-M4/M7) and a plain C99 path. tests/variantmodels.py draws, per seed, one
configuration of every shape class the variants specialise on and packs them as parallel branches
of one single-input model. Here each seed's model runs

- on the host, plain C99 and with the SIMD path emulated in portable C (-DQUTE_SIMD_EMULATE),
  both under AddressSanitizer and UBSan, with the matrix products' filters in both layouts
  (int8, and the int16 one of the _w16_ variants);
- as firmware (`qute build --emulator --inputs uart --weights int8|int16`) under QEMU on
  mps2-an500 (Cortex-M7) and mps2-an386 (Cortex-M4), where the SIMD path runs on the real DSP
  instructions;

on 8 random inputs and 5 extreme ones (all -128, all 127, two -128/127 checkerboards, random
-128/127), and every output byte is compared with TFLite Micro's reference kernels.

The coverage test reads the kernel headers for the conv / depthwise / fully-connected entry points
and fails when one of them is used by no op of the generated models: a new variant must come with
a shape class here that reaches it.

The long run over many seeds is bench/variant_soak.py.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import numpy as np
import pytest
import variantmodels as vm

from codegen.fold import fold
from codegen.reader import read_model

HOST_SEEDS = (0, 1, 2)
QEMU_SEEDS = (0, 1)
BOARDS = ("mps2-an500", "mps2-an386")  # Cortex-M7 and Cortex-M4, both with the DSP extension
N_RANDOM = 8  # random inputs per model; vm.sample_inputs adds 5 extreme ones

_tools = ("arm-none-eabi-gcc", "qemu-system-arm", "make")
_missing = [t for t in _tools if shutil.which(t) is None]
needs_qemu = pytest.mark.skipif(
    bool(_missing), reason=f"{', '.join(_missing)} not installed "
                           "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make)")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


@functools.lru_cache(maxsize=None)
def _case(seed: int):
    """The seed's model, its inputs and TFLite Micro's outputs (computed once per seed)."""
    m = vm.build(seed)
    x = vm.sample_inputs(m, N_RANDOM, seed)
    return m, x, vm.reference(m, x)


def _check(m, x, ref, got, what: str, rerun) -> int:
    """Every byte of got against TFLM's; on a mismatch the message names each differing branch
    (class, configuration, samples, first byte) and whether the adapters in front were exact
    (rerun(model) runs another model the same way)."""
    total, diffs = vm.compare(m, ref, got)
    assert total == sum(r.size for r in ref) and total > 0
    if diffs:
        try:
            note = vm.adapter_report(m, x, rerun)
        except Exception as e:  # the diagnosis must not hide the mismatch
            note = f"(adapter check failed: {e})"
        pytest.fail(vm.format_diffs(m, what, diffs, N_RANDOM) + "\n" + note, pytrace=False)
    return total


# --------------------------------------------------------------------------- the generator itself


def _facts(m: vm.VariantModel) -> dict[str, dict]:
    """What each op under test really is, read back from the flatbuffer through codegen's reader."""
    g = fold(read_model(m.tflite))
    out = {}
    for op in g.ops:
        name = g.tensor(op.outputs[0]).name
        if name not in m.ops:
            continue
        o = op.options
        inp, out_t = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        f = {"opcode": op.opcode, "in": tuple(inp.shape), "out": tuple(out_t.shape),
             "act": o.get("FusedActivationFunction", "NONE"), "pad": o.get("Padding"),
             "stride": (int(o.get("StrideH", 1)), int(o.get("StrideW", 1))),
             "dilation": (int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1)))}
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = g.tensor(op.inputs[1])
            f["w"] = tuple(w.shape)
            f["scales"] = len(w.scale)
            f["weights_min"] = int(w.data.min())
        if op.opcode == "DEPTHWISE_CONV_2D":
            f["mult"] = int(o["DepthMultiplier"])
        out.setdefault(m.ops[name]["branch"], []).append(f)
    return out


def _conv(f, k=None, ic=None, s=None, pad=None):
    return (f["opcode"] == "CONV_2D" and (k is None or f["w"][1:3] == k) and (ic is None or ic(f["in"][3]))
            and (s is None or f["stride"] == (s, s)) and (pad is None or f["pad"] == pad))


def _dw(f, k=(3, 3), c=None, mult=None, s=None, pad=None):
    return (f["opcode"] == "DEPTHWISE_CONV_2D" and (k is None or f["w"][1:3] == k) and (c is None or c(f["in"][3]))
            and (mult is None or f["mult"] == mult) and (s is None or f["stride"] == (s, s))
            and (pad is None or f["pad"] == pad))


def _fc(f, depth=None, batch=None, odd_units=False):
    rows, units = f["out"]
    return (f["opcode"] == "FULLY_CONNECTED" and (depth is None or depth(f["w"][1])) and (batch is None or batch(rows))
            and (not odd_units or units % 2 == 1))


mul4 = lambda n: n % 4 == 0  # noqa: E731
not4 = lambda n: n % 4 != 0  # noqa: E731
mid = lambda n: 8 <= n <= 40  # noqa: E731

# What each shape class promises about its op under test (the first op of the branch).
CLAIMS = {
    "conv1x1_s1_ic4": lambda f: _conv(f, (1, 1), mul4, 1) and f["scales"] == f["w"][0],
    "conv1x1_s1_icodd": lambda f: _conv(f, (1, 1), not4, 1) and f["out"][3] % 2 == 1,
    "conv1x1_s2_ic4": lambda f: _conv(f, (1, 1), mul4, 2) and f["scales"] == f["w"][0],
    "conv1x1_s2_icodd": lambda f: _conv(f, (1, 1), not4, 2) and f["out"][3] % 2 == 1,
    "conv1x1_pertensor": lambda f: _conv(f, (1, 1)) and f["scales"] == 1,
    "conv3x3_same_s1": lambda f: _conv(f, (3, 3), mid, 1, "SAME"),
    "conv3x3_valid_s1": lambda f: _conv(f, (3, 3), mid, 1, "VALID"),
    "conv3x3_same_s2": lambda f: _conv(f, (3, 3), mid, 2, "SAME"),
    "conv3x3_valid_s2": lambda f: _conv(f, (3, 3), mid, 2, "VALID"),
    "conv10x4_s2_ic1_kws": lambda f: _conv(f, (10, 4), lambda c: c == 1, 2, "SAME"),
    "conv3x3_ic3_rgb": lambda f: _conv(f, (3, 3), lambda c: c == 3, pad="SAME"),
    "conv5x5": lambda f: _conv(f, (5, 5)),
    "conv1x3": lambda f: _conv(f) and f["w"][1:3] in ((1, 3), (3, 1)),
    "conv10x4_icN": lambda f: _conv(f, (10, 4), lambda c: c > 1, pad="SAME"),
    "conv3x3_border_only": lambda f: _conv(f, (3, 3), pad="SAME") and max(f["in"][1:3]) <= 2,
    "conv3x3_dilated": lambda f: _conv(f, (3, 3)) and f["dilation"] == (2, 2),
    "conv3x3_grouped": lambda f: _conv(f, (3, 3)) and f["w"][3] < f["in"][3],
    "conv3x3_batch2": lambda f: _conv(f, (3, 3)) and f["in"][0] == 2,
    "dw3x3_s1_same_c4": lambda f: _dw(f, c=mul4, mult=1, s=1, pad="SAME"),
    "dw3x3_s1_valid_codd": lambda f: _dw(f, c=not4, mult=1, s=1, pad="VALID"),
    "dw3x3_few_channels": lambda f: _dw(f, c=lambda c: c < 4, mult=1),
    "dw3x3_exact_requant": lambda f: _dw(f, mult=1),
    "dw3x3_s2_same": lambda f: _dw(f, s=2, pad="SAME"),
    "dw3x3_s2_valid": lambda f: _dw(f, s=2, pad="VALID"),
    "dw3x3_mult2": lambda f: _dw(f, mult=2),
    "dw5x5": lambda f: _dw(f, k=(5, 5)),
    "dw3x3_1x1_input": lambda f: _dw(f, pad="SAME") and f["in"][1:3] == (1, 1),
    "dw3x3_2x2_input": lambda f: _dw(f, pad="SAME") and f["in"][1:3] == (2, 2),
    "dw3x3_dilated": lambda f: _dw(f) and f["dilation"] == (2, 2),
    "dw_nonsquare": lambda f: _dw(f, k=None) and f["w"][1] != f["w"][2],
    "dw3x3_mult_many": lambda f: _dw(f, mult=None) and f["mult"] >= 3,
    "fc_d4_b1": lambda f: _fc(f, mul4, lambda b: b == 1, odd_units=True),
    "fc_dodd_b1": lambda f: _fc(f, not4, lambda b: b == 1, odd_units=True),
    "fc_batch": lambda f: _fc(f, batch=lambda b: b > 1),
    "fc_long": lambda f: _fc(f, depth=lambda d: d >= 120),
    "fc_perchannel": lambda f: _fc(f) and f["scales"] == f["w"][0],
    "add_residual": lambda f: f["opcode"] == "CONV_2D",  # then the ADD (checked below)
    "avgpool": lambda f: f["opcode"] == "AVERAGE_POOL_2D",
    "maxpool": lambda f: f["opcode"] == "MAX_POOL_2D",
    "chain_dscnn": lambda f: _conv(f, (10, 4), lambda c: c == 1, 2),
    "chain_resnet": lambda f: _conv(f, (3, 3)),
}


@pytest.mark.parametrize("seed", range(12))
def test_every_class_draws_what_it_promises(seed):
    """Whatever the seed, each branch's op is of its class (and the whole set has what the variants
    key on), so the byte comparisons below really reach every shape class."""
    m = vm.build(seed)
    facts = _facts(m)
    assert set(CLAIMS) == set(vm.CLASSES) == set(facts), "a class without a claim (add one to CLAIMS)"
    for name, claim in CLAIMS.items():
        assert claim(facts[name][0]), f"{vm.describe(m, name)}\n  reads back as {facts[name][0]}"
    ops = [f for fs in facts.values() for f in fs]
    convs = [f for f in ops if f["opcode"] == "CONV_2D"]
    assert {f["act"] for f in convs} >= {"NONE", "RELU", "RELU6"}
    assert any(f["scales"] > 1 for f in convs) and any(f["scales"] == 1 for f in convs)
    assert [f["opcode"] for f in facts["add_residual"]] == ["CONV_2D", "ADD"]
    assert {f["opcode"] for f in facts["chain_dscnn"]} == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D",
                                                          "FULLY_CONNECTED"}
    assert "ADD" in {f["opcode"] for f in facts["chain_resnet"]}
    # SAME windows that reach into the padding, VALID ones that never do
    assert any(f["pad"] == "SAME" and f["w"][1] > 1 for f in ops if "w" in f)
    assert vm.draw(seed) == vm.draw(seed) and vm.build(seed).tflite == m.tflite  # replayable


def test_adapters_copy_the_input_unchanged():
    """The one-hot CONV_2D in front of a branch hands it the model input's own values (extremes
    included), picked by stride and channel, on TFLite Micro itself."""
    m = vm.build(5, expose_adapters=True)
    x = vm.sample_inputs(m, 2, 5)
    outs = vm.reference(m, x)[len(m.branches):]
    assert len(outs) == len(m.adapters) > 10
    for a, got in zip(m.adapters, outs):
        _, h, w, c = a["shape"]
        sh, sw = a["stride"]
        want = x[:, : (h - 1) * sh + 1 : sh, : (w - 1) * sw + 1 : sw][..., a["channels"]]
        assert np.array_equal(got.reshape(want.shape), want), a["name"]


# --------------------------------------------------------------------------- coverage of the variants


def test_the_header_scan_finds_the_kernels(tmp_path):
    found = vm.declared_kernels()
    assert {"qute_conv2d_s8", "qute_depthwise_conv2d_s8", "qute_fully_connected_s8", "qute_add_s8"} <= set(found)
    # a variant declared in a header is seen at once, whatever its params struct is called
    (tmp_path / "qute_conv.h").write_text(
        "/* void qute_conv2d_commented_s8(const qute_conv_params *p); */\n"
        "static inline void qute_conv2d_helper_s8(const qute_conv_params *p) { (void)p; }\n"
        "void qute_conv2d_3x3_s8(const qute_conv3x3_params *p, const int8_t *input, int8_t *output);\n"
        "void qute_gemm_1row_s8(const qute_gemm_params *g, const int8_t *in, int8_t *out);\n"
        "void qute_fancy_s8(const qute_fc_packed_params *p,\n                    const int8_t *in);\n")
    assert vm.declared_variants(tmp_path) == {"conv": {"qute_conv2d_3x3_s8"}, "depthwise": set(),
                                              "fully_connected": {"qute_fancy_s8"}}


def test_every_declared_variant_is_used_by_the_models():
    """Each conv / depthwise / fully-connected kernel declared in firmware/kernels/*.h is what the
    code generator picks for at least one op under test of the models the byte tests run.

    Only these three families are required (and so fail the test when a new variant is declared
    but no shape class reaches it): they are the ones the shape classes are built around. Kernels
    of other ops (ADD, pooling, softmax, ...) may gain variants this generator knows nothing
    about; they are left to their own tests."""
    declared = vm.declared_variants()
    used: dict[str, set[str]] = {f: set() for f in vm.FAMILIES}
    by_kernel: dict[str, set[str]] = {}
    for seed, weights16 in ((s, w) for s in HOST_SEEDS for w in (False, True)):
        for branch, kernels in vm.kernels_used(_case(seed)[0], weights16).items():
            for kernel in kernels.values():
                by_kernel.setdefault(kernel, set()).add(branch)
                fam = vm.family_of(kernel, vm.declared_kernels().get(kernel, (None,))[0])
                if fam:
                    used[fam].add(kernel)
    everything = vm.declared_kernels()
    assert set(by_kernel) <= set(everything), f"generated code calls undeclared kernels: {set(by_kernel) - set(everything)}"
    assert all(declared.values()), f"the header scan found no kernel of a family: {declared}"
    missing = {f: sorted(declared[f] - used[f]) for f in declared if declared[f] - used[f]}
    table = "\n".join(f"  {k}: {', '.join(sorted(v))}" for k, v in sorted(by_kernel.items()))
    assert not missing, (f"kernel variants declared in firmware/kernels but used by no op of the test models "
                         f"(seeds {HOST_SEEDS}): {missing}\nkernels the models reach, by shape class:\n{table}")


# --------------------------------------------------------------------------- on the host


@needs_gcc
@pytest.mark.parametrize("seed", HOST_SEEDS)
@pytest.mark.parametrize("path", ["plain", "simd-emulated"])
@pytest.mark.parametrize("weights", ["int8", "int16"])
def test_host_matches_tflm(seed, path, weights, tmp_path):
    """Plain C99 (the path of the host, Cortex-M0/M3) and the SIMD path in portable C, both under
    ASan/UBSan, on either filter layout: every output byte equals TFLite Micro's."""
    m, x, ref = _case(seed)
    simd, w16 = path == "simd-emulated", weights == "int16"
    got = vm.run_host(m, x, tmp_path / "model", simd=simd, sanitize=True, weights16=w16)
    _check(m, x, ref, got, f"host, {path}, {weights} filters",
           lambda m2: vm.run_host(m2, x, tmp_path / "adapters", simd, True, w16))


# --------------------------------------------------------------------------- cross-compiling


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu", ["-mcpu=cortex-m4 -mfpu=fpv4-sp-d16", "-mcpu=cortex-m7 -mfpu=fpv5-d16"])
def test_kernels_compile_at_any_optimisation(cpu, tmp_path):
    """The kernels' inline assembly asks for up to thirteen registers: it must still compile with
    the flags a user's own project may use (every -O level, a frame pointer), not only with ours."""
    from codegen.host import kernels_dir

    sources = [str(p) for p in sorted(kernels_dir().glob("*.c"))]
    for flags in ("-O1", "-O2", "-O3", "-Os", "-Og", "-O2 -fno-omit-frame-pointer", "-Os -fno-omit-frame-pointer"):
        cmd = ["arm-none-eabi-gcc", *cpu.split(), "-mthumb", "-mfloat-abi=hard", *flags.split(), "-std=c99", "-Wall",
               "-Wextra", "-Werror", "-I", str(kernels_dir()), "-c", *sources]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, f"{cpu} {flags}:\n{proc.stderr[-3000:]}"


# --------------------------------------------------------------------------- under QEMU


def _uses_simd(build_dir) -> bool:
    return any("qute_smlad(" in c.read_text() for c in (build_dir / "kernels").glob("*.c"))


@needs_qemu
@pytest.mark.parametrize("seed", QEMU_SEEDS)
@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("weights", ["int8", "int16"])
def test_firmware_matches_tflm(board, seed, weights, tmp_path):
    """The firmware, with the kernels' SIMD path on the real DSP instructions, under QEMU, on either
    filter layout: every output byte equals TFLite Micro's."""
    from qute.build import load_build

    m, x, ref = _case(seed)
    got, cycles, out_dir = vm.run_firmware(m, x, board, tmp_path, weights=weights)
    assert len(cycles) == len(x) and all(c > 0 for c in cycles)
    assert load_build(out_dir).manifest.model.weights_layout == weights
    _check(m, x, ref, got, f"{board} under QEMU, {weights} filters",
           lambda m2: vm.run_firmware(m2, x, board, tmp_path / "adapters", weights=weights)[0])
    if _uses_simd(out_dir) and shutil.which("arm-none-eabi-objdump"):  # the DSP instructions are really there
        elf = load_build(out_dir).elf(True)
        asm = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
        assert re.search(r"\bsmlad\b", asm), f"{board}: kernels use qute_smlad but the firmware has no SMLAD"
