"""``qute run``: the firmware of a build under an emulator, checked byte for byte against the host.

QEMU (what the tests use)::

    qemu-system-arm -M <machine> -nographic -semihosting -icount shift=0 -kernel emulator/firmware.elf

runs the build's emulator variant (QUTE_EMULATOR: semihosting exit, SysTick counter) with a
time-out. Its console lines (qute/transcript.py) are parsed and every output byte is compared
with the host int8 reference (:func:`qute.oracle.reference`: TFLite Micro's reference kernels)
on the same embedded inputs (the build's inputs.npz), and the device's float32 ensemble scores
with :func:`qute.uncertainty.summarize` of its heads. Calibrated builds (``qute calibrate``): the device's abstain
flags, window means and alarms against :func:`qute.drift.simulate` on the host's scores, with the
first alarm on both sides; on integer-only builds (no FPU) the integer scores, abstain flags, exact
window sums and alarms against :func:`qute.drift.simulate_int` on
:func:`qute.uncertainty.summarize_int`. Under ``-icount shift=0`` the counter gives
executed instructions, deterministic run after run; they are not the board's cycles.

Renode: ``renode-test BUILD_DIR/<board>.robot`` when Renode is installed (it runs the board's own
firmware and waits for the summary line the build computed from the host reference).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qute import tools
from qute.boards import load_board
from qute.build import build as make_build, load_build
from qute.errors import QuteError, RunFailure
from qute.expectation import Expectation, compare, compare_decisions
from qute.run import write_atomic
from qute.transcript import PREFIX, READY_LINE, TranscriptError, op_counts, parse, uart_payload

EMULATORS = ("qemu", "renode")
DEFAULT_TIMEOUT = 300.0


@dataclass
class RunResult:
    board: str
    machine: str
    elf: Path
    note: str
    samples: int
    counter: str
    cycles: np.ndarray
    bytes_compared: int
    bytes_differing: int
    per_output: list[dict]
    scores_compared: int
    scores_differing: int
    predictions_differing: int
    done_line_ok: bool
    reference: str
    accuracy: float | None
    correct: int | None
    uncertainty: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    monitor_note: str = ""
    monitor: dict = field(default_factory=dict)  # calibrated builds: the device's decisions against qute.monitor
    ucycles: np.ndarray | None = None  # the uncertainty module's count per sample (None: older firmware)
    scores_kind: str = "float32"  # "int": integer-only path (Q16/Q20 values against summarize_int)
    transcript: Path | None = None  # where qute run saved the console text
    port: str | None = None  # read from a board over this serial port, not from QEMU
    profile: dict | None = None  # profiled builds (qute build --profile): the per-op table, see op_profile
    profile_file: Path | None = None  # where qute run saved it
    exits: dict | None = None  # early-exit builds: exits taken per sample by the device and the host (see exit_summary)

    @property
    def overhead(self) -> dict | None:
        """Mean count per inference of the model and of the uncertainty module, and their ratio in %."""
        if self.ucycles is None or not len(self.ucycles) or not len(self.cycles) or np.mean(self.cycles) <= 0:
            return None
        model, unc = float(np.mean(self.cycles)), float(np.mean(self.ucycles))
        return {"model": model, "uncertainty": unc, "percent": 100.0 * unc / model,
                "uncertainty_min": int(np.min(self.ucycles)), "uncertainty_max": int(np.max(self.ucycles))}

    @property
    def bit_exact(self) -> bool:
        return (self.bytes_differing == 0 and self.scores_differing == 0 and self.predictions_differing == 0
                and self.done_line_ok and not self.problems and not self.monitor.get("differing", 0)
                and not (self.exits or {}).get("differing", 0))

    def summary(self) -> str:
        lines = ([f"firmware: {self.elf} on {self.board}, read over {self.port}"] if self.port else
                 [f"{self.note}", f"firmware: {self.elf} on QEMU {self.machine} (-icount shift=0)"])
        if self.accuracy is not None:
            whose = "reported (an exit's or the ensemble's)" if self.exits and self.exits["policy"][:5] != "never" else "ensemble"
            lines.append(f"accuracy:            {self.accuracy:.4f} ({self.correct}/{self.samples} {whose} predictions right)")
        u = self.uncertainty
        if u:
            lines.append(f"uncertainty (mean):  confidence {u['confidence']:.4f}, margin {u['margin']:.4f}, "
                         f"entropy {u['entropy']:.4f} nats, mutual information {u['mutual_information']:.4f} nats")
            if "confidence_correct" in u:
                lines.append(f"                     confidence when right {u['confidence_correct']:.4f}, "
                             f"when wrong {u['confidence_wrong']:.4f}" if u.get("confidence_wrong") is not None
                             else f"                     confidence when right {u['confidence_correct']:.4f} (none wrong)")
        c = self.cycles
        what = ("instructions per inference (QEMU -icount shift=0 instruction count from SysTick; not cycles: "
                "cycles come from a real board)") if self.counter == "instructions" else f"{self.counter} per inference"
        if len(c):
            lines.append(f"{what}:")
            lines.append(f"                     mean {np.mean(c):,.0f}, min {int(np.min(c)):,}, max {int(np.max(c)):,}")
        o = self.overhead
        if o is not None:
            unit = "instructions" if self.counter == "instructions" else self.counter
            lines.append(f"uncertainty module:  mean {o['uncertainty']:,.0f} {unit} per inference (min {o['uncertainty_min']:,}, "
                         f"max {o['uncertainty_max']:,}) = {o['percent']:.2f}% of the model's {o['model']:,.0f}")
        x = self.exits
        if x:
            hist = ", ".join(f"{name} {count}" for name, count in zip(x["names"], x["device_histogram"]))
            lines.append(f"early exits ({x['policy']}): {hist}; {x['differing']} of {self.samples} exit decisions "
                         f"differ from the host")
            if x.get("rejected_host") is not None:
                dev = x["rejected_device"]
                lines.append(f"  rejected by the window (abstain=1): device {'(see abstain)' if dev is None else dev}, "
                             f"host {x['rejected_host']}")
            shown = " ".join("-" if e < 0 else str(e) for e in x["device"][:100])
            lines.append(f"  exit per sample ({len(x['names']) - 1} = ran to the end): {shown}"
                         + (" ..." if len(x["device"]) > 100 else ""))
            if x.get("cycles_by_exit"):
                lines.append("  mean count by exit taken: " + ", ".join(
                    f"{name} {c:,.0f}" for name, c in zip(x["names"], x["cycles_by_exit"]) if c is not None))
        for p in self.per_output:
            lines.append(f"  {p['name']}: {p['differing']:,} of {p['bytes']:,} bytes differ")
        lines.append(f"output bytes:        {self.bytes_differing:,} of {self.bytes_compared:,} differ from the host reference "
                     f"({'TFLite Micro' if self.reference == 'tflm' else 'LiteRT reference kernels'}), {self.samples} inputs")
        if self.scores_compared:
            if self.scores_kind == "int":
                lines.append(f"uncertainty scores:  {self.scores_differing:,} of {self.scores_compared:,} integer values "
                             f"(Q16 confidence/margin, Q20 entropy/MI) differ from qute.uncertainty.summarize_int on the host")
            else:
                lines.append(f"uncertainty scores:  {self.scores_differing:,} of {self.scores_compared:,} float32 values differ "
                             f"from qute.uncertainty on the host")
        mon = self.monitor
        if mon:
            def at(i):
                return "none" if i is None else f"sample {i}"
            lines.append(f"abstain ({mon['score']}):   device abstained on {mon['abstained_device']}/{self.samples}; "
                         f"{mon['abstain_differing']} flag(s) and {mon['score_differing']} "
                         f"{'integer ' if mon.get('arithmetic') == 'int' else ''}score value(s) differ from the host")
            integer = mon.get("arithmetic") == "int"
            rule = (f"rho_sum={mon['rho_sum']}, i.e. mean < {mon['rho']:.6g}" if integer else f"rho={mon['rho']:.6g}")
            lines.append(f"monitor (m={mon['window']}, {rule}): first alarm device {at(mon['first_alarm_device'])}, "
                         f"host {at(mon['first_alarm_host'])}; alarms on {mon['alarms_device']} sample(s); "
                         f"{mon['mean_differing']} window {'sum' if integer else 'mean'}(s) and {mon['alarm_differing']} "
                         f"alarm state(s) differ from qute.drift.simulate{'_int' if integer else ''}")
        elif self.monitor_note:
            lines.append(f"monitor:             none ({self.monitor_note})")
        if self.profile is not None:
            lines += format_profile(self.profile)
        for p in self.problems:
            lines.append(f"problem: {p}")
        if self.transcript is not None:
            lines.append(f"transcript:          {self.transcript}")
        if self.profile_file is not None:
            lines.append(f"profile:             {self.profile_file}")
        lines.append(f"bit-exact: {'yes' if self.bit_exact else 'no'}")
        return "\n".join(lines)


def qemu_command(qemu: str, machine: str, elf: Path, uart_inputs: bool = False) -> list[str]:
    """QEMU's command line; `uart_inputs`: the console UART also reads QEMU's stdin (raw bytes)."""
    # -nographic's default console multiplexes the monitor's Ctrl-A escapes into the byte stream;
    # a plain stdio chardev passes every byte of an input frame through untouched.
    serial = ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"] if uart_inputs else []
    return [qemu, "-M", machine, "-nographic", "-monitor", "none", *serial, "-semihosting", "-icount", "shift=0",
            "-kernel", str(elf)]


def run_process(cmd: list[str], timeout: float, cwd: Path | None = None, stdin: bytes | None = None,
                send_after: bytes | None = None) -> tuple[int | None, str, str]:
    """Runs `cmd` in its own process group; (returncode or None on time-out, stdout, stderr).

    `stdin` is written by a thread, once `send_after` has appeared in the first 64 KB of stdout
    when given (a UART drops what arrives before its receiver is on); the process may read it as
    slowly as it likes (QEMU takes one UART byte at a time) while its output goes to a file.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, stdout=out,
                                stderr=err, cwd=cwd, start_new_session=True)
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=_feed, args=(proc, out.fileno(), stdin, send_after), daemon=True)
            feeder.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM: in its own session, the emulator would outlive qute
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
        if feeder is not None:
            feeder.join()
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")


