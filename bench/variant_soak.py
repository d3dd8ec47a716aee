"""The kernel-variant check at length: many seeds of tests/variantmodels.py against TFLite Micro.

    .venv/bin/python bench/variant_soak.py --seeds 50                       # host and both boards under QEMU
    .venv/bin/python bench/variant_soak.py --seeds 500 --host-only          # host only (plain C and emulated SIMD)
    .venv/bin/python bench/variant_soak.py --seeds 20 --board mps2-an386    # one board (repeat --board for more)
    .venv/bin/python bench/variant_soak.py --start 1234 --seeds 1 -v        # replay one seed, with its kernels

Each seed is one model holding every shape class of tests/variantmodels.py as a parallel branch
(1x1 and KxK convolutions, KWS's 10x4 and RGB first layers, depthwise with multiplier 1 and 2 and
border-only windows, fully connected with odd units and batch > 1, residual ADD, AVERAGE_POOL,
DS-CNN- and ResNet-like chains), run on --samples random inputs plus 5 extreme ones (all -128, all
127, -128/127 checkerboards, random -128/127):

- on the host, plain C99 at -O2 and the SIMD path emulated in portable C (-DQUTE_SIMD_EMULATE)
  under AddressSanitizer and UBSan (--sanitize-all: both under the sanitizers);
- unless --host-only, as firmware (qute build --emulator --inputs uart) under QEMU on each --board
  (default mps2-an500, Cortex-M7, and mps2-an386, Cortex-M4: the DSP instructions themselves);
- each with the matrix products' filters in both layouts (int8, and the int16 of the _w16_
  kernels; --weights to pick one).

Every output byte is compared with TFLite Micro's reference kernels. Prints one line per seed and
run, and for every difference the branch, its shape class and configuration (enough to replay it),
the samples and first byte that differ, and whether the adapters in front of the branches were
exact; then which kernel each shape class reached. Exits 1 on any differing byte, crash,
sanitizer report or time-out. Not part of `make test` (tests/test_kernel_variants.py runs a few
seeds of the same models there). On the project's 2-core machine: 8 seeds on the host and both
boards, both layouts, in 4.7 min (about 6 s per seed, board and layout under QEMU, 4.2-4.8 M
instructions per inference).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import variantmodels as vm  # noqa: E402

BOARDS = ("mps2-an500", "mps2-an386")  # the default: Cortex-M7 and M4, the DSP instructions
EXTRA_BOARDS = ("mps2-an385",)  # Cortex-M3: the plain C path on a real core


def _runner(kind: str, weights: str, x: np.ndarray, folder: Path, args):
    """A function running a model the way `kind` does ("plain", "simd" or a board) with `weights`
    filters, each call in its own sub-folder; returns the outputs in flatbuffer order."""
    calls = itertools.count(1)
    if kind in ("plain", "simd"):
        simd = kind == "simd"
        sanitize = simd or args.sanitize_all
        return lambda model: vm.run_host(model, x, folder / f"r{next(calls)}", simd=simd, sanitize=sanitize,
                                         weights16=weights == "int16")
    return lambda model: vm.run_firmware(model, x, kind, folder / f"r{next(calls)}", timeout=args.timeout,
                                         weights=weights)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    ap.add_argument("--start", type=int, default=100,
                    help="first seed (default 100; the test suite uses 0-2 on the host, 0-1 under QEMU)")
    ap.add_argument("--board", action="append", choices=BOARDS + EXTRA_BOARDS,
                    help="board to emulate (repeatable; default mps2-an500 and mps2-an386; mps2-an385 runs the plain C path)")
    ap.add_argument("--host-only", action="store_true", help="no firmware: the host's two paths only")
    ap.add_argument("--samples", type=int, default=8, help="random inputs per seed, besides the 5 extreme ones")
    ap.add_argument("--sanitize-all", action="store_true", help="run the plain host path under the sanitizers too")
    ap.add_argument("--weights", choices=("int8", "int16", "both"), default="both",
                    help="filter layout of the matrix products (default both)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for one QEMU run")
    ap.add_argument("--keep", metavar="DIR", help="save every failing seed's model, configuration and inputs in DIR")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the kernel each branch gets, per seed")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.samples < 0:
        ap.error("--seeds must be >= 1 and --samples >= 0")
    boards = [] if args.host_only else (args.board or list(BOARDS))
    if boards:
        missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make") if shutil.which(t) is None]
        if missing:
            print(f"variant_soak: {', '.join(missing)} not installed; use --host-only or install them", file=sys.stderr)
            return 2

    layouts = ("int8", "int16") if args.weights == "both" else (args.weights,)
    runs = [(f"{label} {w}", kind, w) for label, kind in [("host plain", "plain"), ("host simd-emulated", "simd")]
            + [(b, b) for b in boards] for w in layouts]
    work = Path(tempfile.mkdtemp(prefix="qute-variant-soak-"))
    failures: list[str] = []
    compared = defaultdict(int)
    seconds = defaultdict(float)
    instructions: dict[str, list[float]] = defaultdict(list)
    reached: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # class -> kernel -> seeds
    t_start = time.monotonic()
    print(f"seeds {args.start}..{args.start + args.seeds - 1}; runs: {', '.join(r for r, _, _ in runs)}; "
          f"{args.samples} random + 5 extreme inputs each; work folder {work}")

    for seed in range(args.start, args.start + args.seeds):
        try:
            m = vm.build(seed)
            x = vm.sample_inputs(m, args.samples, seed)
            ref = vm.reference(m, x)
            seen: dict[str, set[str]] = defaultdict(set)  # each kernel counted once per seed
            for w in layouts:
                for branch, kernels in vm.kernels_used(m, w == "int16").items():
                    seen[branch] |= set(kernels.values())
                    if args.verbose:
                        print(f"  seed {seed} {branch}, {w}: {', '.join(f'{t} -> {k}' for t, k in kernels.items())}")
            for branch, ks in seen.items():
                for k in ks:
                    reached[branch][k] += 1
        except Exception:
            failures.append(f"seed {seed}: building the model or its reference failed:\n{traceback.format_exc()}")
            print(f"seed {seed}: FAILED before running (model or TFLM reference)")
            continue
        bad_seed = False
        parts = []
        for label, kind, weights in runs:
            folder = work / f"seed{seed}" / f"{kind}-{weights}"
            t0 = time.monotonic()
            try:
                run = _runner(kind, weights, x, folder, args)
                if kind in ("plain", "simd"):
                    got = run(m)
                else:
                    got, cycles, _ = vm.run_firmware(m, x, kind, folder / "main", timeout=args.timeout, weights=weights)
                    instructions[label].append(float(np.mean(cycles)))
            except Exception as e:
                bad_seed = True
                failures.append(f"seed {seed} {label}: {type(e).__name__}: {e}")
                parts.append(f"{label} CRASH ({type(e).__name__})")
                seconds[label] += time.monotonic() - t0
                continue
            seconds[label] += time.monotonic() - t0
            total, diffs = vm.compare(m, ref, got)
            compared[label] += total
            parts.append(f"{label} {sum(d.differing for d in diffs)}/{total:,}")
            if diffs:
                bad_seed = True
                text = vm.format_diffs(m, label, diffs, args.samples)
                try:
                    text += "\n  " + vm.adapter_report(m, x, run)
                except Exception as e:
                    text += f"\n  (adapter check failed: {e})"
                failures.append(text)
        print(f"seed {seed}: {'DIFFERS' if bad_seed else 'ok'}  " + "; ".join(parts), flush=True)
        if not bad_seed:  # builds are a few MB each: keep only what failed
            shutil.rmtree(work / f"seed{seed}", ignore_errors=True)
        if bad_seed and args.keep:
            keep = Path(args.keep) / f"seed{seed}"
            keep.mkdir(parents=True, exist_ok=True)
            (keep / "model.tflite").write_bytes(m.tflite)
            (keep / "branches.json").write_text(json.dumps(m.branches, indent=1) + "\n")
            np.save(keep / "inputs.npy", x)

    elapsed = time.monotonic() - t_start
    print(f"\n{args.seeds} seeds in {elapsed:.0f} s")
    for label, _, _ in runs:
        extra = ""
        if instructions.get(label):
            extra = f", {np.mean(instructions[label]) / 1e6:.2f} M instructions per inference on average (QEMU -icount)"
        print(f"  {label:26s} {compared[label]:>12,} bytes compared, {seconds[label]:6.0f} s{extra}")
    print("\nkernels reached, by shape class (seeds):")
    for branch in sorted(reached):
        print(f"  {branch:24s} " + ", ".join(f"{k} ({n})" for k, n in sorted(reached[branch].items())))
    declared = vm.declared_variants()
    seen = {k for ks in reached.values() for k in ks}
    unused = sorted(k for ks in declared.values() for k in ks if k not in seen)
    if unused:
        print(f"\nnote: declared conv/depthwise/fully-connected variants no seed reached: {', '.join(unused)}")
    if failures:
        print(f"\n{len(failures)} failure(s) (builds of the failing seeds kept in {work}):")
        for f in failures:
            print(f)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("\nevery byte equal to TFLite Micro's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
