"""No floating point in an image for a core with no FPU: the soft-float helpers it would link."""

import re
import subprocess

# __aeabi_f*/d* (arithmetic, comparisons, float<->float), __aeabi_cfcmp*/cdcmp*, every __aeabi_*2f/2d
# (i2f, ui2f, l2f, ...: an integer-to-float conversion does not start with f), libgcc's own names
# (__addsf3, __floatsisf, __fixunssfsi, ...) and the libm functions the uncertainty code could call.
FLOAT_HELPER = re.compile(
    r"^__aeabi_(?:c?[fd]\w*|\w*2[fd])$"
    r"|^__(?:add|sub|mul|div|neg|eq|ne|lt|le|gt|ge|cmp|unord)[sd]f[23]$"
    r"|^__(?:float|fix|extend|trunc)\w*[sd]f\w*$"
    r"|^(?:log|exp|sqrt|pow)f?$"
)


def symbols(path) -> list[str]:
    """Every symbol name arm-none-eabi-nm lists for an object file or ELF (defined or not)."""
    out = subprocess.run(["arm-none-eabi-nm", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def float_helpers(path) -> list[str]:
    return sorted(s for s in symbols(path) if FLOAT_HELPER.match(s))
