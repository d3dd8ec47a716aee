"""Board descriptors, the platform layer, and the platform running under QEMU."""

import shutil
import subprocess
import sys

import pytest

from qute.boards import (
    board_names,
    list_boards,
    load_board,
    platform_defines,
    platform_dir,
    platform_sources,
    render_linker_script,
)
from qute.errors import QuteError
from qute.resources import boards_dir

ALL = ["mps2-an385", "mps2-an386", "mps2-an500", "netduinoplus2", "nucleo-f746", "nucleo-f767zi", "nucleo-l432kc", "nucleo-l4r5zi"]
KB, MB = 1 << 10, 1 << 20

have_gcc = shutil.which("arm-none-eabi-gcc") is not None
have_qemu = shutil.which("qemu-system-arm") is not None
needs_gcc = pytest.mark.skipif(not have_gcc, reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(not (have_gcc and have_qemu), reason="qemu-system-arm or arm-none-eabi-gcc not installed")


# --------------------------------------------------------------------------- descriptors


def test_every_descriptor_loads_and_validates():
    assert board_names() == ALL
    boards = list_boards()
    assert [b.name for b in boards] == ALL
    for b in boards:
        assert b.path == boards_dir() / f"{b.name}.toml"
        assert b.flash_region.kind == "flash" and b.ram_region.kind == "ram"
        assert b.emulation_board().emulation.qemu_machine
        assert b.cpu_flags[:2] == [f"-mcpu={b.core}", "-mthumb"]


def test_mps2_an385_is_a_cortex_m3_with_no_fpu_on_the_an386_map():
    b, an386 = load_board("mps2-an385"), load_board("mps2-an386")
    assert (b.core, b.fpu, b.float_abi, b.emulation.qemu_machine) == ("cortex-m3", "none", "soft", "mps2-an385")
    assert b.cpu_flags == ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"]
    assert b.memory == an386.memory and b.console.base == an386.console.base == 0x40004000
    assert b.emulation_board() is b


@pytest.mark.parametrize(
    "name, mcu, core, fpu, mhz, flash, ram",
    [
        ("nucleo-f746", "STM32F746ZG", "cortex-m7", "fpv5-sp-d16", 216, (0x08000000, 1 * MB), (0x20000000, 320 * KB)),
        ("nucleo-f767zi", "STM32F767ZI", "cortex-m7", "fpv5-d16", 216, (0x08000000, 2 * MB), (0x20000000, 512 * KB)),
        ("nucleo-l432kc", "STM32L432KC", "cortex-m4", "fpv4-sp-d16", 80, (0x08000000, 256 * KB), (0x20000000, 64 * KB)),
        ("nucleo-l4r5zi", "STM32L4R5ZI", "cortex-m4", "fpv4-sp-d16", 120, (0x08000000, 2 * MB), (0x20000000, 640 * KB)),
        ("netduinoplus2", "STM32F405RG", "cortex-m4", "fpv4-sp-d16", 168, (0x08000000, 1 * MB), (0x20000000, 128 * KB)),
        ("mps2-an500", "AN500 FPGA image", "cortex-m7", "fpv5-d16", 25, (0x00000000, 4 * MB), (0x20000000, 4 * MB)),
        ("mps2-an386", "AN386 FPGA image", "cortex-m4", "fpv4-sp-d16", 25, (0x00000000, 4 * MB), (0x20000000, 4 * MB)),
    ],
)
def test_memory_and_core_match_the_datasheets(name, mcu, core, fpu, mhz, flash, ram):
    b = load_board(name)
    assert (b.mcu, b.core, b.fpu, b.cpu_mhz) == (mcu, core, fpu, mhz)
    assert (b.flash_region.origin, b.flash_region.length) == flash
    assert (b.ram_region.origin, b.ram_region.length) == ram
    assert b.float_abi == "hard"
    assert b.cpu_flags == [f"-mcpu={core}", "-mthumb", f"-mfpu={fpu}", "-mfloat-abi=hard"]


def test_consoles_and_clocks_of_the_real_boards():
    f746 = load_board("nucleo-f746")
    assert (f746.console.driver, f746.console.base, f746.console.tx_pin, f746.console.rx_pin, f746.console.tx_af) == (
        "stm32_usart", 0x40004800, "PD8", "PD9", 7)
    assert (f746.clock.source, f746.clock.source_hz, f746.clock.flash_latency, f746.clock.overdrive) == ("hse_bypass", 8_000_000, 7, True)
    l432 = load_board("nucleo-l432kc")
    assert (l432.console.peripheral, l432.console.tx_pin, l432.console.tx_af, l432.console.rx_pin, l432.console.rx_af) == (
        "USART2", "PA2", 7, "PA15", 3)
    l4r5 = load_board("nucleo-l4r5zi")
    assert (l4r5.console.driver, l4r5.console.base, l4r5.console.tx_pin, l4r5.console.tx_af) == ("stm32_lpuart", 0x40008000, "PG7", 8)
    assert l4r5.clock.boost and l4r5.clock.flash_latency == 5
    nd = load_board("netduinoplus2")
    assert (nd.console.base, nd.console.clock_hz) == (0x40011000, 84_000_000)
    for b in (f746, l432, l4r5, nd):
        assert b.cycles == "dwt" and b.flash.stflash_address == 0x08000000 and b.flash.openocd_config


def test_emulation_variants():
    expect = {"nucleo-f746": "mps2-an500", "nucleo-f767zi": "mps2-an500", "nucleo-l432kc": "mps2-an386", "nucleo-l4r5zi": "mps2-an386"}
    for name, emu in expect.items():
        b = load_board(name)
        assert b.is_emulated_variant and b.emulation_board().name == emu and b.qemu_machine == emu
        assert emu in b.emulation_note and name in b.emulation_note
    for name in ("mps2-an500", "mps2-an386", "netduinoplus2"):
        b = load_board(name)
        assert not b.is_emulated_variant and b.emulation_board() is b and b.qemu_machine == name


def test_platform_selection_and_defines():
    f746 = load_board("nucleo-f746")
    silicon = [p.name for p in platform_sources(f746, emulator=False)]
    assert {"console_stm32_usart.c", "clock_stm32f7.c", "cache_cortexm7.c", "cycles_dwt.c", "startup_cortexm.c"} <= set(silicon)
    emu = [p.name for p in platform_sources(f746, emulator=True)]
    assert "console_cmsdk_uart.c" in emu and "cycles_systick.c" in emu and not any(n.startswith("clock_") for n in emu)
    assert all(p.is_file() for p in platform_sources(f746, True) + platform_sources(f746, False))
    d = platform_defines(f746, emulator=False)
    assert "-DQUTE_CONSOLE_BASE=0x40004800" in d and "-DQUTE_PLL_N=216" in d and "-DQUTE_OVERDRIVE" in d
    assert "-DQUTE_EMULATOR" not in d
    d = platform_defines(f746, emulator=True)
    assert "-DQUTE_EMULATOR" in d and "-DQUTE_CONSOLE_BASE=0x40004000" in d and "-DQUTE_SYSTICK_NUM=40u" in d
    assert not any("PLL" in x for x in d)
    nd = platform_defines(load_board("netduinoplus2"), emulator=True)
    assert "-DQUTE_SYSTICK_NUM=125u" in nd and "-DQUTE_SYSTICK_DEN=21u" in nd and "-DQUTE_STM32F4" in nd
    assert "console_stm32_lpuart.c" in [p.name for p in platform_sources(load_board("nucleo-l4r5zi"), False)]


def test_linker_script_follows_the_memory_map():
    f746 = load_board("nucleo-f746")
    ld = render_linker_script(f746)
    assert "ORIGIN = 0x08000000, LENGTH = 0x00100000" in ld and "ORIGIN = 0x20000000, LENGTH = 0x00050000" in ld
    for sym in ("_sidata", "_sdata", "_edata", "_sbss", "_ebss", "_estack", ".isr_vector", "AT > FLASH"):
        assert sym in ld
    emu = render_linker_script(f746, emulator=True)
    assert "ORIGIN = 0x00000000, LENGTH = 0x00400000" in emu and "mps2-an500" in emu
    assert render_linker_script(load_board("mps2-an500"), emulator=True).split("\n", 1)[1] == emu.split("\n", 1)[1]


# --------------------------------------------------------------------------- bad descriptors


def test_unknown_board_lists_all_names():
    with pytest.raises(QuteError) as e:
        load_board("nucleo-f999")
    msg = str(e.value)
    assert "nucleo-f999" in msg and all(n in msg for n in ALL)


def _write(tmp_path, name, text):
    (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path


def _variant(tmp_path, name="custom", edit=lambda s: s, base="nucleo-l432kc"):
    text = (boards_dir() / f"{base}.toml").read_text().replace(f'name = "{base}"', f'name = "{name}"')
    for b in ("mps2-an386", "mps2-an500"):
        shutil.copy(boards_dir() / f"{b}.toml", tmp_path)
    return _write(tmp_path, name, edit(text))


def _error(directory, name="custom"):
    with pytest.raises(QuteError) as e:
        load_board(name, directory)
    return str(e.value)


def test_a_copy_of_a_good_descriptor_loads(tmp_path):
    b = load_board("custom", _variant(tmp_path))
    assert b.ram_region.length == 64 * KB and b.emulation_board().name == "mps2-an386"


def test_malformed_toml(tmp_path):
    msg = _error(_write(tmp_path, "custom", 'name = "custom"\ncore = \n'))
    assert "custom.toml" in msg and "not valid TOML" in msg


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda s: s.replace('mcu = "STM32L432KC"\n', 'mcu = "STM32L432KC"\ncolour = "blue"\n'), ["unknown key 'colour'"]),
        (lambda s: s.replace("baud = 115200\n", "baud = 115200\nparity = 1\n"), ["unknown key 'parity'", "[console]"]),
        (lambda s: s.replace("cpu_mhz = 80\n", ""), ["missing key 'cpu_mhz'"]),
        (lambda s: s.replace("baud = 115200\n", ""), ["console.baud"]),
        (lambda s: s.replace("cpu_mhz = 80", 'cpu_mhz = "80"'), ["cpu_mhz must be an integer"]),
        (lambda s: s.replace('core = "cortex-m4"', 'core = "cortex-m9"'), ["core", "cortex-m9"]),
        (lambda s: s.replace('fpu = "fpv4-sp-d16"', 'fpu = "fpv5-d16"'), ["fpu", "cortex-m4"]),
        (lambda s: s.replace("length = 0x00040000", "length = 0x18100000"), ["overlap", "'FLASH'", "0x20000000"]),
        (lambda s: s.replace("origin = 0x20000000", "origin = 0x0803F000"), ["overlap", "'FLASH'", "'RAM'"]),
        (lambda s: s.replace("pll_n = 10", "pll_n = 11"), ["cpu_mhz = 80"]),
        (lambda s: s.replace("flash_latency = 4", "flash_latency = 2"), ["flash_latency", "4 wait states"]),
        (lambda s: s.replace("base = 0x40004400", "base = 0x40004800"), ["console.base", "USART2"]),
        (lambda s: s.replace('tx_pin = "PA2"', 'tx_pin = "A2"'), ["tx_pin"]),
        (lambda s: s.replace('emulated_by = "mps2-an386"', 'emulated_by = "mps2-an500"'), ["emulated_by", "cortex-m7"]),
        (lambda s: s.replace('emulated_by = "mps2-an386"', 'emulated_by = "nowhere"'), ["emulated_by", "not a board"]),
        (lambda s: s.replace('emulated_by = "mps2-an386"', 'qemu_machine = "mps2-an386"'), ["systick_hz"]),
        (lambda s: s.replace('name = "custom"', 'name = "other"'), ["must match the file name"]),
    ],
)
def test_bad_descriptors_name_the_file_and_the_field(tmp_path, edit, fragments):
    msg = _error(_variant(tmp_path, edit=edit))
    assert "custom.toml" in msg, msg
    for f in fragments:
        assert f in msg, msg


