"""What the firmware must print for each input, and how a device's transcript is held against it.

The host side of bit-exactness has one owner, this module:

* the output bytes: TFLite Micro's reference kernels (:func:`qute.oracle.reference`) on the same
  int8 inputs, in the generated model's output order (head_0, head_1, ...);
* the uncertainty scores the device computes from its heads: float32 :func:`qute.uncertainty.summarize`
  on boards with an FPU, the integer-only :func:`qute.uncertainty.summarize_int` on boards without.
  The choice is made once, by :func:`arithmetic` (a :class:`FloatPath` or an :class:`IntPath`),
  and everything that differs between the two (which field a sample line carries, how two
  values are "the same", the monitor's window statistic) is a method of that object;
* the early-exit decisions of a build with an exit policy (:mod:`qute.exits`): which exit each run
  stops at, which outputs it computed, and the scores it reports (that exit's, or the heads');
* the calibrated decisions: abstain flags and the accuracy-drop monitor's window statistic and
  alarms (:mod:`qute.drift`), from the build's compiled-in calibration, on the reported scores;
* the summary line (``QUTE done ...``), which ``qute build`` writes into build.json.

``qute build`` (the summary line), ``qute run`` (:func:`qute.emulate.check`), ``qute monitor``
(the timeline's host side) and the device stage of ``qute eval`` all take their expectation from
:meth:`Expectation.of` or :meth:`Expectation.from_build`.

The scores and decisions a transcript is compared with are computed from the heads the device
printed, not from the oracle's: a wrong output byte is then counted once, as a byte, and the
uncertainty module is still checked on its own input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from codegen.emit import generate
from codegen.ir import CodegenError
from codegen.stages import is_exit
from qute import exits as exit_rules
from qute.calibrate import accepted, accepted_int, f32_from_hex
from qute.drift import Q16, first_alarm, simulate, simulate_int
from qute.errors import QuteError
from qute.int8_model import QuantParams, dequantize, read_graph
from qute.transcript import done_line, outputs_crc32
from qute.uncertainty import int_head_quant, summarize, summarize_int


@dataclass(frozen=True)
class HeadLayout:
    """The model's outputs as the firmware prints them: API order, each with name, size (values),
    dtype (int8, or int16 for a widened softmax head), scale and zero point and its index among
    the flatbuffer's outputs; `ensemble` when the heads are K probability vectors of one length
    (`classes`), which is when the device computes scores. The heads come first; `exits` are the
    output indices of the early exits exit_0, exit_1, ... after them (codegen.stages)."""

    outputs: list[dict]
    ensemble: bool
    classes: int
    exits: tuple[int, ...] = ()

    @classmethod
    def from_manifest(cls, m) -> HeadLayout:
        """From a build's qute.build.manifest.Manifest."""
        return cls(m.outputs, bool(m.ensemble), int(m.classes), tuple(i for i, o in enumerate(m.outputs) if is_exit(o["name"])))

    @property
    def num_heads(self) -> int:
        return len(self.outputs) - len(self.exits)

    def computed(self, taken: np.ndarray) -> np.ndarray:
        """(N, outputs) bool: the outputs a run computed when it stopped at exit taken[i]
        (len(exits): it ran to the end and computed them all)."""
        taken = np.asarray(taken)
        k = np.arange(len(self.outputs))
        exit_of = np.where(k < self.num_heads, len(self.exits), k - self.num_heads)  # the stage that computes output k
        return exit_of[None, :] <= taken[:, None]

    def dequantize(self, heads: list[np.ndarray], first: int = 0) -> np.ndarray:
        """(K, N, C) float32 probabilities of outputs first, first + 1, ... (the heads by default),
        each with its own scale and zero point."""
        return np.stack([dequantize(h, QuantParams(o["scale"], o["zero_point"]))
                         for h, o in zip(heads, self.outputs[first:])])

    def dtype(self, k: int) -> np.dtype:
        """Output k's values: int8, or little-endian int16 (builds from before int16 heads say nothing: int8)."""
        return np.dtype("<i2") if self.outputs[k].get("dtype") == "int16" else np.dtype(np.int8)

    def values(self, k: int, raw: np.ndarray) -> np.ndarray | None:
        """Output k's values from the bytes a sample line printed; None when the byte count is wrong."""
        raw = np.ascontiguousarray(raw, dtype=np.int8)
        dt = self.dtype(k)
        if raw.size != self.outputs[k]["size"] * dt.itemsize:
            return None
        return raw.view(dt).astype(dt.newbyteorder("="))


