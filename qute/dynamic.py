"""Early-exit inference measured: what a run costs on the device when it stops at each exit, and
accuracy, calibration and OOD detection against that cost for an exit policy (qute eval --dynamic).

The exit decisions are computed on the host with the board's own arithmetic (qute.exits on the
outputs of the int8 model on TFLite Micro): the device makes the same decisions bit for bit (qute
run checks it), so the whole test set needs no emulator. What each outcome costs does: for every
exit k the firmware is built with a policy that always stops there (and once with none), run
under QEMU, and its mean count per inference, the model plus its uncertainty scores, is the cost
of stopping at k. A policy's mean cost is then the costs weighted by how often each exit is taken.

Threshold choice under a budget (``budget:F``: the most accurate thresholds whose mean cost on the
validation split is at most F times the cost of running to the end; ``accuracy:A``: the cheapest
that keep validation accuracy at least A) searches one shared threshold, then each exit's alone.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qute import data as qdata, exits as exit_rules
from qute.boards import load_board
from qute.build import build as make_build
from qute.build.manifest import load_build
from qute.calibrate import score_name
from qute.emulate import check, execute
from qute.errors import QuteError, RunFailure
from qute.expectation import HeadLayout, arithmetic, int_path_for, model_facts
from qute.int8_model import TFLITE_FILE, input_params, quantize
from qute.run import load_run, write_atomic
from qute.uncertainty import uncertainty_score

COSTS_FILE = "exit_costs.json"
COST_SAMPLES = 10

# thresholds tried per score, from lenient (the first: every run stops at exit 0) to strict
GRIDS = {
    "confidence": (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999),
    "margin": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995),
    "entropy": (100.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01),
    "mi": (100.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001),
}


@dataclass
class ExitOutputs:
    """The int8 model's outputs on a set of images (TFLite Micro) and what the board's arithmetic
    makes of them: at each exit the scores of its softmax alone and of the mean of the exits so
    far, the heads' ensemble scores, and the probability vector each outcome reports (float32)."""

    layout: HeadLayout
    path: object  # qute.expectation.FloatPath or IntPath
    alone: list  # per exit: its own scores
    cumulative: list  # per exit k: the scores of the mean of exits 0..k
    ensemble: object
    probs_alone: list[np.ndarray]  # per exit (N, C), then the heads' mean
    probs_cumulative: list[np.ndarray]

    @property
    def exits(self) -> int:
        return len(self.alone)

    def _which(self, policy: dict | None):
        if policy is not None and policy.get("cumulative"):
            return self.cumulative, self.probs_cumulative
        return self.alone, self.probs_alone

    def taken(self, policy: dict | None) -> np.ndarray:
        return exit_rules.taken(self._which(policy)[0], policy)

    def reported(self, taken: np.ndarray, policy: dict | None = None):
        """(probabilities (N, C), scores) each sample reports under `policy`."""
        scores, probs = self._which(policy)
        chosen = np.stack(probs)[np.asarray(taken), np.arange(len(taken))]
        return chosen, exit_rules.pick(scores + [self.ensemble], taken)


def exit_outputs(tflite: bytes, x: np.ndarray, board) -> ExitOutputs:
    """Runs the int8 model with exits on TFLite Micro on float images `x` (model-input space)."""
    from qute import oracle

    facts = model_facts(tflite)
    layout = facts.layout
    if not layout.exits:
        raise QuteError("the model has no early exits; quantize the run with: qute quantize RUN --exits")
    if not facts.ensemble:
        raise QuteError("early-exit evaluation needs an ensemble classifier (softmax heads)")
    path = arithmetic(layout, int_path_for(board, layout) or {"kind": "float"})
    xq = quantize(x, input_params(tflite))
    outs, _ = oracle.reference(bytes(tflite), [xq])
    outs = [np.asarray(outs[o["flatbuffer_index"]]).reshape(len(xq), -1) for o in layout.outputs]
    h = layout.num_heads
    ensemble = path.scores(layout, outs[:h])
    mean = layout.dequantize(outs[:h]).mean(axis=0, dtype=np.float32)
    alone = [layout.dequantize([outs[i]], first=i)[0] for i in layout.exits]
    cumulative = [np.mean(alone[: k + 1], axis=0, dtype=np.float32) for k in range(len(alone))]
    return ExitOutputs(layout, path, exit_rules.exit_scores(path, layout, outs), exit_rules.exit_scores(path, layout, outs, True),
                       ensemble, alone + [mean], cumulative + [mean])


