"""qute's firmware against TensorFlow Lite Micro (reference kernels, and CMSIS-NN) on emulated Cortex-M cores.

    .venv/bin/python bench/mcu.py                                   # the four MLPerf Tiny models, M7 and M4
    .venv/bin/python bench/mcu.py --models kws_dscnn_int8 --cores m7
    .venv/bin/python bench/mcu.py --peer /elsewhere/peer --out bench/results
    .venv/bin/python bench/mcu.py --per-op ""                       # without the per-op tables
    .venv/bin/python bench/mcu.py --weights int8                    # filters kept int8 (small-flash boards)

For each model and core, in one run: `qute build --board <QEMU board> MODEL --samples 10 --emulator`,
then qute's ELF and the peer's two prebuilt ELFs (`<peer>/<machine>/<model>.tflm-ref.elf` and
`.tflm-cmsis-nn.elf`) under the same QEMU command line (`-icount shift=0`). All three count one
inference with the same SysTick code, so the figures are instructions per inference, not time.
qute's embedded inputs must equal the peer's (`<peer>/inputs/<model>.npz`, key `x`) byte for byte,
or the bench stops: ratios over different inputs would compare nothing. Every qute output byte is
compared with the peer's `out=` bytes and the differing ones are counted.

RAM: qute's model arena, which holds the model's input and outputs as TFLM's arena does (the
firmware writes each input into it and reads the outputs there, with no buffers of its own),
against the peer's `arena_used` (TFLM's `arena_used_bytes()`, which also holds interpreter state).
The figure is the ELF's `arena` symbol, checked against build.json's `arena_bytes`.
.text is qute's whole firmware `.text` (model code, kernels, start-up, console, uncertainty).
Model in flash: qute's weights and per-op constants, in the filter layout `qute build --weights`
chose (--weights here; auto takes int16 on these 4 MB boards: twice the filters' bytes, fewer
instructions), against the .tflite flatbuffer TFLM keeps in flash.

Per op (`--per-op`, default kws_dscnn_int8 and ic_resnet8_int8): a second qute build with
`--profile` on the same inputs, and a table per model and core of each op's kernel variant, MACs,
mean instructions and instructions per MAC (the peer prints no per-op counts; its README lists
CMSIS-NN's for the first input).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from qute import transcript
from qute.emulate import qemu_command, run_process

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = ("ic_resnet8_int8", "kws_dscnn_int8", "vww_mobilenet_int8", "ad_autoencoder_int8")
# qute board = the peer's QEMU machine, so both sides run on the very same emulated core
CORES = {"m7": ("mps2-an500", "Cortex-M7"), "m4": ("mps2-an386", "Cortex-M4")}
VARIANTS = (("ref", "tflm-ref"), ("cmsis", "tflm-cmsis-nn"))
SAMPLES = 10

_PEER = re.compile(r"PEER (start|sample|done)\b")
_FIELD = re.compile(r"([a-z_]+)=(\S+)")


class BenchError(RuntimeError):
    pass


def qemu_run(machine: str, elf: Path, timeout: float) -> str:
    cmd = qemu_command(shutil.which("qemu-system-arm") or "qemu-system-arm", machine, elf)
    rc, out, err = run_process(cmd, timeout)
    if rc is None:
        raise BenchError(f"{elf}: QEMU timed out after {timeout:.0f} s")
    if rc != 0:
        raise BenchError(f"{elf}: QEMU exit {rc}\n{out[-600:]}{err[-600:]}")
    return out


def run_peer(machine: str, elf: Path, timeout: float) -> dict:
    start, samples, done = None, [], False
    for line in qemu_run(machine, elf, timeout).splitlines():
        m = _PEER.match(line.strip("\r\x00 "))
        if not m:
            continue
        f = dict(_FIELD.findall(line))
        if m.group(1) == "start":
            start = f
        elif m.group(1) == "sample":
            samples.append((int(f["sample"]), bytes.fromhex(f["out"]), int(f["instructions"])))
        else:
            done = True
    if start is None or not done or len(samples) != SAMPLES:
        raise BenchError(f"{elf}: incomplete output ({len(samples)} samples, done={done})")
    samples.sort()
    return {
        "instructions": float(np.mean([s[2] for s in samples])),
        "arena_used": int(start["arena_used"]),
        "out": [s[1] for s in samples],
    }


def qute_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("qute")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qute"]


def build_qute(model: Path, board: str, out: Path, peer_x: np.ndarray | None, weights: str = "auto") -> dict:
    cmd = [*qute_cmd(), "build", "--board", board, str(model), "--samples", str(SAMPLES), "-o", str(out), "--emulator",
           "--weights", weights]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-1500:]}{p.stderr[-1500:]}")
    manifest = json.loads((out / "build.json").read_text())
    memory = json.loads((out / "memory.json").read_text())
    x = np.load(out / manifest["inputs"]["file"])["x"]
    # Checked before anything runs: qute picks its own random inputs for a bare .tflite, and a
    # change in that seed or shape would silently turn the comparison into one over other data.
    if peer_x is not None and (x.shape != peer_x.shape or x.dtype != peer_x.dtype or x.tobytes() != peer_x.tobytes()):
        raise BenchError(f"{model.name} on {board}: qute's embedded inputs ({x.shape} {x.dtype}) are not the peer's "
                         f"({peer_x.shape} {peer_x.dtype}) byte for byte; the comparison would be meaningless")
    outputs = sorted(manifest["outputs"], key=lambda o: o["flatbuffer_index"])
    arena = memory["split"]["arena"]  # the ELF's arena symbol: the model's whole RAM, inputs and outputs included
    if arena != manifest["model"]["arena_bytes"]:
        raise BenchError(f"{model.name} on {board}: the ELF's arena is {arena} bytes, build.json says "
                         f"{manifest['model']['arena_bytes']}")
    text = next(s["size"] for s in memory["sections"] if s["name"] == ".text")
    return {
        "elf": out / manifest["variants"]["emulator"]["elf"],
        "machine": manifest["qemu_machine"],
        "arena": arena,
        "text": text,
        # the model's constants in flash, against the .tflite flatbuffer TFLM keeps in flash
        "model_flash": memory["split"]["model_weights"] + memory["split"]["model_parameters"],
        "layout": manifest["model"]["weights_layout"],
        "expected_done": manifest["expected_done_line"],
        # heads are printed in the generated model's order; the peer prints the model's output order
        "order": [manifest["outputs"].index(o) for o in outputs],
    }


def profile_qute(model: Path, board: str, out: Path, timeout: float, weights: str = "auto") -> list[dict]:
    """Per-op instructions of qute's profiled build (mean over the inputs), in op order."""
    cmd = [*qute_cmd(), "build", "--board", board, str(model), "--samples", str(SAMPLES), "-o", str(out),
           "--emulator", "--profile", "--weights", weights]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-1500:]}{p.stderr[-1500:]}")
    manifest = json.loads((out / "build.json").read_text())
    t = transcript.parse(qemu_run(manifest["qemu_machine"], out / manifest["variants"]["emulator"]["elf"], timeout))
    rows = []
    for op in manifest["profile"]["ops"]:
        n = [c.cycles for c in t.ops if c.index == op["index"]]
        if len(n) != SAMPLES:
            raise BenchError(f"{model.name} on {board}: op {op['index']} was timed {len(n)} times, not {SAMPLES}")
        rows.append({"index": op["index"], "opcode": op["opcode"], "kernel": op["kernel"], "macs": op["macs"],
                     "instructions": float(np.mean(n))})
    return rows


