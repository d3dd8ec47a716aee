"""Reading boards/<name>.toml into a checked Board: a mistake is a QuteError naming the file,
the table and the key."""

from __future__ import annotations

import math
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

from qute.boards.descriptor import (APB_MAX_HZ, CLOCK_DRIVERS, CONSOLE_CLOCKS, CONSOLE_DRIVERS, CORE_FPUS, CORES,
                                    CYCLE_COUNTERS, DEFAULT_STACK, FLOAT_ABIS, HSI_HZ, MEMORY_KINDS, OPTIMIZATIONS,
                                    STM32_UARTS, Board, Clock, Console, Emulation, FlashSettings, MemoryRegion,
                                    RenodeSettings)
from qute.errors import QuteError
from qute.resources import boards_dir


def board_names(directory: Path | None = None) -> list[str]:
    directory = Path(directory) if directory is not None else boards_dir()
    return sorted(p.stem for p in directory.glob("*.toml"))


def list_boards(directory: Path | None = None) -> list[Board]:
    """Every board descriptor, checked, sorted by name."""
    return [load_board(n, directory) for n in board_names(directory)]


def load_board(name: str, directory: Path | None = None) -> Board:
    """Reads and checks boards/<name>.toml (and its emulated_by board)."""
    directory = Path(directory) if directory is not None else boards_dir()
    path = directory / f"{name}.toml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        names = board_names(directory)
        raise QuteError(f"unknown board {name!r}; boards: {', '.join(names) if names else '(none in ' + str(directory) + ')'}")
    board = load_board_file(path)
    emulated_by = board.emulation.emulated_by
    if emulated_by is None:
        return board
    if emulated_by == board.name:
        raise QuteError(f"{path}: [emulation].emulated_by names the board itself")
    if not (directory / f"{emulated_by}.toml").is_file():
        raise QuteError(f"{path}: [emulation].emulated_by = {emulated_by!r} is not a board; boards: {', '.join(board_names(directory))}")
    emu = load_board_file(directory / f"{emulated_by}.toml")
    _check_emulator(path, board, emu)
    object.__setattr__(board, "_emulator", emu)
    return board


