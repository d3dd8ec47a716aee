"""``qute flash``: a build's firmware onto the board, with the probe's own tool, verified.

    openocd   openocd -f <board cfg> -c "program firmware.elf verify reset exit"
    pyocd     pyocd flash -t <target> firmware.elf
    stlink    st-flash --reset write firmware.bin <flash base>        (st-flash verifies the write)
    gdb       gdb-multiarch -batch -ex 'target remote HOST:PORT' -ex load -ex compare-sections ...

The gdb probe talks to any GDB server (OpenOCD, pyOCD gdbserver, st-util, a J-Link server, QEMU's
gdbstub): it loads the ELF, checks every loaded section against the target's memory
(compare-sections), sets the stack pointer and program counter from the vector table (words 0
and 1: a debugger's load does not reset the core) and then lets the firmware run: for an
emulator build (its semihosting exit ends the session) it continues until the program exits; for
a board build it detaches and leaves the firmware running.

``auto`` tries openocd, pyocd and stlink in that order (and gdb when --gdb-server is given) and
stops at the first that succeeds; when none does, the error lists what was tried and why it failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qute import tools
from qute.boards import load_board
from qute.build import load_build
from qute.elf import Elf
from qute.emulate import run_process
from qute.errors import QuteError, RunFailure

PROBES = ("auto", "openocd", "pyocd", "stlink", "gdb")
AUTO_ORDER = ("openocd", "pyocd", "stlink", "gdb")
TOOL = {"openocd": "openocd", "pyocd": "pyocd", "stlink": "st-flash", "gdb": "gdb-multiarch"}
DEFAULT_TIMEOUT = 300.0


@dataclass
class FlashResult:
    probe: str
    command: list[str]
    output: str
    elf: Path
    tried: list[str]


class _NotApplicable(Exception):
    """This probe cannot flash this board (no settings for it)."""


def _gdb_address(server: str) -> str:
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(\d{1,5})", server or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise QuteError(f"--gdb-server must be HOST:PORT (e.g. localhost:3333), got {server!r}")
    return f"{m.group(1) or 'localhost'}:{m.group(2)}"


def command(probe: str, board, build, elf: Path, tool: str, gdb_server: str | None, emulator_elf: bool) -> list[str]:
    """The command line that flashes `elf` with `probe` (raises _NotApplicable when the board has no settings)."""
    f = board.flash
    if probe == "openocd":
        if f is None or not f.openocd_config:
            raise _NotApplicable(f"{board.name} has no OpenOCD configuration (boards/{board.name}.toml [flash] openocd_config)")
        args = [tool]
        for cfg in f.openocd_config:
            args += ["-f", cfg]
        return args + ["-c", f"program {{{elf}}} verify reset exit"]
    if probe == "pyocd":
        if f is None or not f.pyocd_target:
            raise _NotApplicable(f"{board.name} has no pyOCD target (boards/{board.name}.toml [flash] pyocd_target)")
        return [tool, "flash", "-t", f.pyocd_target, str(elf)]
    if probe == "stlink":
        if f is None or f.stflash_address is None:
            raise _NotApplicable(f"{board.name} has no st-flash address (boards/{board.name}.toml [flash] stflash_address)")
        return [tool, "--reset", "write", str(elf.with_suffix(".bin")), f"0x{f.stflash_address:08x}"]
    if probe == "gdb":
        if not gdb_server:
            raise _NotApplicable("needs --gdb-server HOST:PORT")
        image = Elf(elf)
        vectors = image.section(".isr_vector")
        if vectors is None or vectors.size < 8:
            raise QuteError(f"{elf} has no vector table (.isr_vector); rebuild with qute build")
        words = image.read(image.load_address(vectors), 8)
        sp, pc = int.from_bytes(words[:4], "little"), int.from_bytes(words[4:], "little")
        finish = ["-ex", "continue"] if emulator_elf else ["-ex", "detach"]
        return [tool, "-nx", "-batch",
                "-ex", "set confirm off", "-ex", "set pagination off",
                "-ex", f"target remote {_gdb_address(gdb_server)}",
                "-ex", "load", "-ex", "compare-sections",
                "-ex", f"set $sp = {sp:#x}", "-ex", f"set $pc = {pc:#x}",
                *finish, str(elf)]
    raise QuteError(f"unknown probe {probe!r}; choose one of: {', '.join(PROBES)}")


# gdb's own reason when `target remote` fails: "localhost:3333: Connection timed out.",
# "nohost:3333: cannot resolve name: Name or service not known", "Remote connection closed".
_NO_SERVER = re.compile(r"(?m)^(?:\S+:\d+: )?(Connection .+?|cannot resolve name.+?|Remote (?:connection closed|communication error.+?))\.?\s*$")


def _failed(probe: str, rc: int | None, out: str, timeout: float) -> str | None:
    """Why a probe's run failed (None when it succeeded)."""
    if rc is None:
        return f"timed out after {timeout:g} s"
    if probe == "gdb":
        if "MIS-MATCHED" in out:
            return "compare-sections: the target's memory differs from the ELF after load (verify failed)"
        if not re.search(r"Start address|Transfer rate", out):
            m = _NO_SERVER.search(out)
            return f"no connection to the GDB server: {m.group(1)}" if m else "load failed: " + _last(out)
        if "matched" not in out:
            return "compare-sections did not verify the sections: " + _last(out)
        if rc != 0:
            return f"gdb exited with status {rc}: " + _last(out)
        if re.search(r"exited with code \d+", out):
            return "the firmware exited with a failure status: " + _last(out)
        return None
    if rc != 0:
        return f"exit {rc}: " + _last(out)
    return None