def policy_dict(policy: exit_rules.ExitPolicy | None, o: ExitOutputs) -> dict | None:
    if policy is None:
        return None
    return policy.for_exits(o.exits).to_dict("int" if o.path.name == "int" else "float")


# --------------------------------------------------------------------------- costs on the device


def stage_costs(run, board, progress=lambda s: None, samples: int = COST_SAMPLES) -> dict:
    """Mean instructions (the board's counter) per inference, model plus uncertainty scores, when
    every run stops at exit k (k = 0 .. E-1) and when it runs to the end (the last), measured on
    the emulated board; cached in RUN/exit_costs.json for the run's int8 model and the board."""
    tflite = (Path(run.path) / TFLITE_FILE).read_bytes()
    sha = hashlib.sha256(tflite).hexdigest()
    cache_path = Path(run.path) / COSTS_FILE
    cache = {}
    if cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}
    if cache.get("model_sha256") != sha:
        cache = {"model_sha256": sha, "boards": {}}
    if board.name in cache["boards"]:
        return cache["boards"][board.name]
    exits = len(model_facts(tflite).layout.exits)
    if not exits:
        raise QuteError(f"{run.path}'s int8 model has no early exits; quantize it with: qute quantize {run.path} --exits")
    costs, counter = [], None
    with tempfile.TemporaryDirectory(prefix="qute-exit-costs-") as tmp:
        for k in range(exits + 1):
            spec = "never" if k == exits else "confidence:" + ",".join("0" if j == k else exit_rules.NEVER for j in range(exits))
            what = "running to the end" if k == exits else f"stopping at exit_{k}"
            progress(f"measuring {what} on {board.name} (QEMU, {samples} inputs)")
            out = Path(tmp) / f"stop{k}"
            make_build(board.name, str(run.path), out, samples, emulator=True, exit_policy=spec)
            b = load_build(out)
            _, transcript = execute(b, board, None, None, 300.0)
            r = check(b, transcript, board)
            if not r.bit_exact or r.ucycles is None:
                raise RunFailure(f"measuring {what}: the firmware's run is not bit-exact with the host:\n" + r.summary())
            costs.append(float(np.mean(r.cycles + r.ucycles)))
            counter = r.counter
    entry = {"costs": costs, "counter": counter, "samples": samples, "machine": board.qemu_machine,
             "what": "mean model + uncertainty-module count per inference, stopping at exit_k (k = 0, 1, ...), then running to the end"}
    cache["boards"][board.name] = entry
    write_atomic({cache_path: (json.dumps(cache, indent=2) + "\n").encode()})
    return entry


# --------------------------------------------------------------------------- policies measured


def outcome(o: ExitOutputs, y: np.ndarray, costs: list[float], policy: dict | None) -> dict:
    """Accuracy, NLL, ECE and the exit histogram of `policy` on labelled outputs, with its mean cost."""
    from qute import metrics  # scikit-learn

    taken = o.taken(policy)
    probs, _ = o.reported(taken, policy)
    rejected = exit_rules.rejected(o._which(policy)[0], policy, taken)
    hist = np.bincount(taken, minlength=o.exits + 1)
    mean_cost = float(np.dot(hist, costs) / max(1, len(taken)))
    per_exit_acc = [float(np.mean(probs[taken == k].argmax(1) == y[taken == k])) if hist[k] else None
                    for k in range(o.exits + 1)]
    return {"accuracy": metrics.accuracy(y, probs), "nll": metrics.nll(y, probs), "ece": metrics.ece(y, probs, n_bins=15),
            "histogram": hist.tolist(), "accuracy_by_exit": per_exit_acc, "mean_cost": mean_cost,
            "cost_fraction": mean_cost / costs[-1], "rejected": float(np.mean(rejected)) if len(rejected) else 0.0,
            # a window policy's accepted inputs (all of them for the others)
            "accepted_accuracy": float(np.mean(probs[~rejected].argmax(1) == y[~rejected])) if (~rejected).any() else None}


def ood_auroc(o_id: ExitOutputs, o_ood: ExitOutputs, policy: dict | None) -> float:
    """OOD AUROC of the reported confidence, each set through the same policy."""
    from qute import metrics  # scikit-learn

    _, s_id = o_id.reported(o_id.taken(policy), policy)
    _, s_ood = o_ood.reported(o_ood.taken(policy), policy)
    return metrics.ood_auroc(uncertainty_score(s_id, "confidence"), uncertainty_score(s_ood, "confidence"))


def with_thresholds(score: str, thresholds, o: ExitOutputs, cumulative: bool = False) -> dict:
    return policy_dict(exit_rules.ExitPolicy(score_name(score), tuple(float(t) for t in thresholds), cumulative), o)


