"""qute build's orchestration, as named steps: check the settings, resolve the model (source),
fit it and choose the filters' layout (_fit), run the reference and decide what to compile
(_plan), write the project (_write_project), compile and check the fit again (_compile), write
the manifest, then rename the staging folder into place."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codegen import outdir
from codegen.host import kernels_dir
from qute import __version__, tools as toolbox
from qute.boards import load_board, platform_headers, platform_sources, render_linker_script
from qute.build.fit import (WEIGHT_LAYOUTS, FitError, check_fit_after_link, check_fit_before_link, choose_weights16,
                            linker_overflow, memory_report)
from qute.build.manifest import (BUILD_KIND, EMULATOR_DIR, INPUTS_FILE, MANIFEST, MEMORY_FILE, MODEL_FILE, InputsInfo,
                                 Manifest, ModelInfo, Variant)
from qute.build.project import (CFLAGS, PROFILE_DEFINE, kernel_sources, monitor_constants, profile_ops, render_app,
                                render_makefile, render_resc, render_robot, variant_settings)
from qute.build.source import DEFAULT_SAMPLES, ModelSource, parse_stream, resolve_model
from qute.errors import QuteError, RunFailure
from qute.exits import CALIBRATED, NEVER, ExitPolicy, cut_at_exit, load_policy
from qute.expectation import Expectation, int_path_for, model_facts
from qute.resources import firmware_dir
from qute.transcript import PREFIX


TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-objcopy", "arm-none-eabi-size", "make")
INPUT_MODES = ("embedded", "uart")
FIT_MODES = ("whole", "deepest-exit")


@dataclass
class BuildResult:
    out: Path
    board: object
    emulator: bool
    memory: dict
    manifest: Manifest
    source: ModelSource


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


@dataclass
class _Plan:
    """Everything the project's files are made from, decided before anything is written."""

    board: object
    emu_board: object
    emulator: bool
    uart_inputs: bool
    source: ModelSource
    facts: object
    expect: Expectation
    done: str  # the expected summary line
    int_path: dict | None
    variants: list[dict]
    kernels: list[Path]
    common: list[str]
    model_id: str
    monitor: dict | None
    monitor_note: str
    inputs: str
    profile: bool
    exit_policy: dict | None  # qute.exits.ExitPolicy.to_dict for the board's arithmetic; None: run to the end
    cut: dict | None = None  # --fit deepest-exit, when the whole model did not fit: which exit ships and why


def build(
    board_name: str | None,
    model: str | None = None,
    out: str | Path | None = None,
    samples: int | None = None,
    emulator: bool = False,
    data_dir=None,
    progress: Callable[[str], None] = lambda s: None,
    stream: str | None = None,
    inputs: str = "embedded",
    force: bool = False,
    profile: bool = False,
    weights: str = "auto",
    exit_policy: str | None = None,
    fit: str = "whole",
) -> BuildResult:
    """Builds the firmware project for `board_name` into `out` (see the module docstring).

    `model` None builds the embedded default; `samples` None embeds DEFAULT_SAMPLES inputs. (A
    qute.toml's [build] table is the command line's business: qute.config.build_target.)
    """
    _check_settings(board_name, samples, inputs, weights, stream)
    calibrated = (exit_policy or "").strip() == CALIBRATED
    policy = None if calibrated else ExitPolicy.parse(exit_policy or NEVER)
    if fit not in FIT_MODES:
        raise QuteError(f"unknown --fit {fit!r}; choose one of: {', '.join(FIT_MODES)}")
    samples = DEFAULT_SAMPLES if samples is None else samples
    model = str(model) if model is not None else None
    board = load_board(board_name)
    found = toolbox.require(*TOOLS)
    toolbox.require_newlib(found["arm-none-eabi-gcc"])
    out = Path(out) if out is not None else default_output(board, model, emulator)
    outdir.check(out, BUILD, force)

    source = resolve_model(model, samples, data_dir, progress, stream)
    if calibrated:
        if source.run_dir is None:
            raise QuteError("--exit-policy calibrated takes a run directory's thresholds; this model is not a run")
        policy = load_policy(source.run_dir, hashlib.sha256(source.tflite).hexdigest())
    cut = None
    try:
        facts = _fit(board, source, emulator, inputs == "uart", weights, progress, policy)
    except FitError as whole:
        if fit != "deepest-exit":
            raise
        source, facts, cut = _deepest_exit(board, source, emulator, inputs == "uart", weights, progress, whole)
        if policy is not None:
            raise QuteError(f"{whole}; cut after {cut['exit']} (--fit deepest-exit), the model has no later exit "
                            "for an exit policy: drop --exit-policy") from None
    plan = _plan(board, source, facts, emulator, inputs, profile, progress, policy, cut)
    with outdir.staging(out, BUILD, force) as tmp:
        _write_project(tmp, plan)
        memory = _compile(tmp, plan, found, progress)
        manifest = _manifest(plan, _renode_files(tmp, plan))
        (tmp / MANIFEST).write_text(manifest.to_json())
        shutil.rmtree(tmp / "obj", ignore_errors=True)
    return BuildResult(out, board, emulator, memory, manifest, source)


