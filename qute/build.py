"""``qute build``: an int8 model -> a standalone firmware project for one board, compiled.

    qute build --board nucleo-f746 runs/digits -o runs/digits/build-nucleo-f746

What goes in
    A run directory (its ``model.int8.tflite``, quantized first when missing, and the first N
    images of its test split with their labels), an int8 ``.tflite`` file (N uniform random int8
    inputs, seed 0, no labels), or nothing: the embedded default, the digits QUTE model (K = 3)
    of ``make demo`` shipped in ``firmware/default`` with the 359 test images of its split
    (``qute build`` then needs no TensorFlow, no data and no training; ``make default-model``
    retrains and replaces it). A ``qute.toml`` may name the model under ``[build] model = ...``.
    A run's ``calibration.json`` (``qute calibrate``) is compiled in: the abstain threshold and the
    accuracy-drop monitor's window and rho (on boards with no FPU their integer versions,
    ``threshold_int`` and ``rho_sum``). ``stream="id,corrupt:NAME:SEVERITY"`` (``--stream``)
    embeds N test images per part, corrupted as the part says.
    ``inputs="uart"`` (``--inputs uart``) embeds none: the firmware reads its inputs from the
    console UART (framing in ``firmware/main.c.j2``), so one ELF runs any number of them
    (``qute eval --stages device``); the N images still go to ``inputs.npz``, which ``qute run``
    sends.

What comes out (OUT, written into a temporary sibling and renamed into place)::

    OUT/
      Makefile                    `make` rebuilds firmware.*; `make emulator` the QEMU variant
      src/main.c                  rendered from firmware/main.c.j2 (inputs embedded)
      src/qute_model.c, .h        the generated model (codegen)
      kernels/ uncertainty/ platform/   copies of the firmware sources it uses
      <board>.ld                  linker script from the board's memory map
      firmware.elf .bin .hex .map
      memory.json                 flash and RAM per section, model weights / arena / code
      emulator/                   the emulator variant (non-emulator builds only): same compiler
                                  flags, QUTE_EMULATOR, the emulation board's start-up, memory
                                  map and console; what `qute run` executes
      <board>.resc <board>.robot  Renode script and Robot Framework test (real-board firmware)
      model.int8.tflite inputs.npz build.json   what `qute run` compares against

``qute build --emulator`` builds only the emulator variant, at the top of OUT.

``qute build --profile`` compiles every variant with ``-DQUTE_PROFILE``: the generated model (the
same C as without it) then calls a hook after each op, and the firmware prints the counter's count
per op for every input (``QUTE op`` lines, qute/transcript.py), which ``qute run`` turns into a
per-op table. build.json records it under ``profile`` with the ops it times (opcode, kernel, MACs).

The fit check
    Before compiling: the model's arena (which holds its input and outputs: the firmware has no
    buffers of its own for them) and the stack against the board's RAM, and the
    weights, parameters and embedded inputs against its flash (lower bounds: code comes on top).
    After linking: the linker's own region overflow, turned into the same one-line message, and
    the ELF's sections against the board's capacity (an emulator build is held to the real board's
    sizes too: the emulator's memory map is larger). Figures are those of ``arm-none-eabi-size``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen import outdir
from qute.errors import QuteError, RunFailure
from qute.expectation import Expectation, ModelFacts, int_path_for, model_facts, read_graph
from qute.tf_loader import load_tensorflow

DEFAULT_SAMPLES = 50
MANIFEST = "build.json"
MODEL_FILE = "model.int8.tflite"
INPUTS_FILE = "inputs.npz"
MEMORY_FILE = "memory.json"
EMULATOR_DIR = "emulator"
BUILD_KIND = "qute-firmware"
RANDOM_SEED = 0
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections", "-ffp-contract=off", "-g"]
LDFLAGS = ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"]
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "arm-none-eabi-size", "make")
INPUT_MODES = ("embedded", "uart")
PROFILE_DEFINE = "QUTE_PROFILE"


@dataclass
class ModelSource:
    tflite: bytes
    origin: str  # what the model is, for people
    inputs: np.ndarray  # int8 (N, *input shape without batch)
    labels: np.ndarray  # int64 (N,), -1 where unknown
    inputs_from: str  # where the inputs come from, for people
    class_names: list[str] | None = None
    run_dir: Path | None = None  # a run's directory (its calibration.json is compiled in)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool(np.all(self.labels >= 0))


@dataclass
class BuildResult:
    out: Path
    board: object
    emulator: bool
    memory: dict
    manifest: dict
    source: ModelSource


# --------------------------------------------------------------------------- the model


def default_dir() -> Path:
    from qute.resources import firmware_dir

    return firmware_dir() / "default"


def _read_default(samples: int) -> ModelSource:
    folder = default_dir()
    about = json.loads((folder / "about.json").read_text())
    with np.load(folder / INPUTS_FILE) as z:
        x, y = z["x"], z["y"]
    return ModelSource(
        tflite=(folder / MODEL_FILE).read_bytes(),
        origin=f"the embedded default model ({about['description']})",
        inputs=x[:samples],
        labels=y[:samples].astype(np.int64),
        inputs_from=f"{about['dataset']} test split, first {min(samples, len(x))} of {len(x)} images",
        class_names=about.get("class_names"),
    )


def parse_stream(spec: str) -> list[tuple[str, int] | None]:
    """``id,corrupt:NAME[:SEVERITY]`` -> [None, (NAME, SEVERITY)]: None is an ID part (severity 5 by default)."""
    from qute.data import CORRUPTIONS, SEVERITIES

    parts = []
    for item in str(spec).split(","):
        item = item.strip()
        bits = item.split(":")
        if item == "id":
            parts.append(None)
        elif bits[0] == "corrupt" and len(bits) in (2, 3) and bits[1]:
            if bits[1] not in CORRUPTIONS:
                raise QuteError(f"--stream: unknown corruption {bits[1]!r}; choose one of {', '.join(CORRUPTIONS)}")
            try:
                sev = int(bits[2]) if len(bits) == 3 else 5
            except ValueError:
                sev = -1
            if sev not in SEVERITIES:
                raise QuteError(f"--stream: severity must be one of {', '.join(map(str, SEVERITIES))}, got {bits[2]!r}")
            parts.append((bits[1], sev))
        else:
            raise QuteError(f"--stream: bad part {item!r}; expected id or corrupt:NAME[:SEVERITY], e.g. id,corrupt:gaussian_noise:5")
    return parts


def check_stream(spec: str, samples: int, test_images: int | None) -> list[tuple[str, int] | None]:
    """The parts of a --stream, once `samples` images per part are known to fit the test split."""
    parts = parse_stream(spec)
    if test_images is not None and samples * len(parts) > test_images:
        raise QuteError(f"--stream needs {samples} test images per part, {samples * len(parts)} in all; "
                        f"the test split has {test_images}: give fewer --samples")
    return parts


def _stream_inputs(x: np.ndarray, y: np.ndarray, spec: str, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """`samples` consecutive test images per part of the stream, corrupted where the part says."""
    from qute.data import corrupt

    parts = check_stream(spec, samples, len(x))
    xs, ys, about = [], [], []
    for i, part in enumerate(parts):
        xi, yi = x[i * samples:(i + 1) * samples], y[i * samples:(i + 1) * samples]
        if part is not None:
            xi = corrupt(xi, part[0], part[1], seed=seed + i)
        xs.append(xi)
        ys.append(yi)
        about.append(f"{i * samples}..{(i + 1) * samples - 1}: " + ("ID" if part is None else f"{part[0]} severity {part[1]}"))
    return np.concatenate(xs), np.concatenate(ys), "stream of test images " + ", ".join(about)


def _from_run(path: Path, samples: int, data_dir, progress, stream: str | None = None) -> ModelSource:
    from qute.quantize import TFLITE_FILE, input_params, quantize
    from qute.run import load_run

    run = load_run(path)
    if stream:  # before quantizing, which takes a while
        check_stream(stream, samples, run.dataset.get("test_samples"))
    tfl = path / TFLITE_FILE
    if not tfl.is_file():
        progress(f"{path} has no {TFLITE_FILE}: quantizing it first (qute quantize {path})")
        from qute.quantize import quantize_run, write_result

        load_tensorflow()
        write_result(path, quantize_run(run, data_dir=data_dir, progress=lambda s: progress("  " + s)))
    from qute.data import load_dataset

    t = run.train
    data = load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    tflite = tfl.read_bytes()
    if stream:
        xf, yf, about = _stream_inputs(data.x_test, data.y_test, stream, samples, t.seed)
        about = f"{data.name} {about}"
    else:
        n = min(samples, len(data.x_test))
        xf, yf, about = data.x_test[:n], data.y_test[:n], f"{data.name} test split, first {n} of {len(data.x_test)} images"
    x = quantize(xf, input_params(tflite))
    return ModelSource(
        tflite=tflite,
        origin=f"{path} ({run.spec.method}, {run.spec.arch}, K={run.spec.num_heads}, {data.name})",
        inputs=x,
        labels=np.asarray(yf, dtype=np.int64),
        inputs_from=about,
        class_names=list(data.class_names) if data.class_names else None,
        run_dir=path,
    )


def _from_tflite(path: Path, samples: int) -> ModelSource:
    from qute import oracle

    tflite = path.read_bytes()
    read_graph(tflite, str(path))
    try:
        x = oracle.random_inputs(tflite, samples, RANDOM_SEED)
    except ValueError as e:
        raise QuteError(f"{path}: {e}") from None
    return ModelSource(
        tflite=tflite,
        origin=str(path),
        inputs=x[0],
        labels=np.full(samples, -1, dtype=np.int64),
        inputs_from=f"{samples} uniform random int8 inputs (seed {RANDOM_SEED}; no labels)",
    )


def resolve_model(model: str | None, samples: int, data_dir=None, project: dict | None = None,
                  progress: Callable[[str], None] = lambda s: None, stream: str | None = None) -> ModelSource:
    """The model to build and the inputs to embed (see the module docstring).

    `model` None: the embedded default, unless a qute.toml (`project`) is in use, which must
    then name the model under [build].
    """
    if model is None:
        if project:
            raise QuteError(f"{project['path']} names no model: give RUN_DIR or MODEL.tflite, "
                            f"or add model = \"runs/...\" under [build]")
        if stream:
            raise QuteError("--stream needs a run directory (its test images are what the stream is made of)")
        return _read_default(samples)
    path = Path(model)
    from qute.quantize import TFLITE_FILE

    if path.is_file() and path.name == TFLITE_FILE and (path.parent / "config.json").is_file():
        path = path.parent  # a run's own model: use the run (labels, test images)
    if path.is_dir():
        return _from_run(path, samples, data_dir, progress, stream)
    if stream:
        raise QuteError("--stream needs a run directory (its test images are what the stream is made of)")
    if path.is_file():
        return _from_tflite(path, samples)
    raise QuteError(f"{model} does not exist; give a run directory, an int8 .tflite file, or nothing (the embedded default)")


def write_default(run_dir: str | Path, folder: Path | None = None) -> Path:
    """Replaces the embedded default (firmware/default) with a quantized run: `make default-model`."""
    from qute.data import load_dataset
    from qute.quantize import TFLITE_FILE, input_params, quantize
    from qute.run import load_run

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    tflite = (run_dir / TFLITE_FILE).read_bytes()
    t = run.train
    data = load_dataset(t.dataset, t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    folder = Path(folder or default_dir())
    folder.mkdir(parents=True, exist_ok=True)
    x = quantize(data.x_test, input_params(tflite))
    np.savez_compressed(folder / INPUTS_FILE, x=x, y=np.asarray(data.y_test, dtype=np.int16))
    (folder / MODEL_FILE).write_bytes(tflite)
    report = json.loads((run_dir / "quantization.json").read_text()) if (run_dir / "quantization.json").is_file() else {}
    about = {
        "description": f"{data.name} {run.spec.method.upper() if run.spec.method == 'qute' else run.spec.method}, "
                       f"{run.spec.arch}, K={run.spec.num_heads}",
        "made_by": f"qute train --dataset {t.dataset} --method {t.method} -K {t.k} ; qute quantize (make default-model)",
        "dataset": data.name,
        "class_names": list(data.class_names) if data.class_names else None,
        "test_images": len(x),
        "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
        "int8_test_accuracy": report.get("stages", {}).get("int8_tflm", {}).get("accuracy"),
        "train": t.to_dict(),
    }
    (folder / "about.json").write_text(json.dumps(about, indent=2) + "\n")
    return folder


# --------------------------------------------------------------------------- what to embed


def profile_ops(facts: ModelFacts) -> dict:
    """What `qute run` puts beside a profiled build's per-op counts: each op that runs code, with
    its opcode, the kernel it calls and its MACs (codegen.report), in the order the model runs them."""
    from codegen.report import build_report

    rows = build_report(facts.graph, gen=facts.gen).ops
    return {"define": PROFILE_DEFINE,
            "ops": [{"index": r.index, "opcode": r.opcode, "kernel": r.kernel, "macs": r.macs} for r in rows if r.index in facts.gen.kernels]}


def monitor_constants(facts: ModelFacts, source: ModelSource, model_sha256: str, int_path: dict | None = None,
                      board: str = "") -> tuple[dict | None, str]:
    """The calibration compiled in (from the run's calibration.json), or None and why not.

    On the integer-only path (`int_path`: no FPU) that is the calibration's integer constants: the
    threshold on the integer score and rho_sum on the monitor's exact window sum (version 2 files
    made from the int8 model have them; without them the build has no abstain flag and no monitor).
    """
    from qute.calibrate import CALIBRATION_FILE, SCORES, f32_hex, load_calibration

    if source.run_dir is None:
        return None, "the model is not a run, so there is no calibration.json (no abstain flag, no accuracy-drop monitor)"
    path = Path(source.run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None, (f"{source.run_dir} has no {CALIBRATION_FILE} (no abstain flag, no accuracy-drop monitor; "
                      f"run qute calibrate {source.run_dir} first)")
    if not facts.ensemble:
        return None, "the model is not an ensemble classifier (no abstain flag, no accuracy-drop monitor)"
    c = load_calibration(path)
    sha = c.data.get("model_sha256")
    if sha is not None and sha != model_sha256:
        raise QuteError(f"{path} was made for another int8 model (sha256 {sha[:12]}, the run's is {model_sha256[:12]}); "
                        f"re-run qute calibrate {source.run_dir}")
    field, higher = SCORES[c.score]
    from qute.uncertainty import INT_FRAC_BITS
    from qute.uncertainty import SCORES as FIELDS

    common = {
        "from": str(path),
        "scores_from": c.data.get("scores_from"),
        "score": c.score,
        "score_field": field,
        "score_index": FIELDS.index(field),
        "accept_when": ">=" if higher else "<=",
        "window": c.window,
    }
    if int_path:
        if not c.has_int:
            return None, (f"{board} has no FPU and {path} has no integer constants (made by an older qute, or from the "
                          f"float model): no abstain flag, no accuracy-drop monitor; re-run qute calibrate {source.run_dir}")
        made_with = c.data.get("integer_path") or {}
        if (made_with.get("scale_q24"), made_with.get("zero_point")) != (int_path["scale_q24"], int_path["zero_point"]):
            raise QuteError(f"{path}'s integer constants were made for head scale_q24/zero point "
                            f"{made_with.get('scale_q24')}/{made_with.get('zero_point')}, this build's are "
                            f"{int_path['scale_q24']}/{int_path['zero_point']}; re-run qute calibrate {source.run_dir}")
        frac = INT_FRAC_BITS[field]
        return {
            **common,
            "arithmetic": "int",
            "score_field_int": f"{field}_q{frac}",
            "threshold_int": c.threshold_int,
            "threshold_format": f"Q{frac}",
            "threshold": c.threshold_int / (1 << frac),  # its real value, for people
            "rho_sum": c.rho_sum,
            "rho": c.rho_sum / (c.window << 16),  # the mean confidence it stands for, for people
        }, f"compiled in from {path} (integer constants: {board} has no FPU)"
    return {
        **common,
        "arithmetic": "float",
        "threshold": float(c.threshold),
        "threshold_f32": f32_hex(c.threshold),
        "rho": float(c.rho),
        "rho_f32": f32_hex(c.rho),
    }, f"compiled in from {path}"


def render_main(facts: ModelFacts, source: ModelSource, board: str, emulator_target: str,
                monitor: dict | None = None, int_path: dict | None = None, uart_inputs: bool = False) -> str:
    import jinja2

    from qute.resources import firmware_dir
    from qute.transcript import FORMAT

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(firmware_dir())), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    x = np.asarray(source.inputs, dtype=np.int8).reshape(len(source.inputs), -1)
    return env.get_template("main.c.j2").render(
        board=board,
        emulator_target=emulator_target,
        format=FORMAT,
        model_id=hashlib.sha256(source.tflite).hexdigest()[:12],
        samples=len(x),
        uart_inputs=uart_inputs,
        inputs=[] if uart_inputs else [", ".join(str(int(v)) for v in row) for row in x],
        labels=", ".join(str(int(v)) for v in source.labels),
        labelled=source.labelled,
        source=source.inputs_from,
        outputs=facts.outputs,
        ensemble=facts.ensemble,
        classes=max(facts.classes, 1),
        int_path=int_path,
        monitor=None if monitor is None or monitor["arithmetic"] == "int" else {
            **monitor,
            "threshold_c": c_float(monitor["threshold_f32"]),
            "rho_c": c_float(monitor["rho_f32"]),
        },
        imonitor=monitor if monitor is not None and monitor["arithmetic"] == "int" else None,
    )


def c_float(bits_hex: str) -> str:
    """A float32 (by its bit pattern) as an exact C99 hexadecimal float literal."""
    from qute.calibrate import f32_from_hex

    v = float(f32_from_hex(bits_hex))
    if not math.isfinite(v):
        raise QuteError(f"calibration constant {bits_hex} is not finite")
    return ("-" if math.copysign(1.0, v) < 0 else "") + f"{abs(v).hex()}f"


# --------------------------------------------------------------------------- fit check


def kb(n: int) -> int:
    return math.ceil(n / 1024)


WEIGHT_LAYOUTS = ("auto", "int8", "int16")
# auto takes the int16 layout only while the image's weights, parameters and inputs leave this
# share of the flash free (code, and the user's own application, need the rest)
AUTO_INT16_FREE = 0.25


def choose_weights16(boards, facts: ModelFacts, source: ModelSource, uart_inputs: bool,
                     weights: str) -> tuple[ModelFacts, str]:
    """The model's facts with the matrix products' filters in the layout `weights` asks for (auto:
    int16 on DSP cores while a quarter of the flash stays free, else int8), and a line saying which
    and why. `facts` is the int8 layout's; the int16 one (codegen.emit.generate's weights16) costs
    twice the filters' flash for fewer instructions on cores with the DSP extension."""
    from qute.boards import DSP_CORES

    if weights == "int8":
        return facts, "int8 (--weights int8)"
    if weights == "auto" and boards[0].core not in DSP_CORES:
        return facts, f"int8 ({boards[0].core} has no DSP extension: the int16 layout would only cost flash)"
    wide = model_facts(source.tflite, weights16=True)
    extra = wide.gen.weights_bytes - facts.gen.weights_bytes
    if not extra:
        return facts, "int8 (no convolution or fully-connected filters to widen)"
    if weights == "int16":
        return wide, f"int16 (--weights int16: +{extra:,} B flash)"
    for b in boards:
        need = check_fit_before_link(b, wide, source, uart_inputs)["flash_at_least"]
        if need > (1 - AUTO_INT16_FREE) * b.flash_region.length:
            return facts, (f"int8 (the int16 layout would need {kb(need)} KB of {b.name}'s {kb(b.flash_region.length)} KB "
                           f"flash before code; --weights int16 to take it anyway)")
    return wide, f"int16 (+{extra:,} B flash for fewer instructions; --weights int8 to keep them int8)"


