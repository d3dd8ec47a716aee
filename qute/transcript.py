"""The lines the firmware prints, and how the host reads them back.

The firmware's application (``firmware/app/qute_app.c``) writes plain ASCII lines on the
console UART. Lines the host cares about start with ``QUTE `` and hold ``key=value`` fields
separated by single spaces; anything else on the port (boot banners, a debugger's chatter) is
ignored::

    QUTE start format=2 board=nucleo-f746 target=mps2-an500 model=3f2a9c1e04b7 samples=50 heads=3 classes=10 counter=instructions
    QUTE sample=0 label=6 pred=6 conf=0.9902 heads=80808080fd80808080,...,... scores=3f7d8000,3f7b0000,3ca1f37c,3a0c1000 cycles=28471 ucycles=480
    ...
    QUTE done samples=50 correct=49 crc32=5c1d03a7

``start``
    what was built: the board, the memory map it is linked for (``target``: the emulation board of
    an emulator build), the first 12 hex digits of the model's SHA-256, how many inputs are
    embedded, the number of heads K and of classes C, and what the counter counts (``cycles``
    from the DWT on silicon, ``instructions`` from SysTick under QEMU ``-icount``).
``sample``
    one inference. ``label`` is the embedded label (-1 when the inputs have none). ``heads`` is
    every output byte: one comma-separated field per model output (in the generated model's
    order: head_0, head_1, ...), two lowercase hex digits per byte in memory order: one byte per
    int8 value (two's complement), two per int16 head value (a widened softmax head, little-endian;
    build.json's outputs say which). For an ensemble classifier (every output a probability vector of the same
    length) ``pred`` and ``conf`` are the ensemble prediction and its confidence (4 decimals, for
    people) and ``scores`` the IEEE-754 float32 bit patterns of confidence, margin, entropy and
    mutual information, computed on the device from the mean of the K dequantized heads in
    float32 (``firmware/uncertainty``, the C port of :func:`qute.uncertainty.summarize`); other
    models print ``pred=-1`` and no ``conf``/``scores``. ``cycles`` is the counter's count for the
    one model run (``qute_model_run``, the input already in place; older firmware timed
    ``qute_model_invoke``, which also copied the input in and the outputs out); ``ucycles`` (optional: older firmware has none) the same
    counter's count for the uncertainty module of that sample (dequantizing the heads and the
    ensemble scores, plus the abstain decision and monitor update on calibrated builds), so the
    module's overhead is measured against the model's on the same scale.
    Boards with no FPU (``fpu = "none"``: Cortex-M0/M3) compute the scores with integers only
    (``firmware/uncertainty/qute_uncertainty_int.c``, :func:`qute.uncertainty.summarize_int`) and
    print ``iscores`` instead of ``scores``: four decimal integers, confidence and margin in Q16
    (1.0 = 65536), entropy and mutual information in nats in Q20 (1.0 nat = 1048576); ``conf`` is
    then the Q16 confidence rounded to 4 decimals.
    Calibrated builds (``qute calibrate`` then ``qute build``; format 2) add, before ``cycles``:
    ``score`` (float32 bits of the score the abstain threshold is on), ``abstain`` (1 when that
    score is on the uncertain side of the threshold), ``window_mean`` (float32 bits of the
    accuracy-drop monitor's mean of the last m confidences, ``-`` until m samples have been seen;
    :mod:`qute.monitor`) and ``alarm`` (1 while that mean is below rho). Their ``start`` line adds
    ``abstain_score``, ``abstain_threshold`` and ``monitor_rho`` (float32 bits) and
    ``monitor_window``. Format 1 lines (no such fields) still parse.
    Calibrated builds for boards with no FPU decide with integers only and print, in the same
    place: ``iscore`` (the decimal integer score the abstain threshold is on, as in ``iscores``:
    Q16 or Q20), ``abstain``, ``window_sum`` (the exact decimal sum of the monitor's last m Q16
    confidences, ``-`` until m samples have been seen; :func:`qute.drift.simulate_int`) and
    ``alarm`` (1 while that sum is below ``rho_sum``); their ``start`` line adds
    ``abstain_score``, ``abstain_threshold_int``, ``monitor_window`` and ``monitor_rho_sum``
    (decimal integers).
    Models with early exits (``qute quantize --exits``) add ``exit``, before ``heads``: the exit
    the run stopped at (0, 1, ...; the number of exits E when it ran to the end). Their outputs
    are the K heads, then the exits; ``heads`` leaves empty (nothing between its commas) every
    output that run did not compute: the heads when it stopped early, and the exits after the
    one it stopped at. ``pred``, ``conf``, the scores and the calibrated fields are then that
    exit's own (one softmax alone), or the heads' ensemble for a run that reached them; ``crc32``
    covers the outputs each run computed. Their ``start`` line adds ``exits=E`` and, with an exit
    policy (``qute build --exit-policy``), ``exit_score`` and ``exit_thresholds`` (float32 bits,
    or ``exit_thresholds_int`` on the integer path), comma-separated, one per exit; a window-based
    cascade (``window-SCORE:R/A``) adds ``exit_rejects`` (or ``exit_rejects_int``), and its sample
    lines carry ``abstain`` (1: an exit rejected the input) even when the build is not calibrated.
``op``
    (builds with ``qute build --profile`` only) ``QUTE op sample=i index=k cycles=n``, one line per
    op that runs code, in the order they ran, before the sample line of the same invoke: ``index``
    is the op's index in the model (``qute-codegen report`` lists them), ``cycles`` the count of
    the same counter as the sample's ``cycles`` from the end of the previous op (for the first op:
    from the start of the invoke) to the end of this one. So the ops' counts add up to the
    sample's ``cycles`` less what follows the last op (copying outputs out, returning), and each
    reading of the counter, a few dozen instructions, is counted in the op after it. Builds without
    ``--profile`` print no such lines and their other lines are unchanged.
``ready``
    (builds with ``--inputs uart`` only) ``QUTE ready inputs=uart input_bytes=N``: the console is
    up and listening. A host sends its inputs after this line, since a UART may drop bytes that
    arrive before its receiver is on (QEMU's STM32 USART does); the ``start`` line follows once
    the input count has arrived.
``done``
    the end, and deterministic so a Renode robot test can wait for it as a whole line: the number
    of samples run, how many predictions equal their label (only with labels), and the CRC-32
    (zlib's) of every output byte of every sample in order. The build computes the expected line
    from the host reference (:func:`done_line`), so ``Wait For Line On Uart`` on it checks the
    outputs bit for bit without Python.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

PREFIX = "QUTE"
FORMAT = 2  # 2: the calibrated fields score, abstain, window_mean, alarm
SCORE_NAMES = ("confidence", "margin", "entropy", "mutual_information")

_FIELD = re.compile(r"([a-z_0-9]+)=(\S*)")


class TranscriptError(ValueError):
    """A ``QUTE`` line that does not follow the format."""


@dataclass
class Sample:
    index: int
    label: int
    pred: int
    heads: list[np.ndarray]  # one vector per model output: its bytes, as int8 (qute.expectation.HeadLayout.values reads them)
    cycles: int
    conf: float | None = None
    scores: np.ndarray | None = None  # float32 (4,): confidence, margin, entropy, mutual information
    score: np.float32 | None = None  # the calibrated abstain score's value (format 2, calibrated builds)
    abstain: bool | None = None
    window_mean: np.float32 | None = None  # None while the monitor's window is not full
    alarm: bool | None = None
    ucycles: int | None = None  # the uncertainty module's count (same counter as cycles)
    iscores: np.ndarray | None = None  # int64 (4,): confidence_q16, margin_q16, entropy_q20, mutual_information_q20
    iscore: int | None = None  # integer-only calibrated builds: the abstain score's integer value
    window_sum: int | None = None  # integer-only calibrated builds; None while the monitor's window is not full
    exit: int | None = None  # early-exit models: the exit the run stopped at (the number of exits: none)


@dataclass
class OpCount:
    """One ``op`` line (profiled builds): an op's count within one sample's invoke."""

    sample: int
    index: int  # the op's index in the model
    cycles: int


@dataclass
class Transcript:
    ready: dict | None = None
    start: dict | None = None
    samples: list[Sample] = field(default_factory=list)
    ops: list[OpCount] = field(default_factory=list)  # profiled builds only, in the order printed
    done: dict | None = None
    other: list[str] = field(default_factory=list)  # lines that are not ours

    @property
    def complete(self) -> bool:
        return self.done is not None


def _fields(line: str) -> dict[str, str]:
    body = line[len(PREFIX) + 1:].split(" ")
    kind = body[0] if body and "=" not in body[0] else None
    out = {"_kind": kind or "sample"}
    for token in body[1:] if kind else body:
        m = _FIELD.fullmatch(token)
        if not m:
            raise TranscriptError(f"malformed field {token!r} in line: {line}")
        out[m.group(1)] = m.group(2)
    return out


def _int(f: dict, key: str, line: str) -> int:
    try:
        return int(f[key])
    except (KeyError, ValueError):
        raise TranscriptError(f"missing or bad {key}= in line: {line}") from None


def _head(text: str, line: str) -> np.ndarray:
    if len(text) % 2 or not re.fullmatch(r"[0-9a-f]*", text):
        raise TranscriptError(f"bad head bytes {text[:40]!r} in line: {line}")
    return np.frombuffer(bytes.fromhex(text), dtype=np.int8).copy()


def _f32(text: str, key: str, line: str) -> np.float32:
    if not re.fullmatch(r"[0-9a-f]{8}", text):
        raise TranscriptError(f"bad {key}= in line: {line}")
    return np.array([int(text, 16)], dtype=np.uint32).view(np.float32)[0]


def _window_sum(f: dict, line: str) -> int | None:
    """uint32 decimal; "-" (window not full yet) and absence read as None."""
    if f.get("window_sum", "-") == "-":
        return None
    if not re.fullmatch(r"[0-9]{1,10}", f["window_sum"]) or int(f["window_sum"]) >= 2**32:
        raise TranscriptError(f"bad window_sum= in line: {line}")
    return int(f["window_sum"])


def _flag(f: dict, key: str, line: str) -> bool | None:
    if key not in f:
        return None
    if f[key] not in ("0", "1"):
        raise TranscriptError(f"bad {key}= (0 or 1) in line: {line}")
    return f[key] == "1"


def parse_sample(line: str) -> Sample:
    f = _fields(line)
    if "heads" not in f:
        raise TranscriptError(f"sample line without heads=: {line}")
    scores = None
    if "scores" in f:
        parts = f["scores"].split(",")
        if len(parts) != len(SCORE_NAMES) or not all(re.fullmatch(r"[0-9a-f]{8}", p) for p in parts):
            raise TranscriptError(f"bad scores= in line: {line}")
        scores = np.array([int(p, 16) for p in parts], dtype=np.uint32).view(np.float32)
    iscores = None
    if "iscores" in f:
        parts = f["iscores"].split(",")
        if len(parts) != len(SCORE_NAMES) or not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
            raise TranscriptError(f"bad iscores= in line: {line}")
        iscores = np.array([int(p) for p in parts], dtype=np.int64)
    conf = None
    if "conf" in f:
        try:
            conf = float(f["conf"])
        except ValueError:
            raise TranscriptError(f"bad conf= in line: {line}") from None
    return Sample(
        index=_int(f, "sample", line),
        label=_int(f, "label", line),
        pred=_int(f, "pred", line),
        heads=[_head(h, line) for h in f["heads"].split(",")],
        cycles=_int(f, "cycles", line),
        conf=conf,
        scores=scores,
        score=_f32(f["score"], "score", line) if "score" in f else None,
        abstain=_flag(f, "abstain", line),
        window_mean=None if f.get("window_mean", "-") == "-" else _f32(f["window_mean"], "window_mean", line),
        alarm=_flag(f, "alarm", line),
        ucycles=_int(f, "ucycles", line) if "ucycles" in f else None,
        iscores=iscores,
        iscore=_int(f, "iscore", line) if "iscore" in f else None,
        window_sum=_window_sum(f, line),
        exit=_int(f, "exit", line) if "exit" in f else None,
    )


def parse(text: str) -> Transcript:
    """Reads a console transcript; raises TranscriptError on a malformed ``QUTE`` line."""
    t = Transcript()
    for raw in text.splitlines():
        line = raw.strip("\r\x00 ")
        if not line.startswith(PREFIX + " "):
            if line:
                t.other.append(line)
            continue
        f = _fields(line)
        kind = f.pop("_kind")
        if kind == "ready":
            t.ready = f
        elif kind == "start":
            t.start = f
        elif kind == "done":
            t.done = f
        elif kind == "sample":
            t.samples.append(parse_sample(line))
        elif kind == "op":
            t.ops.append(OpCount(_int(f, "sample", line), _int(f, "index", line), _int(f, "cycles", line)))
        else:
            raise TranscriptError(f"unknown line kind {kind!r}: {line}")
    return t


def op_counts(t: Transcript) -> dict[int, list[OpCount]]:
    """The ``op`` lines by sample, each sample's in the order its ops ran."""
    by_sample: dict[int, list[OpCount]] = {}
    for o in t.ops:
        by_sample.setdefault(o.sample, []).append(o)
    return by_sample