def per_op_table(model: str, core: str, ops: list[dict]) -> str:
    total = sum(o["instructions"] for o in ops)
    lines = [f"{model} on the {core} (profiled build: each count includes one reading of the counter)", "",
             "| op | opcode | kernel | MACs | instructions | per MAC | share |", "|---:|---|---|---:|---:|---:|---:|"]
    for o in ops:
        per = f"{o['instructions'] / o['macs']:.2f}" if o["macs"] else "—"
        lines.append(f"| {o['index']} | {o['opcode']} | `{o['kernel']}` | {o['macs']:,} | {o['instructions']:,.0f} "
                     f"| {per} | {100 * o['instructions'] / total:.1f}% |")
    return "\n".join(lines)


def run_qute(build: dict, timeout: float) -> dict:
    t = transcript.parse(qemu_run(build["machine"], build["elf"], timeout))
    if not t.complete or len(t.samples) != SAMPLES:
        raise BenchError(f"{build['elf']}: incomplete transcript ({len(t.samples)} samples)")
    if t.start.get("counter") != "instructions":
        raise BenchError(f"{build['elf']}: counter is {t.start.get('counter')!r}, not instructions")
    samples = sorted(t.samples, key=lambda s: s.index)
    done = "QUTE done " + " ".join(f"{k}={v}" for k, v in t.done.items())
    return {
        "instructions": float(np.mean([s.cycles for s in samples])),
        "out": [b"".join(s.heads[i].astype(np.int8).tobytes() for i in build["order"]) for s in samples],
        "done_matches_host": done == build["expected_done"],
    }