def _feed(proc: subprocess.Popen, out_fd: int, data: bytes, send_after: bytes | None) -> None:
    while send_after is not None and send_after not in os.pread(out_fd, 1 << 16, 0):
        if proc.poll() is not None:
            return
        time.sleep(0.005)
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except OSError:  # the process ended (or was killed on a time-out) before reading everything
        pass


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    shown = [ln if len(ln) < 200 else ln[:200] + "..." for ln in lines[-n:]]
    return "\n  ".join(shown) if shown else "(no output)"


def check(build, transcript, board, expect: Expectation | None = None) -> RunResult:
    """Compares a parsed transcript with what the build's firmware must print (qute.expectation;
    `expect` when the caller has it already: computing it runs the oracle on every input)."""
    m = build.manifest
    expect = expect or Expectation.from_build(build)
    n, engine = expect.samples, expect.engine
    problems = []
    start = transcript.start or {}
    if not transcript.start:
        problems.append("no start line")
    elif start.get("model") != m.model.sha256[:12]:
        problems.append(f"the firmware runs model {start.get('model')}, the build's is {m.model.sha256[:12]}")
    got = {s.index: s for s in transcript.samples}
    if sorted(got) != list(range(n)) or len(transcript.samples) != n:
        problems.append(f"expected sample lines 0..{n - 1}, got {len(transcript.samples)} line(s)")
    c = compare(transcript.samples, expect)
    problems += c.problems
    present, host = c.present, c.scores
    uncertainty, accuracy, correct = {}, None, None
    if host is not None:
        ok = present
        uncertainty = {
            "confidence": float(np.mean(host.confidence[ok])) if ok.any() else float("nan"),
            "margin": float(np.mean(host.margin[ok])) if ok.any() else float("nan"),
            "entropy": float(np.mean(host.entropy[ok])) if ok.any() else float("nan"),
            "mutual_information": float(np.mean(host.mutual_information[ok])) if ok.any() else float("nan"),
        }
        if expect.labels is not None:
            y = expect.labels
            preds = np.array([got[i].pred if i in got else -1 for i in range(n)])
            right = preds == y
            correct = int(right.sum())
            accuracy = correct / n if n else 0.0
            uncertainty["confidence_correct"] = float(np.mean(host.confidence[right & ok])) if (right & ok).any() else float("nan")
            uncertainty["confidence_wrong"] = float(np.mean(host.confidence[~right & ok])) if (~right & ok).any() else None
    monitor = compare_decisions(transcript.samples, expect, host, present)
    exits = exit_summary(c, expect, got)
    done = transcript.done
    done_ok = False
    if done is None:
        problems.append("no summary line (QUTE done ...)")
    else:
        line = f"{PREFIX} done " + " ".join(f"{k}={v}" for k, v in done.items())
        done_ok = line == m.expected_done_line
        if not done_ok:
            problems.append(f"summary line {line!r}, expected {m.expected_done_line!r}")
    cycles = np.array([got[i].cycles for i in sorted(got)], dtype=np.int64)
    profile = op_profile(m.profile, transcript, got, start.get("counter", "?"), problems)
    ucycles = None
    if got and all(got[i].ucycles is not None for i in got):
        ucycles = np.array([got[i].ucycles for i in sorted(got)], dtype=np.int64)
    return RunResult(
        board=board.name, machine=board.qemu_machine, elf=build.elf(True), note=board.emulation_note, samples=n,
        counter=start.get("counter", "?"), cycles=cycles, bytes_compared=c.bytes_compared,
        bytes_differing=c.bytes_differing, per_output=c.per_output, scores_compared=c.scores_compared,
        scores_differing=c.scores_differing, predictions_differing=c.predictions_differing, done_line_ok=done_ok, reference=engine, accuracy=accuracy, correct=correct,
        uncertainty=uncertainty, problems=problems, monitor=monitor, monitor_note=m.calibration_note or "",
        ucycles=ucycles, scores_kind=expect.path.kind if expect.path else "float32", profile=profile, exits=exits,
    )


