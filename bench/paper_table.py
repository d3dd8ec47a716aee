"""The QUTE paper's MNIST table, re-measured: every method trained and evaluated over several seeds.

    .venv/bin/python bench/paper_table.py --dataset mnist            # paper settings: 20 epochs, batch 256
    .venv/bin/python bench/paper_table.py --dataset digits --epochs 40 --batch-size 32 --seeds 0,1

Writes a markdown table (mean ± standard deviation over seeds) next to the paper's reported row
and the independent re-implementation's, plus every run's raw numbers as JSON. A benchmark, not
a test: it takes tens of minutes on MNIST.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from qute.config import EvalConfig, TrainConfig  # noqa: E402
from qute.data import load_dataset  # noqa: E402
from qute.evaluate import TABLE_COLUMNS, evaluate  # noqa: E402
from qute.run import Run  # noqa: E402
from qute.train import train  # noqa: E402

# label -> (method, untied); "+T": with the validation-fitted temperature folded into the heads
# (qute.temperature, the default of qute train), the others without it
VARIANTS = {
    "base": ("base", False),
    "mc-dropout": ("mc-dropout", False),
    "deep-ensemble": ("deep-ensemble", False),
    "ee-ensemble": ("ee-ensemble", False),
    "qute": ("qute", False),
    "qute-untied": ("qute", True),
}
VARIANTS.update({f"{label}+T": v for label, v in list(VARIANTS.items())})

# Reported numbers for MNIST (F1, NLL, Brier, ECE, OOD AUROC vs Fashion-MNIST, accuracy-drop AUPRC).
REFERENCE = [
    ("QUTE paper (ICML 2025), QUTE", {"f1": 0.941, "nll": 0.199, "brier": 0.009, "ece": 0.026, "auroc_ood": 0.84, "auprc_drop": 0.63}),
    ("independent re-implementation, QUTE", {"f1": 0.975, "nll": 0.086, "ece": 0.012, "auroc_ood": 0.914}),
    ("independent re-implementation, base", {"f1": 0.971, "nll": 0.094, "ece": 0.008, "auroc_ood": 0.798}),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--arch", default="mnist-cnn")
    ap.add_argument("--methods", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS)
                    + " (the table shows every method measured so far with these settings)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("-K", dest="k", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="train on at most this many samples")
    ap.add_argument("--ood", default=None)
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="markdown output (default bench/results/paper_table_<dataset>.md)")
    args = ap.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    for m in methods:
        if m not in VARIANTS:
            ap.error(f"unknown method {m!r}; choose from {', '.join(VARIANTS)}")
    out = Path(args.out or Path(__file__).parent / "results" / f"paper_table_{args.dataset}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_path = out.with_suffix(".json")
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}

    datasets = {}
    for seed in seeds:
        for label in methods:
            key = f"{label}/seed{seed}"
            settings = settings_of(args)
            if key in raw and raw[key].get("settings") == settings:
                print(f"{key}: kept from {raw_path}", flush=True)
                continue
            method, untied = VARIANTS[label]
            cfg = TrainConfig(dataset=args.dataset, arch=args.arch, method=method, k=args.k, epochs=args.epochs,
                              batch_size=args.batch_size, untied=untied, seed=seed, limit=args.limit, data_dir=args.data_dir,
                              temperature=label.endswith("+T"))
            if seed not in datasets:
                datasets[seed] = load_dataset(args.dataset, args.data_dir, seed=seed, val_fraction=cfg.val_fraction, limit=args.limit)
            data = datasets[seed]
            t0 = time.time()
            result = train(cfg, data)
            t1 = time.time()
            run = Run(Path("."), cfg, result.spec, data.normalisation, {}, result.history)
            ev = evaluate(run, EvalConfig(ood=args.ood, corruptions=args.corruptions, seed=seed),
                          data_dir=args.data_dir, model=result.model, dataset=data)
            raw[key] = {"settings": settings, "summary": ev.summary, "params": ev.params, "ood": ev.details["ood"],
                        "temperature": result.temperature,
                        "train_seconds": round(t1 - t0, 1), "eval_seconds": round(time.time() - t1, 1)}
            raw_path.write_text(json.dumps(raw, indent=2) + "\n")
            s = ev.summary
            print(f"{key}: acc {s['accuracy']:.4f} F1 {s['f1']:.4f} NLL {s['nll']:.4f} ECE {s['ece']:.4f} "
                  f"OOD {s['auroc_ood']:.3f} drop {s['auprc_drop']:.3f} ({t1 - t0:.0f}s train)", flush=True)

    table = render(raw, methods, seeds, args)
    out.write_text(table)
    print(table)
    print(f"wrote {out} and {raw_path}")
    return 0


def settings_of(args) -> dict:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "k": args.k, "limit": args.limit,
            "arch": args.arch, "dataset": args.dataset, "corruptions": args.corruptions}


def render(raw, methods, seeds, args) -> str:
    cols = [("accuracy", "Acc")] + list(TABLE_COLUMNS)
    lines = [
        f"`{args.dataset}`, `{args.arch}`, K={args.k}, {args.epochs} epochs, batch {args.batch_size}, "
        f"seeds {','.join(map(str, seeds))} (mean ± std); ECE with 15 bins; accuracy-drop window 100, "
        "shifted streams of every corruption with severities 1..5 in equal blocks.",
        "",
        "| method | " + " | ".join(c for _, c in cols) + " | params |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for label in VARIANTS:
        runs = [raw[f"{label}/seed{s}"] for s in seeds
                if f"{label}/seed{s}" in raw and raw[f"{label}/seed{s}"]["settings"] == settings_of(args)]
        if not runs:
            continue
        cells = []
        for key, _ in cols:
            v = np.array([r["summary"].get(key, np.nan) for r in runs], float)
            cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}" if np.isfinite(v).any() else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {runs[0]['params']:,} |")
    if args.dataset == "mnist":
        for name, ref in REFERENCE:
            lines.append(f"| *{name}* | " + " | ".join(f"{ref[k]:.3f}" if k in ref else "" for k, _ in cols) + " | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
