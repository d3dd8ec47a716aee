"""Malformed ``.tflite`` models: deterministic mutants of real ones, and a runner no crash can stop.

    for m in mutants(seed_models(), count=300, seed=0): ...      # Mutant(index, model, kind, data)
    with Runner("generate", workdir) as r: outcome = r.run(m)    # Outcome(cls, code, detail, ...)
    python tests/fuzz.py worker TARGET                            # what a Runner starts

Mutations (chosen from the mutant's index and the seed alone, so a failure is reproduced by its
number): byte flips, truncations, insertions and overwritten words (mostly aimed outside the
weight buffers, where the flatbuffer's tables are), and structured edits through the schema's
object API: shapes, tensor types, buffer indices, op input/output indices (out of range, onto a
constant, a graph input, the op's own input), graph inputs/outputs, signature indices, scales
(nan, inf, 0, negative, denormal, huge), zero points, per-channel lengths, quantized_dimension,
opcode indices, operator codes and versions, builtin options, buffer contents, op order.

Each mutant runs in a worker process (``Runner``): a traceback, a signal or a hang is recorded
against that mutant and the worker is restarted, so one bad model cannot hide the next.

Outcome classes: ``ok`` (exit 0), ``error`` (exit 2, one line on stderr), ``error:tflm-crash``
(exit 2 because the TFLM interpreter crashed in its child process), ``failure`` (exit 1: a
mismatch with the reference), ``failure:qute-bug`` (exit 1: qute says it is its own bug),
``multiline`` (exit 2 but more than one line), ``traceback:<Type> <file>:<line>``,
``signal:<NAME>``, ``hang``, ``exit:<n>``. ``Outcome.bad`` marks the ones that must not happen.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = Path(os.environ.get("QUTE_FUZZ_MODELS", ROOT.parent / "shared" / "models"))
DEFAULT_MODEL = ROOT / "firmware" / "default" / "model.int8.tflite"


def seed_models() -> dict[str, bytes]:
    """The shipped default model and the MLPerf Tiny models (those present on this machine)."""
    paths = [DEFAULT_MODEL, *sorted(SHARED_MODELS.glob("*.tflite"))]
    return {p.stem.replace(".int8", ""): p.read_bytes() for p in paths if p.is_file()}


# --------------------------------------------------------------------------- mutations

@dataclass
class Mutant:
    index: int
    model: str
    kind: str
    data: bytes


INT32 = (-(2**31), 2**31 - 1)
BAD_SCALES = [float("nan"), float("inf"), float("-inf"), 0.0, -0.5, -1e-3, 1e-45, 1e-38, 1e38, 3.4e38, 1e-12, 1e12]
BAD_ZERO_POINTS = [128, -129, 255, 256, -1000, 32767, -32768, 2**31 - 1, -(2**31), 2**40, -(2**62), 127, -128, 0]
BAD_DIMS = [0, -1, -7, 1, 2, 3, 1000, 65536, 2**20, 2**31 - 1]
BAD_WORDS = [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFF, 0x10000, 12, 200]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _structure_positions(data: bytes) -> np.ndarray | None:
    """Byte offsets outside the buffers' data vectors: the tables, vtables and small vectors."""
    try:
        import tflite

        m = tflite.Model.GetRootAsModel(data, 0)
        mask = np.ones(len(data), bool)
        for i in range(m.BuffersLength()):
            b = m.Buffers(i)
            o = b._tab.Offset(4)
            if o:
                start = b._tab.Vector(o)
                mask[start : start + b._tab.VectorLen(o)] = False
        pos = np.flatnonzero(mask)
        return pos if len(pos) else None
    except Exception:
        return None


def _position(rng, data: bytes, structure: np.ndarray | None) -> int:
    if structure is not None and rng.random() < 0.8:
        return int(_pick(rng, structure))
    return int(rng.integers(len(data)))


def byte_mutation(rng, data: bytes, structure: np.ndarray | None) -> tuple[str, bytes]:
    d = bytearray(data)
    kind = _pick(rng, ["flip", "flip", "truncate", "insert", "word", "word"])
    if kind == "flip":
        n = int(rng.integers(1, 9))
        for _ in range(n):
            p = _position(rng, data, structure)
            d[p] ^= int(rng.integers(1, 256))
        return f"flip x{n}", bytes(d)
    if kind == "truncate":
        cut = int(rng.integers(0, len(d))) if rng.random() < 0.5 else _position(rng, data, structure)
        return f"truncate at {cut}", bytes(d[:cut])
    if kind == "insert":
        p = _position(rng, data, structure)
        blob = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        return f"insert {len(blob)} at {p}", bytes(d[:p] + blob + d[p:])
    p = _position(rng, data, structure) & ~3
    if p + 4 > len(d):
        p = max(0, len(d) - 4) & ~3
    w = _pick(rng, BAD_WORDS) if rng.random() < 0.7 else int(rng.integers(0, 2**32))
    d[p : p + 4] = int(w).to_bytes(4, "little")
    return f"word {w:#x} at {p}", bytes(d)


