"""Uncertainty evaluation of a run on in-distribution, corrupted and out-of-distribution data.

The numbers are those of the QUTE paper's table: class-weighted F1, NLL, Brier (divided by the
class count), ECE (15 equal-width bins), failure-detection AUROC, OOD AUROC, and the
accuracy-drop detection AUPRC of an ID stream followed by a corrupted one.

The corrupted part of each accuracy-drop stream goes through the five severities in order, in
equal blocks, so it holds mild shifts (which barely move accuracy) as well as strong ones: with
strong corruptions alone every method detects every drop and the AUPRC says nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qute import data as qdata
from qute import metrics, uncertainty
from qute.config import STAGES, EvalConfig
from qute.device import DEFAULT_BOARD, DeviceStage, DeviceStats
from qute.errors import QuteError
from qute.quantize import TFLITE_FILE, int8_head_probs
from qute.run import Run, load_run
from qute.tf_loader import load_tensorflow

METRICS_FILE = "metrics.json"

TABLE_COLUMNS = (
    ("f1", "F1"),
    ("nll", "NLL"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("auroc_failure", "AUROC fail"),
    ("auroc_ood", "AUROC OOD"),
    ("auprc_drop", "AUPRC drop"),
)


@dataclass
class Evaluation:
    method: str
    arch: str
    dataset: str
    params: int
    summary: dict  # the table row
    details: dict = field(default_factory=dict)
    # arrays for plots: confidences per set, and the ID labels/probabilities
    confidence: dict = field(default_factory=dict)
    id_probs: np.ndarray | None = None
    id_labels: np.ndarray | None = None

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "arch": self.arch,
            "dataset": self.dataset,
            "params": self.params,
            "ece_bins": 15,
            "summary": self.summary,
            **self.details,
        }


def corruption_list(spec: str) -> list[str]:
    if spec in ("all", "", None):
        return list(qdata.CORRUPTIONS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in qdata.CORRUPTIONS:
            raise QuteError(f"unknown corruption {n!r}; choose 'all' or a comma-separated list of: {', '.join(qdata.CORRUPTIONS)}")
    return names


def shifted_stream(x: np.ndarray, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The test images corrupted by `name` in five consecutive blocks of severity 1..5."""
    blocks = np.array_split(np.arange(len(x)), len(qdata.SEVERITIES))
    out = np.empty_like(x)
    sev = np.empty(len(x), np.int64)
    for severity, idx in zip(qdata.SEVERITIES, blocks):
        out[idx] = qdata.corrupt(x[idx], name, severity, seed=seed + severity)
        sev[idx] = severity
    return out, sev


def _id_metrics(y, probs, scores) -> dict:
    return {
        "accuracy": metrics.accuracy(y, probs),
        "f1": metrics.f1(y, probs),
        "nll": metrics.nll(y, probs),
        "brier": metrics.brier(y, probs),
        "ece": metrics.ece(y, probs, n_bins=15),
        "auroc_failure": metrics.failure_auroc(y, probs, -scores.confidence),
    }


def stage_predictor(run: Run, stage: str, model, seed: int):
    """x -> (K, N, C) head probabilities of one stage: the Keras model, or the int8 model on TFLM.

    The device stage needs a firmware build: :class:`qute.device.DeviceStage` is its predictor.
    """
    if stage == "float":
        from qute.models import ensemble_heads

        return lambda x: ensemble_heads(run.spec, model, x, seed)
    if stage == "int8":
        path = run.path / TFLITE_FILE
        if not path.is_file():
            raise QuteError(f"{run.path} has no {TFLITE_FILE} for the int8 stage; run: qute quantize {run.path}")
        tflite = path.read_bytes()
        return lambda x: int8_head_probs(tflite, x, run.spec.num_heads)
    if stage == "device":
        raise QuteError("the device stage runs firmware: pass a qute.device.DeviceStage as predict=")
    raise QuteError(f"unknown stage {stage!r}; choose from: {', '.join(STAGES)}")


