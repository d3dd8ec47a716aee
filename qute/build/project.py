"""The firmware project a build writes: the application's generated settings and inputs
(firmware/app/*.j2, with the calibration compiled in; firmware/app/qute_app.c is the program), the Makefile (firmware/Makefile.j2), and the Renode script and Robot test."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import jinja2
import numpy as np

from codegen.host import kernels_dir
from codegen.report import build_report
from qute import __version__
from qute.boards import platform_defines, platform_sources
from qute.build.manifest import EMULATOR_DIR
from qute.build.source import ModelSource
from qute.calibrate import CALIBRATION_FILE, SCORES, f32_from_hex, f32_hex, load_calibration
from qute.errors import QuteError
from qute.expectation import ModelFacts
from qute.resources import firmware_dir
from qute.transcript import FORMAT, start_fields
from qute.uncertainty import INT_FRAC_BITS, SCORES as FIELDS


CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections", "-ffp-contract=off", "-g"]
LDFLAGS = ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"]
PROFILE_DEFINE = "QUTE_PROFILE"


def profile_ops(facts: ModelFacts) -> dict:
    """What `qute run` puts beside a profiled build's per-op counts: each op that runs code, with
    its opcode, the kernel it calls and its MACs (codegen.report), in the order the model runs them."""
    rows = build_report(facts.graph, gen=facts.gen).ops
    return {"define": PROFILE_DEFINE,
            "ops": [{"index": r.index, "opcode": r.opcode, "kernel": r.kernel, "macs": r.macs} for r in rows if r.index in facts.gen.kernels]}


def monitor_constants(facts: ModelFacts, source: ModelSource, model_sha256: str, int_path: dict | None = None,
                      board: str = "") -> tuple[dict | None, str]:
    """The calibration compiled in (from the run's calibration.json), or None and why not.

    On the integer-only path (`int_path`: no FPU) that is the calibration's integer constants: the
    threshold on the integer score and rho_sum on the monitor's exact window sum (version 2 files
    made from the int8 model have them; without them the build has no abstain flag and no monitor).
    """
    if source.run_dir is None:
        return None, "the model is not a run, so there is no calibration.json (no abstain flag, no accuracy-drop monitor)"
    path = Path(source.run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None, (f"{source.run_dir} has no {CALIBRATION_FILE} (no abstain flag, no accuracy-drop monitor; "
                      f"run qute calibrate {source.run_dir} first)")
    if not facts.ensemble:
        return None, "the model is not an ensemble classifier (no abstain flag, no accuracy-drop monitor)"
    c = load_calibration(path)
    sha = c.data.get("model_sha256")
    if sha is not None and sha != model_sha256:
        raise QuteError(f"{path} was made for another int8 model (sha256 {sha[:12]}, the run's is {model_sha256[:12]}); "
                        f"re-run qute calibrate {source.run_dir}")
    field, higher = SCORES[c.score]

    common = {
        "from": str(path),
        "scores_from": c.data.get("scores_from"),
        "score": c.score,
        "score_field": field,
        "score_index": FIELDS.index(field),
        "accept_when": ">=" if higher else "<=",
        "window": c.window,
    }
    if int_path:
        if not c.has_int:
            return None, (f"{board} has no FPU and {path} has no integer constants (made by an older qute, or from the "
                          f"float model): no abstain flag, no accuracy-drop monitor; re-run qute calibrate {source.run_dir}")
        made_with = c.data.get("integer_path") or {}
        if (made_with.get("scale_q24"), made_with.get("zero_point")) != (int_path["scale_q24"], int_path["zero_point"]):
            raise QuteError(f"{path}'s integer constants were made for head scale_q24/zero point "
                            f"{made_with.get('scale_q24')}/{made_with.get('zero_point')}, this build's are "
                            f"{int_path['scale_q24']}/{int_path['zero_point']}; re-run qute calibrate {source.run_dir}")
        frac = INT_FRAC_BITS[field]
        return {
            **common,
            "arithmetic": "int",
            "score_field_int": f"{field}_q{frac}",
            "threshold_int": c.threshold_int,
            "threshold_format": f"Q{frac}",
            "threshold": c.threshold_int / (1 << frac),  # its real value, for people
            "rho_sum": c.rho_sum,
            "rho": c.rho_sum / (c.window << 16),  # the mean confidence it stands for, for people
        }, f"compiled in from {path} (integer constants: {board} has no FPU)"
    return {
        **common,
        "arithmetic": "float",
        "threshold": float(c.threshold),
        "threshold_f32": f32_hex(c.threshold),
        "rho": float(c.rho),
        "rho_f32": f32_hex(c.rho),
    }, f"compiled in from {path}"


def exit_constants(policy: dict | None) -> dict | None:
    """The early-exit policy (qute.exits.ExitPolicy.to_dict) as qute_config.h states it."""
    if policy is None:
        return None
    rejects = None
    if policy["arithmetic"] == "int":
        field = f"{policy['field']}_q{INT_FRAC_BITS[policy['field']]}"
        thresholds = [f"({t})" for t in policy["thresholds_int"]]
        if "rejects" in policy:
            rejects = [f"({t})" for t in policy["rejects_int"]]
    else:
        field = policy["field"]
        thresholds = [c_float(h) for h in policy["thresholds_f32"]]
        if "rejects" in policy:
            rejects = [c_float(h) for h in policy["rejects_f32"]]
    whose = "the mean of exits 0..k's" if policy.get("cumulative") else "that exit's own"
    note = (f"stop after exit k when {whose} {policy['score']} {policy['stop_when']} threshold k "
            f"({', '.join(f'{t:g}' for t in policy['thresholds'])})")
    if rejects is not None:
        note += f"; and stop and reject (abstain=1) on the other side of {', '.join(f'{t:g}' for t in policy['rejects'])}"
    return {"field": field, "stop_when": policy["stop_when"], "thresholds": thresholds, "note": note,
            "cumulative": bool(policy.get("cumulative")), "rejects": rejects}


def render_app(facts: ModelFacts, source: ModelSource, board: str, emulator_target: str,
               monitor: dict | None = None, int_path: dict | None = None, uart_inputs: bool = False,
               calibration_note: str = "", exit_policy: dict | None = None) -> dict[str, str]:
    """The generated, data-only part of the firmware application (firmware/app/qute_app.c is the
    rest): src/qute_config.h, and src/qute_inputs.c unless the inputs come over the UART."""

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(firmware_dir() / "app")), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    x = np.asarray(source.inputs, dtype=np.int8).reshape(len(source.inputs), -1)
    classes = max(facts.classes, 1)
    calibration = None
    if monitor is not None and monitor["arithmetic"] == "int":
        calibration = {"field": monitor["score_field_int"], "constants": [
            ("QUTE_ABSTAIN_THRESHOLD_INT", f"({monitor['threshold_int']})", f"{monitor['score']}, {monitor['threshold_format']}"),
            ("QUTE_MONITOR_WINDOW", f"{monitor['window']}u", "the last M confidences"),
            ("QUTE_MONITOR_RHO_SUM", f"{monitor['rho_sum']}u", "on the window's sum of Q16 confidences"),
        ]}
    elif monitor is not None:
        calibration = {"field": monitor["score_field"], "constants": [
            ("QUTE_ABSTAIN_THRESHOLD", c_float(monitor["threshold_f32"]), f"{monitor['score']}, bits {monitor['threshold_f32']}"),
            ("QUTE_MONITOR_WINDOW", f"{monitor['window']}u", "the last M confidences"),
            ("QUTE_MONITOR_RHO", c_float(monitor["rho_f32"]), f"bits {monitor['rho_f32']}"),
        ]}
    if calibration is not None:
        calibration.update(score=monitor["score"], accept_when=monitor["accept_when"])
    files = {"src/qute_config.h": env.get_template("qute_config.h.j2").render(
        board=board,
        emulator_target=emulator_target,
        origin=source.origin,
        inputs_from=("read from the console UART (qute build --inputs uart); qute run sends " + source.inputs_from
                     if uart_inputs else source.inputs_from),
        calibration_note=calibration_note,
        format=FORMAT,
        model_id=hashlib.sha256(source.tflite).hexdigest()[:12],
        start_fields=start_fields(facts.layout.num_heads, classes, monitor, len(facts.layout.exits), exit_policy),
        uart_inputs=uart_inputs,
        samples=0 if uart_inputs else len(x),
        labelled=uart_inputs or source.labelled,  # over the UART: until an input comes without a label
        heads=facts.layout.num_heads,
        exits=len(facts.layout.exits),
        exit_policy=exit_constants(exit_policy),
        ensemble=facts.ensemble,
        classes=classes,
        head_bits=16 if facts.ensemble and facts.outputs[0].get("dtype") == "int16" else 8,
        int_path=int_path if facts.ensemble else None,
        calibration=calibration,
    )}
    if not uart_inputs:
        files["src/qute_inputs.c"] = env.get_template("qute_inputs.c.j2").render(
            samples=len(x),
            inputs_from=source.inputs_from,
            inputs=[", ".join(str(int(v)) for v in row) for row in x],
            labels=", ".join(str(int(v)) for v in source.labels),
        )
    return files


def c_float(bits_hex: str) -> str:
    """A float32 (by its bit pattern) as an exact C99 hexadecimal float literal."""
    v = float(f32_from_hex(bits_hex))
    if not math.isfinite(v):
        raise QuteError(f"calibration constant {bits_hex} is not finite")
    return ("-" if math.copysign(1.0, v) < 0 else "") + f"{abs(v).hex()}f"


def kernel_sources(headers: list[str]) -> list[Path]:
    """The kernel .c files the model calls, and those they call in turn."""
    kdir = kernels_dir()
    todo = [kdir / h.replace(".h", ".c") for h in headers]
    seen: list[Path] = []
    while todo:
        c = todo.pop()
        if c in seen or not c.is_file():
            continue
        seen.append(c)
        for inc in re.findall(r'#include\s+"([^"]+)\.h"', c.read_text()):
            todo.append(kdir / f"{inc}.c")
    return sorted(seen)


def variant_settings(board, emulator: bool) -> dict:
    target = board.emulation_board() if emulator else board
    return {
        "name": "emulator" if emulator else "board",
        "emulator": emulator,
        "target": target.name,
        "defines": platform_defines(board, emulator),
        "sources": [f"platform/{p.name}" for p in platform_sources(board, emulator)],
        "linker_script": f"{target.name}{'-emulator' if emulator else ''}.ld",
    }


def _lines(items: list[str]) -> str:
    return " \\\n".join(f"\t{i}" for i in items)


def render_makefile(board, variants: list[dict], common: list[str], source: ModelSource,
                    uart_inputs: bool = False) -> str:
    """The project's Makefile, from firmware/Makefile.j2: one block of rules per variant."""

    both = len(variants) > 1
    blocks = [{
        "title": (f"emulator variant: QEMU {board.qemu_machine} with {v['target']}'s start-up, memory map and console"
                  if v["emulator"] else f"{board.name} ({board.mcu})"),
        "key": v["name"].upper(), "defines": " ".join(v["defines"]), "sources": _lines(v["sources"]),
        "ld": v["linker_script"], "name": v["name"], "out": f"{EMULATOR_DIR}/" if v["emulator"] and both else "",
    } for v in variants]
    template = jinja2.Template((firmware_dir() / "Makefile.j2").read_text(encoding="utf-8"),
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return template.render(
        board=board.name,
        version=__version__,
        top_what="firmware.elf/.bin/.hex" + (" (emulator build: QUTE_EMULATOR, "
                                               f"{board.emulation_board().name}'s memory map)" if not both and variants[0]["emulator"] else ""),
        emu_help=f"   make emulator   {EMULATOR_DIR}/firmware.elf: the QEMU variant `qute run` executes\n#" if both else "",
        origin=source.origin,
        inputs_from=("read from the console UART (qute build --inputs uart); qute run sends " + source.inputs_from
                     if uart_inputs else source.inputs_from),
        core=board.core,
        cpu=" ".join(board.cpu_flags),
        opt=board.optimization,
        cflags=" ".join(CFLAGS),
        ldflags=" ".join(LDFLAGS),
        common=_lines(common),
        variants=blocks,
        phony=" emulator" if both else "",
        emu_rule=(f"emulator: {EMULATOR_DIR}/firmware.elf {EMULATOR_DIR}/firmware.bin {EMULATOR_DIR}/firmware.hex\n"
                  if both else ""),
        emu_clean=f"{EMULATOR_DIR}" if both else "",
    )


def render_resc(board, elf: str = "firmware.elf") -> str | None:
    if board.renode is None:
        return None
    return (
        f"# Renode script for {board.name} ({board.mcu}), written by qute build.\n"
        f"# Interactive: renode {board.name}.resc   Automated: renode-test {board.name}.robot\n"
        f"# Renode's {board.renode.platform} may map more memory than the part has; qute's own fit\n"
        f"# check (memory.json) holds the firmware to the real sizes.\n"
        f"$bin ?= @{elf}\n"
        f"using sysbus\n"
        f'mach create "{board.name}"\n'
        f"machine LoadPlatformDescription @{board.renode.platform}\n"
        f"showAnalyzer {board.renode.uart}\n"
        f"macro reset\n\"\"\"\n    sysbus LoadELF $bin\n\"\"\"\n"
        f"runMacro $reset\n"
    )


def render_robot(board, done_line: str, start_prefix: str, samples: int, timeout_s: int) -> str | None:
    if board.renode is None:
        return None
    return f"""*** Comments ***
Robot Framework test for Renode, written by qute build for {board.name}: boots firmware.elf
(the board's own build, not the QEMU variant) and waits for the summary line. Every output byte
is covered by it: crc32= is the CRC-32 of all the outputs the host reference (TFLite Micro)
computes for the embedded inputs. The line format is qute/transcript.py's.

Run:  renode-test {board.name}.robot

*** Settings ***
Suite Setup       Setup
Suite Teardown    Teardown
Test Teardown     Test Teardown
Resource          ${{RENODEKEYWORDS}}

*** Variables ***
${{UART}}          {board.renode.uart}
${{START}}         {start_prefix}
${{DONE}}          {done_line}

*** Test Cases ***
Firmware Matches The Host Reference On {samples} Inputs
    Execute Command             $bin=@${{CURDIR}}/firmware.elf
    Execute Command             include @${{CURDIR}}/{board.name}.resc
    Create Terminal Tester      ${{UART}}    timeout={timeout_s}
    Start Emulation
    Wait For Line On Uart       ${{START}}
    Wait For Line On Uart       ${{DONE}}
"""