def _fb():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return fb


def _pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _clip32(v: int) -> int:
    return int(min(max(v, INT32[0]), INT32[1]))


def _tensor_index(rng, sg, op=None) -> int:
    n = len(sg.tensors)
    choice = rng.random()
    if choice < 0.45:
        return int(rng.integers(n))
    if choice < 0.6:
        return _pick(rng, [-1, -2, n, n + 1, n + 1000, 2**31 - 1, -(2**31)])
    if choice < 0.75 and len(sg.inputs):
        return int(_pick(rng, list(sg.inputs)))
    if choice < 0.9:
        consts = [i for i, t in enumerate(sg.tensors) if t.buffer and t.buffer > 0]
        if consts:
            return int(_pick(rng, consts))
    if op is not None and op.inputs is not None and len(op.inputs):
        return int(_pick(rng, list(op.inputs)))
    return int(rng.integers(n))


def _quantized(sg):
    return [t for t in sg.tensors if t.quantization is not None and t.quantization.scale is not None
            and len(t.quantization.scale)]


def _edit_shape(rng, m, sg):
    t = _pick(rng, sg.tensors)
    shape = [int(s) for s in (t.shape if t.shape is not None else [])]
    how = rng.random()
    if how < 0.6 and shape:
        k = int(rng.integers(len(shape)))
        shape[k] = _pick(rng, BAD_DIMS) if rng.random() < 0.7 else shape[k] + int(_pick(rng, [-1, 1, 2]))
    elif how < 0.75 and shape:
        del shape[int(rng.integers(len(shape)))]
    elif how < 0.9:
        shape.insert(int(rng.integers(len(shape) + 1)), _pick(rng, [1, 2, 3]))
    else:
        shape = []
    t.shape = np.array([_clip32(s) for s in shape], np.int32)
    return f"shape of tensor {sg.tensors.index(t)} -> {shape}"


def _edit_type(rng, m, sg):
    i = int(rng.integers(len(sg.tensors)))
    sg.tensors[i].type = int(rng.integers(0, 18))
    return f"type of tensor {i} -> {sg.tensors[i].type}"


def _edit_buffer_index(rng, m, sg):
    i = int(rng.integers(len(sg.tensors)))
    n = len(m.buffers)
    sg.tensors[i].buffer = int(_pick(rng, [0, int(rng.integers(n)), n, n + 7, 2**31, 2**32 - 1]))
    return f"buffer of tensor {i} -> {sg.tensors[i].buffer}"


def _edit_op_tensor(rng, m, sg):
    op = _pick(rng, sg.operators)
    k = sg.operators.index(op)
    outputs = rng.random() < 0.5
    lst = [int(x) for x in (op.outputs if outputs else op.inputs)]
    if not lst:
        lst = [0]
    pos = int(rng.integers(len(lst)))
    if outputs and rng.random() < 0.3 and len(op.inputs):
        lst[pos] = int(_pick(rng, [x for x in op.inputs]))  # the op writes over its own input
    else:
        lst[pos] = _clip32(_tensor_index(rng, sg, op))
    if rng.random() < 0.1:
        lst.append(_clip32(_tensor_index(rng, sg)))
    elif rng.random() < 0.1 and len(lst) > 1:
        lst.pop()
    arr = np.array(lst, np.int32)
    if outputs:
        op.outputs = arr
    else:
        op.inputs = arr
    return f"op {k} {'outputs' if outputs else 'inputs'} -> {lst}"


def _edit_graph_io(rng, m, sg):
    outputs = rng.random() < 0.5
    lst = [int(x) for x in (sg.outputs if outputs else sg.inputs)]
    how = rng.random()
    if how < 0.6 and lst:
        lst[int(rng.integers(len(lst)))] = _clip32(_tensor_index(rng, sg))
    elif how < 0.8:
        lst.append(_clip32(_tensor_index(rng, sg)))
    elif lst:
        lst.pop(int(rng.integers(len(lst))))
    arr = np.array(lst, np.int32)
    if outputs:
        sg.outputs = arr
    else:
        sg.inputs = arr
    return f"graph {'outputs' if outputs else 'inputs'} -> {lst}"


