"""The board descriptor's types and the closed sets of values its keys take (boards/README.md
is the reference for every key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


def format_size(n: int) -> str:
    """Bytes as the datasheets write them: 1 MB, 320 KB, 512 B."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KB"
    return f"{n} B"


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
