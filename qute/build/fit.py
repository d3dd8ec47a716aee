"""Does it fit the board: the check before compiling (arena and stack against RAM; weights,
parameters and inputs against flash), the linker's overflow as the same message, and the memory
report of the linked ELF (arm-none-eabi-size's figures, split into model weights, arena and code)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from qute.boards import DSP_CORES
from qute.build.source import ModelSource
from qute.elf import Elf
from qute.errors import QuteError
from qute.expectation import ModelFacts, model_facts


def kb(n: int) -> int:
    return math.ceil(n / 1024)


WEIGHT_LAYOUTS = ("auto", "int8", "int16")
# auto takes the int16 layout only while the image's weights, parameters and inputs leave this
# share of the flash free (code, and the user's own application, need the rest)
AUTO_INT16_FREE = 0.25


def choose_weights16(boards, facts: ModelFacts, source: ModelSource, uart_inputs: bool,
                     weights: str) -> tuple[ModelFacts, str]:
    """The model's facts with the matrix products' filters in the layout `weights` asks for (auto:
    int16 on DSP cores while a quarter of the flash stays free, else int8), and a line saying which
    and why. `facts` is the int8 layout's; the int16 one (codegen.emit.generate's weights16) costs
    twice the filters' flash for fewer instructions on cores with the DSP extension."""
    if weights == "int8":
        return facts, "int8 (--weights int8)"
    if weights == "auto" and boards[0].core not in DSP_CORES:
        return facts, f"int8 ({boards[0].core} has no DSP extension: the int16 layout would only cost flash)"
    wide = model_facts(source.tflite, weights16=True)
    extra = wide.gen.weights_bytes - facts.gen.weights_bytes
    if not extra:
        return facts, "int8 (no convolution or fully-connected filters to widen)"
    if weights == "int16":
        return wide, f"int16 (--weights int16: +{extra:,} B flash)"
    for b in boards:
        need = check_fit_before_link(b, wide, source, uart_inputs)["flash_at_least"]
        if need > (1 - AUTO_INT16_FREE) * b.flash_region.length:
            return facts, (f"int8 (the int16 layout would need {kb(need)} KB of {b.name}'s {kb(b.flash_region.length)} KB "
                           f"flash before code; --weights int16 to take it anyway)")
    return wide, f"int16 (+{extra:,} B flash for fewer instructions; --weights int8 to keep them int8)"


class FitError(QuteError):
    """The model does not fit the board (qute build --fit deepest-exit then tries a cut model)."""


def _no_fit(board, needs: list[tuple[str, int, int, str]]) -> FitError:
    """One line: `needs 412 KB RAM, nucleo-l432kc has 64 KB` for each region that overflows."""
    parts = [f"needs {kb(need)} KB {what}, {board.name} has {kb(have)} KB" + (f" ({detail})" if detail else "")
             for what, need, have, detail in needs]
    return FitError(f"the model does not fit {board.name}: " + "; ".join(parts))


def check_fit_before_link(board, facts: ModelFacts, source: ModelSource, uart_inputs: bool = False) -> dict:
    """Lower bounds of what the firmware needs, before compiling anything."""
    gen = facts.gen
    # The model's arena holds its input and outputs too: the firmware writes each input there
    # (qute_model_input) and reads the outputs there (qute_model_output), with no buffers of its own.
    floats = 4 * (facts.layout.num_heads + 1) * facts.classes if facts.ensemble else 0
    ram = gen.arena_size + floats + board.stack_size
    inputs = 0 if uart_inputs else int(source.inputs.size) + 2 * len(source.inputs)
    weights = gen.weights_bytes + gen.params_bytes
    flash = weights + inputs
    problems = []
    if ram > board.ram_region.length:
        problems.append(("RAM", ram, board.ram_region.length,
                         f"arena {kb(gen.arena_size)} KB (inputs and outputs included) + stack {kb(board.stack_size)} KB, "
                         "before code and data"))
    if flash > board.flash_region.length:
        # Fewer embedded inputs help only when the weights leave room for at least one of them.
        each = inputs // len(source.inputs) if inputs else 0
        room = (board.flash_region.length - weights) // each if each and weights < board.flash_region.length else 0
        hint = (f"; try fewer --samples (room for at most {room} beside the weights, before code)"
                if 0 < room < len(source.inputs) else "")
        problems.append(("flash", flash, board.flash_region.length,
                         f"weights and parameters {kb(weights)} KB + {len(source.inputs)} embedded input(s) {kb(inputs)} KB, before code{hint}"))
    if problems:
        raise _no_fit(board, problems)
    return {"ram_at_least": ram, "flash_at_least": flash}


_OVERFLOW = re.compile(r"region [`'\"]?(\w+)['\"]? overflowed by (\d+) bytes")