def _edit_signature(rng, m, sg):
    if not m.signatureDefs:
        return _edit_graph_io(rng, m, sg)
    sig = m.signatureDefs[0]
    maps = (sig.outputs or []) + (sig.inputs or [])
    if not maps:
        return _edit_graph_io(rng, m, sg)
    tm = _pick(rng, maps)
    tm.tensorIndex = int(_pick(rng, [int(rng.integers(len(sg.tensors))), len(sg.tensors), 2**32 - 1]))
    return f"signature {tm.name} -> tensor {tm.tensorIndex}"


def _pick_quantized(rng, sg):
    """A quantized tensor of the subgraph, or None when it has none."""
    qs = _quantized(sg)
    return _pick(rng, qs) if qs else None


def _edit_scale(rng, m, sg):
    t = _pick_quantized(rng, sg)
    if t is None:
        return _edit_shape(rng, m, sg)
    q = t.quantization
    s = np.array(q.scale, np.float32).copy()
    k = int(rng.integers(len(s)))
    with np.errstate(over="ignore"):
        s[k] = np.float32(_pick(rng, BAD_SCALES) if rng.random() < 0.8 else float(10.0 ** rng.uniform(-12, 12)))
    q.scale = s
    return f"scale[{k}] of tensor {sg.tensors.index(t)} -> {float(s[k])!r}"


def _edit_zero_point(rng, m, sg):
    t = _pick_quantized(rng, sg)
    if t is None:
        return _edit_shape(rng, m, sg)
    q = t.quantization
    z = np.array(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale)), np.int64).copy()
    if not len(z):
        z = np.zeros(1, np.int64)
    k = int(rng.integers(len(z)))
    z[k] = _pick(rng, BAD_ZERO_POINTS) if rng.random() < 0.8 else int(rng.integers(-300, 300))
    q.zeroPoint = z
    return f"zero_point[{k}] of tensor {sg.tensors.index(t)} -> {int(z[k])}"


def _edit_per_channel(rng, m, sg):
    t = _pick_quantized(rng, sg)
    if t is None:
        return _edit_shape(rng, m, sg)
    q = t.quantization
    i = sg.tensors.index(t)
    how = rng.random()
    if how < 0.4:
        q.quantizedDimension = int(_pick(rng, [-1, 0, 1, 2, 3, 4, 7, 2**31 - 1]))
        return f"quantized_dimension of tensor {i} -> {q.quantizedDimension}"
    which = "scale" if rng.random() < 0.5 else "zeroPoint"
    v = np.array(getattr(q, which) if getattr(q, which) is not None else [], np.float32 if which == "scale" else np.int64)
    if how < 0.7 and len(v) > 0:
        v = v[: int(rng.integers(len(v)))]
    else:
        v = np.concatenate([v, v[:1] if len(v) else np.ones(1, v.dtype), v[: int(rng.integers(len(v) + 1))]])
    setattr(q, which, v)
    return f"{which} of tensor {i} -> {len(v)} values"


def _edit_opcode_index(rng, m, sg):
    op = _pick(rng, sg.operators)
    n = len(m.operatorCodes)
    op.opcodeIndex = int(_pick(rng, [int(rng.integers(n)), n, n + 3, 2**31, 2**32 - 1]))
    return f"opcode index of op {sg.operators.index(op)} -> {op.opcodeIndex}"


def _edit_operator_code(rng, m, sg):
    oc = _pick(rng, m.operatorCodes)
    how = rng.random()
    if how < 0.4:
        oc.builtinCode = int(_pick(rng, [int(rng.integers(0, 210)), -1, 2**31 - 1, 0, 3, 9, 25]))
        oc.deprecatedBuiltinCode = min(oc.builtinCode, 127) if 0 <= oc.builtinCode else 0
        return f"builtin code {m.operatorCodes.index(oc)} -> {oc.builtinCode}"
    if how < 0.7:
        oc.version = int(_pick(rng, [0, -1, 1, 2, 3, 99, 2**31 - 1]))
        return f"version of opcode {m.operatorCodes.index(oc)} -> {oc.version}"
    oc.deprecatedBuiltinCode = int(_pick(rng, [-128, -1, 0, 32, 127]))
    return f"deprecated builtin code {m.operatorCodes.index(oc)} -> {oc.deprecatedBuiltinCode}"


