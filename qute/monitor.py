"""qute monitor: a stream of inputs played through the device's accuracy-drop monitor under QEMU,
its alarms set against the host's (qute.drift), written as a timeline (JSON, plot, transcript)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from codegen import outdir
from qute import tools
from qute.boards import load_board
from qute.build import MANIFEST, build, load_build, parse_stream
from qute.calibrate import CALIBRATION_FILE
from qute.drift import first_alarm
from qute.emulate import check, qemu_command, run_process
from qute.errors import QuteError, RunFailure
from qute.expectation import Expectation
from qute.run import load_run
from qute.transcript import TranscriptError, parse


TIMELINE_FILE = "monitor.json"
PLOT_FILE = "monitor.png"
TRANSCRIPT_FILE = "transcript.txt"
BUILD_SUBDIR = "build"


def _older_monitor(folder) -> bool:
    """A monitor folder from before they carried a marker: the timeline and only monitor files."""
    names = {p.name for p in folder.iterdir()}
    return TIMELINE_FILE in names and names <= {TIMELINE_FILE, PLOT_FILE, TRANSCRIPT_FILE, BUILD_SUBDIR}


MONITOR = outdir.Kind("qute monitor", ".qute-monitor", _older_monitor)


def stream_parts(inputs_from: str, n: int) -> list[dict]:
    """The parts of a stream build from its manifest's description ("0..49: ID, 50..99: contrast severity 5")."""
    parts = [{"start": int(a), "end": int(b), "what": w.strip()}
             for a, b, w in re.findall(r"(\d+)\.\.(\d+): ([^,]+)", inputs_from or "")]
    if not parts or parts[-1]["end"] != n - 1:
        return [{"start": 0, "end": n - 1, "what": "ID" if "stream" not in (inputs_from or "") else inputs_from}]
    return parts


def window_accuracy(correct, window: int) -> np.ndarray:
    """Per sample, the accuracy of the last `window` predictions (NaN until the window is full)."""
    c = np.asarray(correct, dtype=np.int64)
    out = np.full(c.shape[0], np.nan)
    if c.shape[0] >= window:
        out[window - 1:] = np.convolve(c, np.ones(window, dtype=np.int64), mode="valid") / window
    return out


def play_stream(path, board_name: str | None = None, stream: str | None = None, samples: int | None = None,
                out=None, data_dir=None, timeout: float = 300, progress=lambda s: None, force: bool = False) -> dict:
    """Builds (emulator variant) a calibrated run with an embedded stream, runs it under QEMU, and
    returns the alarm timeline (also written to OUT/monitor.json, OUT/monitor.png, OUT/transcript.txt).

    `path` is a run directory (then `stream` is required and the build goes to OUT/build) or an
    existing stream build (a folder with build.json; `stream` and `samples` must then be left out).
    OUT follows codegen.outdir's rule: staged, and replaced only with `force` when qute monitor made it.
    """
    path = Path(path)
    if not path.is_dir():
        raise QuteError(f"{path} {outdir.missing(path)}; give a run directory (qute train) or a stream build (qute build --stream)")
    if (path / MANIFEST).is_file():
        if stream is not None or samples is not None:
            raise QuteError(f"{path} is a build: its stream is already embedded; give a run directory to use --stream/--samples")
        b = load_build(path)
        if board_name is not None and load_board(board_name).name != b.board:
            raise QuteError(f"{path} was built for {b.board}, not {board_name}")
        out = Path(out) if out is not None else path / "monitor"
        with outdir.staging(out, MONITOR, force) as folder:  # checks OUT before anything runs
            return _play(b, folder, out, timeout, progress)
    else:
        load_run(path)
        if not (path / CALIBRATION_FILE).is_file():
            raise QuteError(f"{path} has no {CALIBRATION_FILE} (no accuracy-drop monitor to run); run qute calibrate {path}")
        if not stream:
            raise QuteError("--stream is required with a run directory, e.g. --stream id,corrupt:contrast:5")
        parse_stream(stream)
        if board_name is None:
            raise QuteError("no board: give --board BOARD (qute boards lists them)")
        board = load_board(board_name)
        out = Path(out) if out is not None else path / f"monitor-{board.name}"
        with outdir.staging(out, MONITOR, force) as folder:  # checks OUT before the build starts
            progress(f"building {path} for {board.name} (emulator variant) with the stream {stream} into {out / BUILD_SUBDIR}")
            build(board.name, str(path), folder / BUILD_SUBDIR, samples=samples, emulator=True, data_dir=data_dir,
                  progress=progress, stream=stream)
            return _play(load_build(folder / BUILD_SUBDIR), folder, out, timeout, progress)