def differing(a: list[bytes], b: list[bytes]) -> tuple[int, int]:
    total = sum(len(x) for x in a)
    diff = 0
    for x, y in zip(a, b, strict=True):
        if len(x) != len(y):
            diff += max(len(x), len(y))
        else:
            diff += int(np.count_nonzero(np.frombuffer(x, np.int8) != np.frombuffer(y, np.int8)))
    return diff, total


def bench_one(model: str, core: str, args, peer_x: np.ndarray | None, tmp: Path) -> dict:
    machine, core_name = CORES[core]
    row = {"model": model, "core": core_name, "machine": machine}
    build = build_qute(args.models_dir / f"{model}.tflite", machine, tmp / f"{model}-{machine}", peer_x, args.weights)
    print(f"  {model} on {machine}: qute", file=sys.stderr, flush=True)
    q = run_qute(build, args.timeout)
    row.update(qute=q["instructions"], qute_ram=build["arena"], qute_arena=build["arena"],
               qute_text=build["text"], qute_done_matches_host=q["done_matches_host"],
               qute_model_flash=build["model_flash"], layout=build["layout"],
               tflite_bytes=(args.models_dir / f"{model}.tflite").stat().st_size)
    peer_dir = args.peer / machine
    for key, suffix in VARIANTS:
        elf = peer_dir / f"{model}.{suffix}.elf"
        if not elf.exists():
            print(f"  peer: no {elf}; the {suffix} column is empty for {model} on {machine}", file=sys.stderr)
            continue
        print(f"  {model} on {machine}: {suffix}", file=sys.stderr, flush=True)
        p = run_peer(machine, elf, args.timeout)
        diff, total = differing(q["out"], p["out"])
        row[key] = p["instructions"]
        row[f"{key}_arena"] = p["arena_used"]
        row[f"{key}_differing"] = diff
        row["output_bytes"] = total
        row[f"qute_over_{key}"] = q["instructions"] / p["instructions"]
        row[f"ram_over_{key}"] = row["qute_ram"] / p["arena_used"]
    return row