@dataclass
class ModelFacts:
    """The generated model and what the application needs to know about it."""

    gen: object  # codegen.emit.Generated
    graph: object
    layout: HeadLayout
    input_size: int

    @property
    def outputs(self) -> list[dict]:
        return self.layout.outputs

    @property
    def ensemble(self) -> bool:
        return self.layout.ensemble

    @property
    def classes(self) -> int:
        return self.layout.classes


def model_facts(tflite: bytes, weights16: bool = False) -> ModelFacts:
    graph = read_graph(tflite, "the model")
    if len(graph.inputs) != 1:
        raise QuteError(f"qute build takes single-input models; this one has {len(graph.inputs)} inputs")
    try:
        gen = generate(graph, weights16=weights16)
    except CodegenError as e:
        raise QuteError(str(e)) from None
    outputs = []
    for t in gen.output_order:
        x = graph.tensor(t)
        scale, zp = x.qparams()
        outputs.append({"name": graph.output_label(t), "size": int(x.size), "dtype": x.dtype,
                        "scale": float(np.float32(scale)), "zero_point": int(zp), "flatbuffer_index": graph.outputs.index(t)})

    def probabilities(o):  # the output's integer range maps into [0, 1]
        info = np.iinfo(o["dtype"])
        with np.errstate(over="ignore"):  # a huge scale is simply not a probability
            lo = np.float32(int(info.min) - o["zero_point"]) * np.float32(o["scale"])
            hi = np.float32(int(info.max) - o["zero_point"]) * np.float32(o["scale"])
        return lo >= 0 and hi <= 1

    exits = tuple(gen.exits)
    heads = [o for i, o in enumerate(outputs) if i not in exits]
    ensemble = (len({o["size"] for o in heads}) == 1 and heads[0]["size"] >= 2 and len({o["dtype"] for o in heads}) == 1
                and all(probabilities(o) for o in heads))
    layout = HeadLayout(outputs, ensemble, heads[0]["size"] if ensemble else 0, exits)
    return ModelFacts(gen, graph, layout, int(graph.tensor(graph.inputs[0]).size))


def reference_outputs(tflite: bytes, layout: HeadLayout, inputs: np.ndarray) -> tuple[list[np.ndarray], str]:
    """The host int8 reference (TFLM; see qute.oracle.reference) in the generated model's output
    order, each (N, size), and the engine that computed it."""
    from qute import oracle

    x = np.asarray(inputs, dtype=np.int8)
    outs, engine = oracle.reference(bytes(tflite), [x])
    return [np.asarray(outs[o["flatbuffer_index"]]).reshape(len(x), -1) for o in layout.outputs], engine


# --------------------------------------------------------------------------- the two arithmetics


@dataclass(frozen=True)
class Decisions:
    """The calibrated decisions per sample: the score compared with the threshold (`values`), the
    abstain flags, the monitor's window statistic (`window`: float32 means or exact integer sums),
    where the window is full, and the alarms."""

    values: np.ndarray
    abstain: np.ndarray
    window: np.ndarray
    full: np.ndarray
    alarms: np.ndarray