def _check_settings(board_name, samples, inputs: str, weights: str, stream: str | None) -> None:
    """What can be checked from the settings alone, before the model is read."""
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise QuteError(f"--samples must be a positive integer, got {samples!r}")
    if inputs not in INPUT_MODES:
        raise QuteError(f"unknown --inputs {inputs!r}; choose one of: {', '.join(INPUT_MODES)}")
    if weights not in WEIGHT_LAYOUTS:
        raise QuteError(f"unknown --weights {weights!r}; choose one of: {', '.join(WEIGHT_LAYOUTS)}")
    if stream is not None:
        parse_stream(stream)
    if board_name is None:
        raise QuteError("no board: give --board BOARD (qute boards lists them)")


def _fit(board, source: ModelSource, emulator: bool, uart_inputs: bool, weights: str, progress,
         policy: ExitPolicy | None = None):
    """The generated model (qute.expectation.ModelFacts) with the filters' layout chosen, once it
    is known to fit the board (and the emulator's board when that build is made too) and to
    have what the exit policy needs."""
    facts = model_facts(source.tflite)
    _check_exits(policy, facts)
    if len(source.inputs) and tuple(source.inputs.shape[1:]) != tuple(facts.graph.tensor(facts.graph.inputs[0]).shape[1:]):
        raise QuteError(f"inputs of shape {source.inputs.shape[1:]} do not fit the model input")
    emu_board = board.emulation_board()
    targets = [board] + ([emu_board] if emulator and emu_board is not board else [])
    for b in targets:
        check_fit_before_link(b, facts, source, uart_inputs)
    facts, layout_note = choose_weights16(targets, facts, source, uart_inputs, weights)
    progress(f"matrix-product filters: {layout_note}")
    for b in targets:  # again: --weights int16 may not fit
        check_fit_before_link(b, facts, source, uart_inputs)
    return facts


def _deepest_exit(board, source: ModelSource, emulator: bool, uart_inputs: bool, weights: str, progress,
                  whole: FitError):
    """The model cut after the deepest early exit that fits the board (qute.exits.cut_at_exit):
    (its source, its facts, what was cut and why). Raises `whole`'s message when none fits."""
    exits = model_facts(source.tflite).layout.exits
    if not exits:
        raise QuteError(f"{whole}; --fit deepest-exit needs a model with early exits (qute quantize RUN --exits)") from None
    tried = []
    for k in reversed(range(len(exits))):
        cut = dataclasses.replace(source, tflite=cut_at_exit(source.tflite, k),
                                  origin=f"{source.origin}, cut after exit_{k} (--fit deepest-exit)")
        try:
            facts = _fit(board, cut, emulator, uart_inputs, weights, lambda s: None)
        except FitError as e:
            tried.append(f"exit_{k}: {str(e).split(': ', 1)[1]}")
            continue
        info = {"exit": f"exit_{k}", "exits": len(exits), "why": str(whole), "deeper_exits_tried": tried,
                "evaluation": _exit_evaluation(source, k)}
        progress(f"{whole}: cut after exit_{k}, the deepest of the {len(exits)} early exits that fits")
        return cut, facts, info
    raise QuteError(f"{whole}; no early exit fits either ({'; '.join(reversed(tried))})") from None


