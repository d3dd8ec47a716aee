"""The malformed-model fuzzer at length: thousands of mutants of the shipped and MLPerf Tiny models.

    .venv/bin/python bench/fuzz_soak.py                                  # 5,000 mutants through qute-codegen generate
    .venv/bin/python bench/fuzz_soak.py --count 20000 --seed 7 --jobs 2
    .venv/bin/python bench/fuzz_soak.py --target build --count 1000      # qute build's model path (host reference included)
    .venv/bin/python bench/fuzz_soak.py --target verify --count 200      # qute verify (gcc + TFLM)

Mutants and outcome classes are tests/fuzz.py's (the same ones `make test` runs a few hundred of).
Every accepted mutant's C (up to --compile of them) is compiled with the project's -Werror flags, and
up to --asan of them are built with AddressSanitizer and UBSan and run on random inputs. Prints one
table of outcome classes, then an example of every class that should not happen, and exits 1 if any
did (a traceback, a signal, a hang, a multi-line error, C that does not compile or trips a sanitizer).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=5000, help="mutants to run (default 5000)")
    ap.add_argument("--seed", type=int, default=1, help="mutation seed (default 1; make test uses 0)")
    ap.add_argument("--start", type=int, default=0, help="first mutant index (to reproduce one: --start N --count 1)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--target", choices=sorted(fuzz.TARGETS), default="generate")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant before it counts as a hang")
    ap.add_argument("--compile", type=int, default=400, help="accepted mutants to compile with -Werror (default 400)")
    ap.add_argument("--asan", type=int, default=40, help="accepted mutants to run under ASan/UBSan (default 40)")
    ap.add_argument("--keep", metavar="DIR", help="copy every failing mutant into DIR")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mutant's outcome")
    args = ap.parse_args(argv)

    models = fuzz.seed_models()
    print(f"seed models: {', '.join(f'{n} ({len(d):,} B)' for n, d in models.items())}")
    items = list(fuzz.mutants(models, args.count, args.seed, args.start))
    work = Path(tempfile.mkdtemp(prefix="qute-fuzz-soak-"))
    checks = {"compiled": 0, "asan": 0}
    c_failures: list[tuple[fuzz.Outcome, str]] = []
    t0 = time.monotonic()

    def progress(done, o):
        if o.cls == "ok" and o.out is not None and args.target == "generate":
            # compile accepted mutants as they come (their C is large: keep the disk small)
            if checks["compiled"] < args.compile:
                checks["compiled"] += 1
                err = fuzz.compile_generated(o.out)
                if err:
                    c_failures.append((o, "does not compile: " + err))
                elif checks["asan"] < args.asan and checks["compiled"] % max(1, args.compile // max(1, args.asan)) == 0:
                    checks["asan"] += 1
                    err = fuzz.sanitized_run(work / f"m{o.mutant.index}.tflite")
                    if err:
                        c_failures.append((o, "sanitizers: " + err))
        if o.out is not None:
            shutil.rmtree(o.out, ignore_errors=True)
        if args.keep and o.bad:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            (Path(args.keep) / f"m{o.mutant.index}.tflite").write_bytes(o.mutant.data)
        (work / f"m{o.mutant.index}.tflite").unlink(missing_ok=True)
        if args.verbose or o.bad or o.cls not in ("ok", "error"):
            print(f"[{done}/{len(items)}] {o.describe()}", flush=True)
        elif done % 250 == 0:
            print(f"[{done}/{len(items)}] {time.monotonic() - t0:.0f} s", flush=True)

    outcomes = fuzz.run_all(args.target, items, work, jobs=args.jobs, timeout=args.timeout, progress=progress)
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0

    print()
    print(f"{len(outcomes):,} mutants (seed {args.seed}, from #{args.start}) through {args.target} "
          f"in {elapsed:.0f} s with {args.jobs} worker(s)")
    print(fuzz.table(outcomes))
    if args.target == "generate":
        print(f"accepted C compiled with -Werror: {checks['compiled']}, failures: "
              f"{sum(1 for _, e in c_failures if e.startswith('does not'))}; "
              f"run under ASan/UBSan: {checks['asan']}, failures: {sum(1 for _, e in c_failures if e.startswith('san'))}")
    examples = defaultdict(list)
    for o in outcomes:
        if o.cls not in ("ok", "error"):
            examples[o.cls].append(o)
    for cls, os_ in sorted(examples.items()):
        print(f"\n{cls}: {len(os_)}, e.g. {os_[0].describe()}")
    examples = {cls: os_ for cls, os_ in examples.items() if os_[0].bad}
    for o, err in c_failures[:10]:
        print(f"\n{o.describe()}\n  {err[:600]}")
    return 1 if examples or c_failures else 0


if __name__ == "__main__":
    sys.exit(main())
