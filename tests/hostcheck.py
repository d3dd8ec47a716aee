"""The byte-for-byte check of a model's generated C against the reference.

``check(tflite)`` builds the model on the host, runs it and TFLM (or LiteRT's reference kernels,
see ``qute.oracle.reference``) on the same random inputs and returns the mismatching byte count.
The models are usually hand-built (tests/fbmodels.py), many configurations per model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codegen.emit import output_order
from codegen.host import build_host
from codegen.reader import read_model
from qute import oracle


@dataclass
class Result:
    mismatches: int  # output bytes that differ from the reference
    total: int  # output bytes compared
    which: str  # "tflm" or "litert-ref"


def check(tflite: bytes, n: int = 12, seed: int = 0, sanitize: bool = False, opt: str = "-O1",
          engine: str = "reference", cflags: tuple[str, ...] = ()) -> Result:
    """Generated C (built for the host) against the reference on n random samples.

    cflags: extra compiler flags (("-DQUTE_SIMD_EMULATE",) runs the kernels' SIMD code path).
    engine: "reference" (oracle.reference: TFLM, or LiteRT's reference kernels when TFLM is not
    deterministic on the model), "tflm" or "litert-ref".
    """
    g = read_model(tflite)
    host = build_host(g, sanitize=sanitize, opt=opt, cflags=cflags)
    specs, _ = oracle.model_io(tflite)
    r = np.random.default_rng(seed)
    # one sample = one exact-shaped array per input (batch > 1 allowed); the host takes them stacked
    samples = [[r.integers(-128, 128, shape, dtype=np.int8) for shape, _ in specs] for _ in range(n)]
    got = host.run([np.stack([s[i] for s in samples]) for i in range(len(specs))])
    runs = []
    for xs in samples:
        if engine == "reference":
            runs.append(oracle.reference(tflite, xs))
        elif engine == "tflm":
            runs.append((oracle.run_tflm(tflite, xs), "tflm"))
        else:
            runs.append((oracle.run_litert_ref(tflite, xs), "litert-ref"))
    bad = total = 0
    for k, t in enumerate(output_order(g)):
        j = g.outputs.index(t)
        want = np.stack([np.asarray(ref[j]).reshape(-1) for ref, _ in runs])
        have = np.asarray(got[k]).reshape(n, -1)
        assert want.shape == have.shape, f"output {k}: shape {have.shape} vs reference {want.shape}"
        bad += int(np.count_nonzero(want != have))
        total += want.size
    return Result(bad, total, "+".join(sorted({w for _, w in runs})))