def exit_summary(c, expect: Expectation, got: dict) -> dict | None:
    """An early-exit model's exits: how often the device and the host stopped at each (the last
    entry: ran to the end), how many decisions differ, and the mean count per inference by exit taken."""
    if c.taken is None:
        return None
    n_exits = len(expect.layout.exits)
    want, _ = expect.report()
    names = [f"exit_{k}" for k in range(n_exits)] + ["end"]
    cycles = np.array([got[i].cycles if i in got else -1 for i in range(expect.samples)], dtype=np.int64)
    by_exit = [float(np.mean(cycles[c.taken == k])) if np.any(c.taken == k) else None for k in range(n_exits + 1)]
    p = expect.exit_policy
    window = "" if p is None or "rejects" not in p else " (reject at " + ",".join(f"{t:g}" for t in p["rejects"]) + ")"
    return {
        "policy": "never (no exit policy)" if p is None else f"{p['score']} {p['stop_when']} "
                  + ",".join(f"{t:g}" for t in p["thresholds"]) + window,
        "names": names,
        "device_histogram": [int(np.sum(c.taken == k)) for k in range(n_exits + 1)],
        "host_histogram": [int(np.sum(want == k)) for k in range(n_exits + 1)],
        "differing": int(c.exits_differing) + int(c.rejects_differing),
        "rejected_device": None if c.rejected is None else int(np.sum(c.rejected == 1)),
        "rejected_host": int(np.sum(expect.rejected())) if p is not None and "rejects" in p else None,
        "cycles_by_exit": by_exit,
        "device": c.taken.tolist(),
    }


