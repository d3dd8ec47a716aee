"""The QUTE paper's MNIST table, from the trials of `qute sweep` folders, beside the paper's row.

    qute sweep bench/sweeps/mnist_filters_methods.toml   # the baselines, three seeds, int8 too (Ray)
    qute sweep bench/sweeps/mnist_filters.toml           # QUTE (the default 6,12,24 and 8,12,22)
    qute sweep bench/sweeps/mnist_filters_tied.toml      # the paper's tied QUTE
    .venv/bin/python bench/paper_table.py sweeps/mnist-filters-methods sweeps/mnist-filters sweeps/mnist-filters-tied --readme

One row per method (mean ± standard deviation over its seeds): the float model's metrics, and,
for sweeps run with `int8 = true`, what the int8 model on TFLite Micro changes (int8 minus float,
trial by trial). Then the paper's reported MNIST row and an independent re-implementation's.
Writes bench/results/<section>.md and .json; --readme replaces README.md's section between
`<!-- SECTION -->` markers (--section, default paper_table:mnist; the ablation table is the same
table over the ablation sweeps, --section ablation:mnist). Reads results only: the sweeps train.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import readme_section  # bench/, next to this file
from sweep_results import finished_trials

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [("accuracy", "Acc"), ("f1", "F1"), ("nll", "NLL"), ("brier", "Brier"), ("ece", "ECE"),
           ("auroc_failure", "AUROC fail"), ("auroc_ood", "AUROC OOD"), ("auprc_drop", "AUPRC drop")]
INT8 = [("nll", "int8 ΔNLL"), ("ece", "int8 ΔECE"), ("auroc_ood", "int8 ΔOOD")]

# Reported numbers for MNIST (F1, NLL, Brier, ECE, OOD AUROC vs Fashion-MNIST, accuracy-drop AUPRC).
REFERENCE = [
    ("QUTE paper (ICML 2025), QUTE", {"f1": 0.941, "nll": 0.199, "brier": 0.009, "ece": 0.026, "auroc_ood": 0.84, "auprc_drop": 0.63}),
    ("independent re-implementation, QUTE", {"f1": 0.975, "nll": 0.086, "ece": 0.012, "auroc_ood": 0.914}),
    ("independent re-implementation, base", {"f1": 0.971, "nll": 0.094, "ece": 0.008, "auroc_ood": 0.798}),
]


def _cell(values, signed: bool = False) -> str:
    v = np.array(values, float)
    v = v[np.isfinite(v)]
    return f"{v.mean():{'+' if signed else ''}.3f} ± {v.std():.3f}" if len(v) else ""


def table(trials) -> tuple[str, dict]:
    labels = list(dict.fromkeys(t.label for t in trials))
    by = {lbl: [t for t in trials if t.label == lbl] for lbl in labels}
    with_int8 = any("int8" in t.record for t in trials)
    cols = COLUMNS + (INT8 if with_int8 else [])
    lines = ["| method | " + " | ".join(c for _, c in cols) + " | params | seeds |",
             "|---|" + "---:|" * (len(cols) + 2)]
    rows = {}
    for lbl in labels:
        recs = [t.record for t in by[lbl]]
        cells = [_cell([r["summary"].get(k, np.nan) for r in recs]) for k, _ in COLUMNS]
        if with_int8:
            cells += [_cell([r["int8"][k] - r["summary"][k] for r in recs if "int8" in r], signed=True) for k, _ in INT8]
        seeds = ",".join(str(t.seed) for t in sorted(by[lbl], key=lambda t: t.seed))
        lines.append(f"| {lbl} | " + " | ".join(cells) + f" | {recs[0]['params']:,} | {seeds} |")
        rows[lbl] = {"seeds": [t.seed for t in by[lbl]], "params": recs[0]["params"],
                     "summary": {k: [r["summary"].get(k) for r in recs] for k, _ in COLUMNS},
                     "int8": {k: [r["int8"][k] for r in recs if "int8" in r] for k, _ in INT8} if with_int8 else None}
    for name, ref in REFERENCE:
        cells = [f"{ref[k]:.3f}" if k in ref else "" for k, _ in COLUMNS] + [""] * (len(cols) - len(COLUMNS))
        lines.append(f"| *{name}* | " + " | ".join(cells) + " | | |")
    return "\n".join(lines), rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", type=Path, help="qute sweep output folders (holding results.json)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's section (--section)")
    ap.add_argument("--section", default="paper_table:mnist", help="README.md's section and the results' file name")
    args = ap.parse_args(argv)
    try:
        trials = finished_trials(args.sweeps)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not trials:
        print("error: the sweeps hold no finished trial", file=sys.stderr)
        return 2
    settings = trials[0].record["settings"]
    t, e = settings["train"], settings["eval"]
    shown = [str(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--readme"]
    stem = args.section.replace(":", "_")
    body, rows = table(trials)
    text = "\n".join([
        f"`.venv/bin/python bench/paper_table.py {' '.join(shown)}` (per-trial numbers in "
        f"`{os.path.relpath(args.out / f'{stem}.json', ROOT)}`). `{t['dataset']}`, backbone {t['arch']}, K={t['k']}, "
        f"{t['epochs'] or 'the default (MNIST: 20)'} epochs, batch {t.get('batch_size') or 'default (256)'}, temperature {'on' if t['temperature'] else 'off'}; mean ± std over "
        f"seeds; ECE with 15 bins; OOD {e['ood']}; accuracy-drop AUPRC: window {e['window']}, shifted streams of "
        "every corruption with severities 1..5 in equal blocks; int8 Δ: the int8 model on TFLite Micro minus the "
        "float model, on the test and OOD sets.",
        "",
        body,
    ])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(text + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"sweeps": [str(s) for s in args.sweeps], "rows": rows}, indent=2) + "\n")
    if args.readme:
        try:
            readme_section.replace(args.section, text)
        except LookupError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"rewrote README.md's {args.section} section", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
