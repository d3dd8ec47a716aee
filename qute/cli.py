"""The `qute` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from codegen import outdir
from codegen.cli import run_cli
from codegen.ir import CodegenError
from qute.boards import boards_table, list_boards
from qute.build import build as make_build
from qute.build.summary import summary_lines
from qute.cli_options import (
    CommaList, EpochProgress, IntList, board_option, config_option, data_dir_option, echo_progress, seconds,
)
from qute.calibrate import CALIBRATION_FILE, calibrate as do_calibrate, format_calibration
from qute.config import ARCHS, EXIT_SCHEDULES, FILTERS, METHODS, POOLING, POOLINGS, STAGES, build_target, make_config, read_project
from qute.data import load_dataset
from qute.dynamic import calibrate_exits, evaluate_dynamic, format_exit_calibration, parse_dynamic
from qute.emulate import run as run_emulator
from qute.errors import QuteError, RunFailure
from qute.exits import POLICY_FILE
from qute.flash import flash as do_flash
from qute.monitor import PLOT_FILE, TIMELINE_FILE, format_timeline, play_stream
from qute.report import write_report
from qute.run import RUN, load_run, save_run
from qute.sweep import check_data, load_sweep, run_sweep, write_results
from qute.tf_loader import load_tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="qute")
def cli():
    """Train QUTE early-exit ensembles and ship them, with their uncertainty, to Cortex-M boards.

    \b
    Example:
      qute train --dataset digits -o runs/digits
      qute eval runs/digits
    """


@cli.command()
@config_option()
@click.option("--dataset", help="digits, mnist, fashion_mnist, cifar10, svhn or npz:PATH.")
@click.option("--arch", type=click.Choice(ARCHS), help="Backbone.")
@click.option("--filters", type=IntList(), help="Channels of each backbone stage, e.g. 16,96,320 for a wider "
              "mnist-cnn-mp (default: the architecture's own, " + "; ".join(
                  f"{a} {','.join(map(str, f))}" for a, f in FILTERS.items()) + ").")
@click.option("--pooling", type=click.Choice(POOLINGS), help="Pooling of the feature map before every "
              "classifier's dense layer (default per architecture: " + "; ".join(
                  f"{a} {p}" for a, p in POOLING.items()) + ").")
@click.option("--method", type=click.Choice(METHODS), help="Ensemble method (or base).")
@click.option("-K", "k", type=int, help="Ensemble size: output blocks, exits, members or dropout samples.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Adam learning rate (decayed by --lr-decay every epoch).")
@click.option("--lr-decay", type=float)
@click.option("--untied/--tied", default=None,
              help="qute: every output block has a depthwise kernel of its own (default), or shares its exit's (the paper's QUTE).")
@click.option("--temperature/--no-temperature", default=None,
              help="Fit one temperature on the validation split and fold it into the heads (default: on).")
@click.option("--exit-stages", type=IntList(), help="qute: the backbone stage each early exit hangs on, "
              "e.g. 2,2,2 (default: spread over the stages before the last).")
@click.option("--exit-schedule", type=click.Choice(EXIT_SCHEDULES),
              help="qute: the early exits' loss weights ramp up over training (sdn, the paper's, default) or not (constant).")
@click.option("--label-smoothing", type=float, help="Label smoothing of every output's loss, e.g. 0.1 (default: none).")
@click.option("--seed", type=int)
@click.option("--limit", type=int, help="Train on at most this many samples (quick runs).")
@data_dir_option()
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only one qute train made).")
def train(config_path, out, force, **flags):
    """Train a model and write its run directory.

    \b
    Example:
      qute train --dataset mnist --method qute -K 3 --epochs 20 -o runs/mnist-qute
    """
    cfg = make_config("train", read_project(config_path), flags)
    outdir.check(out, RUN, force)
    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit)
    cfg = cfg.for_dataset(len(data.x_train))
    load_tensorflow()
    with outdir.staging(out, RUN, force) as folder:
        from qute.train import train as run_training

        what = [cfg.arch] + ([] if cfg.method == "base" else [f"K={cfg.k}"])
        what += [f"filters {','.join(map(str, cfg.filters))}"] if cfg.filters else []
        what += [f"{cfg.pooling} pooling"] if cfg.pooling else []
        what += ["tied"] if cfg.method == "qute" and not cfg.untied else []
        click.echo(
            f"training {cfg.method} ({', '.join(what)}) on {cfg.dataset}: "
            f"{len(data.x_train):,} train / {len(data.x_val):,} val / {len(data.x_test):,} test, {cfg.epochs} epochs",
            err=True,
        )
        with EpochProgress(cfg.epochs) as on_epoch:
            result = run_training(cfg, data, on_epoch=on_epoch)
        save_run(folder, result.config, result.spec, data, result.model, result.history, result.temperature,
                 result.exits_model)
    h = result.history[-1]
    t = result.temperature
    if t:
        b, a = t["before"], t["after"]
        click.echo(f"temperature {t['value']:.3f} fitted on the {t['fitted_on']} and folded into the heads: "
                   f"val NLL {b['nll']:.3f} -> {a['nll']:.3f}, ECE {b['ece']:.3f} -> {a['ece']:.3f}")
        h = {**h, "val_accuracy": a["accuracy"], "val_nll": a["nll"]}
        if t.get("exits"):
            click.echo("early exits kept (exits.keras), each tempered alone: " + ", ".join(
                f"{e['exit']} val accuracy {e['val_accuracy']:.3f} NLL {e['val_nll_after']:.3f}" for e in t["exits"]))
    click.echo(
        f"wrote {out}: {result.spec.num_heads} head(s), {result.model.count_params():,} parameters, "
        f"val accuracy {h['val_accuracy']:.3f}, val NLL {h['val_nll']:.3f}"
    )


@cli.command("eval")
@click.argument("run_dir", type=click.Path())
@config_option()
@click.option("--ood", help="OOD set: a dataset name or a synthetic set (noise, blobs, ...). Default: per dataset.")
@click.option("--corruptions", help="'all' or a comma-separated list of corruption names.")
@click.option("--window", type=int, help="Accuracy-drop sliding window (default 100).")
@data_dir_option()
@click.option("--stages", type=CommaList(STAGES, "stage"), default="float", show_default=True,
              help="Comma-separated: float (the Keras model), int8 (the quantized model on TFLite Micro), "
                   "device (the firmware under QEMU, inputs sent over its UART).")
@board_option("Board of the device stage (default: qute.toml's [build] board, else nucleo-f746).")
@click.option("--dynamic", metavar="POLICY", help="Early-exit inference (a run quantized with --exits): never, "
              "SCORE:T[,T...], budget:F (most accurate within F of the full run's instructions) or accuracy:A "
              "(cheapest reaching A), thresholds chosen on the validation split; prints accuracy, NLL, ECE, OOD "
              "AUROC and exits taken against instructions measured under QEMU, and a threshold sweep.")
def eval_(run_dir, config_path, ood, corruptions, window, data_dir, stages, board, dynamic):
    """Evaluate a run's uncertainty on ID, corrupted and OOD data.

    Prints the table (one row per stage, on the same data), writes metrics.json and plots
    (reliability.png, confidence_hist.png, of the first stage) into RUN_DIR. The device stage
    builds the int8 model's firmware for --board, runs it under QEMU on every image (sent over
    the UART), and checks every output byte against TFLite Micro: its row must equal int8's
    (exit 1 when a byte, a score or a metric differs).

    \b
    Example:
      qute eval runs/mnist-qute --ood fashion_mnist --corruptions all
      qute eval runs/mnist-qute --stages float,int8,device --board nucleo-f746
      qute eval runs/mnist-qute --dynamic budget:0.6 --board nucleo-f746
    """
    from qute.evaluate import evaluate_run

    project = read_project(config_path)
    if dynamic is not None:
        parse_dynamic(dynamic)  # a bad policy fails before any data is loaded
        cfg = make_config("eval", project, {"ood": ood, "corruptions": corruptions, "window": window})
        board = board or make_config("build", project, {}).board
        result = evaluate_dynamic(run_dir, dynamic, board, cfg.ood, data_dir, progress=lambda s: click.echo(f"  {s}", err=True))
        for line in result.lines():
            click.echo(line)
        return
    cfg = make_config("eval", project, {"ood": ood, "corruptions": corruptions, "window": window})
    if board is None and "device" in stages:
        board = make_config("build", project, {}).board  # qute.toml's, else the device stage's default
    result = evaluate_run(run_dir, stages, cfg, data_dir=data_dir, board=board,
                          progress=lambda s: click.echo(f"  {s}", err=True))
    for line in result.lines():
        click.echo(line)
    if not result.ok:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--samples", type=int, default=500, show_default=True, help="Training images in the representative (calibration) dataset.")
@click.option("--exits", is_flag=True, help="Keep the early exits as outputs (exit_0 ...) for early-exit inference on the device.")
@data_dir_option()
def quantize(run_dir, samples, exits, data_dir):
    """Convert a run's model to a full-integer int8 TFLite model and check it on TFLM.

    Writes RUN_DIR/model.int8.tflite (int8 input, one output per head: 16-bit softmax) and
    RUN_DIR/quantization.json, and prints float vs int8 (TFLite Micro) on the test set. With
    --exits (qute runs) the model also outputs every early exit's softmax, named exit_0 ...,
    which the generated C runs stage by stage.

    \b
    Example:
      qute quantize runs/mnist-qute --samples 1000
      qute quantize runs/mnist-qute --exits
    """
    from qute.quantize import check_samples, format_table, quantize_run, write_result

    check_samples(samples)
    run = load_run(run_dir)
    if exits:
        run.check_exits()
    load_tensorflow()
    result = quantize_run(run, samples=samples, data_dir=data_dir, exits=exits,
                          progress=lambda label: click.echo(f"  {label}", err=True))
    paths = write_result(run.path, result)
    click.echo(format_table(result.report))
    click.echo(f"wrote {', '.join(str(p) for p in paths)} ({result.report['tflite_bytes']:,} bytes of model)")


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=0), help="Random int8 inputs (plus as many test images for a run).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--sanitize", is_flag=True, help="Also build with AddressSanitizer and UBSan.")
@data_dir_option("(runs only)")
def verify(model, samples, seed, sanitize, data_dir):
    """Compile MODEL's generated C on the host and compare every output byte with TFLite Micro.

    MODEL is an int8 .tflite file or a run directory (its model.int8.tflite, checked on random
    inputs and on test images). Exit status 1 when any byte differs.

    \b
    Example:
      qute verify runs/digits --samples 200
      qute verify ../shared/models/kws_dscnn_int8.tflite
    """
    from qute.verify import load_target, shape_notes, verify as verify_model

    path, tflite, inputs, data = load_target(model, samples, seed, data_dir)
    for line in shape_notes(tflite):
        click.echo(line)

    results = [verify_model(tflite, inputs)]
    if sanitize:
        results.append(verify_model(tflite, inputs, sanitize=True))
    for r in results:
        click.echo(f"{path}: {'ASan+UBSan build' if r.sanitized else 'gcc -O2 build'}, "
                   f"{len(inputs[0])} inputs ({samples} random{f', {len(data)} test images' if data is not None else ''})")
        for p in r.per_output:
            click.echo(f"  {p['name']}: {p['mismatches']:,} of {p['bytes']:,} bytes differ")
        click.echo(r.summary())
    click.echo("bit-exact: " + ("yes" if all(r.ok for r in results) else "no"))
    if not all(r.ok for r in results):
        sys.exit(1)


@cli.command()
def boards():
    """List the boards qute builds firmware for, with their memory and how they are emulated.

    \b
    Example:
      qute boards
    """
    click.echo(boards_table(list_boards()))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--score", type=click.Choice(["confidence", "margin", "entropy", "mi"]), default="confidence", show_default=True,
              help="Uncertainty score the abstain threshold is set on.")
@click.option("--target-tpr", type=float, default=0.95, show_default=True, help="Fraction of in-distribution validation images to accept.")
@click.option("--window", type=int, default=100, show_default=True, help="Accuracy-drop monitor window: the last M confidences.")
@click.option("--false-alarm", type=float, default=0.0, show_default=True, help="Fraction of ID validation windows allowed to alarm.")
@click.option("--exits", "exits", metavar="GOAL", help="Also choose early-exit thresholds (a run quantized with --exits): "
              "budget:F (most accurate within F of the full run's instructions on --board) or accuracy:A (cheapest "
              "reaching A); qute build --exit-policy calibrated uses them.")
@board_option("Board whose instruction counts the --exits goal uses (default nucleo-f746).")
@data_dir_option()
def calibrate(run_dir, score, target_tpr, window, false_alarm, exits, board, data_dir):
    """Set the device's abstain threshold and accuracy-drop monitor from the validation split.

    Writes RUN_DIR/calibration.json; `qute build RUN_DIR` compiles it in. The scores come from
    the int8 model on TFLite Micro when the run is quantized (the numbers the device computes),
    else from the float model.

    \b
    Example:
      qute calibrate runs/digits --score entropy --target-tpr 0.95 --window 100
      qute calibrate runs/mnist-qute --exits budget:0.8 --board nucleo-f746
    """
    if exits is not None:
        parse_dynamic(exits, "--exits")  # a bad goal fails before anything runs
    c = do_calibrate(run_dir, score, target_tpr, window, false_alarm, data_dir=data_dir,
                     progress=echo_progress)
    click.echo(format_calibration(c, Path(run_dir) / CALIBRATION_FILE))
    if exits is not None:
        doc = calibrate_exits(run_dir, exits, board or "nucleo-f746", data_dir, progress=echo_progress)
        click.echo(format_exit_calibration(doc, Path(run_dir) / POLICY_FILE))


@cli.command()
@click.argument("model", required=False, type=click.Path())
@board_option("Board to build for (qute boards lists them).")
@click.option("-o", "--output", "out", type=click.Path(), help="Project folder to write (default: build-BOARD, or build-BOARD-emulator; inside RUN_DIR for a run).")
@click.option("--samples", type=click.IntRange(min=1), help="Test inputs to embed in the firmware (default 50).")
@click.option("--emulator", is_flag=True, help="Only the emulator build (QUTE_EMULATOR, linked for the board's QEMU machine).")
@config_option("([build] model, board, samples)")
@data_dir_option("(runs only)")
@click.option("--stream", help="Runs only: embed a stream of --samples test images per part, e.g. "
              "id,corrupt:gaussian_noise:5 (ID images, then the next ones corrupted).")
@click.option("--inputs", "inputs", type=click.Choice(["embedded", "uart"]), default="embedded", show_default=True,
              help="embedded: --samples inputs compiled into flash; uart: the firmware reads any number of inputs "
                   "from its console UART (qute run sends them).")
@click.option("--force", is_flag=True, help="Replace an existing build folder (only one qute build made).")
@click.option("--profile", is_flag=True, help="Time every op with the firmware's counter (-DQUTE_PROFILE); "
              "qute run then prints a per-op table and writes profile.json.")
@click.option("--weights", type=click.Choice(["auto", "int8", "int16"]), default="auto", show_default=True,
              help="Layout of the conv and fully-connected filters in flash. int16: twice their bytes, fewer "
                   "instructions on cores with the DSP extension (Cortex-M4/M7/M33/M55); auto: int16 there "
                   "while a quarter of the flash stays free, else int8.")
@click.option("--exit-policy", default="never", show_default=True, metavar="POLICY",
              help="Models with early exits (qute quantize --exits): never, SCORE:T[,T...] to stop after exit k "
                   "when its own score passes T_k (e.g. confidence:0.9, entropy:0.2,0.3,0.4; mean-SCORE: the mean "
                   "of the exits so far), or calibrated (the run's qute calibrate --exits thresholds).")
@click.option("--fit", "fit", type=click.Choice(["whole", "deepest-exit"]), default="whole", show_default=True,
              help="deepest-exit: when the whole model does not fit the board, ship it cut after the deepest early "
                   "exit that does (that exit's own prediction and scores); whole: fail with the numbers.")
def build(model, board, out, samples, emulator, config_path, data_dir, stream, inputs, force, profile, weights,
          exit_policy, fit):
    """Build firmware that runs MODEL on a board and prints its predictions and uncertainty.

    MODEL is a run directory (quantized first if it has no model.int8.tflite; its first test
    images are embedded with their labels), an int8 .tflite file (random inputs), or nothing:
    qute.toml's [build] model, else the embedded default (the digits QUTE model of `make demo`).
    Writes a standalone project (Makefile, sources, linker script), compiles it with
    arm-none-eabi-gcc into firmware.elf/.bin/.hex, and prints the memory report. A model that does
    not fit the board fails with the numbers (exit 2).

    \b
    Example:
      qute build --board nucleo-f746
      qute build --board nucleo-f746 runs/digits -o runs/digits/build-f746
      qute build --board mps2-an500 model.int8.tflite --samples 100 --emulator
      qute build --board nucleo-f746 runs/digits --inputs uart
      qute build --board mps2-an500 model.int8.tflite --samples 5 --emulator --profile
      qute build --board nucleo-l432kc runs/digits --weights int8
      qute build --board nucleo-f746 runs/digits --exit-policy confidence:0.95
      qute build --board nucleo-l432kc runs/big --fit deepest-exit
    """
    target = build_target(read_project(config_path), board, model, samples)
    r = make_build(target.board, target.model, out, target.samples, emulator, data_dir=data_dir,
                   progress=echo_progress, stream=stream, inputs=inputs, force=force,
                   profile=profile, weights=weights, exit_policy=exit_policy, fit=fit)
    for line in summary_lines(r):
        click.echo(line)


@cli.command()
@click.argument("sweep_file", metavar="SWEEP.toml", type=click.Path(dir_okay=False))
@click.option("--address", help="Ray cluster to run on (ray://HOST:10001 or auto); default: a local Ray for this sweep.")
@click.option("--cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (default: all of this machine's).")
def sweep(sweep_file, address, cpus):
    """Train and evaluate a grid of runs as Ray tasks; gather a mean ± std table.

    SWEEP.toml has the [train] and [eval] tables of a qute.toml, where any value may be a list
    (the grid is every combination), and [sweep] out = "FOLDER": each trial's run directory goes in
    FOLDER/runs, the table in FOLDER/results.md and everything in FOLDER/results.json. A failed
    trial is retried once, then reported (exit 1); running the sweep again skips finished trials.

    \b
    Example (sweep.toml):
      [sweep]
      out = "sweeps/mnist"
      [train]
      dataset = "mnist"
      method = ["base", "qute"]
      seed = [0, 1, 2]
      [eval]
      ood = "fashion_mnist"
    \b
      qute sweep sweep.toml
      qute sweep sweep.toml --address auto      # an existing Ray cluster
    """
    sw = load_sweep(sweep_file)
    progress = echo_progress
    progress(f"{len(sw.trials)} trial(s) over {', '.join(sw.varying) or 'no varying setting'}; runs in {sw.runs}")
    check_data(sw, progress)
    result = run_sweep(sw, address=address, cpus=cpus, progress=progress)
    md, js = write_results(sw, result)
    click.echo(md.read_text())
    click.echo(f"wrote {md} and {js}")
    if result.failed:
        sys.exit(1)


@cli.command("run")
@click.argument("build_dir", required=False, type=click.Path())
@board_option("Board the build is for (default: the build's).")
@click.option("--emulator", type=click.Choice(["qemu", "renode"]), default="qemu", show_default=True)
@click.option("--timeout", type=float, default=300, show_default=True, callback=seconds, help="Seconds before the emulator run counts as hung.")
@config_option("(without BUILD_DIR)")
@click.option("--port", metavar="TTY", help="Read the flashed board over this serial port instead of emulating "
              "(e.g. /dev/ttyACM0): reset the board when asked; --inputs uart builds are fed their inputs.")
@click.option("--baud", type=int, help="Baud rate of --port (default: the board's console rate).")
def run_(build_dir, board, emulator, timeout, config_path, port, baud):
    """Run a build's firmware under an emulator and check every output byte against the host.

    Runs the build's emulator variant under QEMU (-icount shift=0, with a time-out), parses its
    lines, and compares every output byte with TFLite Micro on the same inputs, and the
    device's float32 uncertainty scores with qute's own. Prints accuracy, the uncertainty summary,
    instructions per inference (QEMU instruction counts, not cycles) and `bit-exact: yes/no`.
    Exit status 1 on a mismatch, a crash or a time-out. Without BUILD_DIR, builds the default
    model (or qute.toml's) in a temporary folder first. --emulator renode runs the build's Robot
    Framework test with renode-test.

    \b
    Example:
      qute run --board nucleo-f746 runs/digits/build-f746
      qute run --board mps2-an500
      qute run runs/digits/build-f746 --port /dev/ttyACM0      (after qute flash)
    """
    model = samples = None
    if build_dir is None:  # the model to build first: qute.toml's, else the embedded default
        target = build_target(read_project(config_path), board, None, None)
        board, model, samples = target.board, target.model, target.samples
    r = run_emulator(board, build_dir, emulator, timeout, progress=echo_progress,
                     port=port, baud=baud, model=model, samples=samples)
    if emulator == "renode":
        click.echo("renode-test passed")
        return
    click.echo(r.summary())
    if not r.bit_exact:
        sys.exit(1)


@cli.command()
@click.argument("build_dir", type=click.Path())
@board_option("Board to flash (default: the build's).")
@click.option("--probe", type=click.Choice(["auto", "openocd", "pyocd", "stlink", "gdb"]), default="auto", show_default=True)
@click.option("--gdb-server", metavar="HOST:PORT", help="GDB server to load through (--probe gdb): OpenOCD :3333, st-util :4242, pyOCD :3333, QEMU -gdb.")
@click.option("--timeout", type=float, default=300, show_default=True, callback=seconds)
def flash(build_dir, board, probe, gdb_server, timeout):
    """Flash a build's firmware onto the board, verify it and start it.

    openocd: `program firmware.elf verify reset exit`; pyocd: `pyocd flash -t TARGET`; stlink:
    `st-flash --reset write firmware.bin` at the flash base; gdb: load, compare-sections, then
    start at the reset vector. auto tries openocd, pyocd and stlink (and gdb with --gdb-server)
    and reports what it tried when none works. Then `qute run BUILD_DIR --port TTY` reads the QUTE
    lines from the board's serial port and checks them against the host.

    \b
    Example:
      qute flash --board nucleo-f746 runs/digits/build-f746
      qute flash --board nucleo-f746 --probe gdb --gdb-server localhost:3333 runs/digits/build-f746
    """
    r = do_flash(board, build_dir, probe, gdb_server, timeout, progress=echo_progress)
    click.echo(f"flashed {r.elf} with {r.probe}: written, verified and started")
    click.echo(f"next: qute run {build_dir} --port /dev/ttyACM0   (the board's serial port; reset it when asked)")


@cli.command()
@click.argument("path", type=click.Path())
@board_option("Board to build for (the emulator variant runs under QEMU); not needed for a BUILD_DIR.")
@click.option("--stream", help="With a RUN_DIR: the stream to embed, e.g. id,corrupt:contrast:5 (--samples images per part).")
@click.option("--samples", type=click.IntRange(min=1), help="Test images per part of the stream (default 50).")
@click.option("-o", "--output", "out", type=click.Path(),
              help="Folder for the build, monitor.json, monitor.png and transcript.txt (default RUN_DIR/monitor-BOARD, or BUILD_DIR/monitor).")
@click.option("--timeout", type=float, default=300, show_default=True, callback=seconds, help="Seconds before the emulator run counts as hung.")
@data_dir_option()
@click.option("--force", is_flag=True, help="Replace an existing output folder (only one qute monitor made).")
def monitor(path, board, stream, samples, out, timeout, data_dir, force):
    """Play an ID-then-shifted stream through the firmware's accuracy-drop monitor under QEMU.

    PATH is a calibrated run (qute calibrate): it is built (emulator variant) with --stream
    embedded, into OUT/build; or an existing stream build (qute build --stream). Prints the alarm
    timeline: where the ID part ends, window accuracy, window mean confidence, rho, and the first
    alarm on the device and in the host simulation (qute.drift.simulate; simulate_int on boards
    with no FPU); exit 1 if they differ.
    Writes OUT/monitor.json (the timeline), OUT/monitor.png and OUT/transcript.txt.

    \b
    Example:
      qute monitor runs/digits --board mps2-an500 --stream id,corrupt:contrast:5 --samples 100
      qute monitor runs/digits/build-stream
    """
    tl = play_stream(path, board, stream, samples, out, data_dir=data_dir, timeout=timeout,
                     progress=echo_progress, force=force)
    click.echo(format_timeline(tl))
    o = Path(tl["out"])
    click.echo(f"wrote {o / TIMELINE_FILE}, {o / PLOT_FILE}, {o / 'transcript.txt'}")
    if not tl["match"]:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="HTML file to write (default RUN_DIR/report.html).")
@click.option("--build", "build_dir", type=click.Path(file_okay=False), help="Build folder for memory and latency (default: the first build found under RUN_DIR).")
@click.option("--transcript", type=click.Path(dir_okay=False), help="A saved firmware transcript (QEMU output) for latency (default: transcript.txt beside the build).")
@click.option("--no-eval", is_flag=True, help="Do not evaluate the run when it has no metrics.json (list it as missing).")
@data_dir_option()
def report(run_dir, out, build_dir, transcript, no_eval, data_dir):
    """Write one self-contained HTML page about a run: evaluation, quantization, calibration, build.

    Inline CSS, pictures embedded as base64 PNG, no external reference. Parts whose files are
    missing are listed in the page with the command that makes them.

    \b
    Example:
      qute report runs/digits -o runs/digits/report.html
      qute report runs/digits --build runs/digits/build-f746
    """
    path, missing = write_report(run_dir, out, build_dir, transcript, compute=not no_eval, data_dir=data_dir,
                                 progress=echo_progress)
    click.echo(f"wrote {path}")
    if missing:
        click.echo("missing (listed in the page):")
        for what, cmd in missing:
            click.echo(f"  {what}: {cmd}")


def main(argv=None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    return run_cli(cli, "qute", argv, (QuteError, CodegenError), (RunFailure,))


if __name__ == "__main__":
    sys.exit(main())