def op_profile(prof: dict | None, transcript, got: dict, counter: str, problems: list[str]) -> dict | None:
    """A profiled build's per-op table: each op's count, mean over the inputs, against its MACs.

    `prof` is build.json's ``profile`` (None for a build without --profile: then so is the table).
    An input whose ``op`` lines do not name the build's ops in order is a problem (the firmware and
    its build.json disagree) and is left out of the means. A run that stopped at an early exit ran
    the first ops only (the model's ops are in stage order): it is checked for that and left out
    of the means, which are over the runs that ran every op.
    """
    if not prof:
        return None
    ops = prof["ops"]
    want = [o["index"] for o in ops]
    by_sample = op_counts(transcript)
    counts, whole = [], []
    for i in sorted(got):
        seen = [o.index for o in by_sample.get(i, [])]
        stopped = got[i].exit is not None and seen == want[: len(seen)] and len(seen) < len(want)
        if seen != want and not stopped:
            problems.append(f"sample {i}: op lines for ops {seen}, expected {want} (qute build --profile)")
        if seen != want:
            continue
        seen = by_sample[i]
        counts.append([o.cycles for o in seen])
        whole.append(got[i].cycles)
    c = np.array(counts, dtype=np.int64).reshape(len(counts), len(ops))
    invoke = float(np.mean(whole)) if whole else 0.0
    rows = []
    for k, o in enumerate(ops):
        mean = float(np.mean(c[:, k])) if len(c) else 0.0
        rows.append({**o, "count": mean, "min": int(np.min(c[:, k])) if len(c) else 0,
                     "max": int(np.max(c[:, k])) if len(c) else 0,
                     "per_mac": mean / o["macs"] if o["macs"] else None,
                     "share": 100.0 * mean / invoke if invoke else None})
    ops_total = float(c.sum(axis=1).mean()) if len(c) else 0.0
    macs = sum(o["macs"] for o in ops)
    return {
        "counter": counter,
        "samples": len(c),
        "ops": rows,
        "invoke": invoke,  # mean of the sample lines' cycles= over the same inputs
        "ops_total": ops_total,
        "after_last_op": invoke - ops_total,  # returning from qute_model_run: no op's
        "macs": macs,
        "per_mac": invoke / macs if macs else None,
    }


