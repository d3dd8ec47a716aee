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

The package, one concern per module: ``descriptor`` (the types, and the closed sets of values the
keys take), ``parse`` (boards/<name>.toml -> a checked Board), ``platform`` (what a build takes
from a board).
"""

from qute.boards.descriptor import (CORES, DSP_CORES, Board, Clock, Console, Emulation, FlashSettings, MemoryRegion,
                                    RenodeSettings, boards_table, format_size)
from qute.boards.parse import board_names, list_boards, load_board, load_board_file
from qute.boards.platform import (platform_defines, platform_dir, platform_headers, platform_sources,
                                  render_linker_script)

__all__ = [
    "CORES", "DSP_CORES", "Board", "Clock", "Console", "Emulation", "FlashSettings", "MemoryRegion", "RenodeSettings",
    "board_names", "boards_table", "format_size", "list_boards", "load_board", "load_board_file", "platform_defines",
    "platform_dir", "platform_headers", "platform_sources", "render_linker_script",
]
