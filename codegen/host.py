"""Build generated C on the host and call it from Python, to check it against the oracle.

The generated model is linked with the firmware kernels and a small harness into an executable
that reads samples on stdin and writes the outputs on stdout. An executable (rather than a shared
library loaded with ctypes) can carry AddressSanitizer and UBSan, which the tests use.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from codegen.emit import Generated, generate
from codegen.fold import fold
from codegen.ir import CodegenError, Graph

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]

_HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "{prefix}.h"

static const int32_t in_sizes[] = {{ {in_sizes} }};

#if {guard}_NUM_EXITS > 0
static int stop_at_exit(int exit_index, void *user)
{{
    return exit_index == *(const int *)user;
}}

/* harness stop K: samples on stdin; each runs staged and stops at exit K (never when K < 0);
 * writes every output as the arena holds it after the run, then the exit taken (int32). */
static int run_staged(int stop_at)
{{
    uint32_t n;
    if (fread(&n, sizeof n, 1, stdin) != 1) return 2;
    for (uint32_t s = 0; s < n; ++s) {{
        for (int i = 0; i < {n_in}; ++i)
            if (fread({prefix}_input(i), 1, (size_t)in_sizes[i], stdin) != (size_t)in_sizes[i]) return 3;
        int32_t taken = {prefix}_run_staged(stop_at_exit, &stop_at);
        for (int k = 0; k < {n_out}; ++k) fwrite({prefix}_output(k), 1, (size_t){prefix}_output_sizes[k], stdout);
        fwrite(&taken, sizeof taken, 1, stdout);
    }}
    return 0;
}}
#endif

/* harness [REPEATS]: samples on stdin, outputs on stdout; with REPEATS, run the first sample
 * REPEATS times and print the mean nanoseconds per invoke instead. */
int main(int argc, char **argv)
{{
    uint32_t n;
#if {guard}_NUM_EXITS > 0
    if (argc > 2 && strcmp(argv[1], "stop") == 0) return run_staged(atoi(argv[2]));
#endif
    long repeats = argc > 1 ? atol(argv[1]) : 0;
    if (fread(&n, sizeof n, 1, stdin) != 1) return 2;
    const int8_t *inputs[{n_in}];
    int8_t *outputs[{n_out}];
    int8_t *in_buf[{n_in}];
    for (int i = 0; i < {n_in}; ++i) {{ in_buf[i] = malloc((size_t)in_sizes[i]); inputs[i] = in_buf[i]; }}
    for (int k = 0; k < {n_out}; ++k) outputs[k] = malloc((size_t){prefix}_output_sizes[k]);
    if (repeats > 0) {{
        struct timespec t0, t1;
        for (int i = 0; i < {n_in}; ++i)
            if (fread(in_buf[i], 1, (size_t)in_sizes[i], stdin) != (size_t)in_sizes[i]) return 3;
        {prefix}_invoke_n(inputs, outputs); /* warm the caches */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long r = 0; r < repeats; ++r) {prefix}_invoke_n(inputs, outputs);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)repeats);
        n = 0;
    }}
    for (uint32_t s = 0; s < n; ++s) {{
        for (int i = 0; i < {n_in}; ++i)
            if (fread(in_buf[i], 1, (size_t)in_sizes[i], stdin) != (size_t)in_sizes[i]) return 3;
        {prefix}_invoke_n(inputs, outputs);
        for (int k = 0; k < {n_out}; ++k) fwrite(outputs[k], 1, (size_t){prefix}_output_sizes[k], stdout);
    }}
    for (int i = 0; i < {n_in}; ++i) free(in_buf[i]);
    for (int k = 0; k < {n_out}; ++k) free(outputs[k]);
    return 0;
}}
"""


class HostRunError(CodegenError):
    """The compiled model failed while running: a crash, or a sanitizer's report (its first line
    in `sanitizer`). Generated code that does this is the generator's bug, not the model's."""

    def __init__(self, message: str, sanitizer: str | None = None):
        super().__init__(message)
        self.sanitizer = sanitizer


class HostCompileError(CodegenError):
    """The generated C did not compile with the project's flags: the generator's bug."""


_SANITIZER_LINE = re.compile(r"(ERROR: (Address|Leak|Memory|Thread)Sanitizer.*|.*runtime error: .*)")


def _run_failure(proc) -> HostRunError:
    text = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
    found = _SANITIZER_LINE.search(text)
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return HostRunError(f"generated model crashed ({how}): {text[-2000:]}", found.group(0).strip() if found else None)


def kernels_dir() -> Path:
    """The C runtime the generated code calls (package data, firmware/kernels in a checkout)."""
    return Path(str(resources.files("codegen.kernels")))


def write_sources(gen: Generated, folder: Path, prefix: str = "qute_model") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}.h").write_text(gen.header)
    (folder / f"{prefix}.c").write_text(gen.source)
    return [folder / f"{prefix}.h", folder / f"{prefix}.c"]