def format_profile(p: dict) -> list[str]:
    unit = "instructions" if p["counter"] == "instructions" else p["counter"]
    width = max([len("kernel")] + [len(o["kernel"]) for o in p["ops"]])

    def ratio(v):
        return f"{v:>9.2f}" if v is not None else f"{'-':>9}"

    def share(v):
        return f"{v:>6.1f}%" if v is not None else f"{'-':>7}"

    lines = [f"per-op profile:      {unit}, mean over {p['samples']} input(s) (-DQUTE_PROFILE; each op's count "
             f"includes one reading of the counter)",
             f"  {'#':>3}  {'op':<20} {'kernel':<{width}} {'MACs':>12} {unit:>14} {'per MAC':>9} {'share':>7}"]
    for o in p["ops"]:
        lines.append(f"  {o['index']:>3}  {o['opcode']:<20} {o['kernel']:<{width}} {o['macs']:>12,} {o['count']:>14,.0f} "
                     f"{ratio(o['per_mac'])} {share(o['share'])}")
    rest = 100.0 * p["after_last_op"] / p["invoke"] if p["invoke"] else None
    lines.append(f"  {'':>3}  {'after the last op (return)':<{21 + width}} {'':>12} "
                 f"{p['after_last_op']:>14,.0f} {'':>9} {share(rest)}")
    lines.append(f"  {'':>3}  {'whole run (cycles= of the sample lines)':<{21 + width}} {p['macs']:>12,} "
                 f"{p['invoke']:>14,.0f} {ratio(p['per_mac'])} {share(100.0 if p['invoke'] else None)}")
    return lines


