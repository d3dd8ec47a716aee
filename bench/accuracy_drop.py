"""Accuracy-drop detection in the field, the QUTE paper's protocol: which method notices first?

    .venv/bin/python bench/accuracy_drop.py sweeps/mnist-filters-methods sweeps/mnist-filters sweeps/mnist-filters-seeds sweeps/mnist-filters-tied --readme

Takes the trained runs of one or more `qute sweep` folders (their results.json) and, for every run,
builds one stream per MNIST-C corruption we have: the test set in a shuffled order, then the same
images corrupted at one severity (MNIST-C has one level per corruption; `--severity`, default 3).
A sliding window of 100 (`--window`) averages the ensemble's confidence, as the firmware's monitor
does. Two figures per stream:

- AUPRC: windows whose accuracy is at least 3 sigma below the ID stream's mean are the true drops;
  sweeping the threshold rho over the window means gives a precision-recall curve
  (`qute.metrics.accuracy_drop`, the number `qute eval` reports, there over severities 1..5).
- Delay: rho set to the lowest window mean of the ID part (no false alarm on the ID stream), the
  count of corrupted samples seen when the first alarm fires (`qute.metrics.detection_delay`).
  A stream that never alarms is a miss.

Prints markdown tables (mean over the seeds of each method), writes bench/results/accuracy_drop.md
and .json; --readme replaces README.md's section between `<!-- accuracy-drop -->` markers.
A benchmark, not a test: a few minutes per sweep on MNIST.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import readme_section  # noqa: E402  (bench/, next to this file)
from sweep_results import finished_trials  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Our corruptions that MNIST-C (Mu & Gilmer, 2019) also has; it adds glass blur, spatter and
# Canny edges, which we do not generate.
MNIST_C = ("shot_noise", "impulse_noise", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "dotted_line", "zigzag")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str):
    """Bad input: one line and exit status 2."""
    log(f"error: {msg}")
    raise SystemExit(2)


def measure(run_dir: Path, corruptions, severity: int, window: int, stage: str, cache: dict) -> dict:
    """Per corruption: the shifted stream's accuracy, its AUPRC and the detection delay."""
    from qute import data as qdata
    from qute import metrics, uncertainty
    from qute.evaluate import stage_predictor
    from qute.run import load_run

    run = load_run(run_dir)
    t = run.train
    key = (t.dataset, t.data_dir, t.seed, t.val_fraction, t.limit)
    if key not in cache:
        cache.clear()  # one dataset's corrupted streams at a time
        cache[key] = qdata.load_dataset(t.dataset, t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    dataset = cache[key]
    seed = t.seed  # the sweep's eval seed follows the training seed
    order = np.random.default_rng(seed).permutation(len(dataset.y_test))
    x, y = dataset.x_test[order], dataset.y_test[order]
    predict = stage_predictor(run, stage, run.load_model() if stage == "float" else None, seed)
    ident = uncertainty.summarize(predict(x))
    out: dict = {"id_accuracy": float(np.mean(ident.predicted == y)), "corruptions": {}}
    for name in corruptions:
        ckey = (key, name, severity)
        if ckey not in cache:
            cache[ckey] = qdata.corrupt(x, name, severity, seed=seed + severity)
        s = uncertainty.summarize(predict(cache[ckey]))
        correct = s.predicted == y
        drop = metrics.accuracy_drop(ident.predicted == y, ident.confidence, correct, s.confidence, window=window)
        out["corruptions"][name] = {
            "accuracy": float(correct.mean()),
            "auprc": drop.auprc,
            "delay": _finite(metrics.detection_delay(ident.confidence, s.confidence, window)),
        }
    out["shifted_samples"] = len(y)
    return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # None: no alarm (JSON has no infinity)


def _mean(values) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def tables(results: dict, corruptions, n_shift: int) -> str:
    """AUPRC, delay and accuracy per corruption and method (mean over seeds)."""
    methods = list(results)
    per = {m: {c: [r["corruptions"][c] for r in results[m].values()] for c in corruptions} for m in methods}
    lines = []

    def row(name, cells):
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    head = "| corruption | " + " | ".join(methods) + " |"
    rule = "|---|" + "---:|" * len(methods)

    lines += ["Accuracy of the shifted stream (ID accuracy in the first row):", "", head, rule]
    row("*none (ID)*", [f"{_mean([r['id_accuracy'] for r in results[m].values()]):.3f}" for m in methods])
    for c in corruptions:
        row(c, [f"{_mean([v['accuracy'] for v in per[m][c]]):.3f}" for m in methods])

    lines += ["", "AUPRC of the true accuracy drops against the window confidence (rho swept; — when no "
              "window of that stream drops 3 sigma below the ID accuracy):", "", head, rule]
    means = {m: [] for m in methods}
    for c in corruptions:
        cells = []
        for m in methods:
            v = _mean([x["auprc"] for x in per[m][c]])
            cells.append("—" if math.isnan(v) else f"{v:.3f}")
            means[m].append(v)
        row(c, cells)
    row("**mean**", [f"**{_mean(means[m]):.3f}**" for m in methods])

    lines += ["", f"Delay: corrupted samples seen at the first alarm, rho at no false alarm on the ID "
              f"stream (mean over seeds; `miss` when a seed never alarms within {n_shift:,} samples; "
              "bold: the earliest method):", "", head, rule]
    common = []
    for c in corruptions:
        delays = {m: [x["delay"] for x in per[m][c]] for m in methods}
        finite = {m: float(np.mean(d)) for m, d in delays.items() if None not in d}
        best = min(finite.values()) if finite else None
        cells = []
        for m in methods:
            if m not in finite:
                misses = delays[m].count(None)
                cells.append(f"miss ({misses} of {len(delays[m])})")
            else:
                cells.append(f"**{finite[m]:.0f}**" if finite[m] == best else f"{finite[m]:.0f}")
        row(c, cells)
        if len(finite) == len(methods):
            common.append(c)
    means = {m: float(np.mean([np.mean([x["delay"] for x in per[m][c]]) for c in common])) if common else math.nan
             for m in methods}
    best = min(means.values()) if common else None
    row(f"**mean over the {len(common)} streams every method detects**",
        [(f"**{v:.0f}**" if v == best else f"{v:.0f}") if common else "n/a" for v in means.values()])
    missed = {m: sum(x["delay"] is None for c in corruptions for x in per[m][c]) for m in methods}
    total = {m: sum(len(per[m][c]) for c in corruptions) for m in methods}
    row("missed streams", [f"{missed[m]} of {total[m]}" for m in methods])
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", type=Path, help="qute sweep output folders (holding results.json)")
    ap.add_argument("--severity", type=int, default=3, help="corruption severity, 1..5 (default 3)")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--stage", choices=("float", "int8"), default="float", help="the Keras model or the int8 model on TFLite Micro")
    ap.add_argument("--corruptions", default=",".join(MNIST_C), help="comma-separated (default: the MNIST-C ones)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's accuracy-drop section")
    args = ap.parse_args(argv)

    from qute import data as qdata

    corruptions = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    bad = [c for c in corruptions if c not in qdata.CORRUPTIONS]
    if bad or not corruptions:
        fail(f"unknown corruption(s) {', '.join(bad) or '(none given)'}; choose from: {', '.join(qdata.CORRUPTIONS)}")
    if args.severity not in qdata.SEVERITIES:
        fail(f"--severity must be one of {', '.join(map(str, qdata.SEVERITIES))}, got {args.severity}")
    if args.window < 2:
        fail(f"--window must be at least 2, got {args.window}")
    try:
        runs = [(t.label, t.seed, t.run_dir) for t in finished_trials(args.sweeps)]
    except ValueError as e:
        fail(str(e))
    if not runs:
        fail("the sweeps hold no finished trial")

    started = time.time()
    results: dict[str, dict[int, dict]] = {}
    cache: dict = {}
    for i, (label, seed, run_dir) in enumerate(sorted(runs, key=lambda r: (r[1], r[0]))):  # seed-major: one dataset split cached
        log(f"[{i + 1}/{len(runs)}] {label} seed {seed}")
        results.setdefault(label, {})[seed] = measure(run_dir, corruptions, args.severity, args.window, args.stage, cache)
    results = {m: results[m] for m in sorted(results, key=lambda m: [lbl for lbl, _, _ in runs].index(m))}
    seeds = sorted({s for r in results.values() for s in r})
    n_test = next(iter(next(iter(results.values())).values()))["shifted_samples"]
    cmd = "bench/accuracy_drop.py " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--readme")
    text = "\n".join([
        f"`.venv/bin/python {cmd}` ({time.time() - started:.0f} s here; per-run numbers in "
        f"`{os.path.relpath(args.out / 'accuracy_drop.json', ROOT)}`). "
        f"{args.stage} models of the sweeps' trials, seeds {','.join(map(str, seeds))}; per corruption one stream: the "
        f"{n_test:,} test images shuffled, then the same images corrupted at severity {args.severity}; window "
        f"{args.window}, true drop = window accuracy at least 3 sigma below the ID stream's mean.",
        "",
        tables(results, corruptions, n_test),
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy_drop.md").write_text(text + "\n")
    (args.out / "accuracy_drop.json").write_text(json.dumps(
        {"severity": args.severity, "window": args.window, "stage": args.stage, "corruptions": corruptions,
         "results": {m: {str(s): r for s, r in v.items()} for m, v in results.items()}},
        indent=2) + "\n")
    if args.readme:
        try:
            readme_section.replace("accuracy-drop", text)
        except LookupError as e:
            fail(str(e))
        log("rewrote README.md's accuracy-drop section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