def sweep(o: ExitOutputs, y: np.ndarray, costs: list[float], score: str) -> list[dict]:
    """One shared threshold per row, over GRIDS[score], lenient to strict, then never stopping."""
    rows = [{"threshold": t, **outcome(o, y, costs, with_thresholds(score, [t], o))} for t in GRIDS[score_name(score)]]
    return rows + [{"threshold": None, **outcome(o, y, costs, None)}]


def _goal_value(r: dict, costs: list[float], budget: float | None, target: float | None) -> tuple:
    """What choose maximises: meeting the goal first, then accuracy (budget) or cheapness (target)."""
    if budget is not None:
        return (r["mean_cost"] <= budget * costs[-1] + 1e-9, r["accuracy"], -r["mean_cost"])
    return (r["accuracy"] >= target - 1e-12, -r["mean_cost"], r["accuracy"])


def choose(o: ExitOutputs, y: np.ndarray, costs: list[float], score: str, budget: float | None = None,
           target: float | None = None, cumulative: bool = False) -> tuple[float, ...]:
    """Per-exit thresholds on labelled (validation) outputs: the most accurate within `budget`
    (mean cost <= budget x the cost of running to the end), or the cheapest whose accuracy is at
    least `target`. One shared threshold from GRIDS first, then each exit's threshold alone over
    the grid (and never stopping there), while that improves; raises when nothing qualifies.
    `cumulative`: thresholds on the mean of the exits so far (mean-SCORE policies)."""
    score = score_name(score)
    grid = (*GRIDS[score], exit_rules.never_threshold(score))

    def value(ts):
        return _goal_value(outcome(o, y, costs, with_thresholds(score, ts, o, cumulative)), costs, budget, target)

    best = max(((t,) * o.exits for t in grid), key=value)
    for _ in range(3):
        improved = False
        for k in range(o.exits):
            for t in grid:
                trial = best[:k] + (t,) + best[k + 1:]
                if value(trial) > value(best):
                    best, improved = trial, True
        if not improved:
            break
    if not value(best)[0]:
        if budget is not None:
            what = f"a mean cost within {budget:g} of the full run's (stopping at exit_0 costs {costs[0] / costs[-1]:.2f} of it)"
        else:
            what = f"accuracy {target:g} (running to the end reaches {outcome(o, y, costs, None)['accuracy']:.4f})"
        raise QuteError(f"no {score} thresholds reach {what} on the validation split")
    return best


def choose_policy(o: ExitOutputs, y: np.ndarray, costs: list[float], score: str, budget: float | None = None,
                  target: float | None = None) -> exit_rules.ExitPolicy:
    """choose() for each exit's own score and for the mean of the exits so far; the better of the
    two for the goal (the exit's own on a tie: it needs no running mean)."""
    found, failure = [], None
    for cumulative in (False, True):
        try:
            ts = choose(o, y, costs, score, budget, target, cumulative)
        except QuteError as e:
            failure = failure or e
            continue
        r = outcome(o, y, costs, with_thresholds(score, ts, o, cumulative))
        found.append((_goal_value(r, costs, budget, target), not cumulative, ts, cumulative))
    if not found:
        raise failure
    _, _, ts, cumulative = max(found)
    return exit_rules.ExitPolicy(score_name(score), tuple(float(t) for t in ts), cumulative)


def parse_dynamic(text: str, option: str = "--dynamic") -> tuple[str, object]:
    """``never``, ``SCORE:T[,T...]`` (thresholds given), ``budget:F`` (0 < F <= 1) or
    ``accuracy:A`` (0 < A <= 1): (kind, value) with kind "policy" (an ExitPolicy or None),
    "budget" or "accuracy". `option` is the flag the text came from, for the error."""
    kind, _, value = (text or "").partition(":")
    if kind in ("budget", "accuracy"):
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not 0 < v <= 1:
            raise QuteError(f"{option} {text!r}: {kind} must be a number in (0, 1], e.g. {kind}:0.6")
        return kind, v
    return "policy", exit_rules.ExitPolicy.parse(text)