def op_line(sample: int, index: int, cycles: int) -> str:
    """An ``op`` line as a profiled firmware prints it."""
    return f"{PREFIX} op sample={sample} index={index} cycles={cycles}"


def outputs_crc32(per_sample: list[list[np.ndarray]]) -> int:
    """CRC-32 of every output byte: sample by sample, output by output, as the firmware sums it."""
    crc = 0
    for outputs in per_sample:
        for out in outputs:
            out = np.asarray(out)  # int8, or int16 heads: their little-endian bytes, as the device stores them
            crc = zlib.crc32(np.ascontiguousarray(out, dtype=out.dtype.newbyteorder("<")).tobytes(), crc)
    return crc & 0xFFFFFFFF


def start_fields(heads: int, classes: int, calibration: dict | None = None, exits: int = 0,
                 exit_policy: dict | None = None) -> str:
    """The start line's fields after samples= (the firmware prints them from its qute_config.h):
    K and C, an early-exit model's E and policy, then a calibrated build's score, threshold and
    monitor constants (float32 bits, or the integer path's integers)."""
    out = f" heads={heads} classes={classes}"
    if exits:
        out += f" exits={exits}"
    if exit_policy:
        key = "exit_thresholds_int" if exit_policy["arithmetic"] == "int" else "exit_thresholds"
        values = exit_policy["thresholds_int"] if exit_policy["arithmetic"] == "int" else exit_policy["thresholds_f32"]
        out += f" exit_score={exit_policy['score']} {key}={','.join(map(str, values))}"
        if "rejects" in exit_policy:
            rk = "rejects_int" if exit_policy["arithmetic"] == "int" else "rejects_f32"
            out += f" exit_{rk.replace('_f32', '')}={','.join(map(str, exit_policy[rk]))}"
    if calibration is None:
        return out
    if calibration["arithmetic"] == "int":
        return out + (f" abstain_score={calibration['score']} abstain_threshold_int={calibration['threshold_int']} "
                      f"monitor_window={calibration['window']} monitor_rho_sum={calibration['rho_sum']}")
    return out + (f" abstain_score={calibration['score']} abstain_threshold={calibration['threshold_f32']} "
                  f"monitor_window={calibration['window']} monitor_rho={calibration['rho_f32']}")


def done_line(samples: int, crc32: int, correct: int | None = None) -> str:
    """The summary line the firmware prints when every output byte is right."""
    mid = f" correct={correct}" if correct is not None else ""
    return f"{PREFIX} done samples={samples}{mid} crc32={crc32:08x}"


UART_MAGIC = b"QUTI"
READY_LINE = b"QUTE ready "  # the firmware's UART receiver is on


def uart_payload(x: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """The host's side of the protocol, what a `--inputs uart` firmware reads: "QUTI", N (uint32 LE), then per input its label
    (int16 LE, -1 for none) and its int8 values (read by firmware/app/qute_app.c)."""
    x = np.asarray(x, dtype=np.int8)
    x = x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))
    y = np.full(len(x), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    if len(y) and (y.min() < -1 or y.max() > 32767):
        raise ValueError("labels must be in -1..32767")
    frames = np.empty((len(x), 2 + x.shape[1]), dtype=np.uint8)
    frames[:, :2] = y.astype("<i2").view(np.uint8).reshape(-1, 2)
    frames[:, 2:] = x.view(np.uint8)
    return UART_MAGIC + np.uint32(len(x)).astype("<u4").tobytes() + frames.tobytes()
