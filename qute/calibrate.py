"""``qute calibrate``: the device's decisions, set on the host from the validation split.

Two constants per run, written to ``RUN_DIR/calibration.json`` and compiled into the firmware by
``qute build``:

* the abstain (OOD) threshold on one uncertainty score, chosen so that a fraction ``target_tpr``
  of the in-distribution validation images is accepted. For ``confidence`` and ``margin``
  (higher = more certain) a sample is accepted when ``score >= threshold``; for ``entropy`` and
  ``mi`` (mutual information; higher = less certain) when ``score <= threshold``. The threshold is
  the k-th most certain validation score with k = ceil(target_tpr * N), so at least k of N are
  accepted (exactly k without ties).
* rho of the accuracy-drop monitor (:mod:`qute.drift`): the validation split played as an
  ID-only stream through the monitor's exact arithmetic; rho is the (a+1)-th smallest full-window
  mean with a = floor(false_alarm * windows) (the rule of :func:`qute.metrics.choose_rho`), so
  the ID stream raises at most a alarms -- none with the default false_alarm 0.

The scores come from the int8 model on TFLite Micro when the run has ``model.int8.tflite``
(dequantized heads -> :func:`qute.uncertainty.summarize`: the very float32 numbers the firmware
computes), else from the float Keras model (then the device's scores differ slightly: quantize
first, then calibrate). The threshold and rho are float32 values, stored with their bit patterns.

Boards with no FPU compute the scores with integers only (:func:`qute.uncertainty.summarize_int`
on the raw int8 heads), so from the int8 model the same two rules are also applied to those
integers (format version 2): ``abstain.threshold_int`` (Q16 for confidence and margin, Q20 nats
for entropy and mi; same accept direction) and ``monitor.rho_sum``, the (a+1)-th smallest exact
sum of a full window of Q16 confidences, the integer monitor alarming while its window's sum is
``< rho_sum`` (:func:`qute.drift.simulate_int`). Version 1 files (no integer constants) still
load; builds for boards with no FPU then leave the abstain flag and the monitor out.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qute import drift
from qute.data import load_dataset
from qute.errors import QuteError
from qute.run import load_run, write_atomic
from qute.tf_loader import load_tensorflow
from qute.uncertainty import INT_FRAC_BITS, int_head_quant, summarize, summarize_int

CALIBRATION_FILE = "calibration.json"
KIND = "qute-calibration"
VERSION = 2  # 2: the integer-only path's constants (abstain.threshold_int, monitor.rho_sum), int8 scores only
# CLI name -> (qute.uncertainty field, higher value = more certain)
SCORES = {
    "confidence": ("confidence", True),
    "margin": ("margin", True),
    "entropy": ("entropy", False),
    "mi": ("mutual_information", False),
}
DEFAULT_SCORE = "confidence"
DEFAULT_TPR = 0.95
DEFAULT_WINDOW = 100
DEFAULT_FALSE_ALARM = 0.0


def f32_hex(v) -> str:
    return f"{int(np.asarray(v, dtype=np.float32).view(np.uint32)):08x}"


def f32_from_hex(text: str) -> np.float32:
    return np.array([int(text, 16)], dtype=np.uint32).view(np.float32)[0]


def score_name(score: str) -> str:
    s = {"mutual_information": "mi"}.get(score, score)
    if s not in SCORES:
        raise QuteError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    return s


def _check(target_tpr, window, false_alarm) -> tuple[float, int, float]:
    try:
        t, f = float(target_tpr), float(false_alarm)
    except (TypeError, ValueError):
        raise QuteError(f"--target-tpr and --false-alarm must be numbers, got {target_tpr!r}, {false_alarm!r}") from None
    if not 0 < t <= 1:
        raise QuteError(f"--target-tpr must be in (0, 1], got {target_tpr}")
    if not 0 <= f < 1:
        raise QuteError(f"--false-alarm must be in [0, 1), got {false_alarm}")
    return t, drift.check_window(window), f


def abstain_threshold(values, score: str, target_tpr: float) -> tuple[np.float32, np.ndarray]:
    """(float32 threshold, accepted mask) for float32 `values` of `score` at `target_tpr`."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise QuteError("abstain threshold: need at least one finite score")
    thr = _kth_most_certain(v, score, target_tpr)
    return np.float32(thr), accepted(v, score, thr)


