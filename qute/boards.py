"""Board descriptors (`boards/<name>.toml`) and what the firmware build needs from them.

A descriptor names the part (MCU, core, FPU, rated clock), its memory regions, the console UART,
the clock tree, the cycle counter, how to flash it and how to emulate it; boards/README.md is the
reference for every key. `load_board` reads and checks one (a mistake is a QuteError naming the
file and the key), `list_boards` all of them.

The build side gets from here the compiler flags of the core (`Board.cpu_flags`), the platform
sources and `-D` settings (`platform_sources`, `platform_defines`) and the linker script
(`render_linker_script`). An emulator build of a board with no QEMU machine of its own
(`emulated_by`) keeps the board's compiler flags but takes start-up, memory map, console and
counter from the board that emulates it.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from qute.errors import QuteError
from qute.resources import boards_dir, firmware_dir

CORES = ("cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
# cores with the DSP extension (SMLAD and friends), where the kernels take their SIMD paths
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
# FPUs each core may have (GCC -mfpu names); "none" is always allowed.
CORE_FPUS = {
    "cortex-m4": ("fpv4-sp-d16",),
    "cortex-m7": ("fpv5-sp-d16", "fpv5-d16"),
    "cortex-m33": ("fpv5-sp-d16",),
    "cortex-m55": ("fpv5-d16",),
}
FLOAT_ABIS = ("hard", "softfp", "soft")
CYCLE_COUNTERS = ("dwt", "systick")
OPTIMIZATIONS = ("-O1", "-O2", "-O3", "-Os")
MEMORY_KINDS = ("flash", "ram")
CONSOLE_DRIVERS = ("stm32_usart", "stm32_lpuart", "cmsdk_uart")
CONSOLE_CLOCKS = ("hsi", "pclk", "fixed")
CLOCK_DRIVERS = ("none", "stm32f4", "stm32f7", "stm32l4")
HSI_HZ = 16_000_000
DEFAULT_STACK = 8192

# STM32 serial ports the drivers support: name -> (base address, APB bus), per clock family.
STM32_UARTS = {
    "stm32f4": {"USART1": (0x40011000, 2), "USART2": (0x40004400, 1), "USART3": (0x40004800, 1), "USART6": (0x40011400, 2)},
    "stm32l4": {"USART1": (0x40013800, 2), "USART2": (0x40004400, 1), "USART3": (0x40004800, 1), "LPUART1": (0x40008000, 1)},
}
STM32_UARTS["stm32f7"] = STM32_UARTS["stm32f4"]
# Highest APB clocks (datasheets: F405 42/84 MHz, F746/F767 54/108 MHz, L4 = HCLK).
APB_MAX_HZ = {"stm32f4": (42_000_000, 84_000_000), "stm32f7": (54_000_000, 108_000_000), "stm32l4": (120_000_000, 120_000_000)}

_PLATFORM = ("startup_cortexm.c", "platform_init.c", "console_common.c", "semihosting.c")


# --------------------------------------------------------------------------- descriptor types


@dataclass(frozen=True)
class MemoryRegion:
    name: str
    origin: int
    length: int
    kind: str  # "flash" or "ram"
    note: str = ""

    @property
    def end(self) -> int:
        return self.origin + self.length

    @property
    def attrs(self) -> str:
        return "rx" if self.kind == "flash" else "rwx"

    @property
    def length_text(self) -> str:
        return format_size(self.length)


@dataclass(frozen=True)
class Console:
    driver: str
    peripheral: str
    base: int
    baud: int
    clock: str  # "hsi" (16 MHz HSI kernel clock), "pclk" (its APB clock), "fixed" (a board clock)
    clock_hz: int
    tx_pin: str | None = None
    tx_af: int | None = None
    rx_pin: str | None = None
    rx_af: int | None = None
    note: str = ""

    @property
    def summary(self) -> str:
        pins = f" {self.tx_pin}/{self.rx_pin}" if self.tx_pin and self.rx_pin else f" {self.tx_pin}" if self.tx_pin else ""
        return f"{self.peripheral}{pins} {self.baud}"


@dataclass(frozen=True)
class Clock:
    driver: str
    source: str | None = None
    source_hz: int | None = None
    pll_m: int | None = None
    pll_n: int | None = None
    pll_p: int | None = None
    pll_q: int | None = None
    pll_r: int | None = None
    ahb_div: int = 1
    apb1_div: int = 1
    apb2_div: int = 1
    flash_latency: int | None = None
    overdrive: bool = False
    boost: bool = False


@dataclass(frozen=True)
class FlashSettings:
    openocd_config: tuple[str, ...] = ()
    pyocd_target: str | None = None
    stflash_address: int | None = None


@dataclass(frozen=True)
class RenodeSettings:
    platform: str
    uart: str


@dataclass(frozen=True)
class Emulation:
    qemu_machine: str | None = None
    systick_hz: int | None = None  # the clock QEMU runs SysTick from (CSR.CLKSOURCE = processor)
    emulated_by: str | None = None


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    mcu: str
    core: str
    fpu: str
    float_abi: str
    cpu_mhz: int
    cycles: str
    optimization: str
    stack_size: int
    memory: tuple[MemoryRegion, ...]
    console: Console
    clock: Clock
    emulation: Emulation
    flash: FlashSettings | None = None
    renode: RenodeSettings | None = None
    path: Path = field(default=Path(), compare=False)
    _emulator: Board | None = field(default=None, compare=False, repr=False)

    @property
    def flash_region(self) -> MemoryRegion:
        """The first flash region: vector table, code, constants (model weights), .data's image."""
        return next(r for r in self.memory if r.kind == "flash")

    @property
    def ram_region(self) -> MemoryRegion:
        """The first RAM region: .data, .bss (arena) and the stack."""
        return next(r for r in self.memory if r.kind == "ram")

    @property
    def cpu_flags(self) -> list[str]:
        """GCC flags for the core: -mcpu, -mthumb, -mfpu and -mfloat-abi."""
        flags = [f"-mcpu={self.core}", "-mthumb"]
        if self.fpu != "none":
            flags.append(f"-mfpu={self.fpu}")
        flags.append(f"-mfloat-abi={self.float_abi}")
        return flags

    @property
    def qemu_machine(self) -> str:
        """The QEMU machine its emulator builds run on (its own, or its emulated_by board's)."""
        return self.emulation_board().emulation.qemu_machine  # type: ignore[return-value]

    @property
    def is_emulated_variant(self) -> bool:
        """True when the board has no QEMU machine and runs emulated as another board's variant."""
        return self.emulation.emulated_by is not None

    def emulation_board(self) -> Board:
        """The board whose start-up, memory map and console run under QEMU: itself or emulated_by."""
        return self._emulator if self._emulator is not None else self

    @property
    def emulation_note(self) -> str:
        """One line for a run's output saying what runs where."""
        if self.is_emulated_variant:
            emu = self.emulation_board()
            return (f"{self.name} has no QEMU machine: emulated as a variant on {emu.name} ({emu.qemu_machine}) "
                    f"with {self.name}'s compiler flags; start-up, memory map and console are {emu.name}'s")
        return f"{self.name} runs on QEMU's {self.qemu_machine} machine"


# --------------------------------------------------------------------------- loading


def format_size(n: int) -> str:
    """Bytes as the datasheets write them: 1 MB, 320 KB, 512 B."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KB"
    return f"{n} B"


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


# --------------------------------------------------------------------------- what the build uses


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
    import jinja2

    target = _target(board, emulator)
    template = jinja2.Template((platform_dir() / "linker.ld.j2").read_text(encoding="utf-8"),
                               undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    variant = f"emulator build on {target.name}" if emulator and target is not board else ("emulator build" if emulator else None)
    return template.render(
        board=board.name, variant=variant, source=f"boards/{target.name}.toml", flash=target.flash_region,
        ram=target.ram_region, regions=target.memory, stack_size=target.stack_size,
    )


def boards_table(boards: list[Board]) -> str:
    """The `qute boards` table."""
    rows = [("board", "MCU", "core", "MHz", "flash", "RAM", "console", "QEMU")]
    for b in boards:
        qemu = f"emulated on {b.emulation.emulated_by}" if b.is_emulated_variant else b.emulation.qemu_machine
        rows.append((b.name, b.mcu, b.core, str(b.cpu_mhz), b.flash_region.length_text, b.ram_region.length_text,
                     b.console.summary, qemu or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    return "\n".join(lines)