def _no_fit(board, needs: list[tuple[str, int, int, str]]) -> QuteError:
    """One line: `needs 412 KB RAM, nucleo-l432kc has 64 KB` for each region that overflows."""
    parts = [f"needs {kb(need)} KB {what}, {board.name} has {kb(have)} KB" + (f" ({detail})" if detail else "")
             for what, need, have, detail in needs]
    return QuteError(f"the model does not fit {board.name}: " + "; ".join(parts))


def check_fit_before_link(board, facts: ModelFacts, source: ModelSource, uart_inputs: bool = False) -> dict:
    """Lower bounds of what the firmware needs, before compiling anything."""
    gen = facts.gen
    # The model's arena holds its input and outputs too: the firmware writes each input there
    # (qute_model_input) and reads the outputs there (qute_model_output), with no buffers of its own.
    floats = 4 * (len(facts.outputs) + 1) * facts.classes if facts.ensemble else 0
    ram = gen.arena_size + floats + board.stack_size
    inputs = 0 if uart_inputs else int(source.inputs.size) + 2 * len(source.inputs)
    weights = gen.weights_bytes + gen.params_bytes
    flash = weights + inputs
    problems = []
    if ram > board.ram_region.length:
        problems.append(("RAM", ram, board.ram_region.length,
                         f"arena {kb(gen.arena_size)} KB (inputs and outputs included) + stack {kb(board.stack_size)} KB, "
                         "before code and data"))
    if flash > board.flash_region.length:
        # Fewer embedded inputs help only when the weights leave room for at least one of them.
        each = inputs // len(source.inputs) if inputs else 0
        room = (board.flash_region.length - weights) // each if each and weights < board.flash_region.length else 0
        hint = (f"; try fewer --samples (room for at most {room} beside the weights, before code)"
                if 0 < room < len(source.inputs) else "")
        problems.append(("flash", flash, board.flash_region.length,
                         f"weights {kb(weights)} KB + {len(source.inputs)} embedded input(s) {kb(inputs)} KB, before code{hint}"))
    if problems:
        raise _no_fit(board, problems)
    return {"ram_at_least": ram, "flash_at_least": flash}


