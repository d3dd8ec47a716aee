"""What a firmware build takes from a board: the platform sources and their -D settings, and the
linker script for its memory map (or its emulation board's, in an emulator build)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import jinja2

from qute.boards.descriptor import Board
from qute.resources import firmware_dir


_PLATFORM = ("startup_cortexm.c", "platform_init.c", "console_common.c", "semihosting.c")


def platform_dir() -> Path:
    """firmware/platform: qute_platform.h and the .c files platform_sources() picks from."""
    return firmware_dir() / "platform"


def _target(board: Board, emulator: bool) -> Board:
    return board.emulation_board() if emulator else board


def platform_sources(board: Board, emulator: bool) -> list[Path]:
    """The platform .c files for a silicon build of `board`, or for its emulator build."""
    target = _target(board, emulator)
    names = list(_PLATFORM)
    names.append(f"console_{target.console.driver}.c")
    if not emulator and target.clock.driver != "none":
        names.append(f"clock_{target.clock.driver}.c")
    if not emulator and board.core == "cortex-m7":
        names.append("cache_cortexm7.c")
    names.append("cycles_systick.c" if emulator else f"cycles_{board.cycles}.c")
    return [platform_dir() / n for n in names]


def platform_headers() -> list[Path]:
    """Every header the platform sources include (for copying into a standalone project)."""
    return sorted(platform_dir().glob("*.h"))


def _pin_defines(prefix: str, pin: str, af: int) -> list[str]:
    return [f"-D{prefix}_PORT={ord(pin[1]) - ord('A')}", f"-D{prefix}_PIN={int(pin[2:])}", f"-D{prefix}_AF={af}"]


def platform_defines(board: Board, emulator: bool) -> list[str]:
    """-D flags the platform sources need (console address and baud, PLL settings, SysTick ratio...)."""
    target = _target(board, emulator)
    c = target.console
    defines = []
    if emulator:
        defines.append("-DQUTE_EMULATOR")
    if target.clock.driver != "none":
        defines.append(f"-DQUTE_{target.clock.driver.upper()}")
    defines += [f"-DQUTE_CPU_HZ={board.cpu_mhz * 1_000_000}", f"-DQUTE_CONSOLE_BASE=0x{c.base:08X}",
                f"-DQUTE_CONSOLE_BAUD={c.baud}", f"-DQUTE_CONSOLE_CLOCK_HZ={c.clock_hz}"]
    if c.clock == "hsi":
        defines.append("-DQUTE_CONSOLE_CLOCK_HSI")
    if c.tx_pin:
        defines += _pin_defines("QUTE_CONSOLE_TX", c.tx_pin, c.tx_af)
    if c.rx_pin:
        defines += _pin_defines("QUTE_CONSOLE_RX", c.rx_pin, c.rx_af)
    k = target.clock
    if not emulator and k.driver != "none":
        defines += ["-DQUTE_CLOCK_INIT", f"-DQUTE_PLL_M={k.pll_m}", f"-DQUTE_PLL_N={k.pll_n}",
                    f"-DQUTE_FLASH_LATENCY={k.flash_latency}", f"-DQUTE_AHB_DIV={k.ahb_div}",
                    f"-DQUTE_APB1_DIV={k.apb1_div}", f"-DQUTE_APB2_DIV={k.apb2_div}"]
        defines += [f"-DQUTE_PLL_{x.upper()}={v}" for x, v in (("p", k.pll_p), ("q", k.pll_q), ("r", k.pll_r)) if v is not None]
        if k.source == "hse_bypass":
            defines.append("-DQUTE_HSE_BYPASS")
        if k.overdrive:
            defines.append("-DQUTE_OVERDRIVE")
        if k.boost:
            defines.append("-DQUTE_BOOST")
    if not emulator and board.core == "cortex-m7":
        defines.append("-DQUTE_CACHE_INIT")
    if emulator:
        ratio = Fraction(1_000_000_000, target.emulation.systick_hz)  # instructions per SysTick tick
        defines += [f"-DQUTE_SYSTICK_NUM={ratio.numerator}u", f"-DQUTE_SYSTICK_DEN={ratio.denominator}u"]
    return defines


def render_linker_script(board: Board, emulator: bool = False) -> str:
    """The linker script for the board's memory map (its emulation board's in an emulator build)."""
    target = _target(board, emulator)
    template = jinja2.Template((platform_dir() / "linker.ld.j2").read_text(encoding="utf-8"),
                               undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    variant = f"emulator build on {target.name}" if emulator and target is not board else ("emulator build" if emulator else None)
    return template.render(
        board=board.name, variant=variant, source=f"boards/{target.name}.toml", flash=target.flash_region,
        ram=target.ram_region, regions=target.memory, stack_size=target.stack_size,
    )