def write_plot(rows: list[dict], chosen: dict | None, path: Path, title: str, counter: str) -> Path:
    """Accuracy against mean cost per inference over the threshold sweep (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["mean_cost"] for r in rows], [r["accuracy"] for r in rows], "o-", label="one threshold for every exit")
    for r in rows:
        if r["threshold"] is not None:
            ax.annotate(f"{r['threshold']:g}", (r["mean_cost"], r["accuracy"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    if chosen is not None:
        ax.plot([chosen["mean_cost"]], [chosen["accuracy"]], "r*", ms=12, label="chosen policy")
    ax.set(xlabel=f"mean {counter} per inference (measured under QEMU)", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- qute eval --dynamic

DYNAMIC_FILE = "dynamic.json"
PLOT_FILE = "dynamic.png"


@dataclass
class DynamicResult:
    run: str
    board: str
    machine: str
    counter: str
    arithmetic: str
    costs: list[float]
    how: str  # how the policy was made
    policy: dict | None
    chosen: dict
    full: dict
    sweep_score: str
    sweep: list[dict]
    ood: str
    test_samples: int
    files: list[Path]

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "files"}
        d["files"] = [str(p) for p in self.files]
        return d

    def lines(self) -> list[str]:
        names = [f"exit_{k}" for k in range(len(self.costs) - 1)] + ["end"]
        unit = self.counter
        out = [f"early-exit inference of {self.run} for {self.board}: exit decisions on its {self.arithmetic} path "
               f"(bit-exact with the device), {self.test_samples:,} test images on TFLite Micro",
               f"{unit} per inference (model + uncertainty scores, measured under QEMU {self.machine}) when a run stops at: "
               + ", ".join(f"{n} {c:,.0f}" for n, c in zip(names, self.costs)),
               f"policy: {self.how}", ""]

        def hist(r):
            n = sum(r["histogram"])
            return ", ".join(f"{name} {100 * h / n:.1f}%" for name, h in zip(names, r["histogram"]) if h)

        out.append(f"{'':<22}{'policy':>14}{'run to the end':>18}")
        for key, label in (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("ood_auroc", f"OOD AUROC ({self.ood})")):
            out.append(f"{label:<22}{self.chosen[key]:>14.4f}{self.full[key]:>18.4f}")
        out.append(f"{'mean ' + unit:<22}{self.chosen['mean_cost']:>14,.0f}{self.full['mean_cost']:>18,.0f}")
        out.append(f"{'of running to the end':<22}{100 * self.chosen['cost_fraction']:>13.1f}%{100.0:>17.1f}%")
        out.append(f"exits taken: {hist(self.chosen)}")
        if self.policy is not None and "rejects" in self.policy:
            out.append(f"rejected by the window (abstain): {100 * self.chosen['rejected']:.1f}%; accuracy of the accepted "
                       f"{self.chosen['accepted_accuracy']:.4f}")
        out.append("")
        out.append(f"threshold sweep ({self.sweep_score}, one threshold for every exit), test set:")
        out.append(f"  {'threshold':>9}  {'accuracy':>8}  {'NLL':>6}  {'ECE':>6}  {'mean ' + unit:>18}  {'of end':>6}  exits taken")
        for r in self.sweep:
            t = "never" if r["threshold"] is None else f"{r['threshold']:g}"
            out.append(f"  {t:>9}  {r['accuracy']:>8.4f}  {r['nll']:>6.3f}  {r['ece']:>6.3f}  {r['mean_cost']:>18,.0f}  "
                       f"{100 * r['cost_fraction']:>5.1f}%  {hist(r)}")
        out.append("")
        out.append("wrote " + ", ".join(str(p) for p in self.files))
        return out


def evaluate_dynamic(run_dir, spec: str, board_name: str = "nucleo-f746", ood: str | None = None, data_dir=None,
                     progress=lambda s: None) -> DynamicResult:
    """qute eval RUN --dynamic SPEC (see parse_dynamic) on `board_name`'s arithmetic and costs."""
    kind, value = parse_dynamic(spec)
    run = load_run(run_dir)
    board = load_board(board_name)
    model_path = Path(run.path) / TFLITE_FILE
    if not model_path.is_file():
        raise QuteError(f"{run.path} has no {TFLITE_FILE}; quantize it with its exits: qute quantize {run.path} --exits")
    tflite = model_path.read_bytes()
    if not model_facts(tflite).layout.exits:
        raise QuteError(f"{model_path} has no early exits; quantize it with them: qute quantize {run.path} --exits")
    t = run.train
    progress("loading data")
    dataset = qdata.load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    ood_name, x_ood = qdata.load_ood(ood, dataset, data_dir or t.data_dir, seed=0)
    costs_entry = stage_costs(run, board, progress)
    costs = costs_entry["costs"]
    progress(f"running {len(dataset.x_test):,} test and {len(x_ood):,} OOD ({ood_name}) images on TFLite Micro")
    o_test = exit_outputs(tflite, dataset.x_test, board)
    o_ood = exit_outputs(tflite, x_ood, board)
    score = "confidence"
    if kind == "policy":
        policy = policy_dict(value, o_test)
        how = "never stop early" if value is None else value.for_exits(o_test.exits).describe()
        score = value.score if value is not None else score
    else:
        progress(f"choosing thresholds on {len(dataset.x_val):,} validation images")
        o_val = exit_outputs(tflite, dataset.x_val, board)
        chosen_policy = choose_policy(o_val, dataset.y_val, costs, score,
                                      **({"budget": value} if kind == "budget" else {"target": value}))
        policy = policy_dict(chosen_policy, o_test)
        goal = (f"the most accurate whose mean cost is at most {value:g} of running to the end" if kind == "budget"
                else f"the cheapest with accuracy at least {value:g}")
        how = (chosen_policy.describe() + f"; chosen on the validation split as {goal}"
               f" (qute build --exit-policy {chosen_policy.spec()})")
    y = dataset.y_test
    chosen = {**outcome(o_test, y, costs, policy), "ood_auroc": ood_auroc(o_test, o_ood, policy)}
    full = {**outcome(o_test, y, costs, None), "ood_auroc": ood_auroc(o_test, o_ood, None)}
    rows = sweep(o_test, y, costs, score)
    plot = write_plot(rows, chosen if policy is not None else None, Path(run.path) / PLOT_FILE,
                      f"early exits of {Path(run.path).name} on {board.name}", costs_entry["counter"])
    result = DynamicResult(run=str(run.path), board=board.name, machine=costs_entry["machine"], counter=costs_entry["counter"],
                           arithmetic=o_test.path.kind, costs=costs, how=how, policy=policy, chosen=chosen, full=full,
                           sweep_score=score, sweep=rows, ood=ood_name, test_samples=len(y),
                           files=[Path(run.path) / DYNAMIC_FILE, plot, Path(run.path) / COSTS_FILE])
    write_atomic({Path(run.path) / DYNAMIC_FILE: (json.dumps(result.to_dict(), indent=2) + "\n").encode()})
    return result


