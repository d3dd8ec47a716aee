"""Generated C against the TFLite Micro interpreter: time per inference and RAM, one run, as ratios.

    .venv/bin/python bench/codegen_vs_tflm.py                       # qute's default QUTE model + the MLPerf Tiny models
    .venv/bin/python bench/codegen_vs_tflm.py runs/demo/model.int8.tflite more.tflite

Both sides run on this machine's CPU on the same input: our C compiled with gcc -O2 and timed
inside its own process; TFLM's reference kernels through the tflite-micro Python interpreter
(`invoke()` timed from Python, so each call also pays a microsecond or so of binding overhead).
RAM: our arena (which holds the inputs and outputs, as TFLM's does) against TFLM's whole arena
(activations and I/O plus interpreter state) and its activation part alone. Outputs are compared byte for
byte on the timed input, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from codegen.host import build_host
from codegen.ir import CodegenError
from codegen.reader import read_model
from codegen.report import build_report

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"


def time_tflm(data: bytes, x: np.ndarray, budget: float = 1.0) -> tuple[float, np.ndarray]:
    from tflite_micro.python.tflite_micro import runtime

    ip = runtime.Interpreter.from_bytes(data)
    ip.set_input(x, 0)
    ip.invoke()
    out = ip.get_output(0).copy()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget or n < 5:
        ip.invoke()
        n += 1
    return (time.perf_counter() - start) / n, out


def bench_model(path: Path) -> dict:
    data = path.read_bytes()
    graph = read_model(data, str(path))
    try:
        host = build_host(graph)
    except CodegenError as e:
        return {"model": path.name, "error": str(e).splitlines()[0]}
    rep = build_report(graph, data)
    t_in = graph.tensor(graph.inputs[0])
    x = np.random.default_rng(0).integers(-128, 128, size=t_in.shape, dtype=np.int8)
    tflm_s, tflm_out = time_tflm(data, x)
    ours = host.run([x[None]])
    first = host.output_tensors.index(graph.outputs[0])
    same = np.array_equal(ours[first].reshape(-1), tflm_out.reshape(-1))
    est = host.time_invoke([x[None]], repeats=1)
    repeats = max(5, int(1.0 / max(est, 1e-6)))
    ours_s = host.time_invoke([x[None]], repeats=repeats)
    return {
        "model": path.name,
        "macs": rep.macs,
        "ours_us": ours_s * 1e6,
        "tflm_us": tflm_s * 1e6,
        "speedup": tflm_s / ours_s,
        "ours_ram": rep.arena_bytes,  # inputs and outputs included
        "ours_arena": rep.arena_bytes,
        "tflm_arena": rep.tflm.get("total"),
        "tflm_head": rep.tflm.get("head"),
        "bit_exact": same,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    args = ap.parse_args(argv)
    from qute.resources import firmware_dir

    models = args.models or [firmware_dir() / "default" / "model.int8.tflite", *sorted(SHARED.glob("*.tflite"))]
    if not models:
        print("no models given and ../shared/models is empty", file=sys.stderr)
        return 2
    rows = [bench_model(m) for m in models]
    for r, m in zip(rows, models):
        if m.parent.name == "default":
            r["model"] = "qute default (digits QUTE, K=3)"
    print("| model | MACs | ours µs | TFLM µs | speed-up | our RAM (arena, I/O inside) | TFLM arena (activations+I/O) | RAM ratio | bit-exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | | | | | | | | not supported: {r['error']} |")
            continue
        ratio = r["ours_ram"] / r["tflm_arena"] if r["tflm_arena"] else float("nan")
        print(f"| {r['model']} | {r['macs']:,} | {r['ours_us']:,.0f} | {r['tflm_us']:,.0f} | {r['speedup']:.2f}x | "
              f"{r['ours_ram']:,} | "
              f"{r['tflm_arena']:,} ({r['tflm_head']:,}) | {ratio:.2f} | {'yes' if r['bit_exact'] else 'NO'} |")
    return 0 if all(r.get("bit_exact", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