_OVERFLOW = re.compile(r"region [`'\"]?(\w+)['\"]? overflowed by (\d+) bytes")


def linker_overflow(stderr: str, link_board, fit_board) -> QuteError | None:
    """The linker's "region `RAM' overflowed by N bytes" as the fit check's one-line message."""
    worst = {}
    for name, over in _OVERFLOW.findall(stderr):
        region = next((r for r in link_board.memory if r.name == name), None)
        if region is None:
            continue
        worst[region.kind] = max(worst.get(region.kind, 0), region.length + int(over))
    problems = [("RAM" if kind == "ram" else "flash", worst[kind],
                 (fit_board.ram_region if kind == "ram" else fit_board.flash_region).length, "the linker's count")
                for kind in ("ram", "flash") if kind in worst]
    return _no_fit(fit_board, problems) if problems else None


# --------------------------------------------------------------------------- memory report

_WEIGHTS = re.compile(r"tensor\d+|op\d+_filter")  # constant tensors, as stored or packed (codegen.emit)
_PARAMS = re.compile(r"op\d+_(?!filter$)\w+")


def memory_report(elf_path: Path, board, link_board=None) -> dict:
    """Flash and RAM used by the ELF, per section, against `board`'s capacity.

    The classification is arm-none-eabi-size's (Berkeley): read-only sections are ``text``
    (flash), writable sections with contents ``data`` (flash for the initial values + RAM),
    writable sections without (.bss, .stack) ``bss`` (RAM). So flash = text + data and
    RAM = data + bss, and each section's size is what ``arm-none-eabi-size -A`` prints.
    """
    from qute.elf import Elf

    elf = Elf(elf_path)
    sections = []
    text = data = bss = 0
    for s in elf.alloc_sections():
        if s.readonly:
            text += s.size
            flash, ram = s.size, 0
        elif not s.nobits:
            data += s.size
            flash, ram = s.size, s.size
        else:
            bss += s.size
            flash, ram = 0, s.size
        sections.append({"name": s.name, "address": s.addr, "load_address": elf.load_address(s), "size": s.size,
                         "flash": flash, "ram": ram})
    syms = [s for s in elf.symbols if s.kind == 1 and s.size]
    weights = sum(s.size for s in syms if _WEIGHTS.fullmatch(s.name))
    params = sum(s.size for s in syms if _PARAMS.fullmatch(s.name))
    arena = sum(s.size for s in syms if s.name == "arena")
    inputs = sum(s.size for s in syms if s.name in ("qute_inputs", "qute_labels"))
    stack_sec = next((s for s in elf.alloc_sections() if s.name == ".stack"), None)
    stack = stack_sec.size if stack_sec else 0
    code = sum(s.size for s in elf.alloc_sections() if s.flags & 0x4)  # SHF_EXECINSTR
    flash_used, ram_used = text + data, data + bss
    fcap, rcap = board.flash_region.length, board.ram_region.length
    return {
        "board": board.name,
        "elf": elf_path.name,
        "linked_for": (link_board or board).name,
        "flash": {"used": flash_used, "capacity": fcap, "percent": round(100 * flash_used / fcap, 1)},
        "ram": {"used": ram_used, "capacity": rcap, "percent": round(100 * ram_used / rcap, 1)},
        "size": {"text": text, "data": data, "bss": bss, "dec": text + data + bss},
        "sections": sections,
        "split": {
            "model_weights": weights,
            "model_parameters": params,
            "test_inputs": inputs,
            "code": code,
            "other_flash": flash_used - weights - params - inputs - code,
            "arena": arena,
            "stack": stack,
            "other_ram": ram_used - arena - stack,
        },
    }


