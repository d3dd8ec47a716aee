"""Early-exit inference of a QUTE run on an emulated board, policy by policy (issue 13).

    .venv/bin/python bench/early_exits.py RUN                      # nucleo-f746 (QEMU mps2-an500)
    .venv/bin/python bench/early_exits.py RUN --board nucleo-l432kc --readme

RUN is a run quantized with its exits (`qute quantize RUN --exits`). For each policy: accuracy,
NLL, ECE and OOD AUROC (Fashion-MNIST for MNIST) on the whole test set, the exits taken, and the
mean instructions per inference, against the same firmware run to the end (policy never), measured
in the same run. How (qute/dynamic.py): the exit decisions are made on the host with the board's
arithmetic from the int8 model's outputs on TFLite Micro (the device makes the same ones bit for
bit: tests/test_exits.py); what stopping at each exit costs, model plus uncertainty scores, is
measured under QEMU `-icount shift=0` (`qute eval RUN --dynamic ...` does the same for one policy
and caches the costs in RUN/exit_costs.json, which this reuses). budget:F and accuracy:A choose
their policy on the validation split (qute.dynamic.choose_policy: thresholds on each exit's own
confidence or on the mean of the exits so far, whichever does better) and are scored on the test set.

Writes bench/results/early_exits.md and .json; --readme also replaces the text between
`<!-- early-exits -->` and `<!-- /early-exits -->` in README.md. Exit status 2 when a step fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import readme_section  # bench/, next to this file

from qute import data as qdata, dynamic
from qute.boards import load_board
from qute.errors import QuteError, RunFailure
from qute.int8_model import TFLITE_FILE
from qute.run import load_run

POLICIES = ("never", "confidence:0.999", "confidence:0.99", "confidence:0.97", "confidence:0.9",
            "mean-confidence:0.97", "entropy:0.1", "window-mean-confidence:0.5/0.97", "budget:0.8", "budget:0.7")
RESULTS = Path(__file__).resolve().parent / "results"


def measure(run_dir: str, board_name: str, policies, progress=lambda s: print(f"  {s}", file=sys.stderr)) -> dict:
    run = load_run(run_dir)
    board = load_board(board_name)
    tflite = (Path(run.path) / TFLITE_FILE).read_bytes()
    t = run.train
    data = qdata.load_dataset(t.dataset, t.data_dir, seed=t.seed, val_fraction=t.val_fraction, limit=t.limit)
    ood_name, x_ood = qdata.load_ood(None, data, t.data_dir, seed=0)
    costs_entry = dynamic.stage_costs(run, board, progress)
    costs = costs_entry["costs"]
    progress("running the test, OOD and validation images on TFLite Micro")
    test, ood, val = (dynamic.exit_outputs(tflite, x, board) for x in (data.x_test, x_ood, data.x_val))
    rows = []
    for spec in policies:
        kind, value = dynamic.parse_dynamic(spec)
        chosen = None
        if kind == "policy":
            policy = dynamic.policy_dict(value, test)
        else:
            chosen = dynamic.choose_policy(val, data.y_val, costs, "confidence",
                                           **({"budget": value} if kind == "budget" else {"target": value}))
            policy = dynamic.policy_dict(chosen, test)
        r = dynamic.outcome(test, data.y_test, costs, policy)
        r["ood_auroc"] = dynamic.ood_auroc(test, ood, policy)
        thresholds = None if policy is None else policy["thresholds"]
        if chosen is not None:  # the policy found, as --exit-policy takes it
            thresholds = [chosen.spec()]
        if policy is not None and "rejects" in policy:
            thresholds = [f"{a:g} (reject {b:g})" for a, b in zip(policy["thresholds"], policy["rejects"])]
        rows.append({"policy": spec, "thresholds": thresholds, **r})
    return {"run": str(run.path), "board": board.name, "machine": costs_entry["machine"], "costs": costs,
            "ood": ood_name, "test_samples": int(len(data.y_test)), "rows": rows}


def table(result: dict) -> str:
    n_exits = len(result["costs"]) - 1
    names = [f"exit_{k}" for k in range(n_exits)] + ["end"]
    lines = [f"| policy | thresholds | accuracy | NLL | ECE | OOD AUROC ({result['ood']}) | rejected (accuracy of the rest) "
             f"| exits taken ({' / '.join(names)}) | mean instructions | / run to the end |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in result["rows"]:
        n = sum(r["histogram"])
        taken = " / ".join(f"{100 * h / n:.0f}%" for h in r["histogram"])
        ts = "-" if r["thresholds"] is None else ", ".join(t if isinstance(t, str) else f"{t:g}" for t in r["thresholds"])
        rej = f"{100 * r['rejected']:.1f}% ({r['accepted_accuracy']:.4f})" if r["rejected"] else "-"
        lines.append(f"| {r['policy']} | {ts} | {r['accuracy']:.4f} | {r['nll']:.3f} | {r['ece']:.3f} | "
                     f"{r['ood_auroc']:.3f} | {rej} | {taken} | {r['mean_cost']:,.0f} | {r['cost_fraction']:.3f} |")
    costs = ", ".join(f"{name} {c:,.0f}" for name, c in zip(names, result["costs"]))
    lines.append("")
    lines.append(f"Instructions per inference (model + uncertainty scores) when a run stops at: {costs} "
                 f"({result['board']}, QEMU {result['machine']}, `-icount shift=0`); {result['test_samples']:,} test images.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run quantized with qute quantize RUN --exits")
    ap.add_argument("--board", default="nucleo-f746")
    ap.add_argument("--policies", default=",".join(POLICIES).replace(",", ";"),
                    help="policies separated by ';' (qute eval --dynamic's syntax)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's early-exits section")
    args = ap.parse_args(argv)
    try:
        result = measure(args.run, args.board, [p for p in args.policies.split(";") if p])
    except (QuteError, RunFailure) as e:
        print(f"early_exits: {e}", file=sys.stderr)
        return 2
    text = table(result)
    command = "    .venv/bin/python bench/early_exits.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                                  if a != "--readme")
    section = f"```\n{command}\n```\n\n{text}"
    print(section)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "early_exits.md").write_text(section + "\n")
    (args.out / "early_exits.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.readme:
        readme_section.replace("early-exits", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
