"""Early-exit policies: when a run on the device stops at an early exit, and what it then reports.

A model quantized with ``qute quantize --exits`` outputs the K heads and then the early exits
exit_0 .. exit_{E-1}; the generated C runs it stage by stage (codegen.stages) and, after each
exit's stage, the firmware asks the build's policy whether to stop. The policy scores that exit
alone (a one-head "ensemble": its confidence, margin, entropy; on the float32 or the integer path
the board uses) and stops when the score is on the confident side of the exit's threshold, the
same rule as the abstain flag's (qute.calibrate.accepted). A run that stops at exit k reports
exit k's prediction and scores; one that passes every exit reports the heads' ensemble.

The host simulation (:func:`simulate`) follows the same rule on the same arithmetic, so the
device's exit decisions, scores and everything calibrated on them are checked bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np

from codegen.stages import exit_outputs
from qute.calibrate import SCORES, accepted, accepted_int, f32_from_hex, f32_hex, score_name
from qute.errors import QuteError
from qute.int8_model import read_graph
from qute.uncertainty import INT_FRAC_BITS

NEVER = "never"
CUMULATIVE = "mean-"
WINDOW = "window-"
CALIBRATED = "calibrated"  # qute build --exit-policy calibrated: the run's POLICY_FILE
POLICY_FILE = "exit_policy.json"  # written by qute calibrate RUN --exits (qute.dynamic.calibrate_exits)


def never_threshold(score: str) -> float:
    """A threshold of `score` no exit passes: "never" in a policy's per-exit list (confidence:never,0.9)."""
    return 2.0 if SCORES[score][1] else -1.0


def threshold_text(score: str, t: float) -> str:
    """A stop threshold as a policy writes it: never_threshold as "never"."""
    return NEVER if t == never_threshold(score) else f"{t:g}"