def format_memory(m: dict) -> str:
    rows = [f"{'section':<14}{'address':>12}{'size':>11}{'flash':>11}{'RAM':>11}"]
    for s in m["sections"]:
        fl, ra = (f"{s[k]:,}" if s[k] else "" for k in ("flash", "ram"))
        rows.append(f"{s['name']:<14}{s['address']:>#12x}{s['size']:>11,}{fl:>11}{ra:>11}")
    f, r = m["flash"], m["ram"]
    rows.append(f"{'total':<14}{'':>12}{'':>11}{f['used']:>11,}{r['used']:>11,}")
    rows.append(f"{'capacity':<14}{'':>12}{'':>11}{f['capacity']:>11,}{r['capacity']:>11,}")
    rows.append(f"{'used':<14}{'':>12}{'':>11}{f['percent']:>10}%{r['percent']:>10}%")
    sp = m["split"]
    rows.append(
        f"flash: model weights {sp['model_weights']:,} B + per-op parameters {sp['model_parameters']:,} B, "
        f"code {sp['code']:,} B, embedded inputs {sp['test_inputs']:,} B, other {sp['other_flash']:,} B"
    )
    rows.append(f"RAM:   model arena {sp['arena']:,} B (inputs and outputs included), stack {sp['stack']:,} B, "
                f"other {sp['other_ram']:,} B")
    z = m["size"]
    rows.append(f"(arm-none-eabi-size {m['elf']}: text {z['text']:,}  data {z['data']:,}  bss {z['bss']:,}; "
                f"flash = text + data, RAM = data + bss)")
    return "\n".join(rows)


