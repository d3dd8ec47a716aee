"""What `qute build` tells its user about a finished build, read from the build's own result.

Everything comes from the BuildResult and its manifest (not from the command's flags), so the
summary says what was built, whoever asked for it.
"""

from __future__ import annotations

from qute.build.core import BuildResult
from qute.build.fit import format_memory
from qute.exits import threshold_text


def summary_lines(r: BuildResult) -> list[str]:
    """The model and its inputs, the variants, the calibration compiled in, the memory report,
    the files written and the command to run next."""
    m, b = r.manifest, r.board
    uart = m.inputs.over == "uart"
    lines = [_inputs_line(r, uart), _variants_line(r), _calibration_line(m)]
    if m.cut:
        lines.append(_cut_line(m.cut))
    if m.exit_policy:
        p = m.exit_policy
        whose = "the mean of exits 0..k's" if p.get("cumulative") else "its own"
        lines.append(f"early exits: stop after exit k when {whose} {p['score']} {p['stop_when']} "
                     + ", ".join(threshold_text(p["score"], t) for t in p["thresholds"])
                     + ("; reject (abstain) on the other side of " + ", ".join(f"{t:g}" for t in p["rejects"])
                        if "rejects" in p else "") + " (qute run checks every decision against the host)")
    if m.profile is not None:
        lines.append(f"profiled (-DQUTE_PROFILE): the firmware times each of the {len(m.profile['ops'])} ops "
                     f"that run code on every input; qute run prints the table")
    lines += ["", f"memory on {b.name} ({r.memory['elf']}, linked for {r.memory['linked_for']}):"]
    lines += format_memory(r.memory).split("\n")
    renode = m.renode
    why = ("emulator build" if r.emulator else "inputs over the UART: a Robot test cannot send them" if uart
           else f"boards/{b.name}.toml names no Renode platform")
    lines += ["", f"wrote {r.out}: firmware.elf, firmware.bin, firmware.hex, Makefile, memory.json"
              + (f", {', '.join(renode)} (Renode)" if renode else f" (no Renode files: {why})")]
    lines.append(f"next: qute run --board {b.name} {r.out}"
                 + ("" if r.emulator else f"   or   qute flash --board {b.name} {r.out}"))
    return lines


def _cut_line(cut: dict) -> str:
    ev = cut.get("evaluation")
    measured = (f"; {cut['exit']} alone on the {ev['test_samples']:,} test images (int8, TFLite Micro, {ev['from']}): "
                f"accuracy {ev['accuracy']:.4f}, NLL {ev['nll']:.4f}, ECE {ev['ece']:.4f}" if ev else
                f"; no evaluation of {cut['exit']} alone on record (qute quantize RUN --exits writes one)")
    deeper = f" (deeper: {'; '.join(cut['deeper_exits_tried'])})" if cut["deeper_exits_tried"] else ""
    return (f"cut after {cut['exit']} of {cut['exits']}, the deepest exit that fits{deeper}: the whole model did not "
            f"({cut['why']}); the firmware reports {cut['exit']}'s own prediction and scores{measured}")


def _inputs_line(r: BuildResult, uart: bool) -> str:
    i = r.manifest.inputs
    if uart:
        return (f"model: {r.source.origin}; inputs read from the console UART (qute run sends the "
                f"{i.samples} of inputs.npz: {i.source})")
    return f"model: {r.source.origin}; {i.samples} inputs ({i.source})"


def _variants_line(r: BuildResult) -> str:
    b = r.board
    if r.emulator:
        return (f"emulator build: {b.emulation_note}; same compiler flags as on {b.name} "
                f"({' '.join(b.cpu_flags)} {b.optimization})")
    emu = b.emulation_board()
    return (f"{b.name} build, and its emulator variant in {r.out / 'emulator'} "
            f"(QEMU {b.qemu_machine}{', linked for ' + emu.name if emu is not b else ''}; same compiler flags)")


def _calibration_line(m) -> str:
    mon = m.calibration
    if mon and mon.get("arithmetic") == "int":
        return (f"calibration ({mon['from']}), integer-only: abstain when {mon['score']} ({mon['threshold_format']}) "
                f"{_abstain_op(mon)} {mon['threshold_int']}; monitor alarm when the sum of the "
                f"last {mon['window']} Q16 confidences < {mon['rho_sum']} (mean < {mon['rho']:.9g})")
    if mon:
        return (f"calibration ({mon['from']}): abstain when {mon['score']} {_abstain_op(mon)} "
                f"{mon['threshold']:.9g}; monitor alarm when the mean of the last {mon['window']} confidences < "
                f"{mon['rho']:.9g}")
    return f"no calibration: {m.calibration_note or 'no abstain flag and no accuracy-drop monitor'}"


def _abstain_op(mon: dict) -> str:
    # the threshold is stored as the accept test; the device abstains on its negation
    return "<" if mon["accept_when"] == ">=" else ">"