def linker_overflow(stderr: str, link_board, fit_board) -> QuteError | None:
    """The linker's "region `RAM' overflowed by N bytes" as the fit check's one-line message."""
    worst = {}
    for name, over in _OVERFLOW.findall(stderr):
        region = next((r for r in link_board.memory if r.name == name), None)
        if region is None:
            continue
        worst[region.kind] = max(worst.get(region.kind, 0), region.length + int(over))
    problems = [("RAM" if kind == "ram" else "flash", worst[kind],
                 (fit_board.ram_region if kind == "ram" else fit_board.flash_region).length, "the linker's count")
                for kind in ("ram", "flash") if kind in worst]
    return _no_fit(fit_board, problems) if problems else None


# --------------------------------------------------------------------------- memory report

_WEIGHTS = re.compile(r"tensor\d+|op\d+_filter")  # constant tensors, as stored or packed (codegen.emit)
_PARAMS = re.compile(r"op\d+_(?!filter$)\w+")


def memory_report(elf_path: Path, board, link_board=None) -> dict:
    """Flash and RAM used by the ELF, per section, against `board`'s capacity.

    The classification is arm-none-eabi-size's (Berkeley): read-only sections are ``text``
    (flash), writable sections with contents ``data`` (flash for the initial values + RAM),
    writable sections without (.bss, .stack) ``bss`` (RAM). So flash = text + data and
    RAM = data + bss, and each section's size is what ``arm-none-eabi-size -A`` prints.
    """
    elf = Elf(elf_path)
    sections = []
    text = data = bss = 0
    for s in elf.alloc_sections():
        if s.readonly:
            text += s.size
            flash, ram = s.size, 0
        elif not s.nobits:
            data += s.size
            flash, ram = s.size, s.size
        else:
            bss += s.size
            flash, ram = 0, s.size
        sections.append({"name": s.name, "address": s.addr, "load_address": elf.load_address(s), "size": s.size,
                         "flash": flash, "ram": ram})
    syms = [s for s in elf.symbols if s.kind == 1 and s.size]
    weights = sum(s.size for s in syms if _WEIGHTS.fullmatch(s.name))
    params = sum(s.size for s in syms if _PARAMS.fullmatch(s.name))
    arena = sum(s.size for s in syms if s.name == "arena")
    inputs = sum(s.size for s in syms if s.name in ("qute_inputs", "qute_labels"))
    stack_sec = next((s for s in elf.alloc_sections() if s.name == ".stack"), None)
    stack = stack_sec.size if stack_sec else 0
    code = sum(s.size for s in elf.alloc_sections() if s.flags & 0x4)  # SHF_EXECINSTR
    flash_used, ram_used = text + data, data + bss
    fcap, rcap = board.flash_region.length, board.ram_region.length
    return {
        "board": board.name,
        "elf": elf_path.name,
        "linked_for": (link_board or board).name,
        "flash": {"used": flash_used, "capacity": fcap, "percent": round(100 * flash_used / fcap, 1)},
        "ram": {"used": ram_used, "capacity": rcap, "percent": round(100 * ram_used / rcap, 1)},
        "size": {"text": text, "data": data, "bss": bss, "dec": text + data + bss},
        "sections": sections,
        "split": {
            "model_weights": weights,
            "model_parameters": params,
            "test_inputs": inputs,
            "code": code,
            "other_flash": flash_used - weights - params - inputs - code,
            "arena": arena,
            "stack": stack,
            "other_ram": ram_used - arena - stack,
        },
    }


def format_memory(m: dict) -> str:
    rows = [f"{'section':<14}{'address':>12}{'size':>11}{'flash':>11}{'RAM':>11}"]
    for s in m["sections"]:
        fl, ra = (f"{s[k]:,}" if s[k] else "" for k in ("flash", "ram"))
        rows.append(f"{s['name']:<14}{s['address']:>#12x}{s['size']:>11,}{fl:>11}{ra:>11}")
    f, r = m["flash"], m["ram"]
    rows.append(f"{'total':<14}{'':>12}{'':>11}{f['used']:>11,}{r['used']:>11,}")
    rows.append(f"{'capacity':<14}{'':>12}{'':>11}{f['capacity']:>11,}{r['capacity']:>11,}")
    rows.append(f"{'used':<14}{'':>12}{'':>11}{f['percent']:>10}%{r['percent']:>10}%")
    sp = m["split"]
    rows.append(
        f"flash: model weights {sp['model_weights']:,} B + per-op parameters {sp['model_parameters']:,} B, "
        f"code {sp['code']:,} B, embedded inputs {sp['test_inputs']:,} B, other {sp['other_flash']:,} B"
    )
    rows.append(f"RAM:   model arena {sp['arena']:,} B (inputs and outputs included), stack {sp['stack']:,} B, "
                f"other {sp['other_ram']:,} B")
    z = m["size"]
    rows.append(f"(arm-none-eabi-size {m['elf']}: text {z['text']:,}  data {z['data']:,}  bss {z['bss']:,}; "
                f"flash = text + data, RAM = data + bss)")
    return "\n".join(rows)


def check_fit_after_link(m: dict, board) -> None:
    problems = [(what, m[key]["used"], m[key]["capacity"], "") for what, key in (("RAM", "ram"), ("flash", "flash"))
                if m[key]["used"] > m[key]["capacity"]]
    if problems:
        raise _no_fit(board, problems)