def evaluate(run: Run, cfg: EvalConfig, data_dir=None, model=None, dataset=None, progress=None,
             stage: str = "float", predict=None) -> Evaluation:
    """Evaluates one stage of a run (`STAGES`) on the same ID, corrupted and OOD sets.

    `progress(label)` is called before each long step; `predict` (x -> (K, N, C) head
    probabilities) replaces the stage's own predictor.
    """
    step = progress or (lambda label: None)
    data_dir = data_dir or run.train.data_dir
    if model is None:
        model = run.load_model()
    predict = predict or stage_predictor(run, stage, model, cfg.seed)
    if dataset is None:
        step("loading data")
        t = run.train
        dataset = qdata.load_dataset(t.dataset, data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    corruptions = corruption_list(cfg.corruptions)
    if cfg.window >= len(dataset.x_test):
        raise QuteError(f"window {cfg.window} must be shorter than the test set ({len(dataset.x_test)} samples)")

    step("in-distribution")
    y = dataset.y_test
    heads = predict(dataset.x_test)
    scores = uncertainty.summarize(heads)
    probs = scores.mean_probs
    row = _id_metrics(y, probs, scores)
    details = {"id": dict(row), "per_head_accuracy": [metrics.accuracy(y, h) for h in heads]}
    confidence = {"ID": scores.confidence}

    step("out-of-distribution")
    ood_name, x_ood = qdata.load_ood(cfg.ood, dataset, data_dir, seed=cfg.seed)
    ood_scores = uncertainty.summarize(predict(x_ood))
    details["ood"] = {"name": ood_name, "samples": int(len(x_ood))}
    details["ood"]["auroc"] = {
        s: metrics.ood_auroc(uncertainty.uncertainty_score(scores, s), uncertainty.uncertainty_score(ood_scores, s))
        for s in uncertainty.SCORES
    }
    row["auroc_ood"] = details["ood"]["auroc"]["confidence"]
    confidence["OOD"] = ood_scores.confidence

    # The ID part of every stream is the test set in one fixed shuffled order.
    order = np.random.default_rng(cfg.seed).permutation(len(y))
    correct_id = (scores.predicted == y)[order]
    conf_id = scores.confidence[order]
    per_corruption, cid_conf = {}, []
    for name in corruptions:
        step(f"corruption {name}")
        x_shift, sev = shifted_stream(dataset.x_test[order], name, cfg.seed)
        s = uncertainty.summarize(predict(x_shift))
        correct = s.predicted == y[order]
        drop = metrics.accuracy_drop(correct_id, conf_id, correct, s.confidence, window=cfg.window)
        per_corruption[name] = {
            "accuracy": float(correct.mean()),
            "accuracy_by_severity": [float(correct[sev == k].mean()) for k in qdata.SEVERITIES],
            "mean_confidence": float(s.confidence.mean()),
            "auprc_drop": drop.auprc,
            "positive_windows": drop.n_positive,
            "windows": drop.n_windows,
        }
        cid_conf.append(s.confidence)
    auprcs = [c["auprc_drop"] for c in per_corruption.values() if not np.isnan(c["auprc_drop"])]
    row["auprc_drop"] = float(np.mean(auprcs)) if auprcs else float("nan")
    details["corruptions"] = per_corruption
    details["accuracy_drop"] = {
        "window": cfg.window,
        "k_sigma": 3.0,
        "stream": "ID test set (shuffled) then the same images corrupted, severities 1..5 in equal consecutive blocks",
        "corruptions_with_drops": len(auprcs),
    }
    if cid_conf:
        confidence["CID"] = np.concatenate(cid_conf)
    return Evaluation(
        method=run.spec.method + ("-tied" if run.spec.method == "qute" and not run.spec.untied else "")
        + ("" if stage == "float" else f" ({stage})"),
        arch=run.spec.arch,
        dataset=run.train.dataset,
        params=int(model.count_params()),
        summary={k: float(v) for k, v in row.items()},
        details=details,
        confidence=confidence,
        id_probs=probs,
        id_labels=y,
    )


def format_table(rows: list[Evaluation]) -> str:
    """A fixed-width text table, one line per evaluation."""
    head = ["method"] + [c for _, c in TABLE_COLUMNS] + ["params"]
    body = [
        [r.method] + [_fmt(r.summary.get(k)) for k, _ in TABLE_COLUMNS] + [f"{r.params:,}"] for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths))) for line in [head] + body]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _fmt(v) -> str:
    return "n/a" if v is None or np.isnan(v) else f"{v:.3f}"


