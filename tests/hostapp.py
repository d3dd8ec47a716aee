"""The firmware application of a qute build (firmware/app/qute_app.c with the build's generated
src/), compiled for the PC with the host's gcc and a stdio platform (tests/host/), and run there.

What it prints must be what the build expects (qute.expectation) byte for byte, like the firmware
under QEMU: the application's logic is then tested without an emulator, and under AddressSanitizer
and UBSan.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

HOST_PLATFORM = Path(__file__).parent / "host" / "qute_platform_host.c"
have_host_gcc = shutil.which("gcc") is not None


def compile_app(build_dir: Path, exe: Path) -> Path:
    """The build's application, model, kernels and uncertainty code as one host executable."""
    m = json.loads((build_dir / "build.json").read_text())
    integer = (m.get("uncertainty_path") or {}).get("kind") == "int"
    sources = [build_dir / "app" / "qute_app.c", *sorted((build_dir / "src").glob("*.c")),
               *sorted((build_dir / "kernels").glob("*.c")), *sorted((build_dir / "uncertainty").glob("*.c")),
               build_dir / "platform" / "console_common.c", HOST_PLATFORM]
    cmd = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-O1", "-g",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           *(["-DQUTE_UNCERTAINTY_INT"] if integer else []),
           *[f"-I{build_dir / d}" for d in ("src", "app", "kernels", "uncertainty", "platform")],
           *map(str, sources), "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return exe


def run_app(exe: Path, stdin: bytes | None = None) -> str:
    p = subprocess.run([str(exe)], input=stdin if stdin is not None else b"", capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return p.stdout.decode()


def same_lines_but_counts(a: str, b: str) -> bool:
    """Two transcripts print the same QUTE lines, the counter's name and counts aside (the PC's
    platform counts nothing)."""
    def norm(text):
        return [re.sub(r" (u?cycles=\d+|counter=\w+)", "", ln.rstrip("\r"))
                for ln in text.splitlines() if ln.startswith("QUTE ")]

    return norm(a) == norm(b)