def _exit_evaluation(source: ModelSource, k: int) -> dict | None:
    """Exit k's own test metrics on TFLite Micro, from the run's quantization.json (None without)."""
    if source.run_dir is None:
        return None
    try:
        report = json.loads((Path(source.run_dir) / "quantization.json").read_text())
        row = report["exits"][k]
        if report.get("tflite_sha256") != hashlib.sha256(source.tflite).hexdigest():
            return None
        return {"from": str(Path(source.run_dir) / "quantization.json"), "test_samples": report["test_samples"],
                **{key: row["int8_tflm"][key] for key in ("accuracy", "nll", "ece")}}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _check_exits(policy: ExitPolicy | None, facts) -> None:
    if policy is None:
        return
    layout = facts.layout
    policy.for_exits(len(layout.exits))
    head = layout.outputs[0]
    if not facts.ensemble or any((layout.outputs[i]["size"], layout.outputs[i]["dtype"]) != (head["size"], head["dtype"])
                                 for i in layout.exits):
        raise QuteError("an exit policy needs an ensemble classifier whose exits are probability vectors like its heads")


def _exit_policy(policy: ExitPolicy | None, facts, int_path: dict | None) -> dict | None:
    """The policy, one threshold per exit, for the board's arithmetic; None to run to the end."""
    if policy is None:
        return None
    return policy.for_exits(len(facts.layout.exits)).to_dict("int" if int_path else "float")


def _plan(board, source: ModelSource, facts, emulator: bool, inputs: str, profile: bool, progress,
          policy: ExitPolicy | None = None, cut: dict | None = None) -> _Plan:
    """The reference outputs, the variants to compile, the sources and the calibration compiled in."""
    int_path = int_path_for(board, facts.layout)
    exit_policy = _exit_policy(policy, facts, int_path)
    progress("running the host reference (TFLite Micro) on the embedded inputs")
    expect = Expectation.of(source.tflite, facts.layout, source.inputs, int_path,
                            source.labels if source.labelled else None, exit_policy=exit_policy)

    variants = [variant_settings(board, True)] if emulator else [variant_settings(board, False), variant_settings(board, True)]
    if int_path:  # no FPU: the integer-only uncertainty path, in every variant (same compiler flags)
        for v in variants:
            v["defines"] = [*v["defines"], "-DQUTE_UNCERTAINTY_INT"]
    if profile:  # same generated C either way: the define alone turns the per-op hooks on
        for v in variants:
            v["defines"] = [*v["defines"], f"-D{PROFILE_DEFINE}"]
    uart_inputs = inputs == "uart"
    kernels = kernel_sources(facts.gen.headers)
    common = ["app/qute_app.c", *([] if uart_inputs else ["src/qute_inputs.c"]), "src/qute_model.c",
              *[f"kernels/{k.name}" for k in kernels]]
    if facts.ensemble:
        common.append("uncertainty/qute_uncertainty_int.c" if int_path else "uncertainty/qute_uncertainty.c")
    model_id = hashlib.sha256(source.tflite).hexdigest()
    monitor, monitor_note = monitor_constants(facts, source, model_id, int_path, board.name) if cut is None else (
        None, f"the model is cut after {cut['exit']}: the run's calibration was made for the whole ensemble "
              "(no abstain flag, no accuracy-drop monitor)")
    progress(f"calibration: {monitor_note}")
    if monitor:
        common.append("uncertainty/qute_monitor.c")
    return _Plan(board, board.emulation_board(), emulator, uart_inputs, source, facts, expect, expect.done_line(),
                 int_path, variants, kernels, common, model_id, monitor, monitor_note, inputs, profile, exit_policy, cut)