def check_fit_after_link(m: dict, board) -> None:
    problems = [(what, m[key]["used"], m[key]["capacity"], "") for what, key in (("RAM", "ram"), ("flash", "flash"))
                if m[key]["used"] > m[key]["capacity"]]
    if problems:
        raise _no_fit(board, problems)


# --------------------------------------------------------------------------- the project


def _kernel_sources(headers: list[str]) -> list[Path]:
    """The kernel .c files the model calls, and those they call in turn."""
    from codegen.host import kernels_dir

    kdir = kernels_dir()
    todo = [kdir / h.replace(".h", ".c") for h in headers]
    seen: list[Path] = []
    while todo:
        c = todo.pop()
        if c in seen or not c.is_file():
            continue
        seen.append(c)
        for inc in re.findall(r'#include\s+"([^"]+)\.h"', c.read_text()):
            todo.append(kdir / f"{inc}.c")
    return sorted(seen)


def _variant(board, emulator: bool) -> dict:
    from qute.boards import platform_defines, platform_sources

    target = board.emulation_board() if emulator else board
    return {
        "name": "emulator" if emulator else "board",
        "emulator": emulator,
        "target": target.name,
        "defines": platform_defines(board, emulator),
        "sources": [f"platform/{p.name}" for p in platform_sources(board, emulator)],
        "linker_script": f"{target.name}{'-emulator' if emulator else ''}.ld",
    }