def _edit_options(rng, m, sg):
    ops = [op for op in sg.operators if op.builtinOptions is not None and vars(op.builtinOptions)]
    if not ops:
        return _edit_op_tensor(rng, m, sg)
    op = _pick(rng, ops)
    fields = [k for k, v in vars(op.builtinOptions).items() if isinstance(v, (int, float, bool, np.integer))]
    if not fields:
        op.builtinOptions = None
        return f"options of op {sg.operators.index(op)} dropped"
    k = _pick(rng, fields)
    old = getattr(op.builtinOptions, k)
    if isinstance(old, float):
        new = float(_pick(rng, [0.0, -1.0, float("nan"), float("inf"), 1e30, 1e-30]))
    elif isinstance(old, bool):
        new = not old
    else:
        new = int(_pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, -1, -2, 100, 127, -128]))
    setattr(op.builtinOptions, k, new)
    return f"{k} of op {sg.operators.index(op)} -> {new}"


def _edit_buffer_data(rng, m, sg):
    full = [b for b in m.buffers if b.data is not None and len(b.data)]
    if not full:
        return _edit_shape(rng, m, sg)
    b = _pick(rng, full)
    d = np.array(b.data, np.uint8)
    how = rng.random()
    if how < 0.4:
        b.data = d[: int(rng.integers(len(d)))]
    elif how < 0.6:
        b.data = np.concatenate([d, rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8)])
    else:
        d = d.copy()
        idx = rng.integers(len(d), size=int(rng.integers(1, 17)))
        d[idx] = rng.integers(0, 256, len(idx), dtype=np.uint8)
        b.data = d
    return f"buffer {m.buffers.index(b)} data -> {len(b.data)} bytes"


def _edit_ops(rng, m, sg):
    ops = sg.operators
    how = rng.random()
    if how < 0.35 and len(ops) > 1:
        k = int(rng.integers(len(ops)))
        del ops[k]
        return f"op {k} removed"
    if how < 0.7 and len(ops) > 1:
        a, b = (int(x) for x in rng.choice(len(ops), 2, replace=False))
        ops[a], ops[b] = ops[b], ops[a]
        return f"ops {a} and {b} swapped"
    k = int(rng.integers(len(ops)))
    ops.insert(k, copy.deepcopy(ops[k]))
    return f"op {k} duplicated"


def _edit_subgraphs(rng, m, sg):
    how = rng.random()
    if how < 0.3:
        m.subgraphs.append(copy.deepcopy(sg))
        return "subgraph duplicated"
    if how < 0.5:
        sg.operators = []
        return "every op removed"
    if how < 0.7:
        sg.tensors = sg.tensors[: int(rng.integers(len(sg.tensors)))]
        return f"tensors cut to {len(sg.tensors)}"
    if how < 0.85:
        m.buffers = m.buffers[: int(rng.integers(len(m.buffers)))]
        return f"buffers cut to {len(m.buffers)}"
    m.operatorCodes = m.operatorCodes[: int(rng.integers(len(m.operatorCodes)))]
    return f"operator codes cut to {len(m.operatorCodes)}"


STRUCTURED = [
    (_edit_shape, 12), (_edit_type, 4), (_edit_buffer_index, 6), (_edit_op_tensor, 14), (_edit_graph_io, 6),
    (_edit_signature, 3), (_edit_scale, 10), (_edit_zero_point, 9), (_edit_per_channel, 7),
    (_edit_opcode_index, 4), (_edit_operator_code, 5), (_edit_options, 8), (_edit_buffer_data, 5),
    (_edit_ops, 5), (_edit_subgraphs, 2),
]
_WEIGHTS = np.array([w for _, w in STRUCTURED], float) / sum(w for _, w in STRUCTURED)


def structured_mutation(rng, model) -> str:
    """Edits `model` (a schema ModelT) in place; returns what was done."""
    sg = model.subgraphs[0]
    edits = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    done = []
    for _ in range(edits):
        fn = STRUCTURED[int(rng.choice(len(STRUCTURED), p=_WEIGHTS))][0]
        done.append(fn(rng, model, sg))
    return "; ".join(done)


class _Source:
    """A seed model, parsed once."""

    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data
        self.structure = _structure_positions(data)
        self._model = None

    def model(self):
        if self._model is None:
            self._model = _fb().ModelT.InitFromPackedBuf(bytearray(self.data), 0)
        return copy.deepcopy(self._model)