def write_plots(ev: Evaluation, folder: Path) -> list[Path]:
    """Reliability diagram and confidence histograms (ID / corrupted / OOD) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    conf = ev.id_probs.max(1)
    correct = ev.id_probs.argmax(1) == ev.id_labels
    edges = np.linspace(0, 1, 16)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, 14)
    acc = np.array([correct[idx == b].mean() if np.any(idx == b) else np.nan for b in range(15)])
    mid = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(mid, np.nan_to_num(acc), width=1 / 15, edgecolor="black", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{ev.method} on {ev.dataset}: ECE {ev.summary['ece']:.3f} (15 bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    paths.append(folder / "reliability.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for label, values in ev.confidence.items():
        ax.hist(values, bins=bins, density=True, histtype="step", lw=1.5, label=f"{label} ({len(values):,})")
    ax.set(xlabel="confidence (max mean probability)", ylabel="density", title=f"{ev.method}: confidence by data set")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / "confidence_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


@dataclass
class EvalReport:
    """What `qute eval` did: one evaluation per stage (same data), the files it wrote, and the
    device's byte and score counts when the device stage ran."""

    stages: list[str]
    evaluations: list[Evaluation]
    window: int
    metrics_path: Path
    plots: list[Path]
    device: DeviceStats | None = None

    def differing(self) -> list[str]:
        """The int8 row's metrics that the device row does not reproduce bit for bit."""
        if self.device is None or "int8" not in self.stages:
            return []
        a, b = (self.evaluations[self.stages.index(s)] for s in ("int8", "device"))
        return [k for k in sorted(a.summary) if not _same_number(a.summary[k], b.summary.get(k))]

    @property
    def ok(self) -> bool:
        """False when the firmware's bytes, scores or metrics differ from the host's."""
        return self.device is None or (self.device.exact and not self.differing())

    def lines(self) -> list[str]:
        ev = self.evaluations[0]
        ood = ev.details["ood"]
        out = [
            *format_table(self.evaluations).split("\n"),
            "",
            f"{ev.dataset} test: accuracy {ev.summary['accuracy']:.3f}; OOD = {ood['name']} ({ood['samples']:,}); "
            f"corruptions: {len(ev.details['corruptions'])}, window {self.window}; ECE with 15 equal-width bins",
            f"wrote {self.metrics_path}, " + ", ".join(str(p) for p in self.plots),
        ]
        if self.device is not None:
            out.append(self.device.summary())
            if "int8" in self.stages:
                differ = self.differing()
                out.append("int8 and device rows: " + (f"DIFFERENT in {', '.join(differ)}" if differ
                                                      else "identical (every metric equal to the last bit)"))
        return out


def _same_number(a, b) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def evaluate_run(run_dir: str | Path, stages: Sequence[str] = ("float",), cfg: EvalConfig | None = None, *,
                 data_dir: str | Path | None = None, board: str | None = None,
                 progress: Callable[[str], None] = lambda s: None) -> EvalReport:
    """`qute eval`: every stage of a run on one load of its data; writes metrics.json and the plots.

    `cfg`: the OOD set, corruptions and window (None: EvalConfig's defaults); the device stage runs
    on `board` (None: DEFAULT_BOARD). Everything that can be checked without data or a model is
    checked first. `progress` gets "STAGE: step" lines.
    """
    stages = list(stages)
    for name in stages:
        if name not in STAGES:
            raise QuteError(f"unknown stage {name!r}; choose from: {', '.join(STAGES)}")
    cfg = cfg if cfg is not None else EvalConfig()
    corruption_list(cfg.corruptions)  # a bad name fails before anything slow
    if board is not None and "device" not in stages:
        raise QuteError("--board is for the device stage: add device to --stages")
    run = load_run(run_dir)
    device = None
    if "device" in stages:
        board = board or DEFAULT_BOARD
        device = DeviceStage(run, board, data_dir, progress=lambda s: progress(f"device: {s}"))
    load_tensorflow()
    t = run.train
    dataset = qdata.load_dataset(t.dataset, data_dir or t.data_dir, seed=t.seed, val_fraction=t.val_fraction,
                                 limit=t.limit)
    evs = []
    with device or contextlib.nullcontext():
        for name in stages:
            evs.append(evaluate(run, cfg, data_dir=data_dir, dataset=dataset, stage=name,
                                predict=device if name == "device" else None,
                                progress=lambda label, name=name: progress(f"{name}: {label}")))
    if device is not None:
        evs[stages.index("device")].details["device"] = device.stats.to_json()
    metrics_json = evs[0].to_json()
    if len(evs) > 1:
        metrics_json["stages"] = {name: e.to_json() for name, e in zip(stages, evs)}
    path = Path(run_dir) / METRICS_FILE
    path.write_text(json.dumps(metrics_json, indent=2) + "\n")
    plots = write_plots(evs[0], Path(run_dir))
    return EvalReport(stages, evs, cfg.window, path, plots, device.stats if device is not None else None)