_MAKEFILE = """\
# Firmware for {board}, generated by `qute build` (qute {version}). Standalone: `make` needs only
# the GNU Arm toolchain (Debian: gcc-arm-none-eabi, libnewlib-arm-none-eabi).
#
#   make            {top_what}
#{emu_help}   make size       section sizes (arm-none-eabi-size -A)
#   make clean
#
# Model: {origin}
# Inputs: {inputs_from}

CROSS   ?= arm-none-eabi-
CC      := $(CROSS)gcc
OBJCOPY := $(CROSS)objcopy
SIZE    := $(CROSS)size

# {core}: the board's compiler flags, used for every variant
CPU     := {cpu}
OPT     := {opt}
CFLAGS  := $(CPU) $(OPT) {cflags} -ffile-prefix-map=$(CURDIR)=.
LDFLAGS := $(CPU) {ldflags}
INCLUDES := -Isrc -Ikernels -Iuncertainty -Iplatform

COMMON_SRC := \\
{common}
{variants}
.PHONY: all clean size{phony}
all: {top}firmware.elf {top}firmware.bin {top}firmware.hex
{emu_rule}
size: {top}firmware.elf
\t$(SIZE) -A $<

%.bin: %.elf
\t$(OBJCOPY) -O binary $< $@

%.hex: %.elf
\t$(OBJCOPY) -O ihex $< $@

clean:
\trm -rf obj firmware.elf firmware.bin firmware.hex firmware.map {emu_clean}
"""

_VARIANT = """
# {title}
{key}_DEFS := {defines}
{key}_SRC := \\
{sources}
{key}_LD := {ld}
{key}_OBJ := $(patsubst %.c,obj/{name}/%.o,$(COMMON_SRC) $({key}_SRC))

obj/{name}/%.o: %.c
\t@mkdir -p $(@D)
\t$(CC) $(CFLAGS) $({key}_DEFS) $(INCLUDES) -c $< -o $@

{out}firmware.elf: $({key}_OBJ) $({key}_LD)
\t@mkdir -p $(@D)
\t$(CC) $(LDFLAGS) -T $({key}_LD) -Wl,-Map={out}firmware.map $({key}_OBJ) -o $@
"""


def _lines(items: list[str]) -> str:
    return " \\\n".join(f"\t{i}" for i in items)


def render_makefile(board, variants: list[dict], common: list[str], source: ModelSource,
                    uart_inputs: bool = False) -> str:
    from qute import __version__

    parts = []
    for v in variants:
        out = f"{EMULATOR_DIR}/" if v["emulator"] and len(variants) > 1 else ""
        title = (f"emulator variant: QEMU {board.qemu_machine} with {v['target']}'s start-up, memory map and console"
                 if v["emulator"] else f"{board.name} ({board.mcu})")
        parts.append(_VARIANT.format(title=title, key=v["name"].upper(), defines=" ".join(v["defines"]),
                                     sources=_lines(v["sources"]), ld=v["linker_script"], name=v["name"], out=out))
    both = len(variants) > 1
    top = ""
    return _MAKEFILE.format(
        board=board.name,
        version=__version__,
        top_what="firmware.elf/.bin/.hex" + (" (emulator build: QUTE_EMULATOR, "
                                               f"{board.emulation_board().name}'s memory map)" if not both and variants[0]["emulator"] else ""),
        emu_help=f"   make emulator   {EMULATOR_DIR}/firmware.elf: the QEMU variant `qute run` executes\n#" if both else "",
        origin=source.origin,
        inputs_from=("read from the console UART (qute build --inputs uart); qute run sends " + source.inputs_from
                     if uart_inputs else source.inputs_from),
        core=board.core,
        cpu=" ".join(board.cpu_flags),
        opt=board.optimization,
        cflags=" ".join(CFLAGS),
        ldflags=" ".join(LDFLAGS),
        common=_lines(common),
        variants="".join(parts),
        phony=" emulator" if both else "",
        top=top,
        emu_rule=(f"emulator: {EMULATOR_DIR}/firmware.elf {EMULATOR_DIR}/firmware.bin {EMULATOR_DIR}/firmware.hex\n"
                  if both else ""),
        emu_clean=f"{EMULATOR_DIR}" if both else "",
    )


def render_resc(board, elf: str = "firmware.elf") -> str | None:
    if board.renode is None:
        return None
    return (
        f"# Renode script for {board.name} ({board.mcu}), written by qute build.\n"
        f"# Interactive: renode {board.name}.resc   Automated: renode-test {board.name}.robot\n"
        f"# Renode's {board.renode.platform} may map more memory than the part has; qute's own fit\n"
        f"# check (memory.json) holds the firmware to the real sizes.\n"
        f"$bin ?= @{elf}\n"
        f"using sysbus\n"
        f'mach create "{board.name}"\n'
        f"machine LoadPlatformDescription @{board.renode.platform}\n"
        f"showAnalyzer {board.renode.uart}\n"
        f"macro reset\n\"\"\"\n    sysbus LoadELF $bin\n\"\"\"\n"
        f"runMacro $reset\n"
    )