def test_qute_boards_lists_every_board():
    proc = subprocess.run([sys.executable, "-m", "qute", "boards"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["board", "MCU", "core", "MHz"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ALL
    assert "STM32F746ZG" in rows["nucleo-f746"] and "1 MB" in rows["nucleo-f746"] and "320 KB" in rows["nucleo-f746"]
    assert "emulated on mps2-an500" in rows["nucleo-f746"]
    assert "256 KB" in rows["nucleo-l432kc"] and "64 KB" in rows["nucleo-l432kc"]
    assert rows["netduinoplus2"].rstrip().endswith("netduinoplus2")


# --------------------------------------------------------------------------- cross-compiling and QEMU

HELLO = r"""
#include "qute_platform.h"

/* n iterations of a two-instruction loop: 2n instructions. */
static void spin(uint32_t n)
{
    __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

int main(void)
{
    qute_platform_init();
    qute_console_puts("hello from qute on " BOARD "\n");
    static const uint32_t loops[] = {LOOPS};
    for (unsigned i = 0; i < sizeof loops / sizeof loops[0]; ++i) {
        qute_cycles_start();
        spin(loops[i]);
        uint32_t n = qute_cycles_elapsed();
        qute_console_puts("loop ");
        qute_console_put_uint(loops[i]);
        qute_console_puts(": ");
        qute_console_put_uint(n);
        qute_console_puts(" ");
        qute_console_puts(qute_cycles_name());
        qute_console_puts("\n");
    }
    qute_console_put_int(-2147483647 - 1);
    qute_console_puts(" ");
    qute_console_put_int(42);
    qute_console_puts("\n");
    return STATUS;
}
"""

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]
LDFLAGS = ["-nostartfiles", "-Wl,--gc-sections", "--specs=nano.specs"]


def build(tmp_path, board_name, emulator, status=0, loops=(1000, 100000)):
    b = load_board(board_name)
    out = tmp_path / f"{board_name}-{'emu' if emulator else 'hw'}-{status}"
    out.mkdir()
    (out / "main.c").write_text(HELLO)
    (out / "linker.ld").write_text(render_linker_script(b, emulator))
    elf = out / "hello.elf"
    cmd = ["arm-none-eabi-gcc", *b.cpu_flags, b.optimization, *CFLAGS, "-I", str(platform_dir()), *platform_defines(b, emulator),
           f'-DBOARD="{board_name}"', f"-DSTATUS={status}", f"-DLOOPS={','.join(f'{n}u' for n in loops)}",
           str(out / "main.c"), *map(str, platform_sources(b, emulator)), *LDFLAGS, "-T", str(out / "linker.ld"), "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stderr
    return elf


def run_qemu(board_name, elf, timeout=60):
    machine = load_board(board_name).qemu_machine
    proc = subprocess.run(
        ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-semihosting", "-icount", "shift=0", "-kernel", str(elf)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return proc


@needs_gcc
@pytest.mark.parametrize("board_name", ALL)
def test_platform_cross_compiles_for_silicon_and_emulator(tmp_path, board_name):
    for emulator in (False, True):
        elf = build(tmp_path, board_name, emulator)
        b = load_board(board_name)
        target = b.emulation_board() if emulator else b
        size = subprocess.run(["arm-none-eabi-objdump", "-h", str(elf)], capture_output=True, text=True, check=True).stdout
        vectors = next(line.split() for line in size.splitlines() if ".isr_vector" in line)
        assert int(vectors[3], 16) == target.flash_region.origin  # VMA: the vector table opens the flash
        syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
        estack = next(int(line.split()[0], 16) for line in syms.splitlines() if line.endswith(" _estack"))
        assert estack == target.ram_region.end
        if not emulator and b.cycles == "dwt":
            assert " DWT" not in syms and "qute_cycles_name" in syms


def _lines(proc):
    return [line.rstrip("\r") for line in proc.stdout.splitlines()]


def _loop_counts(lines):
    out = {}
    for line in lines:
        if line.startswith("loop "):
            n, rest = line[5:].split(": ")
            count, unit = rest.split()
            out[int(n)] = (int(count), unit)
    return out


@needs_qemu
@pytest.mark.parametrize("board_name", ["mps2-an500", "mps2-an386", "netduinoplus2", "nucleo-f746", "nucleo-l432kc"])
def test_hello_runs_under_qemu_and_exits_0(tmp_path, board_name):
    elf = build(tmp_path, board_name, emulator=True)
    proc = run_qemu(board_name, elf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _lines(proc)
    assert lines[0] == f"hello from qute on {board_name}"
    assert lines[-1] == "-2147483648 42"
    counts = _loop_counts(lines)
    for n, (count, unit) in counts.items():
        assert unit == "instructions"
        # 2n instructions in the loop, a few dozen around it; SysTick resolution is 40 (mps2) or 6 instructions
        assert 2 * n <= count <= 2 * n + 200, (n, count)


@needs_qemu
def test_instruction_counts_are_deterministic_and_survive_systick_wraps(tmp_path):
    # 60M iterations = 120M instructions: more than 2^24 SysTick ticks at 168 MHz, so the count
    # crosses a wrap of the 24-bit counter on netduinoplus2.
    loops = (5000, 60_000_000)
    elf = build(tmp_path, "netduinoplus2", emulator=True, loops=loops)
    runs = [run_qemu("netduinoplus2", elf, timeout=120) for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = (_loop_counts(_lines(p)) for p in runs)
    assert first == second
    for n, (count, _) in first.items():
        assert 2 * n <= count <= 2 * n + 200, (n, count)


@needs_qemu
@pytest.mark.parametrize("board_name", ["mps2-an500", "netduinoplus2"])
def test_a_failing_status_exits_nonzero(tmp_path, board_name):
    elf = build(tmp_path, board_name, emulator=True, status=1)
    proc = run_qemu(board_name, elf)
    assert proc.returncode != 0
    assert _lines(proc)[0] == f"hello from qute on {board_name}"


@needs_qemu
def test_a_fault_is_reported_and_exits_nonzero(tmp_path):
    b = load_board("mps2-an386")
    out = tmp_path / "fault"
    out.mkdir()
    (out / "main.c").write_text(
        '#include "qute_platform.h"\n'
        "int main(void) { qute_platform_init(); qute_console_puts(\"before\\n\");\n"
        "  return (int)*(volatile uint32_t *)0x60000000u; }\n"  # unmapped on AN386: a bus fault
    )
    (out / "linker.ld").write_text(render_linker_script(b, True))
    subprocess.run(["arm-none-eabi-gcc", *b.cpu_flags, "-O2", *CFLAGS, "-I", str(platform_dir()), *platform_defines(b, True),
                    str(out / "main.c"), *map(str, platform_sources(b, True)), *LDFLAGS, "-T", str(out / "linker.ld"),
                    "-o", str(out / "f.elf")], check=True)
    proc = run_qemu("mps2-an386", out / "f.elf")
    assert proc.returncode != 0
    assert _lines(proc) == ["before", "qute: fault: exception 3"]