def abstain_threshold_int(values, score: str, target_tpr: float) -> tuple[int, np.ndarray]:
    """(integer threshold, accepted mask) for the integer-only path's `values` of `score` (Q16 or Q20)."""
    v = np.asarray(values).reshape(-1)
    if v.size == 0 or not np.issubdtype(v.dtype, np.integer):
        raise QuteError("integer abstain threshold: need at least one integer score")
    thr = int(_kth_most_certain(v.astype(np.int64), score, target_tpr))
    return thr, accepted_int(v, score, thr)


def _kth_most_certain(v: np.ndarray, score: str, target_tpr: float):
    """The k-th most certain of the scores `v`, k = ceil(target_tpr * N): at least k of N are accepted."""
    k = min(v.size, max(1, math.ceil(target_tpr * v.size - 1e-9)))
    order = np.sort(v)
    return order[v.size - k] if SCORES[score_name(score)][1] else order[k - 1]


def accepted(values, score: str, threshold) -> np.ndarray:
    """The device's rule: accepted (not abstained) samples."""
    v = np.asarray(values, dtype=np.float32)
    thr = np.float32(threshold)
    return v >= thr if SCORES[score_name(score)][1] else v <= thr


def accepted_int(values, score: str, threshold: int) -> np.ndarray:
    """The integer-only device's rule: accepted (not abstained) samples, on integer scores."""
    v = np.asarray(values, dtype=np.int64)
    return v >= int(threshold) if SCORES[score_name(score)][1] else v <= int(threshold)


def choose_monitor_rho(confidences, window: int, false_alarm: float) -> tuple[np.float32, np.ndarray]:
    """(float32 rho, the ID stream's window means) under the device's exact monitor arithmetic."""
    c = np.asarray(confidences, dtype=np.float32).reshape(-1)
    if c.size < window:
        raise QuteError(f"the validation split has {c.size} images, fewer than the monitor window {window}; "
                        f"choose a smaller --window")
    means, _ = drift.simulate(c, window, np.float32(0))
    full = means[window - 1:]
    # metrics.choose_rho's rule (the (a+1)-th smallest window mean), applied to the device's float32 means
    # (choose_rho itself re-derives the means from float64 cumulative sums, which is not the device's arithmetic)
    return np.float32(_smallest_allowed(full, false_alarm)), full


def choose_monitor_rho_sum(confidence_q16, window: int, false_alarm: float) -> tuple[int, np.ndarray]:
    """(rho_sum, the ID stream's full-window sums) under the integer-only device's monitor arithmetic:
    choose_monitor_rho's rule on the exact window sums of Q16 confidences (alarm iff sum < rho_sum)."""
    c = np.asarray(confidence_q16).reshape(-1)
    if c.size < window:
        raise QuteError(f"the validation split has {c.size} images, fewer than the monitor window {window}; "
                        f"choose a smaller --window")
    sums, _ = drift.simulate_int(c, window, 0)
    full = sums[window - 1:]
    return int(_smallest_allowed(full, false_alarm)), full


def _smallest_allowed(full: np.ndarray, false_alarm: float):
    """The (a+1)-th smallest window statistic, a = floor(false_alarm * windows): at most a fall below it."""
    allowed = min(full.size - 1, int(math.floor(false_alarm * full.size + 1e-9)))
    return np.sort(full)[allowed]


@dataclass
class Calibration:
    data: dict

    @property
    def score(self) -> str:
        return self.data["abstain"]["score"]

    @property
    def threshold(self) -> np.float32:
        return f32_from_hex(self.data["abstain"]["threshold_f32"])

    @property
    def window(self) -> int:
        return int(self.data["monitor"]["window"])

    @property
    def rho(self) -> np.float32:
        return f32_from_hex(self.data["monitor"]["rho_f32"])

    @property
    def threshold_int(self) -> int | None:
        """The integer-only path's threshold (Q16 or Q20, see INT_FRAC_BITS), None in version 1 files
        and when the scores came from the float model."""
        return self.data["abstain"].get("threshold_int")

    @property
    def rho_sum(self) -> int | None:
        return self.data["monitor"].get("rho_sum")

    @property
    def has_int(self) -> bool:
        return self.threshold_int is not None and self.rho_sum is not None