def render_robot(board, done_line: str, start_prefix: str, samples: int, timeout_s: int) -> str | None:
    if board.renode is None:
        return None
    return f"""*** Comments ***
Robot Framework test for Renode, written by qute build for {board.name}: boots firmware.elf
(the board's own build, not the QEMU variant) and waits for the summary line. Every output byte
is covered by it: crc32= is the CRC-32 of all the outputs the host reference (TFLite Micro)
computes for the embedded inputs. The line format is qute/transcript.py's.

Run:  renode-test {board.name}.robot

*** Settings ***
Suite Setup       Setup
Suite Teardown    Teardown
Test Teardown     Test Teardown
Resource          ${{RENODEKEYWORDS}}

*** Variables ***
${{UART}}          {board.renode.uart}
${{START}}         {start_prefix}
${{DONE}}          {done_line}

*** Test Cases ***
Firmware Matches The Host Reference On {samples} Inputs
    Execute Command             $bin=@${{CURDIR}}/firmware.elf
    Execute Command             include @${{CURDIR}}/{board.name}.resc
    Create Terminal Tester      ${{UART}}    timeout={timeout_s}
    Start Emulation
    Wait For Line On Uart       ${{START}}
    Wait For Line On Uart       ${{DONE}}
"""


# --------------------------------------------------------------------------- building


def default_output(board, model: str | None, emulator: bool) -> Path:
    name = f"build-{board.name}{'-emulator' if emulator else ''}"
    if model and Path(model).is_dir():
        return Path(model) / name
    return Path(name)


