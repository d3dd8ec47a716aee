"""The external programs qute calls, and the Debian package that brings each one.

Every command checks for the tools it is about to use before doing anything else, so a missing
one is a one-line error naming the package (exit 2), never a traceback halfway through a build.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from qute.errors import QuteError

PACKAGES = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-objcopy": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "make": "make",
    "qemu-system-arm": "qemu-system-arm",
    "gdb-multiarch": "gdb-multiarch",
    "openocd": "openocd",
    "st-flash": "stlink-tools",
}
# Not in Debian: how to get them instead.
ELSEWHERE = {
    "pyocd": "pip install pyocd",
    "renode-test": "install Renode from https://renode.io (its package ships renode-test); then run: renode-test BUILD_DIR/BOARD.robot",
}
NEWLIB = "libnewlib-arm-none-eabi"

# What `make setup` installs (Makefile: TOOLCHAIN_PACKAGES).
SETUP_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm", "gdb-multiarch", "openocd", "stlink-tools")


def how_to_get(tool: str) -> str:
    if tool in PACKAGES:
        return f"apt-get install {PACKAGES[tool]}"
    return ELSEWHERE.get(tool, f"install {tool}")


def find(tool: str) -> str | None:
    return shutil.which(tool)


def require(*tools: str) -> dict[str, str]:
    """Paths of `tools`; QuteError naming what to install for the first one missing."""
    found = {}
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            raise QuteError(f"{tool} not found; install it: {how_to_get(tool)}")
        found[tool] = path
    return found


def require_newlib(gcc: str) -> None:
    """The Arm C library (memcpy and memset for the start-up code) next to the compiler."""
    try:
        out = subprocess.run([gcc, "-print-file-name=libc_nano.a"], check=False, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if not out or not Path(out).is_absolute() or not Path(out).exists():
        raise QuteError(f"newlib for arm-none-eabi not found (no libc_nano.a); install it: apt-get install {NEWLIB}")