# --------------------------------------------------------------------------- qute calibrate --exits


def calibrate_exits(run_dir, spec: str, board_name: str = "nucleo-f746", data_dir=None,
                    progress=lambda s: None) -> dict:
    """Thresholds for `qute build --exit-policy calibrated`: `spec` is budget:F or accuracy:A
    (chosen on the validation split with `board_name`'s costs and arithmetic) or a policy given
    outright; written to RUN/exit_policy.json with what it gives on the validation split."""
    kind, value = parse_dynamic(spec, "--exits")
    if kind == "policy" and value is None:
        raise QuteError("qute calibrate --exits: give budget:F, accuracy:A or SCORE:T (never needs no thresholds)")
    run = load_run(run_dir)
    board = load_board(board_name)
    model_path = Path(run.path) / TFLITE_FILE
    if not model_path.is_file() or not model_facts(model_path.read_bytes()).layout.exits:
        raise QuteError(f"{run.path} has no int8 model with early exits; make it with: qute quantize {run.path} --exits")
    tflite = model_path.read_bytes()
    t = run.train
    dataset = qdata.load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    costs = stage_costs(run, board, progress)["costs"]
    progress(f"running {len(dataset.x_val):,} validation images on TFLite Micro")
    o_val = exit_outputs(tflite, dataset.x_val, board)
    if kind == "policy":
        policy = value.for_exits(o_val.exits)
    else:
        policy = choose_policy(o_val, dataset.y_val, costs, "confidence",
                               **({"budget": value} if kind == "budget" else {"target": value}))
    got = outcome(o_val, dataset.y_val, costs, policy_dict(policy, o_val))
    doc = {"version": 1, "model_sha256": hashlib.sha256(tflite).hexdigest(), "goal": spec,
           "policy": {"score": policy.score, "thresholds": list(policy.thresholds), "cumulative": policy.cumulative},
           "spec": policy.spec(), "board": board.name, "costs": costs, "validation": got,
           "validation_samples": int(len(dataset.y_val))}
    write_atomic({Path(run.path) / exit_rules.POLICY_FILE: (json.dumps(doc, indent=2) + "\n").encode()})
    return doc


def format_exit_calibration(doc: dict, path) -> str:
    v = doc["validation"]
    return (f"exits:    {doc['spec']} ({doc['goal']}); on the {doc['validation_samples']:,} validation images: "
            f"accuracy {v['accuracy']:.4f}, mean {v['mean_cost']:,.0f} instructions on {doc['board']} "
            f"({100 * v['cost_fraction']:.1f}% of running to the end)\n"
            f"wrote {path}; build with: qute build --exit-policy calibrated")
