"""The wheel carries firmware/ and boards/ and works outside the checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, ROOT],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("qute-*.whl")
    return path


def test_wheel_carries_firmware_and_boards(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for src in ("firmware", "boards"):
        for f in (ROOT / src).rglob("*"):
            if f.is_file() and f.suffix in (".c", ".h", ".j2", ".ld", ".toml", ".md"):
                rel = f.relative_to(ROOT / src)
                # the kernels are codegen's: the generated C's runtime, found without qute
                where = f"codegen/kernels/{rel.name}" if rel.parts[0] == "kernels" else f"qute/_{src}/{rel}"
                assert where in names, where
    assert not any(n.startswith("qute/_firmware/kernels/") for n in names)
    for pkg in ("codegen", "qute"):  # their modules and templates (the report's, the C model's)
        for f in (ROOT / pkg).rglob("*"):
            if f.is_file() and f.suffix in (".py", ".j2") and "__pycache__" not in f.parts:
                assert f"{pkg}/{f.relative_to(ROOT / pkg)}" in names
    assert not any(n.startswith("tests/") for n in names)


def test_installed_copy_finds_its_data_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import qute.resources as r, pathlib;"
        "f, b = r.firmware_dir(), r.boards_dir();"
        "assert str(f).startswith(%r), f;"
        "assert (f / 'README.md').is_file() and (b / 'README.md').is_file();"
        "import codegen.host as h; k = h.kernels_dir();"
        "assert str(k).startswith(%r) and (k / 'qute_conv.c').is_file(), k;"
        "print('ok')" % (str(site), str(site))
    )
    # PYTHONPATH puts the unpacked wheel ahead of the checkout's editable install
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