def validation_scores(run, data_dir=None, progress=lambda s: None, window: int = 1):
    """(Scores of the validation split, which model, sha256 of the int8 model or None, labels, integer
    scores): the last are the integer-only path's (IntScores, with "scale_q24"/"zero_point" in a dict)
    from the int8 model's raw heads, None for the float model or heads the integer path cannot take."""
    from qute.quantize import TFLITE_FILE, dequantize, int8_heads

    t = run.train
    data = load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    if len(data.x_val) == 0:
        raise QuteError(f"{run.path}: the run's dataset has no validation split")
    if len(data.x_val) < window:
        raise QuteError(f"the validation split has {len(data.x_val)} images, fewer than the monitor window {window}; "
                        f"choose a smaller --window")
    tfl = run.path / TFLITE_FILE
    if tfl.is_file():
        progress(f"running the int8 model ({TFLITE_FILE}, TFLite Micro) on {len(data.x_val)} validation images")
        tflite = tfl.read_bytes()
        heads, params = int8_heads(tflite, data.x_val, run.spec.num_heads)
        probs = np.stack([dequantize(h, p) for h, p in zip(heads, params)]).astype(np.float32)
        return (summarize(probs), "int8", hashlib.sha256(tflite).hexdigest(), data.y_val,
                _int_scores(heads, params, progress))
    from qute.models import ensemble_heads

    progress(f"{run.path} has no {TFLITE_FILE}: using the float model (quantize first for device-exact thresholds)")
    load_tensorflow()
    probs = ensemble_heads(run.spec, run.load_model(), data.x_val)
    return summarize(probs), "float", None, data.y_val, None


def _int_scores(heads: np.ndarray, params, progress):
    """summarize_int of the raw heads with the scale and zero point a build derives (qute.uncertainty.int_head_quant)."""
    try:
        quant = int_head_quant((p.scale, p.zero_point) for p in params)
        return summarize_int(heads, quant["scale_q24"], quant["zero_point"]), quant
    except QuteError as e:
        progress(f"no integer-only constants (boards with no FPU get no abstain flag or monitor): {e}")
        return None


def calibrate(run_dir, score: str = DEFAULT_SCORE, target_tpr: float = DEFAULT_TPR, window: int = DEFAULT_WINDOW,
              false_alarm: float = DEFAULT_FALSE_ALARM, data_dir=None, progress=lambda s: None) -> dict:
    """Computes and writes RUN_DIR/calibration.json; returns its content."""
    score = score_name(score)
    target_tpr, window, false_alarm = _check(target_tpr, window, false_alarm)
    run = load_run(run_dir)
    s, stage, sha, y, integer = validation_scores(run, data_dir, progress, window)
    values = np.asarray(getattr(s, SCORES[score][0]), dtype=np.float32)
    thr, ok = abstain_threshold(values, score, target_tpr)
    rho, means = choose_monitor_rho(s.confidence, window, false_alarm)
    alarms = int(np.sum(means < rho))
    n = int(values.size)
    out = {
        "kind": KIND,
        "version": VERSION,
        "scores_from": stage,
        "model_sha256": sha,
        "validation": {"images": n, "accuracy": float(np.mean(s.predicted == y)),
                       "mean_confidence": float(np.mean(s.confidence.astype(np.float64)))},
        "abstain": {
            "score": score,
            "accept_when": ">=" if SCORES[score][1] else "<=",
            "target_tpr": target_tpr,
            "threshold": float(thr),
            "threshold_f32": f32_hex(thr),
            "validation_tpr": float(np.mean(ok)),
            "validation_accepted": int(np.sum(ok)),
        },
        "monitor": {
            "window": window,
            "false_alarm": false_alarm,
            "rho": float(rho),
            "rho_f32": f32_hex(rho),
            "arithmetic": "Q16 confidences, exact uint32 window sum, float32 mean (qute.monitor)",
            "validation_windows": int(means.size),
            "validation_alarms": alarms,
        },
    }
    if integer is not None:
        _add_int_constants(out, integer, score, target_tpr, window, false_alarm)
    write_atomic({Path(run.path) / CALIBRATION_FILE: (json.dumps(out, indent=2) + "\n").encode()})
    return out