@dataclass(frozen=True)
class ExitPolicy:
    """Stop at exit k when its `score` (a name of qute.calibrate.SCORES) passes thresholds[k];
    `cumulative`: the score of the mean of exits 0..k's softmaxes rather than exit k's alone.

    With `rejects` (a window-based cascade), exit k also stops, and rejects the input (abstain=1),
    when the score is on the uncertain side of rejects[k]: only a score inside the window between
    the two goes on to the next stage."""

    score: str
    thresholds: tuple[float, ...]
    cumulative: bool = False
    rejects: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> ExitPolicy | None:
        """``never`` (None), or ``SCORE:T`` (one threshold for every exit) or ``SCORE:T0,T1,...``
        (one per exit, ``never`` for an exit that never stops), e.g. ``confidence:0.9``,
        ``entropy:0.2,0.3,0.4`` or ``confidence:never,0.9``; ``mean-SCORE:...``
        scores the mean of the exits so far (``mean-confidence:0.9``); ``window-[mean-]SCORE:R/A,...``
        is a window-based cascade: reject at R, accept at A (``window-confidence:0.3/0.9``)."""
        text = (text or "").strip()
        if text == NEVER:
            return None
        score, sep, values = text.partition(":")
        window = score.startswith(WINDOW)
        score = score.removeprefix(WINDOW)
        cumulative = score.startswith(CUMULATIVE)
        score = score.removeprefix(CUMULATIVE)
        if not sep or score_name(score) not in SCORES:
            raise QuteError(f"exit policy {text!r}: write never, [mean-]SCORE:T[,T...] or window-[mean-]SCORE:R/A[,R/A...] "
                            f"with SCORE one of {', '.join(SCORES)} (e.g. confidence:0.9, window-confidence:0.3/0.9)")
        name = score_name(score)
        tokens = [[x.strip() for x in v.split("/")] for v in values.split(",")]
        try:
            numbers = [float(x) for p in tokens for x in p if window or x != NEVER]
            pairs = [tuple(never_threshold(name) if x == NEVER and not window else float(x) for x in p) for p in tokens]
        except ValueError:
            raise QuteError(f"exit policy {text!r}: thresholds must be numbers separated by commas"
                            + ("" if window else " (never for an exit that never stops)")) from None
        if any(len(p) != (2 if window else 1) for p in pairs):
            raise QuteError(f"exit policy {text!r}: " + ("a window is REJECT/ACCEPT for each exit, e.g. 0.3/0.9" if window
                                                        else "one number per exit (REJECT/ACCEPT pairs need window-)"))
        if not np.isfinite(np.array(numbers)).all():
            raise QuteError(f"exit policy {text!r}: thresholds must be finite")
        score = name
        # confidence and margin are probabilities; entropy and mutual information are never below 0.
        # Any other threshold never (or always) stops: most likely a typo such as 95 for 0.95.
        bounded = SCORES[score][1]
        given = np.array(numbers)
        if (given < 0).any() or (bounded and (given > 1).any()):
            raise QuteError(f"exit policy {text!r}: {score} thresholds must lie in "
                            + ("[0, 1] (e.g. 0.95, not 95)" if bounded else "[0, inf) (nats)"))
        if window:
            higher = SCORES[score][1]
            if any((r > a) if higher else (r < a) for r, a in pairs):
                raise QuteError(f"exit policy {text!r}: each window's reject threshold must lie on the uncertain side "
                                f"of its accept threshold ({'R <= A' if higher else 'R >= A'} for {score})")
            return cls(score, tuple(a for _, a in pairs), cumulative, tuple(r for r, _ in pairs))
        return cls(score, tuple(p[0] for p in pairs), cumulative)

    def for_exits(self, exits: int) -> ExitPolicy:
        """The policy with one threshold per exit of a model with `exits` exits."""
        if exits == 0:
            raise QuteError("the model has no early exits (quantize it with qute quantize --exits) for an exit policy")
        if len(self.thresholds) == 1:
            return dataclasses.replace(self, thresholds=self.thresholds * exits,
                                       rejects=None if self.rejects is None else self.rejects * exits)
        if len(self.thresholds) != exits:
            raise QuteError(f"the exit policy has {len(self.thresholds)} thresholds; the model has {exits} exits "
                            "(give one threshold for all, or one per exit)")
        return self

    @property
    def field(self) -> str:
        return SCORES[self.score][0]

    def thresholds_int(self, values=None) -> list[int]:
        """Each threshold (or each of `values`) in the integer path's format of the score (Q16 or
        Q20), rounded towards the confident side's boundary so that the integer rule keeps the
        real one's meaning."""
        one = 1 << INT_FRAC_BITS[self.field]
        higher = SCORES[self.score][1]
        return [int(np.ceil(t * one)) if higher else int(np.floor(t * one))
                for t in (self.thresholds if values is None else values)]

    def to_dict(self, arithmetic: str) -> dict:
        """What build.json records and the firmware compiles in, for the "float" or "int" path."""
        d = {"score": self.score, "field": self.field, "thresholds": list(self.thresholds), "arithmetic": arithmetic,
             "stop_when": ">=" if SCORES[self.score][1] else "<=", "cumulative": self.cumulative}
        if arithmetic == "int":
            d["thresholds_int"] = self.thresholds_int()
        else:
            d["thresholds_f32"] = [f32_hex(t) for t in self.thresholds]
        if self.rejects is not None:
            d["rejects"] = list(self.rejects)
            if arithmetic == "int":
                d["rejects_int"] = self.thresholds_int(self.rejects)
            else:
                d["rejects_f32"] = [f32_hex(t) for t in self.rejects]
        return d

    def describe(self) -> str:
        side = "at least" if SCORES[self.score][1] else "at most"
        ts = ", ".join(threshold_text(self.score, t) for t in self.thresholds)
        whose = "the mean of exits 0..k's" if self.cumulative else "its own"
        text = f"stop at exit k when {whose} {self.score} is {side} threshold k ({ts})"
        if self.rejects is not None:
            text += (", and stop and reject (abstain) when it is on the other side of "
                     + ", ".join(f"{t:g}" for t in self.rejects))
        return text

    def spec(self) -> str:
        """The policy as qute build --exit-policy takes it."""
        head = f"{WINDOW if self.rejects is not None else ''}{CUMULATIVE if self.cumulative else ''}{self.score}:"
        if self.rejects is not None:
            return head + ",".join(f"{r:g}/{a:g}" for r, a in zip(self.rejects, self.thresholds))
        return head + ",".join(threshold_text(self.score, t) for t in self.thresholds)


def load_policy(run_dir, model_sha256: str) -> ExitPolicy:
    """The thresholds `qute calibrate RUN --exits ...` chose for this run's int8 model."""
    path = Path(run_dir) / POLICY_FILE
    if not path.is_file():
        raise QuteError(f"{run_dir} has no {POLICY_FILE}: choose thresholds first with qute calibrate {run_dir} --exits budget:0.8 "
                        "(or give --exit-policy SCORE:T)")
    try:
        doc = json.loads(path.read_text())
        p = doc["policy"]
        policy = ExitPolicy(score_name(p["score"]), tuple(float(t) for t in p["thresholds"]), bool(p.get("cumulative")))
    except (ValueError, KeyError, TypeError) as e:
        raise QuteError(f"{path} is damaged ({type(e).__name__}: {e}); re-run qute calibrate {run_dir} --exits ...") from None
    if doc.get("model_sha256") != model_sha256:
        raise QuteError(f"{path} was made for another int8 model; re-run qute calibrate {run_dir} --exits {doc.get('goal', '...')}")
    return policy