class FloatPath:
    """Boards with an FPU: float32 scores (``scores=`` bit patterns), float32 window means."""

    kind = "float32"
    name = "float"  # as build.json's calibration says
    field = "scores"
    missing = "no scores= on an ensemble model"

    def scores(self, layout: HeadLayout, heads: list[np.ndarray], first: int = 0):
        """The scores of outputs first, first + 1, ... as one ensemble."""
        return summarize(layout.dequantize(heads, first))

    def rows(self, scores) -> np.ndarray:
        """(N, 4) float32: confidence, margin, entropy, mutual information, as ``scores=`` prints them."""
        return np.stack([scores.confidence, scores.margin, scores.entropy, scores.mutual_information],
                        axis=1).astype(np.float32)

    def device_row(self, sample):
        return sample.scores

    def differing(self, got, want: np.ndarray) -> int:
        """How many of a sample's four scores differ bit for bit (all four when the line has none)."""
        if got is None:
            return int(want.size)
        return int(np.sum(np.asarray(got, dtype=np.float32).view(np.uint32) != np.asarray(want, np.float32).view(np.uint32)))

    def decisions(self, scores, cal: dict) -> Decisions:
        values = np.asarray(getattr(scores, cal["score_field"]), dtype=np.float32)
        abstain = ~accepted(values, cal["score"], f32_from_hex(cal["threshold_f32"]))
        window, alarms = simulate(scores.confidence, cal["window"], f32_from_hex(cal["rho_f32"]))
        return Decisions(values, abstain, window, ~np.isnan(window), alarms)

    def device_decision(self, sample) -> tuple:
        """(score, window statistic) of a sample line, None where it has none."""
        return sample.score, sample.window_mean

    def same(self, device, host) -> bool:
        return bool(np.float32(device).view(np.uint32) == np.float32(host).view(np.uint32))

    def confidence(self, sample) -> float:
        """A sample line's confidence as a real, for plots and tables (NaN without scores)."""
        return np.nan if sample is None or sample.scores is None else float(np.float32(sample.scores[0]))

    def means(self, statistics, window: int) -> np.ndarray:
        """Window statistics (the device's, None where it printed none, or the host's) as mean
        confidences, NaN where the window is not full."""
        return np.array([np.nan if v is None else float(v) for v in statistics], dtype=np.float64)


@dataclass(frozen=True)
class IntPath:
    """Boards with no FPU: integer scores (``iscores=``: Q16 confidence and margin, Q20 entropy
    and mutual information), exact integer window sums. `params` is build.json's
    ``uncertainty_path``: the heads' shared scale as Q24 and their zero point (:func:`int_head_quant`)."""

    params: dict
    kind = "int"
    name = "int"
    field = "iscores"
    missing = "no iscores= on an integer-only ensemble build"

    def scores(self, layout: HeadLayout, heads: list[np.ndarray], first: int = 0):
        return summarize_int(np.stack([np.asarray(h, dtype=layout.dtype(first + k)) for k, h in enumerate(heads)]),
                             self.params["scale_q24"], self.params["zero_point"])

    def rows(self, scores) -> np.ndarray:
        return np.stack([scores.confidence_q16, scores.margin_q16, scores.entropy_q20, scores.mutual_information_q20],
                        axis=1).astype(np.int64)

    def device_row(self, sample):
        return sample.iscores

    def differing(self, got, want: np.ndarray) -> int:
        if got is None:
            return int(want.size)
        return int(np.sum(np.asarray(got, dtype=np.int64) != want))

    def decisions(self, scores, cal: dict) -> Decisions:
        values = np.asarray(scores.raw(cal["score_field"]), dtype=np.int64)
        abstain = ~accepted_int(values, cal["score"], cal["threshold_int"])
        window, alarms = simulate_int(scores.confidence_q16, cal["window"], cal["rho_sum"])
        return Decisions(values, abstain, window, window >= 0, alarms)

    def device_decision(self, sample) -> tuple:
        return sample.iscore, sample.window_sum

    def same(self, device, host) -> bool:
        return int(device) == int(host)

    def confidence(self, sample) -> float:
        return np.nan if sample is None or sample.iscores is None else sample.iscores[0] / Q16

    def means(self, statistics, window: int) -> np.ndarray:
        """Exact window sums (-1 or None: not full) as mean confidences, only for plots and tables."""
        return np.array([np.nan if v is None or v < 0 else v * (1.0 / (window * Q16)) for v in statistics], dtype=np.float64)


def int_path_for(board, layout: HeadLayout) -> dict | None:
    """The integer-only path's parameters for an ensemble on a board with no FPU, else None."""
    if board.fpu != "none" or not layout.ensemble:
        return None
    try:
        return int_head_quant((o["scale"], o["zero_point"]) for o in layout.outputs)
    except QuteError as e:
        raise QuteError(f"{board.name} has no FPU, and {e}") from None


Arithmetic = FloatPath | IntPath


