"""The memory planner: inputs and outputs in the arena, aliases and in-place ops around them, per-op
scratch blocks; and the generated zero-copy API (<prefix>_input / _run / _output) against invoke_n."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fbmodels import ModelBuilder
from plancheck import check_plan

from codegen import ops as op_registry
from codegen.emit import generate, output_order, plan_for
from codegen.fold import fold
from codegen.host import SANITIZE, WARNINGS, build_host, kernels_dir, write_sources
from codegen.ir import CodegenError, Graph, Op, Tensor
from codegen.planner import SCRATCH_ALIGN, plan
from codegen.reader import read_model

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
AUTOENCODER = MODELS / "ad_autoencoder_int8.tflite"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")


# --- the planner on hand-made graphs ------------------------------------------------------------


def graph(sizes: dict[int, int], ops: list[tuple[list[int], list[int]]], inputs: list[int], outputs: list[int]) -> Graph:
    """Tensors t (int8, sizes[t] bytes) and ops given as (inputs, outputs); the opcodes do not matter."""
    tensors = [Tensor(t, f"t{t}", (1, sizes[t]), "int8") for t in range(len(sizes))]
    return Graph(tensors, [Op(i, "FAKE", 1, list(a), list(b)) for i, (a, b) in enumerate(ops)], inputs, outputs)


def overlap(p, g, a: int, b: int) -> bool:
    (oa, ob) = p.offset[a], p.offset[b]
    return oa < ob + g.tensor(b).nbytes and ob < oa + g.tensor(a).nbytes


def test_the_input_is_in_the_arena_and_its_bytes_are_reused_after_its_last_reader():
    # x -> a -> b -> y: x is dead once op 0 has run, so b or y takes its bytes: two buffers in all
    g = graph({0: 100, 1: 100, 2: 100, 3: 100}, [([0], [1]), ([1], [2]), ([2], [3])], [0], [3])
    p = plan(g, [3], set())
    check_plan(g, p, set(), [3])
    assert set(p.offset) == {0, 1, 2, 3}
    assert p.arena_size == 200
    assert overlap(p, g, 0, 2) or overlap(p, g, 0, 3)
    assert p.lifetimes[0] == (-1, 0) and p.lifetimes[3] == (2, 3)  # before op 0 .. after the last op


def test_arena_of_a_two_op_chain_counts_input_and_output():
    # x (64 B) -> a (40 B) -> y (24 B): op 0 holds x and a, op 1 holds a and y
    g = graph({0: 64, 1: 40, 2: 24}, [([0], [1]), ([1], [2])], [0], [2])
    p = plan(g, [2], set())
    check_plan(g, p, set(), [2])
    assert p.arena_size == 64 + 40
    assert not overlap(p, g, 0, 1) and not overlap(p, g, 1, 2)


def test_an_elementwise_op_overwrites_a_dead_input_but_never_an_output():
    # x -> o1 (in place, a model output); o1 -> o2 (may work in place, but o1 is an output);
    # o1 -> t -> o3
    g = graph({0: 32, 1: 32, 2: 32, 3: 32, 4: 32},
              [([0], [1]), ([1], [2]), ([1], [3]), ([3], [4])], [0], [1, 2, 4])
    inplace = {0: (0,), 1: (0,), 3: (0,)}
    p = plan(g, [1, 2, 4], set(), inplace)
    check_plan(g, p, set(), [1, 2, 4], inplace)
    assert p.offset[1] == p.offset[0]  # the dead input's bytes
    assert p.offset[4] == p.offset[3]  # an output may overwrite a dead intermediate
    for a, b in ((1, 2), (1, 4), (2, 4), (1, 3), (2, 3)):
        assert not overlap(p, g, a, b), (a, b)


def test_outputs_survive_to_the_end_and_never_share_bytes():
    # an early output (o1) stays put while later ops run; the last ops could reuse its bytes if it
    # were an ordinary tensor
    g = graph({0: 50, 1: 50, 2: 50, 3: 50, 4: 8}, [([0], [1]), ([1], [2]), ([2], [3]), ([3], [4])], [0], [4, 1])
    p = plan(g, [4, 1], set())
    check_plan(g, p, set(), [4, 1])
    for t in (0, 2, 3, 4):
        if t != 0:
            assert not overlap(p, g, 1, t), t
    assert p.lifetimes[1] == (0, 4)


def test_an_input_that_is_an_output_keeps_its_bytes():
    # x is a model input and output; y = f(x) may not write over it even if f works in place
    g = graph({0: 16, 1: 16}, [([0], [1])], [0], [0, 1])
    p = plan(g, [0, 1], set(), {0: (0,)})
    check_plan(g, p, set(), [0, 1], {0: (0,)})
    assert not overlap(p, g, 0, 1) and p.arena_size == 32


def test_reshaped_outputs_get_their_own_bytes():
    # x -> r1 = reshape(x) (output), r2 = reshape(x) (output): the second reshape copies
    g = graph({0: 12, 1: 12, 2: 12}, [([0], [1]), ([0], [2])], [0], [1, 2])
    p = plan(g, [1, 2], {0, 1})
    check_plan(g, p, {0, 1}, [1, 2])
    assert p.offset[1] == p.offset[0] and p.copy_ops == {1} and not overlap(p, g, 1, 2)


def test_scratch_is_live_at_its_op_only():
    # x (200) -> a (200) -> b (16) -> y (16): the peak is op 0 (400 B); op 1 holds 216 B
    g = graph({0: 200, 1: 200, 2: 16, 3: 16}, [([0], [1]), ([1], [2]), ([2], [3])], [0], [3])
    small = plan(g, [3], set(), scratch={1: 50})
    check_plan(g, small, set(), [3])
    assert small.arena_size == 400  # it fits beside op 1's tensors: the arena does not grow
    assert small.scratch_bytes == {1: 50} and small.scratch[1] % SCRATCH_ALIGN == 0
    s0, s1 = small.scratch[1], small.scratch[1] + 56
    for t in (1, 2):  # live at op 1
        o = small.offset[t]
        assert s1 <= o or o + g.tensor(t).nbytes <= s0, t
    big = plan(g, [3], set(), scratch={1: 300})
    check_plan(g, big, set(), [3])
    assert big.arena_size >= 200 + 16 + 304  # op 1's tensors and the scratch side by side
    assert plan(g, [3], set(), scratch={1: 0}).scratch == {}  # 0: no scratch
    with pytest.raises(CodegenError, match="scratch"):
        plan(g, [3], set(), scratch={1: -4})
    with pytest.raises(CodegenError, match="scratch"):
        plan(g, [3], set(), scratch={7: 8})


# --- scratch through emit, with a lowering that asks for it --------------------------------------


def _three_op_model() -> bytes:
    """x -> RELU -> a; a -> RELU6 -> b; ADD(a, b) -> out. At op 1, a lives on (ADD reads it)."""
    b = ModelBuilder()
    shape = (1, 5, 4, 6)
    x = b.input(shape, scale=0.05, zero_point=-3)
    a = b.tensor(shape, scale=0.05, zero_point=-3)
    c = b.tensor(shape, scale=0.04, zero_point=-128)
    out = b.tensor(shape, scale=0.1, zero_point=-20)
    b.op("RELU", [x], [a])
    b.op("RELU6", [a], [c])
    b.op("ADD", [a, c], [out])
    b.output(out)
    return b.build()


class Scribbler:
    """Wraps a real lowering: asks for `n` bytes of scratch and fills them with garbage before and
    after the kernel call, so a block that overlaps anything the op reads, writes or keeps alive
    changes the outputs."""

    def __init__(self, real, n: int | None):
        self.real, self.n = real, n
        self.opcodes = real.opcodes
        self.inplace = getattr(real, "inplace", ())
        self.header = getattr(real, "header", None)
        if n is not None:
            self.scratch_bytes = lambda op, g: self.n

    def check(self, op, g):
        self.real.check(op, g)

    def emit(self, op, g, ctx):
        s = ctx.scratch(op)
        return [f"memset({s}, 0x5a, {self.n or 1});", *self.real.emit(op, g, ctx), f"memset({s}, 0xa5, {self.n or 1});"]


@pytest.mark.parametrize("n", [1, 36, 240])
def test_scratch_block_from_a_lowering(monkeypatch, n):
    from hostcheck import check

    monkeypatch.setitem(op_registry.REGISTRY, "RELU6", Scribbler(op_registry.REGISTRY["RELU6"], n))
    tflite = _three_op_model()
    gen = generate(read_model(tflite))
    p = gen.plan
    assert gen.scratch == {1: n} and p.scratch_bytes == {1: n}
    assert p.scratch[1] % SCRATCH_ALIGN == 0
    assert f"memset((void *)(arena + {p.scratch[1]}), 0x5a, {n});" in gen.source
    g = fold(read_model(tflite))
    lows = {op.index: op_registry.lowering_for(op) for op in g.ops}
    check_plan(g, p, set(), output_order(g), {i: low.inplace for i, low in lows.items() if getattr(low, "inplace", ())})
    result = check(tflite, n=6, seed=1)  # the garbage lands on nothing that is read later
    assert result.mismatches == 0 and result.total > 0


def test_ctx_scratch_without_scratch_bytes_is_an_error(monkeypatch):
    monkeypatch.setitem(op_registry.REGISTRY, "RELU6", Scribbler(op_registry.REGISTRY["RELU6"], None))
    with pytest.raises(CodegenError, match=r"op 1 \(RELU6 v1\).*scratch"):
        generate(read_model(_three_op_model()))


def test_bad_scratch_bytes_is_an_error(monkeypatch):
    monkeypatch.setitem(op_registry.REGISTRY, "RELU6", Scribbler(op_registry.REGISTRY["RELU6"], -8))
    with pytest.raises(CodegenError, match=r"op 1 \(RELU6 v1\): scratch_bytes gave -8"):
        generate(read_model(_three_op_model()))


# --- the zero-copy API, compiled -------------------------------------------------------------------

_ZERO_COPY = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qute_model.h"

static const int32_t in_sizes[] = { %(in_sizes)s };

/* Samples on stdin; per sample: invoke_n with the caller's buffers, then the same input written
 * into qute_model_input(i), qute_model_run(), and qute_model_output(k) compared with invoke_n's
 * outputs and written to stdout. */
int main(void)
{
    uint32_t n;
    int8_t *saved[QUTE_MODEL_NUM_INPUTS];
    const int8_t *inputs[QUTE_MODEL_NUM_INPUTS];
    int8_t *outputs[QUTE_MODEL_NUM_OUTPUTS];
    if (fread(&n, sizeof n, 1, stdin) != 1) return 2;
    if (qute_model_input(-1) != NULL || qute_model_input(QUTE_MODEL_NUM_INPUTS) != NULL) return 4;
    if (qute_model_output(-1) != NULL || qute_model_output(QUTE_MODEL_NUM_OUTPUTS) != NULL) return 4;
    for (int i = 0; i < QUTE_MODEL_NUM_INPUTS; ++i) {
        saved[i] = malloc((size_t)in_sizes[i] + 1u);
        inputs[i] = saved[i];
    }
    for (int k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) outputs[k] = malloc((size_t)qute_model_output_sizes[k] + 1u);
    for (uint32_t s = 0; s < n; ++s) {
        for (int i = 0; i < QUTE_MODEL_NUM_INPUTS; ++i)
            if (fread(saved[i], 1, (size_t)in_sizes[i], stdin) != (size_t)in_sizes[i]) return 3;
        qute_model_invoke_n(inputs, outputs);
        for (int i = 0; i < QUTE_MODEL_NUM_INPUTS; ++i) memcpy(qute_model_input(i), saved[i], (size_t)in_sizes[i]);
        qute_model_run();
        for (int k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) {
            if (memcmp(qute_model_output(k), outputs[k], (size_t)qute_model_output_sizes[k]) != 0) return 5;
            fwrite(qute_model_output(k), 1, (size_t)qute_model_output_sizes[k], stdout);
        }
    }
    for (int i = 0; i < QUTE_MODEL_NUM_INPUTS; ++i) free(saved[i]);
    for (int k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) free(outputs[k]);
    return 0;
}
"""