def _last(text: str) -> str:
    """The line of a tool's output that says what went wrong: its first "Error..." line, else the
    last line that sounds like a failure, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"(?i)(\S+ )?error\b", ln)]
    if errors:
        line = errors[0]
        if re.search(r"open failed|no device found|unable to find|couldn't find", line, re.IGNORECASE):
            line += " (no debug probe found: is the board plugged in?)"
        return line[:300]
    interesting = [ln for ln in lines if re.search(r"(?i)fail|not found|no .*probe|unable|cannot|couldn't", ln)]
    return (interesting or lines or ["(no output)"])[-1][:300]


def flash(
    board_name: str | None,
    build_dir: str | Path,
    probe: str = "auto",
    gdb_server: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] = lambda s: None,
) -> FlashResult:
    if probe not in PROBES:
        raise QuteError(f"unknown probe {probe!r}; choose one of: {', '.join(PROBES)}")
    if gdb_server is not None:
        _gdb_address(gdb_server)
        if probe not in ("gdb", "auto"):
            raise QuteError(f"--gdb-server goes with --probe gdb (or auto), not --probe {probe}")
    if probe == "gdb" and not gdb_server:
        raise QuteError("--probe gdb needs --gdb-server HOST:PORT (the GDB server of OpenOCD, pyOCD, st-util or QEMU)")
    build = load_build(build_dir)
    board = load_board(board_name or build.board)
    if build.board != board.name:
        raise QuteError(f"{build_dir} was built for {build.board}, not {board.name}; build it with qute build --board {board.name}")
    variant = build.variant(emulator=False)
    if variant is None:
        emu = build.variant(emulator=True)
        if emu.linked_for != board.name or board.is_emulated_variant:
            raise QuteError(f"{build_dir} is an emulator build (linked for {emu.linked_for}'s memory map), "
                            f"which {board.name} cannot run; rebuild without --emulator")
        variant = emu
    elf = build.path / variant.elf
    emulator_elf = variant.emulator

    order = [probe] if probe != "auto" else [p for p in AUTO_ORDER if p != "gdb" or gdb_server]
    tried, ran = [], False
    for p in order:
        tool = tools.find(TOOL[p])
        if tool is None:
            if probe != "auto":
                raise QuteError(f"{TOOL[p]} not found; install it: {tools.how_to_get(TOOL[p])}")
            tried.append(f"{p}: {TOOL[p]} not installed ({tools.how_to_get(TOOL[p])})")
            continue
        try:
            cmd = command(p, board, build, elf, tool, gdb_server, emulator_elf)
        except _NotApplicable as e:
            if probe != "auto":
                raise QuteError(f"--probe {p}: {e}") from None
            tried.append(f"{p}: {e}")
            continue
        progress("$ " + " ".join(cmd))
        rc, out, err = run_process(cmd, timeout)
        ran = True
        why = _failed(p, rc, out + "\n" + err, timeout)
        if why is None:
            return FlashResult(p, cmd, out + err, elf, tried)
        tried.append(f"{p}: {why}")
        if probe != "auto":
            raise RunFailure(f"flashing {board.name} with {p} failed: {why}")
    listing = "; ".join(tried)
    if not ran:
        raise QuteError(f"no probe could be tried for {board.name}: {listing}")
    raise RunFailure(f"no probe flashed {board.name} (tried {', '.join(order)}): {listing}")