def arithmetic(layout: HeadLayout, uncertainty_path: dict | None) -> Arithmetic | None:
    """The device's uncertainty arithmetic: None for a model that is not an ensemble classifier
    (no scores), an IntPath for build.json's ``uncertainty_path`` of kind "int", else a FloatPath."""
    if not layout.ensemble:
        return None
    up = uncertainty_path or {}
    return IntPath(params=up) if up.get("kind") == "int" else FloatPath()


# --------------------------------------------------------------------------- the expectation


@dataclass
class Expectation:
    """What the firmware must print for the inputs `x` (int8, one row per input)."""

    layout: HeadLayout
    heads: list[np.ndarray]  # the oracle's outputs (int8, or int16 heads), output order, (N, size) each
    engine: str  # what computed them (qute.oracle.reference)
    path: Arithmetic | None  # the device's uncertainty arithmetic; None: no scores
    labels: np.ndarray | None = None
    calibration: dict | None = None  # build.json's compiled-in calibration
    exit_policy: dict | None = None  # build.json's early-exit policy (qute.exits.ExitPolicy.to_dict)
    _oracle: tuple | None = field(default=None, init=False, repr=False, compare=False)  # _decide() of the oracle's outputs

    @classmethod
    def of(cls, tflite: bytes, layout: HeadLayout, x: np.ndarray, uncertainty_path: dict | None = None,
           labels: np.ndarray | None = None, calibration: dict | None = None,
           exit_policy: dict | None = None) -> Expectation:
        heads, engine = reference_outputs(tflite, layout, x)
        return cls(layout, heads, engine, arithmetic(layout, uncertainty_path), labels, calibration, exit_policy)

    @classmethod
    def from_build(cls, build, x: np.ndarray | None = None) -> Expectation:
        """For a build (qute.build.load_build): its embedded inputs and labels, or the inputs `x`
        (no labels) that a UART build is sent."""
        m = build.manifest
        labels = None
        if x is None:
            x, y = build.inputs()
            labels = y if m.inputs.labelled else None
        return cls.of(build.tflite(), HeadLayout.from_manifest(m), x, m.uncertainty_path, labels,
                      m.calibration, m.exit_policy)

    @property
    def samples(self) -> int:
        return len(self.heads[0]) if self.heads else 0

    def report(self, outputs: list[np.ndarray] | None = None) -> tuple[np.ndarray, object]:
        """What each run reports from `outputs` (the oracle's by default): the exit it stops at
        (len(exits): it ran to the end) and the scores it reports, the stopping exit's own or the
        heads' ensemble (None without a path)."""
        return self._decide(outputs)[:2]

    def _decide(self, outputs: list[np.ndarray] | None = None) -> tuple[np.ndarray, object, np.ndarray]:
        """(exit taken, reported scores, rejected by a window policy) per sample; computed once
        for the oracle's outputs, which the build, the run check and the summary all ask for."""
        if outputs is None and self._oracle is not None:
            return self._oracle
        outs = self.heads if outputs is None else outputs
        n_exits = len(self.layout.exits)
        n = len(outs[0]) if outs else 0
        p = self.exit_policy
        if self.path is None:
            found = np.full(n, n_exits, dtype=np.int64), None, np.zeros(n, dtype=bool)
        else:
            ensemble = self.path.scores(self.layout, outs[: self.layout.num_heads])
            if p is None or not n_exits:
                found = np.full(n, n_exits, dtype=np.int64), ensemble, np.zeros(n, dtype=bool)
            else:
                per_exit = exit_rules.exit_scores(self.path, self.layout, outs, p.get("cumulative", False))
                taken = exit_rules.taken(per_exit, p)
                found = taken, exit_rules.pick(per_exit + [ensemble], taken), exit_rules.rejected(per_exit, p, taken)
        if outputs is None:
            self._oracle = found
        return found

    def scores(self, heads: list[np.ndarray] | None = None):
        """The scores the device reports from `heads` (every output, the oracle's by default);
        None without a path."""
        return self.report(heads)[1]

    def rejected(self) -> np.ndarray:
        """Per sample (the oracle's outputs), whether a window exit policy stopped it to reject it."""
        return self._decide()[2]

    def decisions(self, scores) -> Decisions | None:
        """The calibrated decisions on the reported `scores`; a window policy's rejections abstain too."""
        if not self.calibration or scores is None:
            return None
        d = self.path.decisions(scores, self.calibration)
        return dataclasses.replace(d, abstain=d.abstain | self.rejected())

    def done_line(self) -> str:
        """The firmware's summary line for these inputs: count, CRC-32 of every output byte and,
        with labels, how many ensemble predictions are right (0 for a model with no scores)."""
        n = self.samples
        taken, scores = self.report()
        computed = self.layout.computed(taken)
        crc = outputs_crc32([[h[s] for k, h in enumerate(self.heads) if computed[s, k]] for s in range(n)])
        correct = None
        if self.labels is not None:
            correct = int(np.sum(scores.predicted == self.labels)) if scores is not None else 0
        return done_line(n, crc, correct)