def load_board_file(path: Path) -> Board:
    """Reads and checks one descriptor (emulated_by is not followed: see load_board)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QuteError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise QuteError(f"{path}: cannot read: {e.strerror}") from None
    return _parse(path, data)


class _Table:
    """One TOML table being read: typed getters that name the file, table and key on a mistake."""

    def __init__(self, path: Path, data: Any, where: str):
        self.path, self.where = path, where
        if not isinstance(data, dict):
            raise self.error(f"{where} must be a table")
        self.data = data
        self.used: set[str] = set()

    def label(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, message: str) -> QuteError:
        return QuteError(f"{self.path}: {message}")

    def get(self, key: str, kind: type | tuple, required: bool = True, default: Any = None, choices: tuple = ()) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(f"missing {self.label(key)!r}" if self.where else f"missing key {key!r}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join({int: "an integer", str: "a string", bool: "true or false", list: "a list", dict: "a table"}[k] for k in kinds)
            raise self.error(f"{self.label(key)} must be {names}, got {value!r}")
        if choices and value not in choices:
            raise self.error(f"{self.label(key)} = {value!r} is not one of: {', '.join(map(str, choices))}")
        return value

    def positive(self, key: str, required: bool = True, default: int | None = None) -> Any:
        value = self.get(key, int, required, default)
        if value is not None and value <= 0:
            raise self.error(f"{self.label(key)} must be positive, got {value}")
        return value

    def table(self, key: str, required: bool = True) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(f"missing table [{key}]")
            return None
        return _Table(self.path, self.data[key], key if not self.where else f"{self.where}.{key}")

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f" in [{self.where}]" if self.where else ""
            raise self.error(f"unknown key {unknown[0]!r}{where}; expected one of: {', '.join(sorted(self.used))}")


def _parse(path: Path, data: dict) -> Board:
    top = _Table(path, data, "")
    name = top.get("name", str)
    if name != path.stem:
        raise top.error(f"name = {name!r} must match the file name ({path.stem!r})")
    description = top.get("description", str)
    mcu = top.get("mcu", str)
    core = top.get("core", str, choices=CORES)
    fpu = top.get("fpu", str)
    allowed = ("none",) + CORE_FPUS.get(core, ())
    if fpu not in allowed:
        raise top.error(f"fpu = {fpu!r} does not exist on a {core}; one of: {', '.join(allowed)}")
    float_abi = top.get("float_abi", str, choices=FLOAT_ABIS)
    if (fpu == "none") != (float_abi == "soft"):
        raise top.error(f"float_abi = {float_abi!r} does not go with fpu = {fpu!r} (no FPU: 'soft'; an FPU: 'hard' or 'softfp')")
    cpu_mhz = top.positive("cpu_mhz")
    cycles = top.get("cycles", str, choices=CYCLE_COUNTERS)
    if cycles == "dwt" and core in ("cortex-m0", "cortex-m0plus"):
        raise top.error(f"cycles = 'dwt': a {core} has no DWT cycle counter; use 'systick'")
    optimization = top.get("optimization", str, choices=OPTIMIZATIONS)
    stack_size = top.positive("stack_size", required=False, default=DEFAULT_STACK)
    if stack_size % 8:
        raise top.error(f"stack_size must be a multiple of 8, got {stack_size}")

    memory = _parse_memory(top)
    clock = _parse_clock(top, cpu_mhz)
    console = _parse_console(top, clock, cpu_mhz)
    emulation = _parse_emulation(top, name)
    flash = _parse_flash(top)
    renode = _parse_renode(top)
    top.done()
    return Board(
        name=name, description=description, mcu=mcu, core=core, fpu=fpu, float_abi=float_abi, cpu_mhz=cpu_mhz,
        cycles=cycles, optimization=optimization, stack_size=stack_size, memory=memory, console=console,
        clock=clock, emulation=emulation, flash=flash, renode=renode, path=path,
    )


def _parse_memory(top: _Table) -> tuple[MemoryRegion, ...]:
    top.used.add("memory")
    raw = top.data.get("memory")
    if raw is None:
        raise top.error("missing [[memory]] regions (at least one flash and one ram)")
    if not isinstance(raw, list) or not raw:
        raise top.error("memory must be an array of tables: [[memory]]")
    regions = []
    for i, item in enumerate(raw):
        t = _Table(top.path, item, f"memory[{i}]")
        name = t.get("name", str)
        if not name.isidentifier():
            raise t.error(f"{t.label('name')} = {name!r} must be a linker-script identifier (letters, digits, _)")
        t.where = f"memory {name!r}"
        origin = t.get("origin", int)
        length = t.positive("length")
        kind = t.get("kind", str, choices=MEMORY_KINDS)
        note = t.get("note", str, required=False, default="")
        t.done()
        if origin < 0 or origin + length > 1 << 32:
            raise t.error(f"memory {name!r} (origin 0x{origin:X}, length 0x{length:X}) is outside the 32-bit address space")
        if origin % 4 or length % 8:
            raise t.error(f"memory {name!r}: origin must be 4-aligned and length a multiple of 8")
        regions.append(MemoryRegion(name, origin, length, kind, note))
    names = [r.name for r in regions]
    for n in names:
        if names.count(n) > 1:
            raise top.error(f"two memory regions are named {n!r}")
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            if a.origin < b.end and b.origin < a.end:
                raise top.error(
                    f"memory regions {a.name!r} (0x{a.origin:08X}-0x{a.end - 1:08X}) and "
                    f"{b.name!r} (0x{b.origin:08X}-0x{b.end - 1:08X}) overlap"
                )
    for kind in MEMORY_KINDS:
        if not any(r.kind == kind for r in regions):
            raise top.error(f"memory has no region of kind {kind!r}")
    return tuple(regions)


def _parse_clock(top: _Table, cpu_mhz: int) -> Clock:
    t = top.table("clock")
    driver = t.get("driver", str, choices=CLOCK_DRIVERS)
    if driver == "none":
        t.done()
        return Clock(driver)
    cpu_hz = cpu_mhz * 1_000_000
    hz = lambda v: f"{v / 1e6:g} MHz"  # noqa: E731
    if driver == "stm32l4":
        source = t.get("source", str, choices=("hsi16",))
    else:
        source = t.get("source", str, choices=("hse_bypass", "hse_crystal"))
    source_hz = t.positive("source_hz")
    pll_m, pll_n = t.positive("pll_m"), t.positive("pll_n")
    ahb_div = t.get("ahb_div", int, required=False, default=1, choices=(1, 2, 4))
    apb1_div = t.get("apb1_div", int, required=False, default=1, choices=(1, 2, 4, 8, 16))
    apb2_div = t.get("apb2_div", int, required=False, default=1, choices=(1, 2, 4, 8, 16))
    flash_latency = t.get("flash_latency", int)
    pll_p = pll_q = pll_r = None
    overdrive = boost = False
    if driver in ("stm32f4", "stm32f7"):
        pll_p = t.get("pll_p", int, choices=(2, 4, 6, 8))
        pll_q = t.get("pll_q", int)
        if driver == "stm32f7":
            overdrive = t.get("overdrive", bool, required=False, default=False)
        if not 4_000_000 <= source_hz <= 26_000_000:
            raise t.error(f"clock.source_hz = {source_hz}: the HSE runs at 4-26 MHz")
        vco_in, limits_in = Fraction(source_hz, pll_m), (1_000_000, 2_000_000)
        if not 2 <= pll_m <= 63:
            raise t.error(f"clock.pll_m = {pll_m} is outside 2..63")
        if not 50 <= pll_n <= 432:
            raise t.error(f"clock.pll_n = {pll_n} is outside 50..432")
        if not 2 <= pll_q <= 15:
            raise t.error(f"clock.pll_q = {pll_q} is outside 2..15")
        limits_out, post = (100_000_000, 432_000_000), pll_p
        wait_step = 30_000_000  # one wait state per 30 MHz of HCLK at 2.7-3.6 V (RM0090, RM0385)
    else:  # stm32l4
        pll_r = t.get("pll_r", int, choices=(2, 4, 6, 8))
        boost = t.get("boost", bool, required=False, default=False)
        if source_hz != HSI_HZ:
            raise t.error(f"clock.source_hz must be {HSI_HZ} for the HSI16")
        vco_in = Fraction(source_hz, pll_m)
        limits_in = (2_660_000, 16_000_000) if boost else (4_000_000, 16_000_000)
        if not 1 <= pll_m <= (16 if boost else 8):
            raise t.error(f"clock.pll_m = {pll_m} is outside 1..{16 if boost else 8}")
        if not 8 <= pll_n <= (127 if boost else 86):
            raise t.error(f"clock.pll_n = {pll_n} is outside 8..{127 if boost else 86}")
        limits_out, post = (64_000_000, 344_000_000), pll_r
        wait_step = 20_000_000 if boost else 16_000_000  # range 1 boost (RM0432) / range 1 (RM0394)
    if not limits_in[0] <= vco_in <= limits_in[1]:
        raise t.error(f"clock: PLL input {hz(vco_in)} (source_hz / pll_m) is outside {hz(limits_in[0])}..{hz(limits_in[1])}")
    vco_out = vco_in * pll_n
    if not limits_out[0] <= vco_out <= limits_out[1]:
        raise t.error(f"clock: VCO {hz(vco_out)} is outside {hz(limits_out[0])}..{hz(limits_out[1])}")
    sysclk = vco_out / post
    if sysclk != cpu_hz:
        raise t.error(f"clock: the PLL gives {hz(sysclk)} (source_hz / pll_m * pll_n / {'pll_p' if pll_p else 'pll_r'}), but cpu_mhz = {cpu_mhz}")
    hclk = Fraction(cpu_hz, ahb_div)
    needed = math.ceil(hclk / wait_step) - 1
    if not needed <= flash_latency <= 15:
        raise t.error(f"clock.flash_latency = {flash_latency}: {hz(hclk)} needs at least {needed} wait states")
    apb_max = APB_MAX_HZ[driver]
    for i, div in ((1, apb1_div), (2, apb2_div)):
        if hclk / div > apb_max[i - 1]:
            raise t.error(f"clock.apb{i}_div = {div} gives {hz(hclk / div)}, above the {hz(apb_max[i - 1])} APB{i} limit")
    if driver == "stm32f7" and cpu_hz > 180_000_000 and not overdrive:
        raise t.error(f"clock: {cpu_mhz} MHz on an STM32F7 needs overdrive = true (above 180 MHz)")
    if driver == "stm32l4" and cpu_hz > 80_000_000 and not boost:
        raise t.error(f"clock: {cpu_mhz} MHz on an STM32L4 needs boost = true (range 1 boost, L4+ parts)")
    t.done()
    return Clock(driver, source, source_hz, pll_m, pll_n, pll_p, pll_q, pll_r, ahb_div, apb1_div, apb2_div,
                 flash_latency, overdrive, boost)


def _pin(t: _Table, key: str) -> str:
    pin = t.get(key, str)
    if len(pin) < 3 or pin[0] != "P" or not "A" <= pin[1] <= "K" or not pin[2:].isdigit() or int(pin[2:]) > 15:
        raise t.error(f"{t.label(key)} = {pin!r} is not a pin like 'PD8'")
    return pin


def _parse_console(top: _Table, clock: Clock, cpu_mhz: int) -> Console:
    t = top.table("console")
    driver = t.get("driver", str, choices=CONSOLE_DRIVERS)
    peripheral = t.get("peripheral", str)
    base = t.get("base", int)
    baud = t.positive("baud")
    console_clock = t.get("clock", str, choices=CONSOLE_CLOCKS)
    clock_hz = t.positive("clock_hz")
    note = t.get("note", str, required=False, default="")
    tx_pin = tx_af = rx_pin = rx_af = None
    if driver == "cmsdk_uart":
        if clock.driver != "none":
            raise t.error(f"console.driver = 'cmsdk_uart' goes with clock.driver = 'none', not {clock.driver!r}")
        if console_clock != "fixed":
            raise t.error("console.clock must be 'fixed' for a CMSDK UART (its APB clock, clock_hz)")
        if clock_hz < 16 * baud:
            raise t.error(f"console: clock_hz = {clock_hz} is below 16 * baud (CMSDK BAUDDIV must be >= 16)")
    else:
        if clock.driver == "none":
            raise t.error(f"console.driver = {driver!r} needs an STM32 clock.driver (stm32f4, stm32f7 or stm32l4)")
        uarts = STM32_UARTS[clock.driver]
        if peripheral not in uarts:
            raise t.error(f"console.peripheral = {peripheral!r}: the {driver} driver supports {', '.join(uarts)} on {clock.driver}")
        if (driver == "stm32_lpuart") != peripheral.startswith("LPUART"):
            raise t.error(f"console.driver = {driver!r} does not drive {peripheral}")
        expected, bus = uarts[peripheral]
        if base != expected:
            raise t.error(f"console.base = 0x{base:08X}, but {peripheral} is at 0x{expected:08X} on {clock.driver}")
        if console_clock == "hsi":
            if clock.driver == "stm32f4":
                raise t.error("console.clock = 'hsi': STM32F4 USARTs run on their APB clock only ('pclk')")
            want = HSI_HZ
        elif console_clock == "pclk":
            div = clock.apb1_div if bus == 1 else clock.apb2_div
            want = cpu_mhz * 1_000_000 // clock.ahb_div // div
        else:
            raise t.error("console.clock = 'fixed' is for CMSDK UARTs; STM32 ones use 'hsi' or 'pclk'")
        if clock_hz != want:
            raise t.error(f"console.clock_hz = {clock_hz}, but {peripheral} on {console_clock!r} runs at {want}")
        divisor = clock_hz * (256 if driver == "stm32_lpuart" else 1) / baud
        if driver == "stm32_usart" and not 16 <= divisor <= 0xFFFF:
            raise t.error(f"console: baud {baud} is out of reach from {clock_hz} Hz (BRR {divisor:.0f})")
        if driver == "stm32_lpuart" and not (0x300 <= divisor < 1 << 20 and 3 * baud <= clock_hz <= 4096 * baud):
            raise t.error(f"console: baud {baud} is out of reach of the LPUART from {clock_hz} Hz")
        tx_pin, tx_af = _pin(t, "tx_pin"), t.get("tx_af", int, choices=tuple(range(16)))
        if "rx_pin" in t.data or "rx_af" in t.data:
            rx_pin, rx_af = _pin(t, "rx_pin"), t.get("rx_af", int, choices=tuple(range(16)))
    t.done()
    return Console(driver, peripheral, base, baud, console_clock, clock_hz, tx_pin, tx_af, rx_pin, rx_af, note)


def _parse_emulation(top: _Table, name: str) -> Emulation:
    t = top.table("emulation")
    machine = t.get("qemu_machine", str, required=False)
    systick_hz = t.positive("systick_hz", required=False)
    emulated_by = t.get("emulated_by", str, required=False)
    t.done()
    if (machine is None) == (emulated_by is None):
        raise t.error("[emulation] needs exactly one of qemu_machine (a QEMU machine) or emulated_by (a board that has one)")
    if machine is not None and systick_hz is None:
        raise t.error("missing 'emulation.systick_hz' (the clock QEMU's SysTick runs from on this machine)")
    if emulated_by is not None and systick_hz is not None:
        raise t.error("emulation.systick_hz belongs to the emulated_by board, not here")
    return Emulation(machine, systick_hz, emulated_by)


def _parse_flash(top: _Table) -> FlashSettings | None:
    t = top.table("flash", required=False)
    if t is None:
        return None
    cfg = t.get("openocd_config", (str, list), required=False, default=())
    if isinstance(cfg, str):
        cfg = (cfg,)
    if not all(isinstance(c, str) and c for c in cfg):
        raise t.error("flash.openocd_config must be a string or a list of strings")
    pyocd = t.get("pyocd_target", str, required=False)
    address = t.get("stflash_address", int, required=False)
    t.done()
    if not cfg and pyocd is None and address is None:
        raise t.error("[flash] is empty: give openocd_config, pyocd_target or stflash_address (or leave the table out)")
    return FlashSettings(tuple(cfg), pyocd, address)


def _parse_renode(top: _Table) -> RenodeSettings | None:
    t = top.table("renode", required=False)
    if t is None:
        return None
    settings = RenodeSettings(t.get("platform", str), t.get("uart", str))
    t.done()
    return settings


def _covers(emu_fpu: str, fpu: str) -> bool:
    return fpu == "none" or emu_fpu == fpu or (fpu == "fpv5-sp-d16" and emu_fpu == "fpv5-d16")


def _check_emulator(path: Path, board: Board, emu: Board) -> None:
    if emu.emulation.qemu_machine is None:
        raise QuteError(f"{path}: [emulation].emulated_by = {emu.name!r} has no QEMU machine itself")
    if emu.core != board.core:
        raise QuteError(f"{path}: [emulation].emulated_by = {emu.name!r} is a {emu.core}, this board a {board.core}")
    if not _covers(emu.fpu, board.fpu):
        raise QuteError(f"{path}: [emulation].emulated_by = {emu.name!r} has FPU {emu.fpu}, which cannot run {board.fpu} code")