def geomean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _n(v, fmt="{:,.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def table(rows: list[dict]) -> str:
    lines = [
        "| model | core | qute | TFLM ref | TFLM + CMSIS-NN | qute / CMSIS-NN | qute / TFLM ref "
        "| qute RAM (arena, I/O inside) | TFLM arena_used (ref / CMSIS-NN) | qute RAM / CMSIS-NN arena | qute .text "
        "| model in flash: qute (filter layout) / .tflite | output bytes differing (vs ref / CMSIS-NN) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        diffs = " / ".join(f"{r[k + '_differing']} of {r['output_bytes']:,}" if k + "_differing" in r else "—"
                           for k, _ in VARIANTS)
        lines.append(
            f"| {r['model']} | {r['core']} | {_n(r['qute'])} | {_n(r.get('ref'))} | {_n(r.get('cmsis'))} "
            f"| {_n(r.get('qute_over_cmsis'), '{:.2f}')} | {_n(r.get('qute_over_ref'), '{:.2f}')} "
            f"| {r['qute_ram']:,} "
            f"| {_n(r.get('ref_arena'))} / {_n(r.get('cmsis_arena'))} | {_n(r.get('ram_over_cmsis'), '{:.2f}')} "
            f"| {r['qute_text']:,} | {r['qute_model_flash']:,} ({r['layout']}) / {r['tflite_bytes']:,} | {diffs} |")
    cores = list(dict.fromkeys(r["core"] for r in rows))
    for core in cores + (["all"] if len(cores) > 1 else []):
        sel = [r for r in rows if core in ("all", r["core"])]
        gc = geomean([r["qute_over_cmsis"] for r in sel if "qute_over_cmsis" in r])
        gr = geomean([r["qute_over_ref"] for r in sel if "qute_over_ref" in r])
        gm = geomean([r["ram_over_cmsis"] for r in sel if "ram_over_cmsis" in r])
        lines.append(f"| geometric mean | {core} | | | | {_n(gc, '{:.2f}')} | {_n(gr, '{:.2f}')} | | | "
                     f"{_n(gm, '{:.2f}')} | | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names (default: all four)")
    ap.add_argument("--cores", default="m7,m4", help="comma-separated: m7 (mps2-an500), m4 (mps2-an386)")
    ap.add_argument("--peer", type=Path, default=SHARED / "peer", help="the peer's folder (default ../shared/peer)")
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models", help="default ../shared/models")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where mcu.json and mcu.md go")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per QEMU run")
    ap.add_argument("--weights", choices=("auto", "int8", "int16"), default="auto",
                    help="qute build --weights: the matrix products' filter layout (default auto: int16 on these "
                         "cores while a quarter of the flash stays free)")
    ap.add_argument("--per-op", default=None,
                    help="comma-separated models to profile per op as well (default: kws and resnet when benchmarked; "
                         "'' for none)")
    args = ap.parse_args(argv)

    models = [m.removesuffix(".tflite") for m in args.models.split(",") if m]
    cores = []
    for c in (c for c in args.cores.split(",") if c):
        key = next((k for k, (machine, name) in CORES.items() if c.lower() in (k, machine, name.lower())), None)
        if key is None:
            ap.error(f"unknown core {c!r}; one of {', '.join(CORES)}")
        cores.append(key)
    for m in models:
        if not (args.models_dir / f"{m}.tflite").exists():
            ap.error(f"no {args.models_dir / f'{m}.tflite'}")
    if args.per_op is None:
        per_op = [m for m in ("kws_dscnn_int8", "ic_resnet8_int8") if m in models]
    else:
        per_op = [m.removesuffix(".tflite") for m in args.per_op.split(",") if m]
    if set(per_op) - set(models):
        ap.error(f"--per-op {','.join(sorted(set(per_op) - set(models)))}: not among the models benchmarked "
                 f"({', '.join(models)})")
    if not args.peer.is_dir():
        print(f"no peer folder {args.peer}: nothing to compare against", file=sys.stderr)
        return 2
    for c in list(cores):
        if not (args.peer / CORES[c][0]).is_dir():
            print(f"peer: no {args.peer / CORES[c][0]} folder; skipping {CORES[c][1]}", file=sys.stderr)
            cores.remove(c)

    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="qute-bench-mcu-") as tmp:
            for m in models:
                npz = args.peer / "inputs" / f"{m}.npz"
                peer_x = np.load(npz)["x"] if npz.exists() else None
                if peer_x is None:
                    print(f"peer: no {npz}; qute's inputs cannot be checked against the peer's", file=sys.stderr)
                for c in cores:
                    rows.append(bench_one(m, c, args, peer_x, Path(tmp)))
                    if m in per_op:
                        machine, core_name = CORES[c]
                        print(f"  {m} on {machine}: qute, per op", file=sys.stderr, flush=True)
                        rows[-1]["per_op"] = profile_qute(args.models_dir / f"{m}.tflite", machine,
                                                          Path(tmp) / f"{m}-{machine}-profile", args.timeout,
                                                          args.weights)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    md = table(rows)
    for r in rows:
        if "per_op" in r:
            md += "\n\n" + per_op_table(r["model"], r["core"], r["per_op"])
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mcu.json").write_text(json.dumps({
        "what": "mean instructions per inference under QEMU -icount shift=0 (SysTick, resolution 40), 10 inputs",
        "command": " ".join(["python bench/mcu.py", *(argv if argv is not None else sys.argv[1:])]),
        "rows": rows,
    }, indent=2) + "\n")
    (args.out / "mcu.md").write_text(
        "Mean instructions per inference under QEMU `-icount shift=0` (not time), on the same 10 inputs, with the "
        "same SysTick counter, start-up and linker script on both sides. qute RAM: its model arena, which "
        "holds the input and outputs as TFLM's `arena_used` does (the firmware keeps no other I/O buffer). "
        "qute .text: the whole firmware's. Model in flash: qute's weights and per-op constants (in the filter "
        "layout `qute build --weights` chose) against the .tflite flatbuffer TFLM keeps in flash.\n\n"
        + md + "\n")
    bad = [r for r in rows if any(r.get(k + "_differing") for k, _ in VARIANTS) or not r["qute_done_matches_host"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