# --------------------------------------------------------------------------- holding a transcript against it


@dataclass
class Comparison:
    """A transcript's samples against an expectation, counted byte by byte and score by score."""

    device_heads: list[np.ndarray]  # (N, size) per output; zeros where a sample is missing or did not compute it
    present: np.ndarray  # bool per sample: its line is there with outputs of the right sizes
    per_output: list[dict]  # name, bytes, differing
    problems: list[str]
    scores: object = None  # the device arithmetic's scores of the device's heads (None: no path)
    scores_compared: int = 0
    scores_differing: int = 0
    predictions_differing: int = 0
    taken: np.ndarray | None = None  # early-exit builds: the exit each device run stopped at (-1: no line)
    exits_differing: int = 0  # samples whose exit= differs from the host's decision
    rejected: np.ndarray | None = None  # window policies: the device's abstain=1 (uncalibrated builds; -1: no line)
    rejects_differing: int = 0  # uncalibrated window builds: abstain flags that differ from the host's rejections

    @property
    def bytes_compared(self) -> int:
        return sum(p["bytes"] for p in self.per_output)

    @property
    def bytes_differing(self) -> int:
        return sum(p["differing"] for p in self.per_output)


def _bytes(values: np.ndarray) -> np.ndarray:
    """(N, bytes) uint8: each sample's values as the firmware stores them (little-endian)."""
    v = np.ascontiguousarray(values)
    return v.astype(v.dtype.newbyteorder("<")).view(np.uint8).reshape(len(v), -1)