def _older_build(folder: Path) -> bool:
    """A build from before builds carried a marker: its manifest says so."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("kind") == BUILD_KIND
    except (OSError, ValueError, AttributeError):
        return False


BUILD = outdir.Kind("qute build", ".qute-build", _older_build)


def _make(folder: Path, targets: list[str], tools: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    cross = str(Path(tools["arm-none-eabi-gcc"]).parent / "arm-none-eabi-")
    return subprocess.run([tools["make"], "-C", str(folder), "-j", jobs, f"CROSS={cross}", *targets], check=False,
                          capture_output=True, text=True, env=env, timeout=1800)


def build(
    board_name: str | None,
    model: str | None = None,
    out: str | Path | None = None,
    samples: int | None = None,
    emulator: bool = False,
    data_dir=None,
    config_path=None,
    progress: Callable[[str], None] = lambda s: None,
    stream: str | None = None,
    inputs: str = "embedded",
    force: bool = False,
    profile: bool = False,
    weights: str = "auto",
) -> BuildResult:
    """Builds the firmware project for `board_name` into `out` (see the module docstring).

    Unset `board_name`, `model` and `samples` come from qute.toml's [build] table when there is one.
    """
    from qute import __version__
    from qute import tools as toolbox
    from qute.boards import (
        load_board,
        platform_headers,
        platform_sources,
        render_linker_script,
    )
    from qute.config import make_config, read_project
    from qute.transcript import PREFIX

    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise QuteError(f"--samples must be a positive integer, got {samples!r}")
    if inputs not in INPUT_MODES:
        raise QuteError(f"unknown --inputs {inputs!r}; choose one of: {', '.join(INPUT_MODES)}")
    if weights not in WEIGHT_LAYOUTS:
        raise QuteError(f"unknown --weights {weights!r}; choose one of: {', '.join(WEIGHT_LAYOUTS)}")
    if stream is not None:
        parse_stream(stream)
    uart_inputs = inputs == "uart"
    project = read_project(config_path)
    model = str(model) if model is not None else None
    cfg = make_config("build", project, {"model": model, "board": board_name, "samples": samples})
    if cfg.board is None:
        raise QuteError("no board: give --board BOARD (qute boards lists them)")
    if model is None and cfg.model is not None and not Path(cfg.model).is_absolute():
        model = str(Path(project["path"]).parent / cfg.model)  # relative to the qute.toml
    else:
        model = cfg.model
    samples, board_name = cfg.samples, cfg.board
    board = load_board(board_name)
    found = toolbox.require(*TOOLS)
    toolbox.require_newlib(found["arm-none-eabi-gcc"])
    out = Path(out) if out is not None else default_output(board, model, emulator)
    outdir.check(out, BUILD, force)

    source = resolve_model(model, samples, data_dir, project, progress, stream)
    facts = model_facts(source.tflite)
    if len(source.inputs) and tuple(source.inputs.shape[1:]) != tuple(facts.graph.tensor(facts.graph.inputs[0]).shape[1:]):
        raise QuteError(f"inputs of shape {source.inputs.shape[1:]} do not fit the model input")
    emu_board = board.emulation_board()
    check_fit_before_link(board, facts, source, uart_inputs)
    if emulator and emu_board is not board:
        check_fit_before_link(emu_board, facts, source, uart_inputs)
    facts, layout_note = choose_weights16([board] + ([emu_board] if emulator and emu_board is not board else []),
                                          facts, source, uart_inputs, weights)
    progress(f"matrix-product filters: {layout_note}")
    weights16 = facts.gen.weights16
    check_fit_before_link(board, facts, source, uart_inputs)  # again: --weights int16 may not fit
    if emulator and emu_board is not board:
        check_fit_before_link(emu_board, facts, source, uart_inputs)

    progress("running the host reference (TFLite Micro) on the embedded inputs")
    int_path = int_path_for(board, facts.layout)
    expect = Expectation.of(source.tflite, facts.layout, source.inputs, int_path,
                            source.labels if source.labelled else None)
    done, engine = expect.done_line(), expect.engine

    variants = [_variant(board, True)] if emulator else [_variant(board, False), _variant(board, True)]
    if int_path:  # no FPU: the integer-only uncertainty path, in every variant (same compiler flags)
        for v in variants:
            v["defines"] = [*v["defines"], "-DQUTE_UNCERTAINTY_INT"]
    if profile:  # same generated C either way: the define alone turns the per-op hooks on
        for v in variants:
            v["defines"] = [*v["defines"], f"-D{PROFILE_DEFINE}"]
    top = variants[0]
    kernels = _kernel_sources(facts.gen.headers)
    from codegen.host import kernels_dir
    from qute.resources import firmware_dir

    common = ["src/main.c", "src/qute_model.c", *[f"kernels/{k.name}" for k in kernels]]
    if facts.ensemble:
        common.append("uncertainty/qute_uncertainty_int.c" if int_path else "uncertainty/qute_uncertainty.c")
    model_id = hashlib.sha256(source.tflite).hexdigest()
    monitor, monitor_note = monitor_constants(facts, source, model_id, int_path, board.name)
    progress(f"calibration: {monitor_note}")
    if monitor:
        common.append("uncertainty/qute_monitor.c")

    with outdir.staging(out, BUILD, force) as tmp:
        (tmp / "src").mkdir()
        (tmp / "src" / "main.c").write_text(render_main(facts, source, board.name, emu_board.name, monitor, int_path,
                                                                 uart_inputs))
        (tmp / "src" / "qute_model.h").write_text(facts.gen.header)
        (tmp / "src" / "qute_model.c").write_text(facts.gen.source)
        (tmp / "kernels").mkdir()
        for f in sorted(kernels_dir().glob("*.h")) + kernels:
            shutil.copy2(f, tmp / "kernels" / f.name)
        (tmp / "uncertainty").mkdir()
        for f in sorted((firmware_dir() / "uncertainty").glob("qute_uncertainty_int.*" if int_path else "qute_uncertainty.*")) + (
                sorted((firmware_dir() / "uncertainty").glob("qute_monitor.*")) if monitor else []):
            shutil.copy2(f, tmp / "uncertainty" / f.name)
        (tmp / "platform").mkdir()
        for f in platform_headers() + sorted({p for v in variants for p in platform_sources(board, v["emulator"])}):
            shutil.copy2(f, tmp / "platform" / f.name)
        for v in variants:
            (tmp / v["linker_script"]).write_text(render_linker_script(board, v["emulator"]))
        makefile = render_makefile(board, variants, common, source, uart_inputs)
        (tmp / "Makefile").write_text(makefile)
        (tmp / MODEL_FILE).write_bytes(source.tflite)
        np.savez(tmp / INPUTS_FILE, x=np.asarray(source.inputs, dtype=np.int8), y=source.labels)

        progress(f"compiling with arm-none-eabi-gcc ({' '.join(board.cpu_flags)} {board.optimization})")
        for v, target in zip(variants, ["all", "emulator"] if len(variants) > 1 else ["all"]):
            proc = _make(tmp, [target], found)
            if proc.returncode != 0:
                err = linker_overflow(proc.stderr, emu_board if v["emulator"] else board, board)
                if err:
                    raise err
                raise RunFailure("the firmware does not compile (a bug in qute; please report it):\n" + proc.stderr[-4000:])

        memory = memory_report(tmp / "firmware.elf", board, emu_board if top["emulator"] else board)
        check_fit_after_link(memory, board)
        emu_memory = None
        if len(variants) > 1:
            emu_memory = memory_report(tmp / EMULATOR_DIR / "firmware.elf", emu_board)
        (tmp / MEMORY_FILE).write_text(json.dumps({**memory, "emulator": emu_memory}, indent=2) + "\n")

        # Renode runs the board's own firmware (it models the STM32 parts), so only board builds get them.
        renode_files = []
        if not emulator and board.renode is not None and not uart_inputs:  # its robot cannot send binary frames
            (tmp / f"{board.name}.resc").write_text(render_resc(board))
            (tmp / f"{board.name}.robot").write_text(
                render_robot(board, done, f"{PREFIX} start format=", len(source.inputs), max(60, 2 * len(source.inputs))))
            renode_files = [f"{board.name}.resc", f"{board.name}.robot"]
        manifest = {
            "kind": BUILD_KIND,
            "qute_version": __version__,
            "board": board.name,
            "emulator_only": emulator,
            "variants": {
                v["name"]: {
                    "elf": (f"{EMULATOR_DIR}/" if v["emulator"] and len(variants) > 1 else "") + "firmware.elf",
                    "linked_for": v["target"],
                    "emulator": v["emulator"],
                    "defines": v["defines"],
                }
                for v in variants
            },
            "qemu_machine": board.qemu_machine,
            "compiler_flags": board.cpu_flags + [board.optimization] + CFLAGS,
            "model": {"origin": source.origin, "file": MODEL_FILE, "sha256": model_id, "arena_bytes": facts.gen.arena_size,
                      "weights_bytes": facts.gen.weights_bytes, "parameter_bytes": facts.gen.params_bytes,
                      "weights_layout": "int16" if weights16 else "int8"},
            "inputs": {"file": INPUTS_FILE, "samples": len(source.inputs), "from": source.inputs_from, "over": inputs,
                       "labelled": source.labelled, "class_names": source.class_names},
            "outputs": facts.outputs,
            "ensemble": facts.ensemble,
            "classes": facts.classes,
            "reference": engine,
            "expected_done_line": done,
            "emulation_note": board.emulation_note,
            "renode": renode_files,
            "uncertainty_path": int_path or ({"kind": "float"} if facts.ensemble else None),
            "calibration": monitor,
            "calibration_note": monitor_note,
            "profile": profile_ops(facts) if profile else None,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(tmp / "obj", ignore_errors=True)
    return BuildResult(out, board, emulator, memory, manifest, source)


# --------------------------------------------------------------------------- reading a build


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