def _copy(files, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for f in files:
        shutil.copy2(f, folder / f.name)


def _write_project(tmp: Path, p: _Plan) -> None:
    """The standalone project: generated sources, the application, kernels, platform, Makefile."""
    board, facts, source = p.board, p.facts, p.source
    (tmp / "src").mkdir()
    for name, text in render_app(facts, source, board.name, p.emu_board.name, p.monitor, p.int_path, p.uart_inputs,
                                 p.monitor_note, p.exit_policy).items():
        (tmp / name).write_text(text)
    (tmp / "src" / "qute_model.h").write_text(facts.gen.header)
    (tmp / "src" / "qute_model.c").write_text(facts.gen.source)
    _copy(sorted((firmware_dir() / "app").glob("qute_app.[ch]")), tmp / "app")
    _copy(sorted(kernels_dir().glob("*.h")) + p.kernels, tmp / "kernels")
    unc = firmware_dir() / "uncertainty"
    _copy(sorted(unc.glob("qute_uncertainty_int.*" if p.int_path else "qute_uncertainty.*"))
          + (sorted(unc.glob("qute_monitor.*")) if p.monitor else []), tmp / "uncertainty")
    _copy(platform_headers() + sorted({f for v in p.variants for f in platform_sources(board, v["emulator"])}),
          tmp / "platform")
    for v in p.variants:
        (tmp / v["linker_script"]).write_text(render_linker_script(board, v["emulator"]))
    (tmp / "Makefile").write_text(render_makefile(board, p.variants, p.common, source, p.uart_inputs))
    (tmp / MODEL_FILE).write_bytes(source.tflite)
    np.savez(tmp / INPUTS_FILE, x=np.asarray(source.inputs, dtype=np.int8), y=source.labels)


def _compile(tmp: Path, p: _Plan, tools: dict, progress) -> dict:
    """Compiles every variant, checks the linked sizes against the board, writes memory.json."""
    board, emu_board = p.board, p.emu_board
    progress(f"compiling with arm-none-eabi-gcc ({' '.join(board.cpu_flags)} {board.optimization})")
    for v, target in zip(p.variants, ["all", "emulator"] if len(p.variants) > 1 else ["all"]):
        proc = _make(tmp, [target], tools)
        if proc.returncode != 0:
            err = linker_overflow(proc.stderr, emu_board if v["emulator"] else board, board)
            if err:
                raise err
            raise RunFailure("the firmware does not compile (a bug in qute; please report it):\n" + proc.stderr[-4000:])
    memory = memory_report(tmp / "firmware.elf", board, emu_board if p.variants[0]["emulator"] else board)
    check_fit_after_link(memory, board)
    emu_memory = memory_report(tmp / EMULATOR_DIR / "firmware.elf", emu_board) if len(p.variants) > 1 else None
    (tmp / MEMORY_FILE).write_text(json.dumps({**memory, "emulator": emu_memory}, indent=2) + "\n")
    return memory


def _renode_files(tmp: Path, p: _Plan) -> list[str]:
    """Renode runs the board's own firmware (it models the STM32 parts), so only board builds get
    its script and Robot test; and only with embedded inputs (its robot cannot send binary frames)."""
    board = p.board
    if p.emulator or board.renode is None or p.uart_inputs:
        return []
    n = len(p.source.inputs)
    (tmp / f"{board.name}.resc").write_text(render_resc(board))
    (tmp / f"{board.name}.robot").write_text(
        render_robot(board, p.done, f"{PREFIX} start format=", n, max(60, 2 * n)))
    return [f"{board.name}.resc", f"{board.name}.robot"]


def _manifest(p: _Plan, renode_files: list[str]) -> Manifest:
    board, facts, source = p.board, p.facts, p.source
    return Manifest(
        qute_version=__version__,
        board=board.name,
        emulator_only=p.emulator,
        variants={
            v["name"]: Variant(elf=(f"{EMULATOR_DIR}/" if v["emulator"] and len(p.variants) > 1 else "") + "firmware.elf",
                               linked_for=v["target"], emulator=v["emulator"], defines=v["defines"])
            for v in p.variants
        },
        qemu_machine=board.qemu_machine,
        compiler_flags=board.cpu_flags + [board.optimization] + CFLAGS,
        model=ModelInfo(origin=source.origin, file=MODEL_FILE, sha256=p.model_id, arena_bytes=facts.gen.arena_size,
                        weights_bytes=facts.gen.weights_bytes, parameter_bytes=facts.gen.params_bytes,
                        weights_layout="int16" if facts.gen.weights16 else "int8"),
        inputs=InputsInfo(file=INPUTS_FILE, samples=len(source.inputs), source=source.inputs_from, over=p.inputs,
                          labelled=source.labelled, class_names=source.class_names),
        outputs=facts.outputs,
        ensemble=facts.ensemble,
        classes=facts.classes,
        reference=p.expect.engine,
        expected_done_line=p.done,
        emulation_note=board.emulation_note,
        renode=renode_files,
        uncertainty_path=p.int_path or ({"kind": "float"} if facts.ensemble else None),
        calibration=p.monitor,
        calibration_note=p.monitor_note,
        profile=profile_ops(facts) if p.profile else None,
        exit_policy=p.exit_policy,
        cut=p.cut,
    )