@dataclass
class HostModel:
    """A generated model compiled for the host."""

    exe: Path
    input_sizes: list[int]
    output_sizes: list[int]  # bytes
    output_shapes: list[tuple[int, ...]]
    output_dtypes: list[str]  # int8, or int16 for a softmax's
    output_tensors: list[int]  # graph tensor of each output, in API order
    exits: list[int]  # output index of exit_0, exit_1, ... (codegen.stages); [] without early exits

    def time_invoke(self, inputs: list[np.ndarray], repeats: int = 100) -> float:
        """Mean seconds per invoke on the first sample, timed inside the executable."""
        payload = struct.pack("<I", 1) + b"".join(np.ascontiguousarray(x[0], dtype=np.int8).tobytes() for x in inputs)
        proc = subprocess.run([str(self.exe), str(repeats)], input=payload, capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise _run_failure(proc)
        return float(proc.stdout.decode().split()[0]) * 1e-9

    def _payload(self, inputs: list[np.ndarray]) -> bytes:
        n = len(inputs[0])
        payload = bytearray(struct.pack("<I", n))
        flat = [np.ascontiguousarray(x, dtype=np.int8).reshape(n, -1) for x in inputs]
        for i, x in enumerate(flat):
            if x.shape[1] != self.input_sizes[i]:
                raise CodegenError(f"input {i} has {x.shape[1]} values per sample; the model takes {self.input_sizes[i]}")
        for s in range(n):
            for x in flat:
                payload += x[s].tobytes()
        return bytes(payload)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs[i]: int8 array (N, *input_shape_i). Returns one (N, *output_shape_k) array per output."""
        proc = subprocess.run([str(self.exe)], input=self._payload(inputs), capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise _run_failure(proc)
        return self._split(np.frombuffer(proc.stdout, np.uint8).reshape(len(inputs[0]), sum(self.output_sizes)))

    def run_staged(self, inputs: list[np.ndarray], stop_at: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Runs each sample stage by stage (`_run_staged`), stopping at exit `stop_at` (never when
        negative). Returns the outputs as the arena holds them after each run (those past the
        exit taken are a previous run's) and the exit taken per sample."""
        if not self.exits:
            raise CodegenError("the model has no early exits (outputs named exit_0, exit_1, ...) to stop at")
        proc = subprocess.run([str(self.exe), "stop", str(int(stop_at))], input=self._payload(inputs),
                              capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise _run_failure(proc)
        width = sum(self.output_sizes) + 4
        raw = np.frombuffer(proc.stdout, np.uint8).reshape(len(inputs[0]), width)
        taken = np.ascontiguousarray(raw[:, -4:]).view(np.int32).reshape(-1)
        return self._split(raw[:, :-4]), taken

    def _split(self, out: np.ndarray) -> list[np.ndarray]:
        n = len(out)
        result, start = [], 0
        for size, shape, dtype in zip(self.output_sizes, self.output_shapes, self.output_dtypes):
            values = np.ascontiguousarray(out[:, start : start + size]).view(dtype)  # native order, as the C wrote it
            per_sample = tuple(shape[1:]) if shape and shape[0] == 1 else (values.shape[1],)
            result.append(values.reshape((n,) + per_sample))
            start += size
        return result


def build_host(graph: Graph, folder: Path | None = None, sanitize: bool = False, cc: str = "gcc",
               opt: str = "-O2", prefix: str = "qute_model", cflags: tuple[str, ...] = (),
               weights16: bool = False) -> HostModel:
    """Generates C for `graph`, compiles it with the kernels and the harness, returns a runner.

    `cflags` are added to the compiler's command line, e.g. ("-DQUTE_SIMD_EMULATE",) to run the
    kernels' SIMD code path in portable C (firmware/kernels/qute_simd.h). weights16: as
    codegen.emit.generate's.
    """
    if shutil.which(cc) is None:
        raise CodegenError(f"C compiler {cc!r} not found; install gcc (Debian: apt-get install gcc)")
    graph = fold(graph)  # the sizes below are the inferred ones, as in the generated code
    gen = generate(graph, prefix, weights16=weights16)
    folder = Path(folder or tempfile.mkdtemp(prefix="qute-host-"))
    write_sources(gen, folder, prefix)
    in_sizes = [graph.tensor(t).size for t in graph.inputs]
    (folder / "harness.c").write_text(
        _HARNESS.format(prefix=prefix, guard=prefix.upper(), in_sizes=", ".join(map(str, in_sizes)), n_in=len(in_sizes), n_out=len(gen.output_order))
    )
    kdir = kernels_dir()
    kernels = sorted(kdir.glob("*.c"))
    exe = folder / ("model_asan" if sanitize else "model")
    cmd = [cc, *WARNINGS, opt, "-I", str(folder), "-I", str(kdir), *(SANITIZE if sanitize else []), *cflags,
           str(folder / f"{prefix}.c"), str(folder / "harness.c"), *map(str, kernels), "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostCompileError(f"the generated C does not compile:\n{proc.stderr[-4000:]}")
    return HostModel(
        exe=exe,
        input_sizes=in_sizes,
        output_sizes=[graph.tensor(t).nbytes for t in gen.output_order],
        output_shapes=[graph.tensor(t).shape for t in gen.output_order],
        output_dtypes=[graph.tensor(t).dtype for t in gen.output_order],
        output_tensors=list(gen.output_order),
        exits=list(gen.exits),
    )