def mutant(sources: list[_Source], index: int, seed: int) -> Mutant:
    rng = np.random.default_rng([seed, index])
    src = sources[index % len(sources)]
    if rng.random() < 0.35:
        kind, data = byte_mutation(rng, src.data, src.structure)
        return Mutant(index, src.name, kind, data)
    m = src.model()
    try:
        with np.errstate(all="ignore"):
            kind = structured_mutation(rng, m)
            data = _pack(m)
    except Exception as e:  # an edit the packer cannot write: a byte mutation instead, still deterministic
        kind, data = byte_mutation(rng, src.data, src.structure)
        kind += f" (structured edit unpackable: {type(e).__name__})"
    return Mutant(index, src.name, kind, data)


def mutants(models: dict[str, bytes], count: int, seed: int, start: int = 0):
    sources = [_Source(n, d) for n, d in models.items()]
    for i in range(start, start + count):
        yield mutant(sources, i, seed)


# --------------------------------------------------------------------------- targets (worker side)

def _project_frame(tb) -> str:
    """file:line of the innermost frame in qute's own code (else the innermost frame)."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if str(ROOT) in f.filename and "/.venv/" not in f.filename and "/tests/" not in f.filename]
    f = (ours or frames)[-1]
    name = f.filename.replace(str(ROOT) + "/", "")
    return f"{name}:{f.lineno}"


def _target_generate(path: str, out: str) -> int:
    from codegen.cli import main

    return main(["generate", path, "-o", out])


def _target_build(path: str, out: str) -> int:
    """`qute build`'s model path up to the cross-compiler: read, validate, generate, host reference."""
    import click

    from codegen.ir import CodegenError
    from qute.build import resolve_model
    from qute.errors import QuteError, RunFailure
    from qute.expectation import model_facts, reference_outputs

    try:
        source = resolve_model(path, 2)
        facts = model_facts(source.tflite)
        reference_outputs(source.tflite, facts.layout, source.inputs)
    except (QuteError, CodegenError) as e:
        click.echo(f"qute: error: {e}", err=True)
        return 2
    except RunFailure as e:
        click.echo(f"qute: {e}", err=True)
        return 1
    return 0


def _target_verify(path: str, out: str) -> int:
    from qute.cli import main

    return main(["verify", path, "--samples", "2"])


TARGETS = {"generate": _target_generate, "build": _target_build, "verify": _target_verify}