def stops(policy: dict, k: int, values: np.ndarray, key: str = "thresholds") -> np.ndarray:
    """Where exit k's score `values` pass its threshold under build.json's policy (its
    arithmetic); key "rejects": a window policy's reject threshold instead."""
    if policy["arithmetic"] == "int":
        return accepted_int(values, policy["score"], policy[f"{key}_int"][k])
    return accepted(values, policy["score"], f32_from_hex(policy[f"{key}_f32"][k]))


def rejected(exit_scores: list, policy: dict | None, taken_: np.ndarray) -> np.ndarray:
    """Per sample, whether a window policy stopped it to reject it (not accepted at the exit
    taken: its score is on the uncertain side of that exit's reject threshold)."""
    out = np.zeros(len(taken_), dtype=bool)
    if policy is None or "rejects" not in policy:
        return out
    for k in range(len(exit_scores)):
        at = taken_ == k
        out[at] = ~stops(policy, k, score_values(exit_scores[k], policy))[at]
    return out


def score_values(scores, policy: dict) -> np.ndarray:
    """The policy's score of each sample, as the device holds it (float32, or the raw integer)."""
    if policy["arithmetic"] == "int":
        return np.asarray(scores.raw(policy["field"]), dtype=np.int64)
    return np.asarray(getattr(scores, policy["field"]), dtype=np.float32)


def exit_scores(path, layout, outputs: list[np.ndarray], cumulative: bool = False) -> list:
    """What the policy scores at each exit, on the board's arithmetic `path` (qute.expectation):
    exit k's softmax alone, or (`cumulative`) the mean of exits 0..k's. `outputs` are every model
    output in the layout's order; the exits are the last ones, one after the other."""
    first = layout.exits[0] if layout.exits else 0
    if cumulative:
        return [path.scores(layout, [outputs[i] for i in layout.exits[: k + 1]], first=first)
                for k in range(len(layout.exits))]
    return [path.scores(layout, [outputs[i]], first=i) for i in layout.exits]


def taken(exit_scores: list, policy: dict | None) -> np.ndarray:
    """Per sample, the exit its run stops at (len(exit_scores): none, the run reached the heads),
    given each exit's scores alone (qute.uncertainty.Scores or IntScores, one per exit)."""
    n = len(exit_scores[0].predicted) if exit_scores else 0
    out = np.full(n, len(exit_scores), dtype=np.int64)
    if policy is None:
        return out
    for k in reversed(range(len(exit_scores))):  # the first exit that stops wins
        values = score_values(exit_scores[k], policy)
        stop = stops(policy, k, values)
        if "rejects" in policy:
            stop |= ~stops(policy, k, values, "rejects")
        out[stop] = k
    return out


def pick(candidates: list, which: np.ndarray):
    """Per sample i the scores of candidates[which[i]] (all of one type: Scores or IntScores)."""
    first = candidates[0]
    fields = {}
    for f in dataclasses.fields(first):
        stack = np.stack([getattr(c, f.name) for c in candidates])
        fields[f.name] = stack[np.asarray(which), np.arange(stack.shape[1])]
    return type(first)(**fields)


def cut_at_exit(tflite_bytes: bytes, k: int) -> bytes:
    """The int8 model with only what exit_k needs: the ops its output depends on (all within
    stages 0..k of codegen.stages, earlier exits' branches left out) and exit_k as its one output,
    renamed head_0 (signature and tensor: the firmware then reports that exit's own scores). For a
    board the whole model does not fit (qute build --fit deepest-exit). Tensors and buffers no kept
    op uses stay in the file and are never read."""
    from ai_edge_litert import schema_py_generated as fb

    exits = exit_outputs(read_graph(tflite_bytes))  # by signature name, else tensor name
    if not 0 <= k < len(exits):
        raise QuteError(f"the model has no output exit_{k} to cut at")
    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    sg = model.subgraphs[0]
    target = exits[k]
    sg.tensors[target].name = b"head_0"  # for a model without a signature
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in (op.outputs if op.outputs is not None else [])}
    keep, todo = set(), [target]
    while todo:
        i = producer.get(int(todo.pop()))
        if i is None or i in keep:
            continue
        keep.add(i)
        todo.extend(int(t) for t in (sg.operators[i].inputs if sg.operators[i].inputs is not None else []) if t >= 0)
    sg.operators = [op for i, op in enumerate(sg.operators) if i in keep]
    sg.outputs = np.array([target], dtype=np.int32)
    out = fb.TensorMapT()
    out.name, out.tensorIndex = b"head_0", target
    for sig in model.signatureDefs or []:
        sig.outputs = [out]
    builder = flatbuffers.Builder(len(tflite_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