def _add_int_constants(out: dict, integer, score: str, target_tpr: float, window: int, false_alarm: float) -> None:
    """The same two rules on the integer-only path's scores of the same heads (see the module docstring)."""
    si, quant = integer
    field = SCORES[score][0]
    thr, ok = abstain_threshold_int(si.raw(field), score, target_tpr)
    rho_sum, sums = choose_monitor_rho_sum(si.confidence_q16, window, false_alarm)
    out["integer_path"] = {"scale_q24": quant["scale_q24"], "zero_point": quant["zero_point"],
                           "scores": "qute.uncertainty.summarize_int of the int8 model's heads"}
    out["abstain"].update({
        "threshold_int": thr,
        "threshold_int_format": f"Q{INT_FRAC_BITS[field]}",
        "validation_accepted_int": int(np.sum(ok)),
        "validation_tpr_int": float(np.mean(ok)),
    })
    out["monitor"].update({
        "rho_sum": rho_sum,
        "arithmetic_int": "Q16 confidences (summarize_int), exact uint32 window sum, alarm iff sum < rho_sum",
        "validation_alarms_int": int(np.sum(sums < rho_sum)),
    })


def load_calibration(path: str | Path) -> Calibration:
    """Reads and checks a calibration.json (a file, or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CALIBRATION_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise QuteError(f"{path} does not exist; run qute calibrate RUN_DIR") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise QuteError(f"{path} is damaged ({e}); re-run qute calibrate") from None
    try:
        if data.get("kind") != KIND:
            raise ValueError("not a qute calibration file")
        c = Calibration(data)
        score_name(c.score)
        drift.check_window(c.window)
        if not (np.isfinite(c.threshold) and np.isfinite(c.rho)):
            raise ValueError("non-finite threshold or rho")
        if (c.threshold_int is None) != (c.rho_sum is None):
            raise ValueError("one of threshold_int and rho_sum without the other")
        if c.has_int:
            if isinstance(c.threshold_int, bool) or not isinstance(c.threshold_int, int) or not 0 <= c.threshold_int < 2**31:
                raise ValueError(f"threshold_int must be an integer in [0, 2**31), got {c.threshold_int!r}")
            drift.check_rho_sum(c.rho_sum)
    except QuteError as e:
        raise QuteError(f"{path} is damaged ({e}); re-run qute calibrate") from None
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise QuteError(f"{path} is damaged ({type(e).__name__}: {e}); re-run qute calibrate") from None
    return c


def format_calibration(c: dict, path) -> str:
    a, m, v = c["abstain"], c["monitor"], c["validation"]
    src = ("the int8 model on TFLite Micro (the numbers the device computes)" if c["scores_from"] == "int8"
           else "the float model (no model.int8.tflite yet: quantize, then calibrate, for device-exact thresholds)")
    return "\n".join([
        f"validation split: {v['images']} images, scores from {src}; accuracy {v['accuracy']:.4f}, "
        f"mean confidence {v['mean_confidence']:.4f}",
        f"abstain:  accept when {a['score']} {a['accept_when']} {a['threshold']:.9g} (float32 {a['threshold_f32']}); "
        f"accepts {a['validation_accepted']}/{v['images']} = {a['validation_tpr']:.4f} of validation (target {a['target_tpr']:g})",
        f"monitor:  alarm when the mean of the last {m['window']} confidences < rho = {m['rho']:.9g} (float32 {m['rho_f32']}); "
        f"{m['validation_alarms']} alarm(s) on {m['validation_windows']} validation windows "
        f"(allowed false-alarm rate {m['false_alarm']:g})",
        *_format_int(c),
        f"wrote {path}",
    ])


def _format_int(c: dict) -> list[str]:
    a, m, v = c["abstain"], c["monitor"], c["validation"]
    if a.get("threshold_int") is None:
        return ["integer-only boards (no FPU): no integer constants (the scores are not the int8 model's, or the file "
                "predates them); their builds get no abstain flag and no monitor"]
    q = int(a["threshold_int_format"][1:])
    return [
        f"integer-only boards (no FPU): accept when {a['score']} ({a['threshold_int_format']}) {a['accept_when']} "
        f"{a['threshold_int']} (= {a['threshold_int'] / (1 << q):.9g}); accepts {a['validation_accepted_int']}/{v['images']} "
        f"= {a['validation_tpr_int']:.4f} of validation",
        f"          alarm when the sum of the last {m['window']} Q16 confidences < rho_sum = {m['rho_sum']} "
        f"(mean < {m['rho_sum'] / (m['window'] << 16):.9g}); {m['validation_alarms_int']} alarm(s) on "
        f"{m['validation_windows']} validation windows",
    ]