def worker(target: str) -> None:
    """Reads jobs (JSON lines: path, out) on stdin, writes one JSON result line per job."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # C++ chatter must not reach the protocol
    fn = TARGETS[target]
    for line in sys.stdin:
        job = json.loads(line)
        err, out = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        detail = ""
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = fn(job["path"], job["out"])
            cls = None
        except SystemExit as e:  # a command's own sys.exit: its status, as a shell would see it
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            cls = None
        except BaseException as e:  # noqa: BLE001 - this is what the fuzzer looks for
            code = None
            cls = f"traceback:{type(e).__name__} {_project_frame(e.__traceback__)}"
            detail = f"{type(e).__name__}: {str(e)[:300]}"
        stderr = err.getvalue().strip()
        if cls is None:
            lines = stderr.splitlines()
            if code == 0:
                cls = "ok"
            elif code == 2 and len(lines) == 1:
                cls = "error:tflm-crash" if "TFLite Micro crashed" in stderr or "TFLite Micro did not finish" in stderr \
                    else "error"
            elif code == 2:
                cls = "multiline"
            elif code == 1:
                cls = "failure:qute-bug" if "bug in qute" in stderr else "failure"
            else:
                cls = f"exit:{code}"
            detail = stderr[:400]
        proto.write(json.dumps({"cls": cls, "code": code, "detail": detail,
                                "seconds": round(time.perf_counter() - t0, 3)}) + "\n")


# --------------------------------------------------------------------------- runner (parent side)

@dataclass
class Outcome:
    mutant: Mutant
    cls: str
    code: int | None
    detail: str = ""
    seconds: float = 0.0
    out: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.cls.split(":")[0] in ("traceback", "signal", "hang", "exit", "multiline") or \
            self.cls == "failure:qute-bug"

    def describe(self) -> str:
        m = self.mutant
        return f"mutant {m.index} of {m.model} ({m.kind}): {self.cls} {self.detail}".strip()


class Runner:
    """One worker process for `target`; restarted after a crash or a hang."""

    def __init__(self, target: str, workdir: Path, timeout: float = 120.0, keep_outputs: bool = True,
                 memory_limit: int | None = 6 << 30):
        self.target, self.workdir, self.timeout = target, Path(workdir), timeout
        self.keep_outputs, self.memory_limit = keep_outputs, memory_limit
        self.proc: subprocess.Popen | None = None
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self) -> None:
        limit = self.memory_limit

        def limits():
            if limit:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker", self.target],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=limits, env=env)
        self._buf = b""

    def _kill(self) -> int | None:
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and whatever it started
        except ProcessLookupError:
            pass
        code = self.proc.wait()
        self.proc = None
        return code

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._kill()

    def _readline(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def run(self, m: Mutant) -> Outcome:
        if self.proc is None:
            self._start()
        path = self.workdir / f"m{m.index}.tflite"
        out = self.workdir / f"m{m.index}.out"
        path.write_bytes(m.data)
        t0 = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps({"path": str(path), "out": str(out)}) + "\n").encode())
            self.proc.stdin.flush()
            line = self._readline(t0 + self.timeout)
        except BrokenPipeError:
            line = b""
        seconds = time.monotonic() - t0
        if line is None:
            self._kill()
            return Outcome(m, "hang", None, f"no answer within {self.timeout:.0f} s", seconds)
        if line == b"":
            code = self._kill()
            name = signal.Signals(-code).name if code is not None and code < 0 else f"exit {code}"
            return Outcome(m, f"signal:{name}" if code is not None and code < 0 else f"exit:{code}", code,
                           "the worker died", seconds)
        r = json.loads(line)
        if r["cls"] != "ok" or not self.keep_outputs:
            path.unlink(missing_ok=True)
        return Outcome(m, r["cls"], r["code"], r["detail"], r["seconds"], out if r["cls"] == "ok" else None)


def run_all(target: str, items: list[Mutant], workdir: Path, jobs: int = 1, timeout: float = 120.0,
            progress=None) -> list[Outcome]:
    """Every mutant through `target`, `jobs` workers side by side; outcomes in mutant order."""
    import threading

    results: dict[int, Outcome] = {}
    lock = threading.Lock()
    queue = list(reversed(items))

    def drive():
        with Runner(target, workdir, timeout) as r:
            while True:
                with lock:
                    if not queue:
                        return
                    m = queue.pop()
                o = r.run(m)
                with lock:
                    results[m.index] = o
                    if progress:
                        progress(len(results), o)

    threads = [threading.Thread(target=drive) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[m.index] for m in items]


# --------------------------------------------------------------------------- accepted mutants

def compile_generated(folder: Path, opt: str = "-O2") -> str | None:
    """Compiles a generated model's C with the project's warning flags; None, or the compiler's complaint."""
    from codegen.host import WARNINGS, kernels_dir

    c = next(folder.glob("*.c"), None)
    if c is None:
        return "no C source written"
    proc = subprocess.run(["gcc", *WARNINGS, opt, "-I", str(folder), "-I", str(kernels_dir()), "-c", str(c),
                           "-o", os.devnull], capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stderr[-2000:]


def sanitized_run(tflite_path: Path, samples: int = 3, seed: int = 0) -> str | None:
    """Builds the model with ASan and UBSan and runs it on random int8 inputs; None, or what went wrong."""
    from codegen.host import build_host
    from codegen.ir import CodegenError
    from codegen.reader import read_file

    graph = read_file(tflite_path)
    with tempfile.TemporaryDirectory(prefix="qute-fuzz-asan-") as tmp:
        try:
            host = build_host(graph, Path(tmp), sanitize=True, opt="-O1")
            rng = np.random.default_rng(seed)
            xs = [rng.integers(-128, 128, (samples, n), dtype=np.int8) for n in host.input_sizes]
            host.run(xs)
        except CodegenError as e:
            return str(e)[-2000:]
    return None


def table(outcomes: list[Outcome]) -> str:
    from collections import Counter

    counts = Counter(o.cls for o in outcomes)
    width = max([len(c) for c in counts] + [10])
    lines = [f"{'outcome':<{width}} {'count':>7} {'share':>7}"]
    for cls, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{cls:<{width}} {n:>7} {100 * n / max(1, len(outcomes)):>6.1f}%")
    lines.append(f"{'total':<{width}} {len(outcomes):>7}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker(sys.argv[2])
    else:
        sys.exit("usage: fuzz.py worker generate|build|verify (started by fuzz.Runner)")