def _play(b, folder, out, timeout: float, progress) -> dict:
    """Runs the stream build `b` under QEMU and writes the timeline into `folder`, the staging
    folder of `out` (where `b` is too when qute monitor built it)."""
    m = b.manifest
    cal = m.calibration
    if not cal:
        raise QuteError(f"{b.path} has no accuracy-drop monitor ({m.calibration_note or 'not calibrated'})")
    board = load_board(b.board)
    qemu = tools.require("qemu-system-arm")["qemu-system-arm"]
    machine = m.qemu_machine or board.qemu_machine
    progress(f"running {b.elf(True)} on QEMU {machine}")
    rc, text, _err = run_process(qemu_command(qemu, machine, b.elf(True)), timeout)
    if rc is None:
        raise RunFailure(f"time-out: the firmware did not finish within {timeout:g} s")
    (folder / TRANSCRIPT_FILE).write_text(text)
    try:
        t = parse(text)
    except TranscriptError as e:
        raise RunFailure(f"the firmware printed a malformed line: {e}") from None
    if rc != 0 or not t.complete:
        raise RunFailure(f"QEMU exited with status {rc} before the firmware's summary line")
    expect = Expectation.from_build(b)
    result = check(b, t, board, expect)

    x, y = b.inputs()
    n = len(x)
    got = {s.index: s for s in t.samples}
    window = int(cal["window"])
    path = expect.path
    integer = path.name == "int"  # no FPU: Q16 confidences and exact window sums, as reals only for the plot and table
    host = expect.scores()  # from the oracle's heads, not the device's
    want = expect.decisions(host)
    dev_conf = np.array([path.confidence(got.get(i)) for i in range(n)], dtype=np.float64)
    dev_stat = [path.device_decision(got[i])[1] if i in got else None for i in range(n)]
    dev_mean = path.means(dev_stat, window)
    host_conf = np.asarray(host.confidence, dtype=np.float64)
    host_mean, host_alarm = path.means(want.window, window), want.alarms
    dev_alarm = np.array([bool(i in got and got[i].alarm) for i in range(n)])
    preds = np.array([got[i].pred if i in got else -1 for i in range(n)])
    labelled = m.inputs.labelled
    correct = (preds == y) if labelled else None
    first_dev, first_host = first_alarm(dev_alarm), first_alarm(host_alarm)
    parts = stream_parts(m.inputs.source, n)
    id_end = parts[0]["end"] if parts[0]["what"] == "ID" else None
    win_acc = window_accuracy(correct, window) if correct is not None else None

    def nan_list(a):
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64)]

    timeline = {
        "build": str(out / BUILD_SUBDIR if b.path.parent == folder else b.path),
        "board": b.board,
        "machine": machine,
        "model_origin": m.model.origin,
        "inputs_from": m.inputs.source,
        "samples": n,
        "parts": parts,
        "id_end": id_end,
        "window": window,
        "arithmetic": "int" if integer else "float",
        "rho": float(cal["rho"]),  # integer builds: the mean rho_sum stands for
        "rho_f32": cal.get("rho_f32"),
        "rho_sum": cal.get("rho_sum"),
        "first_alarm_device": first_dev,
        "first_alarm_host": first_host,
        "match": first_dev == first_host and not result.monitor.get("differing", 0),
        "alarms_device": int(dev_alarm.sum()),
        "alarms_host": int(host_alarm.sum()),
        "alarms_in_id_part": int(dev_alarm[:id_end + 1].sum()) if id_end is not None else None,
        "first_alarm_after_id": first_alarm(dev_alarm[id_end + 1:]) + id_end + 1
        if id_end is not None and first_alarm(dev_alarm[id_end + 1:]) is not None else None,
        "differing_from_host": result.monitor.get("differing"),
        "bit_exact": result.bit_exact,
        "accuracy": result.accuracy,
        "instructions_per_inference": float(np.mean(result.cycles)) if len(result.cycles) else None,
        "counter": result.counter,
        "per_sample": {
            "label": [int(v) for v in y],
            "pred": [int(v) for v in preds],
            "confidence_device": nan_list(dev_conf),
            "confidence_host": nan_list(host_conf),
            "window_accuracy": nan_list(win_acc) if win_acc is not None else None,
            "window_mean_device": nan_list(dev_mean),
            "window_mean_host": nan_list(host_mean),
            "alarm_device": [bool(v) for v in dev_alarm],
            "alarm_host": [bool(v) for v in host_alarm],
            **({"window_sum_device": dev_stat,
                "window_sum_host": [None if v < 0 else int(v) for v in want.window]} if integer else {}),
        },
    }
    (folder / TIMELINE_FILE).write_text(json.dumps(timeline, indent=1) + "\n")
    plot_timeline(timeline, folder / PLOT_FILE)
    timeline["out"] = str(out)
    return timeline


