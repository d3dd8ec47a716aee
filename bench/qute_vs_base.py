"""The QUTE ensemble against the single-head base model of the same backbone, on emulated Cortex-M7 and M4.

    .venv/bin/python bench/qute_vs_base.py                         # train both on MNIST (1 epoch, seed 0); M7 and M4
    .venv/bin/python bench/qute_vs_base.py --work /tmp/qvb         # keep the trained runs and builds there, reuse the runs
    .venv/bin/python bench/qute_vs_base.py --qute Q.tflite --base B.tflite   # existing int8 models (or run folders)
    .venv/bin/python bench/qute_vs_base.py --cores m7 --readme     # one core; rewrite README's qute-vs-base section

Issue 10 ("Measuring it"): the QUTE ensemble against a single-head base model of the same backbone
on the device; the paper reports +3-6% latency for QUTE over base, and ours must stay within 5%.

1. Models. Unless --qute and --base are given, `qute train --dataset mnist --method qute` and
   `--method base` (the default backbone, mnist-cnn-mp, and the default K = 3; the CLI's `--method`
   or `[train] method` of qute.toml picks the method), `--epochs 1 --seed 0`, then `qute quantize`.
   One epoch is enough: instruction counts depend on the architecture (the graph, its shapes and
   the kernels), not on how well it is trained. The runs are kept in WORK/runs and reused when
   their config.json names the same dataset, method, K, epochs, seed and backbone channels.
2. For each core (mps2-an500: Cortex-M7, mps2-an386: Cortex-M4) and each model,
   `qute build --board B MODEL --samples 10` and `qute run`, then the same with `--profile` for
   the per-op table (BUILD/profile.json). Builds are always redone (the kernels change). Both models
   get the same 10 inputs (the first 10 MNIST test images for runs; qute's seeded random inputs
   for bare .tflite files), checked byte for byte.
3. The figures are mean instructions per inference under QEMU `-icount shift=0` (SysTick,
   resolution 40 instructions), not time. "Model" is `cycles=` of the sample lines
   (`qute_model_run()`); the ensemble's mean and its scores are not model ops but the firmware's
   uncertainty module (`ucycles=`), shown beside it. The per-op table comes from the profiled
   builds, whose counts include one counter reading (~54 instructions) per op, so their totals
   are a little above the plain builds'.
4. MACs per op come from `qute-codegen report --json`; parameters are the elements of the
   weight and bias tensors of the model's conv, depthwise and dense ops.

Writes bench/results/qute_vs_base.md and .json (--out to move them); --readme also replaces the
text between `<!-- qute-vs-base -->` and `<!-- /qute-vs-base -->` in README.md. Exit status 2 when
a step fails, a `qute run` that is not bit-exact against TFLite Micro included (its output is shown);
being above the 5% goal is a result, not a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import readme_section  # bench/, next to this file
from qute import transcript
from qute.config import FILTERS, TrainConfig
from qute.errors import QuteError
from qute.run import load_run

ROOT = Path(__file__).resolve().parents[1]
CORES = {"m7": ("mps2-an500", "Cortex-M7"), "m4": ("mps2-an386", "Cortex-M4")}
MODELS = ("base", "qute")
GOAL = 1.05  # issue 10: QUTE within 5% of base
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ARCH = TrainConfig.arch  # what `qute train` trains without --arch


class BenchError(RuntimeError):
    pass


def _exe(name: str, module: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def sh(cmd: list, what: str, timeout: float | None = None) -> str:
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    if p.returncode != 0:
        raise BenchError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p.stdout


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# 1. the two models


def cached_run(folder: Path, want: dict) -> bool:
    if not (folder / "model.int8.tflite").is_file():
        return False
    try:
        run = load_run(folder)
    except QuteError:  # missing or damaged: train it again
        return False
    # the channels it was built with too: a run from before a default changed is another model
    return all(getattr(run.train, k) == v for k, v in want.items()) and run.spec.filters == FILTERS[ARCH]


def train_model(method: str, args, work: Path) -> Path:
    run = work / "runs" / f"mnist-{method}"
    want = {"dataset": "mnist", "arch": ARCH, "method": method, "k": args.k, "epochs": args.epochs, "seed": args.seed}
    if cached_run(run, want):
        log(f"  {method}: reusing {run}")
        return run
    log(f"  {method}: qute train --dataset mnist --method {method} -K {args.k} --epochs {args.epochs} --seed {args.seed}")
    cmd = [*_exe("qute", "qute"), "train", "--dataset", "mnist", "--method", method, "-K", args.k,
           "--epochs", args.epochs, "--seed", args.seed, "-o", run, "--force"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    sh(cmd, f"training {method}")
    log(f"  {method}: qute quantize")
    cmd = [*_exe("qute", "qute"), "quantize", run]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    sh(cmd, f"quantizing {method}")
    return run


def model_source(path: Path, what: str, args) -> tuple[Path, Path]:
    """(what qute build gets, the int8 .tflite): a run folder (quantized when needed) or a .tflite file."""
    if path.is_dir():
        tfl = path / "model.int8.tflite"
        if not tfl.is_file():
            log(f"  {what}: qute quantize {path}")
            sh([*_exe("qute", "qute"), "quantize", path, *(["--data-dir", args.data_dir] if args.data_dir else [])],
               f"quantizing {path}")
        return path, tfl
    if path.is_file():
        return path, path
    raise BenchError(f"--{what} {path}: no such run folder or .tflite file")


# ---------------------------------------------------------------------------------------------
# the graph: parameters, MACs, and which op belongs to the backbone or to which head


def graph_facts(tflite: Path) -> dict:
    from codegen.reader import read_file

    g = read_file(tflite)
    report = json.loads(sh([*_exe("qute-codegen", "codegen.cli"), "report", "--json", tflite], f"qute-codegen report {tflite}"))
    params = sum(g.tensor(t).size for op in g.ops if op.opcode in WEIGHTED
                 for t in op.inputs[1:] if t >= 0 and g.tensor(t).is_const)
    names = {t: n for n, t in g.output_names.items()}
    heads = [names.get(t, f"output_{i}") for i, t in enumerate(g.outputs)]
    # the heads each op's output reaches: all of them = shared backbone, one = that head's block
    reach: dict[int, set[str]] = {}
    for op in reversed(g.ops):
        r = {names[t] for t in op.outputs if t in names}
        for t in op.outputs:
            for c in g.consumers(t):
                r |= reach[c.index]
        reach[op.index] = r
    ops = []
    macs = {r["index"]: r["macs"] for r in report["ops"]}
    kernels = {r["index"]: r["kernel"] for r in report["ops"]}
    for op in g.ops:
        w = g.tensor(op.inputs[1]).shape if op.opcode in WEIGHTED else ()
        ops.append({"index": op.index, "opcode": op.opcode, "kernel": kernels.get(op.index, ""),
                    "macs": macs.get(op.index, 0), "heads": sorted(reach[op.index]),
                    "sig": [op.opcode, list(g.tensor(op.outputs[0]).shape), list(w)]})
    return {
        "file": str(tflite),
        "sha256": hashlib.sha256(tflite.read_bytes()).hexdigest(),
        "tflite_bytes": tflite.stat().st_size,
        "heads": sorted(heads),
        "params": int(params),
        "macs": report["macs"],
        "weights_bytes": report["weights_bytes"],
        "params_bytes": report["params_bytes"],
        "arena_bytes": report["arena_bytes"],
        "ops": ops,
    }


def assign_parts(base: dict, qute: dict) -> None:
    """Labels every op of both models 'backbone' or its head's block, and pairs base's ops with QUTE's.

    QUTE's backbone: the ops whose output reaches every head. Base has one head, so its backbone is
    the longest prefix of its ops equal to QUTE's backbone (opcode, output shape, weight shape),
    which must be all of QUTE's backbone: same backbone or nothing to compare. The rest of base is
    its head's block; its ops are paired with QUTE's head_0 block by opcode, in order.
    """
    nq = len(qute["heads"])
    q_bb = [o for o in qute["ops"] if len(o["heads"]) == nq]
    for o in qute["ops"]:
        o["part"] = "backbone" if len(o["heads"]) == nq else (o["heads"][0] if len(o["heads"]) == 1 else "shared")
    n = 0
    while n < min(len(q_bb), len(base["ops"])) and base["ops"][n]["sig"] == q_bb[n]["sig"]:
        n += 1
    if n != len(q_bb):
        raise BenchError(f"not the same backbone: base's op {n} is {base['ops'][n]['sig'] if n < len(base['ops']) else 'missing'}, "
                         f"QUTE's backbone op is {q_bb[n]['sig']}")
    for i, o in enumerate(base["ops"]):
        o["part"] = "backbone" if i < n else "head_0"
        o["pair"] = q_bb[i]["index"] if i < n else None
    head0 = [o for o in qute["ops"] if o["part"] == "head_0"]
    for o in base["ops"][n:]:
        match = next((q for q in head0 if q["opcode"] == o["opcode"] and "paired" not in q), None)
        if match is not None:
            match["paired"] = True
            o["pair"] = match["index"]
    for q in head0:
        q.pop("paired", None)


# ---------------------------------------------------------------------------------------------
# 2. build and run


def build_and_run(model: Path, board: str, out: Path, profile: bool, args) -> dict:
    cmd = [*_exe("qute", "qute"), "build", "--board", board, model, "--samples", args.samples, "-o", out, "--force"]
    if profile:
        cmd.append("--profile")
    if args.data_dir and model.is_dir():
        cmd += ["--data-dir", args.data_dir]
    sh(cmd, f"qute build {'--profile ' if profile else ''}{model} for {board}")
    sh([*_exe("qute", "qute"), "run", out, "--timeout", args.timeout], f"qute run {out}")  # exit 1 if not bit-exact
    t = transcript.parse((out / "transcript.txt").read_text())
    if not t.complete or len(t.samples) != args.samples:
        raise BenchError(f"{out}: incomplete transcript ({len(t.samples)} samples)")
    if t.start.get("counter") != "instructions":
        raise BenchError(f"{out}: counter is {t.start.get('counter')!r}, not instructions")
    cyc = np.array([s.cycles for s in t.samples], dtype=np.int64)
    ucyc = np.array([s.ucycles or 0 for s in t.samples], dtype=np.int64)
    manifest = json.loads((out / "build.json").read_text())
    memory = json.loads((out / "memory.json").read_text())
    r = {
        "build": str(out),
        "model": float(cyc.mean()), "model_min": int(cyc.min()), "model_max": int(cyc.max()),
        "uncertainty": float(ucyc.mean()),
        "text": next(s["size"] for s in memory["sections"] if s["name"] == ".text"),
        "inputs_from": manifest["inputs"]["from"],
        "inputs": np.load(out / manifest["inputs"]["file"])["x"],
    }
    if profile:
        p = json.loads((out / "profile.json").read_text())
        r["profile"] = {"ops": {o["index"]: o["count"] for o in p["ops"]}, "invoke": p["invoke"],
                        "after_last_op": p["after_last_op"],
                        # the kernels this build calls (its filter layout is qute build's choice)
                        "kernels": {o["index"]: o["kernel"] for o in manifest["profile"]["ops"]}}
    return r


# ---------------------------------------------------------------------------------------------
# 3. tables


def _n(v, fmt="{:,.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def _pct(x: float) -> str:
    return f"{100 * (x - 1):+.1f}%"


def headline_table(rows: list[dict]) -> str:
    lines = ["| core | base | QUTE | QUTE / base | within 5%? | base + unc. module | QUTE + unc. module "
             "| QUTE / base | within 5%? |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['core']} | {r['base']:,.0f} | {r['qute']:,.0f} | {r['ratio']:.3f} ({_pct(r['ratio'])}) "
                     f"| {'yes' if r['ratio'] <= GOAL else 'no'} | {r['base_total']:,.0f} | {r['qute_total']:,.0f} "
                     f"| {r['ratio_total']:.3f} ({_pct(r['ratio_total'])}) | {'yes' if r['ratio_total'] <= GOAL else 'no'} |")
    return "\n".join(lines)


def models_table(facts: dict, rows: list[dict]) -> str:
    b, q = facts["base"], facts["qute"]
    lines = ["| model | heads | parameters | MACs | model weights (B) | per-op parameters (B) | arena (B) | .tflite (B) | "
             + " | ".join(f"firmware .text, {r['core']} (B)" for r in rows) + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(rows)]
    for name, f in (("base", b), ("QUTE", q)):
        key = "base" if f is b else "qute"
        lines.append(f"| {name} | {len(f['heads'])} | {f['params']:,} | {f['macs']:,} | {f['weights_bytes']:,} "
                     f"| {f['params_bytes']:,} | {f['arena_bytes']:,} | {f['tflite_bytes']:,} | "
                     + " | ".join(f"{r[key + '_text']:,}" for r in rows) + " |")
    lines.append(f"| QUTE / base | | {q['params'] / b['params']:.3f} | {q['macs'] / b['macs']:.3f} "
                 f"| {q['weights_bytes'] / b['weights_bytes']:.3f} | {q['params_bytes'] / b['params_bytes']:.3f} "
                 f"| {q['arena_bytes'] / b['arena_bytes']:.3f} "
                 f"| {q['tflite_bytes'] / b['tflite_bytes']:.3f} | "
                 + " | ".join(f"{r['qute_text'] / r['base_text']:.3f}" for r in rows) + " |")
    return "\n".join(lines)


def part_label(part: str, facts: dict) -> str:
    if part == "backbone":
        return "backbone (shared)"
    if part.startswith("head_"):
        return f"output block {part.removeprefix('head_')} ({part})"
    return f"{part} (ops some heads share)"


def op_rows(facts: dict, prof: dict) -> list[dict]:
    """One row per op that runs code, QUTE's in execution order grouped by part, with base's paired op."""
    base, qute = facts["base"], facts["qute"]
    bcount, qcount = prof["base"]["ops"], prof["qute"]["ops"]
    paired = {o["pair"]: o for o in base["ops"] if o.get("pair") is not None}
    parts = ["backbone"] + sorted({o["part"] for o in qute["ops"]} - {"backbone"})
    rows = []
    for part in parts:
        for o in (o for o in qute["ops"] if o["part"] == part):
            bo = paired.get(o["index"])
            b = bcount.get(bo["index"]) if bo is not None else None
            q = qcount.get(o["index"])
            if q is None and b is None:
                continue  # runs no code (a RESHAPE)
            kernel = prof["qute"].get("kernels", {}).get(o["index"], o["kernel"])
            rows.append({"part": part, "opcode": o["opcode"], "kernel": kernel, "macs": o["macs"],
                         "qute_index": o["index"], "base_index": bo["index"] if bo is not None else None,
                         "base": b, "qute": q or 0.0, "diff": (q or 0.0) - (b or 0.0)})
    for o in base["ops"]:  # base ops with no QUTE counterpart (none for the shipped methods)
        if o.get("pair") is None and o["index"] in bcount:
            rows.append({"part": o["part"], "opcode": o["opcode"],
                         "kernel": prof["base"].get("kernels", {}).get(o["index"], o["kernel"]), "macs": o["macs"],
                         "qute_index": None, "base_index": o["index"], "base": bcount[o["index"]], "qute": None,
                         "diff": -bcount[o["index"]]})
    return rows


def extra_rows(prof: dict, unc: dict) -> list[dict]:
    return [
        {"part": "uncertainty", "label": "ensemble mean and scores (firmware uncertainty module, not a model op)",
         "base": unc["base"], "qute": unc["qute"], "diff": unc["qute"] - unc["base"]},
        {"part": "return", "label": "after the last op (return)", "base": prof["base"]["after_last_op"],
         "qute": prof["qute"]["after_last_op"], "diff": prof["qute"]["after_last_op"] - prof["base"]["after_last_op"]},
    ]


def per_op_table(rows: list[dict], extra: list[dict], facts: dict) -> str:
    total = sum(r["diff"] for r in rows) + sum(r["diff"] for r in extra)
    lines = ["| part | op (QUTE # / base #) | kernel | MACs | base | QUTE | QUTE − base | share of the difference |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        idx = f"{_n(r['qute_index'], '{}')} / {_n(r['base_index'], '{}')}"
        lines.append(f"| {part_label(r['part'], facts)} | {r['opcode']} ({idx}) | {r['kernel']} | {r['macs']:,} "
                     f"| {_n(r['base'])} | {_n(r['qute'])} | {r['diff']:+,.0f} | {100 * r['diff'] / total:.1f}% |")
    for r in extra:
        lines.append(f"| {r['label']} | | | | {r['base']:,.0f} | {r['qute']:,.0f} | {r['diff']:+,.0f} "
                     f"| {100 * r['diff'] / total:.1f}% |")
    bt = sum(r["base"] or 0 for r in rows) + sum(r["base"] for r in extra)
    qt = sum(r["qute"] or 0 for r in rows) + sum(r["qute"] for r in extra)
    lines.append(f"| **total** (profiled model run + uncertainty module) | | | "
                 f"{facts['base']['macs']:,} / {facts['qute']['macs']:,} | {bt:,.0f} | {qt:,.0f} | {qt - bt:+,.0f} | 100.0% |")
    return "\n".join(lines)


def summaries(rows: list[dict], extra: list[dict]) -> dict:
    """Per part and, for everything after the backbone, per op kind: base, QUTE, difference."""
    by_part, by_kind = {}, {}
    for r in rows:
        p = by_part.setdefault(r["part"], {"base": 0.0, "qute": 0.0})
        p["base"] += r["base"] or 0
        p["qute"] += r["qute"] or 0
        if r["part"] != "backbone":
            k = by_kind.setdefault(r["opcode"], {"base": 0.0, "qute": 0.0, "base_ops": 0, "qute_ops": 0})
            k["base"] += r["base"] or 0
            k["qute"] += r["qute"] or 0
            k["base_ops"] += r["base"] is not None
            k["qute_ops"] += r["qute"] is not None
    for r in extra:
        by_part[r["part"]] = {"base": r["base"], "qute": r["qute"]}
    for d in (by_part, by_kind):
        for v in d.values():
            v["diff"] = v["qute"] - v["base"]
    total = sum(v["diff"] for v in by_part.values())
    for d in (by_part, by_kind):
        for v in d.values():
            v["share"] = v["diff"] / total if total else None
    return {"by_part": by_part, "by_kind": by_kind, "total_diff": total}


PART_NAMES = {"uncertainty": "ensemble mean and scores (uncertainty module)", "return": "return from the run"}


def share_tables(per_core: list[dict], facts: dict) -> str:
    cores = [c["core"] for c in per_core]
    head = "| " + " | ".join(f"{c}: base | {c}: QUTE | {c}: QUTE − base (share)" for c in cores) + " |"
    align = "|---:|---:|---:" * len(cores) + "|"
    out = ["Where the difference goes, by part (profiled builds):", "",
           "| part " + head, "|---" + align]
    parts = list(per_core[0]["summary"]["by_part"])
    for p in parts:
        cells = []
        for c in per_core:
            v = c["summary"]["by_part"].get(p)
            cells.append("— | — | —" if v is None else
                         f"{v['base']:,.0f} | {v['qute']:,.0f} | {v['diff']:+,.0f} ({100 * v['share']:.1f}%)")
        out.append(f"| {PART_NAMES.get(p) or part_label(p, facts)} | " + " | ".join(cells) + " |")
    out += ["", "After the backbone, by op kind (ops in base / in QUTE):", "", "| op kind " + head, "|---" + align]
    for k in per_core[0]["summary"]["by_kind"]:
        cells = []
        for c in per_core:
            v = c["summary"]["by_kind"][k]
            cells.append(f"{v['base']:,.0f} | {v['qute']:,.0f} | {v['diff']:+,.0f} ({100 * v['share']:.1f}%)")
        v0 = per_core[0]["summary"]["by_kind"][k]
        out.append(f"| {k} ({v0['base_ops']} / {v0['qute_ops']}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


KIND_NAMES = {"DEPTHWISE_CONV_2D": "depthwise convs", "MAX_POOL_2D": "max pools", "AVERAGE_POOL_2D": "average pools",
              "MEAN": "means (global average pooling)", "FULLY_CONNECTED": "dense layers", "SOFTMAX": "softmaxes",
              "CONV_2D": "convs", "RESHAPE": "reshapes"}


def _and(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def verdict(rows: list[dict], per_core: list[dict], facts: dict) -> str:
    """One sentence on what the numbers show, made from them."""
    b, q = facts["base"], facts["qute"]
    over = [r for r in rows if r["ratio"] > GOAL]
    where = ("above" if len(over) == len(rows) else "within" if not over
             else "above on " + ", ".join(r["core"] for r in over) + " and within elsewhere of")
    pc = per_core[0]
    kinds = pc["summary"]["by_kind"]
    top = sorted(kinds.items(), key=lambda kv: -kv[1]["diff"])
    split = ", ".join(f"{KIND_NAMES.get(k, k)} {100 * v['share']:.0f}%" for k, v in top
                      if v["share"] is not None and v["share"] >= 0.005)
    others = [KIND_NAMES.get(k, k) for k, v in top if k != "DEPTHWISE_CONV_2D" and v["diff"] > 0]
    base_model = pc["profiled"]["base"]["invoke"]
    rest = sum(v["diff"] for k, v in kinds.items() if k != "DEPTHWISE_CONV_2D")
    unc = pc["summary"]["by_part"].get("uncertainty")
    return (
        f"QUTE (K={len(q['heads'])}) needs "
        + " and ".join(f"{100 * (r['ratio'] - 1):.1f}% ({r['core']})" for r in rows)
        + f" more instructions per inference than the single-head base, {where} the issue's 5% goal, for "
        f"{100 * (q['macs'] / b['macs'] - 1):.1f}% more MACs and {100 * (q['params'] / b['params'] - 1):.1f}% more "
        f"parameters; on the {pc['core']} the difference is the output blocks' {split}"
        + (f" (averaging the heads in the firmware's uncertainty module adds {unc['diff']:,.0f} instructions more)"
           if unc else "")
        + (f", and without the depthwise convs the extra {_and(others)} alone would add "
           f"{100 * rest / base_model:.1f}% to base's model run" if others else "")
        + "."
    )


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qute", type=Path, help="the QUTE model: an int8 .tflite or a run folder (skips training it)")
    ap.add_argument("--base", type=Path, help="the base model: an int8 .tflite or a run folder (skips training it)")
    ap.add_argument("--work", type=Path, help="folder for the trained runs and the builds (default: a temporary one, deleted)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (default 1: counts do not depend on accuracy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-K", "--k", type=int, default=3, help="QUTE's heads (default 3, qute train's default)")
    ap.add_argument("--samples", type=int, default=10, help="inputs per run (default 10)")
    ap.add_argument("--cores", default="m7,m4", help="comma-separated: m7 (mps2-an500), m4 (mps2-an386)")
    ap.add_argument("--data-dir", help="datasets folder (default: qute's, ../shared/data)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where qute_vs_base.md/.json go")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per QEMU run")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's qute-vs-base section with the results")
    args = ap.parse_args(argv)
    cores = []
    for c in (c.strip() for c in args.cores.split(",") if c.strip()):
        key = next((k for k, (machine, name) in CORES.items() if c.lower() in (k, machine, name.lower())), None)
        if key is None:
            ap.error(f"unknown core {c!r}; one of {', '.join(CORES)}")
        cores.append(key)
    if args.samples < 1 or args.epochs < 1:
        ap.error("--samples and --epochs must be positive")

    t0 = time.monotonic()
    temp = None
    if args.work is None:
        temp = Path(tempfile.mkdtemp(prefix="qute-bench-qvb-"))
        work = temp
    else:
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, cores, work, t0, argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _bench(args, cores, work: Path, t0: float, argv) -> int:
    timings = {}
    src, trained = {}, {}
    for m in MODELS:
        given = getattr(args, m)
        if given is None:
            given = train_model(m, args, work)
            trained[m] = True
        src[m] = model_source(given.resolve(), m, args)
    timings["models_s"] = time.monotonic() - t0

    facts = {m: graph_facts(src[m][1]) for m in MODELS}
    if len(facts["base"]["heads"]) != 1:
        raise BenchError(f"--base has {len(facts['base']['heads'])} heads; the base model has one")
    assign_parts(facts["base"], facts["qute"])

    t1 = time.monotonic()
    rows, per_core, runs = [], [], {}
    for c in cores:
        board, core = CORES[c]
        res = {}
        for m in MODELS:
            for profile in (False, True):
                out = work / "builds" / f"{m}-{board}{'-profile' if profile else ''}"
                log(f"  {m} on {board}{' (--profile)' if profile else ''}: qute build, qute run")
                res[m, profile] = build_and_run(src[m][0], board, out, profile, args)
        x = [res[m, p]["inputs"] for m in MODELS for p in (False, True)]
        if any(a.shape != x[0].shape or a.tobytes() != x[0].tobytes() for a in x[1:]):
            raise BenchError(f"{board}: the builds embedded different inputs; the comparison would be meaningless")
        b, q = res["base", False], res["qute", False]
        row = {"core": core, "machine": board,
               "base": b["model"], "qute": q["model"], "ratio": q["model"] / b["model"],
               "base_uncertainty": b["uncertainty"], "qute_uncertainty": q["uncertainty"],
               "base_total": b["model"] + b["uncertainty"], "qute_total": q["model"] + q["uncertainty"],
               "base_min_max": [b["model_min"], b["model_max"]], "qute_min_max": [q["model_min"], q["model_max"]],
               "base_text": b["text"], "qute_text": q["text"], "inputs": b["inputs_from"]}
        row["ratio_total"] = row["qute_total"] / row["base_total"]
        row["within_5_percent"] = row["ratio"] <= GOAL
        row["within_5_percent_with_uncertainty"] = row["ratio_total"] <= GOAL
        rows.append(row)
        prof = {m: res[m, True]["profile"] for m in MODELS}
        unc = {m: res[m, True]["uncertainty"] for m in MODELS}
        ops = op_rows(facts, prof)
        extra = extra_rows(prof, unc)
        per_core.append({"core": core, "machine": board, "ops": ops, "extra": extra,
                         "profiled": {m: {"invoke": prof[m]["invoke"], "uncertainty": unc[m]} for m in MODELS},
                         "summary": summaries(ops, extra)})
        runs[board] = {f"{m}{'-profile' if p else ''}": res[m, p]["build"] for m in MODELS for p in (False, True)}
    timings["builds_and_runs_s"] = time.monotonic() - t1
    timings["total_s"] = time.monotonic() - t0

    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--readme"]
    command = " ".join([".venv/bin/python bench/qute_vs_base.py", *shown])
    origin = (f"trained here: qute train --dataset mnist --method qute|base ({ARCH}, K="
              f"{args.k}) --epochs {args.epochs} --seed {args.seed}, then qute quantize (one epoch is enough: "
              "instruction counts depend on the graph and the kernels, not on the weights' accuracy)"
              if len(trained) == 2 else f"given: --qute {args.qute}, --base {args.base}"
              if not trained else f"trained: {', '.join(trained)}; given: the other")
    sentence = verdict(rows, per_core, facts)
    md_parts = [
        f"`{command}` ({timings['total_s']:.0f} s here: models {timings['models_s']:.0f} s, "
        f"{4 * len(cores)} builds and QEMU runs {timings['builds_and_runs_s']:.0f} s). Models {origin}. "
        f"Each model is built with `qute build --board B MODEL --samples {args.samples}` "
        f"(and again with `--profile`) and run with `qute run` (bit-exact against TFLite Micro) on the same "
        f"{args.samples} inputs: {rows[0]['inputs']}. Figures are **mean instructions per inference under QEMU "
        f"`-icount shift=0`, not time**; \"base\" and \"QUTE\" are the model run (`cycles=`), \"+ unc. module\" "
        f"adds the firmware's uncertainty module (`ucycles=`: averaging the heads, confidence, margin, entropy, "
        f"mutual information), which the ensemble needs and base needs less of. Within 5%: QUTE / base ≤ 1.05 "
        f"(issue 10; the paper reports +3-6%).",
        "",
        headline_table(rows),
        "",
        f"Base: {facts['base']['params']:,} parameters, {facts['base']['macs']:,} MACs; QUTE: "
        f"{facts['qute']['params']:,} parameters, {facts['qute']['macs']:,} MACs (memory and every op: "
        f"`bench/results/qute_vs_base.md`).",
        "",
        share_tables(per_core, facts),
        "",
        sentence,
    ]
    section = "\n".join(_wrap(part) for part in md_parts)
    full = [
        "# QUTE against the single-head base model on emulated Cortex-M cores",
        "",
        section,
        "",
        "## The two models",
        "",
        "Parameters: elements of the conv, depthwise and dense ops' weights and biases in the int8 model (what "
        "Keras counts); MACs, model weights, per-op parameters (both in flash) and arena (the model's RAM, "
        "inputs and outputs included) as `qute-codegen report --json` counts them for the generated C; .text "
        "is the firmware's `.text` section (model code, kernels, start-up, console, uncertainty code).",
        "",
        models_table(facts, rows),
        "",
    ]
    for pc in per_core:
        p = pc["profiled"]
        full += [f"## Per op on the {pc['core']} ({pc['machine']}, `--profile` builds)", "",
                 f"Each op's count includes one reading of the counter (~54 instructions), so the profiled model "
                 f"runs ({p['base']['invoke']:,.0f} and {p['qute']['invoke']:,.0f}) are a little above the plain "
                 f"builds'. Ops are QUTE's in execution order, grouped by part, beside base's op of the same kind "
                 f"(— where base has none). Ops that run no code (reshapes) are left out.", "",
                 per_op_table(pc["ops"], pc["extra"], facts), ""]
    md = "\n".join(_wrap(part) for part in full)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": "mean instructions per inference under QEMU -icount shift=0 (SysTick, resolution 40); "
                "model = cycles= of the sample lines, uncertainty = ucycles=",
        "command": command,
        "commit": _commit(),
        "goal": "QUTE / base <= 1.05 (issue 10)",
        "models": {"origin": origin, **facts},
        "rows": rows,
        "per_op": per_core,
        "timings_s": timings,
        "sentence": sentence,
    }
    (args.out / "qute_vs_base.json").write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    (args.out / "qute_vs_base.md").write_text(md + "\n")
    log(f"wrote {args.out / 'qute_vs_base.md'}, {args.out / 'qute_vs_base.json'}")
    if args.readme:
        write_readme(section)
    return 0


def _wrap(text: str) -> str:
    """Prose paragraphs wrapped as the README's are; tables and headings as they are."""
    return "\n\n".join(
        p if not p.strip() or any(line.lstrip().startswith(("|", "#")) for line in p.splitlines())
        else textwrap.fill(p, width=110, break_long_words=False, break_on_hyphens=False)
        for p in text.split("\n\n"))


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


def _commit() -> str | None:
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return None
    return p.stdout.strip() or None


def write_readme(section: str) -> None:
    try:
        readme_section.replace("qute-vs-base", section)
    except LookupError as e:
        raise BenchError(str(e)) from None
    log("rewrote README.md's qute-vs-base section")


if __name__ == "__main__":
    sys.exit(main())