def zero_copy_run(tflite: bytes, xs: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """Runs the model through the zero-copy API (checked against invoke_n in C, under ASan and
    UBSan); xs[i]: (N, ...) int8 samples of input i. Returns one (N, size_k) array per output."""
    g = fold(read_model(tflite))
    gen = generate(g)
    write_sources(gen, folder)
    in_sizes = [g.tensor(t).size for t in g.inputs]
    (folder / "main.c").write_text(_ZERO_COPY % {"in_sizes": ", ".join(map(str, in_sizes))})
    exe = folder / "zero_copy"
    cmd = ["gcc", *WARNINGS, "-O1", *SANITIZE, "-I", str(folder), "-I", str(kernels_dir()),
           str(folder / "qute_model.c"), str(folder / "main.c"), *map(str, sorted(kernels_dir().glob("*.c"))),
           "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = len(xs[0])
    payload = struct.pack("<I", n) + b"".join(np.ascontiguousarray(x[s], np.int8).tobytes() for s in range(n) for x in xs)
    run = subprocess.run([str(exe)], input=payload, capture_output=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr.decode(errors="replace")[-3000:])
    sizes = [g.tensor(t).size for t in gen.output_order]
    flat = np.frombuffer(run.stdout, np.int8).reshape(n, sum(sizes))
    return list(np.split(flat, np.cumsum(sizes)[:-1], axis=1))


def _samples(shape, n=4, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (n, *shape), dtype=np.int8)


@needs_gcc
def test_zero_copy_api_matches_invoke_n(tmp_path):
    tflite = _three_op_model()
    x = _samples((1, 5, 4, 6))
    (zc,) = zero_copy_run(tflite, [x], tmp_path / "zc")
    (host,) = build_host(read_model(tflite), tmp_path / "host").run([x])
    assert np.array_equal(zc, host.reshape(len(x), -1))
    header = (tmp_path / "zc" / "qute_model.h").read_text()
    for decl in ("int8_t *qute_model_input(int i);", "const void *qute_model_output(int k);",
                 "void qute_model_run(void);",
                 "void qute_model_invoke_n(const int8_t *const inputs[], int8_t *const outputs[]);"):
        assert decl in header
    assert "take no arena space" not in header


@needs_gcc
@pytest.mark.skipif(not AUTOENCODER.exists(), reason="../shared/models not present")
def test_zero_copy_api_on_the_autoencoder_matches_tflm(tmp_path):
    from qute import oracle

    tflite = AUTOENCODER.read_bytes()
    x = _samples((1, 640), n=3, seed=5)
    (zc,) = zero_copy_run(tflite, [x], tmp_path)
    for s in range(len(x)):
        assert np.array_equal(zc[s], np.asarray(oracle.run_tflm(tflite, [x[s]])[0]).reshape(-1))


def _identity_models() -> dict[str, tuple[bytes, list]]:
    """Graphs whose outputs are (views of) their input; each with what output k holds: ("x",) the
    input's bytes, ("relu",) max(x, zero point)."""
    models = {}
    b = ModelBuilder()
    x = b.input((1, 7), scale=0.1, zero_point=2)
    b.output(x)
    models["input_is_output"] = (b.build(), [("x",)])

    b = ModelBuilder()
    x = b.input((1, 2, 5), scale=0.1, zero_point=2)
    y = b.tensor((1, 10), scale=0.1, zero_point=2)
    b.op("RESHAPE", [x, b.const(np.array([1, 10], np.int32))], [y])
    b.output(y)
    models["reshape_of_input_is_output"] = (b.build(), [("x",)])

    b = ModelBuilder()
    x = b.input((1, 2, 5), scale=0.1, zero_point=2)
    y = b.tensor((1, 10), scale=0.1, zero_point=2)
    b.op("RESHAPE", [x, b.const(np.array([1, 10], np.int32))], [y])
    b.output(x)
    b.output(y)
    models["input_and_its_reshape_are_outputs"] = (b.build(), [("x",), ("x",)])

    b = ModelBuilder()
    x = b.input((1, 9), scale=0.1, zero_point=2)
    y = b.tensor((1, 9), scale=0.1, zero_point=2)
    b.op("RELU", [x], [y])  # may work in place, but x is an output too
    b.output(y)
    b.output(x)
    models["input_is_output_beside_an_in_place_op"] = (b.build(), [("relu",), ("x",)])
    return models


@needs_gcc
@pytest.mark.parametrize("name", sorted(_identity_models()))
def test_identity_like_graphs(tmp_path, name):
    tflite, want = _identity_models()[name]
    g = fold(read_model(tflite))
    p = plan_for(g)
    lows = {op.index: op_registry.lowering_for(op) for op in g.ops}
    check_plan(g, p, {i for i, low in lows.items() if getattr(low, "alias", False)}, output_order(g),
               {i: low.inplace for i, low in lows.items() if getattr(low, "inplace", ())})
    x = _samples(g.tensor(g.inputs[0]).shape, n=5, seed=3)
    flat = x.reshape(len(x), -1)
    outs = zero_copy_run(tflite, [x], tmp_path / "zc")
    host = build_host(read_model(tflite), tmp_path / "host").run([x])
    assert len(outs) == len(want)
    for k, (what,) in enumerate(want):
        expect = flat if what == "x" else np.maximum(flat, 2)
        assert np.array_equal(outs[k], expect), k
        assert np.array_equal(host[k].reshape(len(x), -1), expect), k