def plot_timeline(tl: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = tl["per_sample"]
    n = tl["samples"]
    idx = np.arange(n)

    def arr(v):
        return np.array([np.nan if a is None else a for a in v], dtype=float)

    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(idx, arr(ps["confidence_device"]), ".", ms=3, color="0.7", label="confidence (per sample)")
    if ps["window_accuracy"] is not None:
        ax.plot(idx, arr(ps["window_accuracy"]), lw=1.8, color="tab:green", label=f"window accuracy (m={tl['window']})")
    ax.plot(idx, arr(ps["window_mean_device"]), lw=1.8, color="tab:blue", label="window mean confidence (device)")
    ax.axhline(tl["rho"], color="tab:red", ls="--", lw=1, label=f"rho = {tl['rho']:.4f}")
    alarms = np.array(ps["alarm_device"], dtype=bool)
    if alarms.any():
        ax.fill_between(idx, 0, 1.05, where=alarms, color="tab:red", alpha=0.12, step="mid", label="alarm")
    for p in tl["parts"][1:]:
        ax.axvline(p["start"] - 0.5, color="black", lw=1)
    for p in tl["parts"]:
        ax.text((p["start"] + p["end"]) / 2, 1.07, p["what"], ha="center", va="bottom", fontsize=8)
    if tl["first_alarm_device"] is not None:
        ax.axvline(tl["first_alarm_device"], color="tab:red", lw=1.2)
    ax.set(xlabel="sample of the stream", ylim=(0, 1.15), xlim=(-0.5, n - 0.5),
           title=f"accuracy-drop monitor on {tl['board']}: first alarm device {tl['first_alarm_device']}, "
                 f"host {tl['first_alarm_host']}")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_timeline(tl: dict) -> str:
    def at(i):
        return "none" if i is None else f"sample {i}"

    lines = [f"stream on {tl['board']} (QEMU {tl['machine']}): {tl['samples']} samples; {tl['inputs_from']}"]
    for p in tl["parts"]:
        lines.append(f"  samples {p['start']}..{p['end']}: {p['what']}")
    if tl["id_end"] is not None:
        lines.append(f"ID part ends at sample {tl['id_end']}")
    if tl.get("arithmetic") == "int":
        lines.append(f"monitor (integer-only): window m={tl['window']}, alarm when the sum of the window's Q16 confidences "
                     f"< rho_sum = {tl['rho_sum']} (mean < {tl['rho']:.9g})")
    else:
        lines.append(f"monitor: window m={tl['window']}, alarm when the window mean confidence < rho = {tl['rho']:.9g}")
    ps = tl["per_sample"]
    step = max(1, tl["window"] // 2)
    head = f"{'sample':>7}  {'part':<24} {'win acc':>8} {'win conf':>9} {'alarm':>5}"
    lines += ["", head, "-" * len(head)]
    shown = sorted(set(range(tl["window"] - 1, tl["samples"], step)) | {tl["samples"] - 1}
                   | ({tl["first_alarm_device"]} if tl["first_alarm_device"] is not None else set()))
    for i in shown:
        part = next((p["what"] for p in tl["parts"] if p["start"] <= i <= p["end"]), "")
        wa = ps["window_accuracy"][i] if ps["window_accuracy"] is not None else None
        wm = ps["window_mean_device"][i]
        mark = " <- first alarm" if i == tl["first_alarm_device"] else ""
        lines.append(f"{i:>7}  {part[:24]:<24} {'-' if wa is None else f'{wa:.3f}':>8} "
                     f"{'-' if wm is None else f'{wm:.4f}':>9} {('yes' if ps['alarm_device'][i] else 'no'):>5}{mark}")
    lines.append("")
    if tl["alarms_in_id_part"] is not None:
        lines.append(f"alarms during the ID part: {tl['alarms_in_id_part']}; first alarm after it: "
                     f"{at(tl['first_alarm_after_id'])}" + ("" if tl["first_alarm_after_id"] is None else
                                                           f" ({tl['first_alarm_after_id'] - tl['id_end']} sample(s) into the shift)"))
    lines.append(f"alarms: device {tl['alarms_device']}, host {tl['alarms_host']}; "
                 f"{tl['differing_from_host']} decision(s)/value(s) differ from the host")
    lines.append(f"first alarm: device {at(tl['first_alarm_device'])}, "
                 f"host (qute.drift.simulate{'_int' if tl.get('arithmetic') == 'int' else ''}) "
                 f"{at(tl['first_alarm_host'])}: {'match' if tl['match'] else 'MISMATCH'}")
    return "\n".join(lines)