def compare(samples, expectation: Expectation) -> Comparison:
    """The device's sample lines (qute.transcript.Sample, any order) against `expectation`: output
    bytes (a missing sample counts as all its bytes wrong), then the scores the device printed
    against the device arithmetic on the heads it printed, and its predictions.

    Early-exit builds: a line leaves empty the outputs its run did not compute (by its own
    exit=); the bytes compared are those the host's decision computes, and an exit= that differs
    from the host's is counted in `exits_differing`. The reported scores are recomputed from the
    outputs the device printed, the oracle's standing in for the ones it did not compute."""
    e = expectation
    n = e.samples
    n_exits = len(e.layout.exits)
    got = {s.index: s for s in samples}
    problems = []
    want_taken, _ = e.report()
    want_computed = e.layout.computed(want_taken)
    device = [np.zeros_like(r) for r in e.heads]
    filled = [np.array(r, copy=True) for r in e.heads]  # what the device's scores are recomputed from
    present = np.zeros(n, dtype=bool)
    taken = np.full(n, -1, dtype=np.int64)
    printed = np.zeros((n, len(e.heads)), dtype=bool)
    for i in range(n):
        s = got.get(i)
        if s is None:
            continue
        t = n_exits if getattr(s, "exit", None) is None else int(s.exit)
        if not 0 <= t <= n_exits:
            problems.append(f"sample {i}: exit={t}, the model has {n_exits} exit(s)")
            continue
        claims = e.layout.computed(np.array([t]))[0]
        values = [e.layout.values(k, h) if claims[k] else (h if len(h) == 0 else None) for k, h in enumerate(s.heads)]
        if len(s.heads) != len(e.heads) or any(v is None for v in values):
            problems.append(f"sample {i}: {len(s.heads)} output(s) of {[len(h) for h in s.heads]} bytes, "
                            f"expected {[r[0].nbytes if claims[k] else 0 for k, r in enumerate(e.heads)]}")
            continue
        present[i], taken[i], printed[i] = True, t, claims
        for k, v in enumerate(values):
            if claims[k]:
                device[k][i] = v
                filled[k][i] = v
    per_output = []
    for k, (o, r, d) in enumerate(zip(e.layout.outputs, e.heads, device)):
        diff = _bytes(d) != _bytes(r)  # an int16 value is two bytes: count the bytes that differ
        diff[~(present & printed[:, k])] = True
        diff[~want_computed[:, k]] = False  # the host's run did not compute it: nothing to compare
        per_output.append({"name": o["name"], "bytes": int(r.nbytes // max(1, n) * want_computed[:, k].sum()),
                           "differing": int(diff.sum())})
    c = Comparison(device, present, per_output, problems, taken=taken if n_exits else None)
    if n_exits:
        c.exits_differing = int(np.sum(taken != want_taken))
    if e.exit_policy and "rejects" in e.exit_policy and not e.calibration:  # calibrated: compare_decisions
        c.rejected = np.array([-1 if i not in got or got[i].abstain is None else int(got[i].abstain) for i in range(n)])
        c.rejects_differing = int(np.sum(c.rejected != e.rejected().astype(int)))
    if e.path is None:
        return c
    _, c.scores = e.report(filled)
    want = e.path.rows(c.scores)
    for i in np.flatnonzero(present):
        s = got[i]
        c.scores_compared += want.shape[1]
        c.scores_differing += e.path.differing(e.path.device_row(s), want[i])  # a line without scores: all four
        if e.path.device_row(s) is None:
            problems.append(f"sample {i}: {e.path.missing}")
            continue
        c.predictions_differing += int(s.pred != int(c.scores.predicted[i]))
    return c


def scores_differing(samples, path: Arithmetic, scores) -> int:
    """How many of the device's four scores per sample line differ from `scores`' bit for bit
    (a line without scores counts all four)."""
    want = path.rows(scores)
    return sum(path.differing(path.device_row(s), w) for s, w in zip(samples, want))


def compare_decisions(samples, expectation: Expectation, scores, present: np.ndarray) -> dict:
    """The device's abstain flags, scores against the threshold, window statistics and alarms
    against the host's decisions on `scores`; {} for a build with no calibration compiled in."""
    e = expectation
    want = e.decisions(scores)
    if want is None:
        return {}
    cal, path, n = e.calibration, e.path, e.samples
    got = {s.index: s for s in samples}
    a_diff = mean_diff = alarm_diff = score_diff = 0
    alarms_dev = np.zeros(n, dtype=bool)
    abstain_dev = np.zeros(n, dtype=bool)
    for i in range(n):
        s = got.get(i)
        if s is None or not present[i] or s.abstain is None or s.alarm is None:
            a_diff += 1
            mean_diff += 1
            alarm_diff += 1
            continue
        abstain_dev[i], alarms_dev[i] = s.abstain, s.alarm
        score, window = path.device_decision(s)
        score_diff += int(score is None or not path.same(score, want.values[i]))
        a_diff += int(s.abstain != bool(want.abstain[i]))
        alarm_diff += int(s.alarm != bool(want.alarms[i]))
        if not want.full[i]:
            mean_diff += int(window is not None)
        else:
            mean_diff += int(window is None or not path.same(window, want.window[i]))
    integer = path.name == "int"
    return {
        "arithmetic": path.name,
        "score": cal["score"], "threshold": cal["threshold"], "window": cal["window"], "rho": cal["rho"],
        **({"threshold_int": cal["threshold_int"], "rho_sum": cal["rho_sum"]} if integer else {}),
        "abstained_device": int(abstain_dev.sum()), "abstained_host": int(want.abstain.sum()),
        "alarms_device": int(alarms_dev.sum()), "alarms_host": int(want.alarms.sum()),
        "first_alarm_device": first_alarm(alarms_dev), "first_alarm_host": first_alarm(want.alarms),
        # mean_differing: the window statistic, float32 means or (integer builds) exact sums
        "abstain_differing": a_diff, "mean_differing": mean_diff, "alarm_differing": alarm_diff,
        "score_differing": score_diff,
        "differing": a_diff + mean_diff + alarm_diff + score_diff,
    }
