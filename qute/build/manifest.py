"""A finished build on disk: build.json (the manifest, a typed :class:`Manifest`) and the files
beside it, read back for qute run, qute monitor, qute flash, qute report and the device stage of
qute eval. The JSON layout is the manifest's only serialisation: to_json and from_json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
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


@dataclass(frozen=True)
class Variant:
    """One compiled variant: the board's own firmware, or the emulator build."""

    elf: str  # relative to the build folder
    linked_for: str  # the board whose memory map it is linked for
    emulator: bool
    defines: list[str]


@dataclass(frozen=True)
class ModelInfo:
    origin: str  # what the model is, for people
    file: str
    sha256: str
    arena_bytes: int
    weights_bytes: int
    parameter_bytes: int
    weights_layout: str = "int8"


@dataclass(frozen=True)
class InputsInfo:
    file: str
    samples: int
    source: str  # "from" in build.json: where the inputs come from, for people
    over: str = "embedded"  # or "uart"
    labelled: bool = False
    class_names: list[str] | None = None


@dataclass(frozen=True)
class Manifest:
    """build.json: what a build holds and what its firmware must print.

    `outputs` (the model's outputs in the generated order), `uncertainty_path`, `exit_policy`,
    `calibration` and `profile` stay plain mappings: qute.expectation, qute.exits, qute.calibrate
    and the profile table own them.
    """

    board: str
    variants: dict[str, Variant]
    model: ModelInfo
    inputs: InputsInfo
    outputs: list[dict]
    ensemble: bool
    classes: int
    expected_done_line: str
    kind: str = BUILD_KIND
    qute_version: str = ""
    emulator_only: bool = False
    qemu_machine: str | None = None
    compiler_flags: list[str] = ()
    reference: str = ""
    emulation_note: str = ""
    renode: dict | None = None
    uncertainty_path: dict | None = None
    calibration: dict | None = None
    calibration_note: str = ""
    profile: dict | None = None
    exit_policy: dict | None = None  # early-exit models: qute.exits.ExitPolicy.to_dict, None: they run to the end
    cut: dict | None = None  # qute build --fit deepest-exit cut the model after this exit (and why)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["inputs"]["from"] = d["inputs"].pop("source")
        order = ["kind", "qute_version", "board", "emulator_only", "variants", "qemu_machine", "compiler_flags",
                 "model", "inputs", "outputs", "ensemble", "classes", "reference", "expected_done_line",
                 "emulation_note", "renode", "uncertainty_path", "exit_policy", "cut", "calibration", "calibration_note", "profile"]
        d["inputs"] = {k: d["inputs"][k] for k in ("file", "samples", "from", "over", "labelled", "class_names")}
        return {k: d[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """The manifest of a build.json's contents; ValueError naming what is missing or wrong."""
        if not isinstance(d, dict) or d.get("kind") != BUILD_KIND:
            raise ValueError(f'its kind is not "{BUILD_KIND}"')
        known = {f.name for f in fields(cls)}
        try:
            inputs = dict(d["inputs"])
            inputs["source"] = inputs.pop("from", "")
            return cls(**{**{k: v for k, v in d.items() if k in known},
                          "variants": {name: Variant(**v) for name, v in d["variants"].items()},
                          "model": ModelInfo(**d["model"]),
                          "inputs": InputsInfo(**inputs)})
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"a field is missing or malformed ({e})") from None

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls.from_dict(json.loads(text))


@dataclass
class Build:
    path: Path
    manifest: Manifest

    @property
    def board(self) -> str:
        return self.manifest.board

    def variant(self, emulator: bool) -> Variant | None:
        for v in self.manifest.variants.values():
            if v.emulator == emulator:
                return v
        return None

    def elf(self, emulator: bool) -> Path | None:
        v = self.variant(emulator)
        return self.path / v.elf if v else None

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
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise QuteError(f"{path} is not a qute build (no {MANIFEST}); make one with: qute build --board BOARD -o {path}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise QuteError(f"{path}/{MANIFEST} is damaged ({e}); rebuild with qute build") from None
    try:
        manifest = Manifest.from_dict(data)
    except ValueError as e:
        raise QuteError(f"{path}/{MANIFEST} is not a qute build manifest ({e}); rebuild with qute build") from None
    b = Build(path, manifest)
    for v in manifest.variants.values():
        if not (path / v.elf).is_file():
            raise QuteError(f"{path} is an incomplete qute build (missing {v.elf}); rebuild with qute build")
    return b
