"""Issue 11's "temperature per head or shared" lever, measured after the fact on finished runs.

    .venv/bin/python bench/head_temperature.py RUN [RUN ...]

qute fits one temperature on the validation split and folds it into every head (qute.temperature).
Because softmax(z / T) equals softmax(log softmax(z) / T), the shipped heads' probabilities can be
tempered again with no access to the logits, so the alternatives need no retraining:

- shared: the heads as shipped (one temperature, fitted on the NLL of their mean);
- joint per head: K temperatures fitted together on the NLL of the mean (Nelder-Mead);
- each head alone: every head tempered on its own NLL, then averaged.

Each row gives F1, NLL and ECE of the mean on the test set and the OOD AUROC of its confidence
(the run's dataset's default OOD set, Fashion-MNIST for MNIST), then the mean over the runs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.optimize import minimize

from qute import data as qdata, metrics, uncertainty
from qute.errors import QuteError
from qute.models import ensemble_heads
from qute.run import load_run
from qute.temperature import tempered

WAYS = ("shared", "joint per head", "each head alone")


def _per_head(heads: np.ndarray, ts) -> np.ndarray:
    return np.stack([tempered(h[None], float(t))[0] for h, t in zip(heads, ts)])


def _fit(heads: np.ndarray, y: np.ndarray) -> np.ndarray:
    res = minimize(lambda u: metrics.nll(y, _per_head(heads, np.exp(u)).mean(0)), np.zeros(len(heads)),
                   method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7})
    return np.exp(res.x)


def measure(run_dir: str) -> list[dict]:
    run = load_run(run_dir)
    t = run.train
    data = qdata.load_dataset(t.dataset, t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    _, x_ood = qdata.load_ood(None, data, t.data_dir, seed=t.seed)
    model = run.load_model()
    val, test, ood = (ensemble_heads(run.spec, model, x, t.seed) for x in (data.x_val, data.x_test, x_ood))
    temps = {"shared": np.ones(len(val)), "joint per head": _fit(val, data.y_val),
             "each head alone": np.array([_fit(h[None], data.y_val)[0] for h in val])}
    rows = []
    for way in WAYS:
        s, so = uncertainty.summarize(_per_head(test, temps[way])), uncertainty.summarize(_per_head(ood, temps[way]))
        y = data.y_test
        rows.append({"run": str(run_dir), "way": way, "temperatures": [float(x) for x in temps[way]],
                     "f1": metrics.f1(y, s.mean_probs), "nll": metrics.nll(y, s.mean_probs),
                     "ece": metrics.ece(y, s.mean_probs),
                     "ood_auroc": metrics.ood_auroc(uncertainty.uncertainty_score(s, "confidence"),
                                                    uncertainty.uncertainty_score(so, "confidence"))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    try:
        rows = [r for run in args.runs for r in measure(run)]
    except QuteError as e:
        print(f"head_temperature: {e}", file=sys.stderr)
        return 2
    keys = ("f1", "nll", "ece", "ood_auroc")
    print("| run | temperatures | F1 | NLL | ECE | OOD AUROC |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run'].rstrip('/').split('/')[-1]} {r['way']} | {', '.join(f'{t:.3f}' for t in r['temperatures'])} | "
              + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        print(f"| mean of {len(mine)}, {way} | | " + " | ".join(f"{np.mean([r[k] for r in mine]):.4f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