def run(
    board_name: str | None,
    build_dir: str | Path | None = None,
    emulator: str = "qemu",
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] = lambda s: None,
    port: str | None = None,
    baud: int | None = None,
    model: str | None = None,
    samples: int | None = None,
) -> RunResult | int:
    """Runs a build under `emulator`; a RunResult for QEMU, renode-test's exit status for Renode.

    With no `build_dir`, builds `model` (None: the embedded default) with `samples` inputs for
    emulation in a temporary folder first. With `port`, the firmware already flashed on the board is read (and fed)
    over that serial port instead (qute.serialport), and checked the same way.
    """
    if emulator not in EMULATORS:
        raise QuteError(f"unknown emulator {emulator!r}; choose one of: {', '.join(EMULATORS)}")
    if timeout is None or timeout <= 0:
        raise QuteError(f"--timeout must be positive, got {timeout}")
    b = load_build(build_dir) if build_dir is not None else None
    if board_name is None:
        if b is None:
            raise QuteError("no board: give --board BOARD (qute boards lists them)")
        board_name = b.board
    board = load_board(board_name)
    if b is not None and b.board != board.name:
        raise QuteError(f"{build_dir} was built for {b.board}, not {board.name}; "
                        f"run it with --board {b.board} or build for {board.name}")

    if port is not None:
        if b is None:
            raise QuteError("--port needs the BUILD_DIR whose firmware is on the board (qute build, qute flash)")
        if emulator != "qemu":
            raise QuteError("--port runs on the board itself: leave out --emulator")
        return _run_on_port(b, board, port, baud or board.console.baud, timeout, progress)

    if emulator == "renode":
        renode = tools.find("renode-test")
        if renode is None:
            raise QuteError("renode-test not found; " + tools.ELSEWHERE["renode-test"])
        if b is None:
            raise QuteError("qute run --emulator renode needs a BUILD_DIR (qute build --board BOARD -o DIR)")
        robots = sorted(b.path.glob("*.robot"))
        if not robots:
            raise QuteError(f"{b.path} has no Renode test ({board.name} has no [renode] settings in its board file)")
        rc, out, err = run_process([renode, str(robots[0])], timeout, cwd=b.path)
        if rc is None:
            raise RunFailure(f"renode-test timed out after {timeout:g} s")
        if rc != 0:
            raise RunFailure(f"renode-test failed (exit {rc}):\n  {_tail(out + err, 12)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="qute-run-") as tmp:
        if b is None:
            progress(f"no BUILD_DIR: building for {board.name} (emulator) first")
            make_build(board.name, model, Path(tmp) / "build", samples, emulator=True, progress=progress)
            b = load_build(Path(tmp) / "build")
        x, y = b.inputs()
        text, transcript = execute(b, board, x if uart_inputs(b) else None, y, timeout, progress)
        result = check(b, transcript, board)
        if build_dir is None:
            result.elf = Path("(temporary build)") / "firmware.elf"
        else:  # qute report reads its latency from here
            write_atomic({b.path / TRANSCRIPT_FILE: text.encode(), **_profile_files(b, result)})
            result.transcript = b.path / TRANSCRIPT_FILE
        return result


TRANSCRIPT_FILE = "transcript.txt"
PROFILE_FILE = "profile.json"


def _profile_files(b, result: RunResult) -> dict[Path, bytes]:
    """profile.json for a profiled build's run (and result.profile_file set), else nothing."""
    if result.profile is None:
        return {}
    result.profile_file = b.path / PROFILE_FILE
    doc = {"board": result.board, "elf": str(result.elf), "port": result.port, **result.profile}
    return {result.profile_file: (json.dumps(doc, indent=2) + "\n").encode()}


def _run_on_port(b, board, port: str, baud: int, timeout: float, progress) -> RunResult:
    from qute.serialport import talk

    frames = None
    if uart_inputs(b):
        x, y = b.inputs()
        payload = uart_payload(x, y)
        size = (len(payload) - 8) // max(len(x), 1)
        frames = (payload[:8], [payload[8 + i * size: 8 + (i + 1) * size] for i in range(len(x))])
    text = talk(port, baud, frames, timeout, progress)
    try:
        transcript = parse(text)
    except TranscriptError as e:
        raise RunFailure(f"the firmware printed a malformed line: {e}") from None
    result = check(b, transcript, board)
    result.elf = b.elf(False) or b.elf(True)
    result.port = port
    write_atomic({b.path / TRANSCRIPT_FILE: text.encode(), **_profile_files(b, result)})
    result.transcript = b.path / TRANSCRIPT_FILE
    return result


def uart_inputs(build) -> bool:
    """Whether the build's firmware reads its inputs from the UART (qute build --inputs uart)."""
    return build.manifest.inputs.over == "uart"


def execute(build, board, x: np.ndarray | None = None, labels: np.ndarray | None = None,
            timeout: float = DEFAULT_TIMEOUT, progress: Callable[[str], None] = lambda s: None):
    """Runs a build's emulator variant under QEMU to its summary line; (console text, Transcript).

    `x` (int8, one row per input) and `labels` go over the UART to a `--inputs uart` build; an
    embedded-inputs build takes none. Raises RunFailure on a time-out, a crash, a malformed line
    or a missing summary line.
    """
    over_uart = uart_inputs(build)
    if over_uart and x is None:
        raise QuteError(f"{build.path} reads its inputs from the UART (qute build --inputs uart): give it inputs")
    if not over_uart and x is not None:
        raise QuteError(f"{build.path} runs its embedded inputs; rebuild with --inputs uart to send others")
    qemu = tools.require("qemu-system-arm")["qemu-system-arm"]
    elf = build.elf(True)
    machine = build.manifest.qemu_machine or board.qemu_machine
    payload = uart_payload(x, labels) if over_uart else None
    what = f", {len(x):,} inputs over the UART" if over_uart else ""
    progress(f"running {elf} on QEMU {machine}{what} (time-out {timeout:g} s)")
    rc, out, err = run_process(qemu_command(qemu, machine, elf, over_uart), timeout, stdin=payload,
                               send_after=READY_LINE if over_uart else None)
    if rc is None:
        raise RunFailure(f"time-out: the firmware did not finish within {timeout:g} s (raise --timeout for big models)\n"
                         f"  last output: {_tail(out)}")
    try:
        transcript = parse(out)
    except TranscriptError as e:
        raise RunFailure(f"the firmware printed a malformed line: {e}") from None
    if rc != 0:
        detail = "a crash or a failure the firmware reported" if transcript.samples or transcript.start else "it did not start"
        raise RunFailure(f"QEMU exited with status {rc} ({detail})\n  last output: {_tail(out + err)}")
    if not transcript.complete:
        raise RunFailure(f"the firmware exited before its summary line\n  last output: {_tail(out)}")
    return out, transcript
