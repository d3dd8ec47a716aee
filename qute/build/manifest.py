"""A finished build on disk: build.json (the manifest) and the files beside it, read back for
qute run, qute monitor, qute flash, qute report and the device stage of qute eval."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen import outdir
from qute.errors import QuteError


MANIFEST = "build.json"
MODEL_FILE = "model.int8.tflite"
INPUTS_FILE = "inputs.npz"
MEMORY_FILE = "memory.json"
EMULATOR_DIR = "emulator"
BUILD_KIND = "qute-firmware"


@dataclass
class Build:
    path: Path
    manifest: dict

    @property
    def board(self) -> str:
        return self.manifest["board"]

    def variant(self, emulator: bool) -> dict | None:
        for v in self.manifest["variants"].values():
            if v["emulator"] == emulator:
                return v
        return None

    def elf(self, emulator: bool) -> Path | None:
        v = self.variant(emulator)
        return self.path / v["elf"] if v else None

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(self.path / INPUTS_FILE) as z:
                return np.asarray(z["x"], dtype=np.int8), np.asarray(z["y"], dtype=np.int64)
        except (OSError, KeyError, ValueError) as e:
            raise QuteError(f"{self.path}: damaged {INPUTS_FILE} ({e}); rebuild with qute build") from None

    def tflite(self) -> bytes:
        try:
            return (self.path / MODEL_FILE).read_bytes()
        except OSError:
            raise QuteError(f"{self.path}: missing {MODEL_FILE}; rebuild with qute build") from None


def load_build(path: str | Path) -> Build:
    path = Path(path)
    if not path.is_dir():
        raise QuteError(f"build directory {path} {outdir.missing(path)}"
                        + ("" if path.exists() else f"; make one with: qute build --board BOARD -o {path}"))
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise QuteError(f"{path} is not a qute build (no {MANIFEST}); make one with: qute build --board BOARD -o {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise QuteError(f"{path}/{MANIFEST} is damaged ({e}); rebuild with qute build") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != BUILD_KIND or "variants" not in manifest:
        raise QuteError(f"{path}/{MANIFEST} is not a qute build manifest; rebuild with qute build")
    b = Build(path, manifest)
    for v in manifest["variants"].values():
        if not (path / v["elf"]).is_file():
            raise QuteError(f"{path} is an incomplete qute build (missing {v['elf']}); rebuild with qute build")
    return b
