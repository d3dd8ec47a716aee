"""Graph -> C99 source: `qute_model.h` (the API) and `qute_model.c` (weights, parameters, op calls).

The output is a function of the model bytes alone: same model in, same C out.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from codegen import ops as op_registry
from codegen import stages
from codegen.fold import fold
from codegen.ir import CodegenError, Graph, Op
from codegen.planner import Plan, plan

# what a model output may be: int8, or int16 where an op writes it (SOFTMAX's 1/65536 output)
OUTPUT_TYPES = ("int8", "int16")
_CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "uint8": "uint8_t", "float32": "float", "int64": "int64_t"}
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class Array:
    name: str
    ctype: str
    values: np.ndarray
    comment: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def initializer(self, per_line: int = 16) -> str:
        flat = self.values.reshape(-1)
        if self.ctype == "float":
            if not np.all(np.isfinite(flat)):
                raise CodegenError(f"{self.name} ({self.comment}) holds nan or infinity, which C99 cannot write as a constant")
            items = [f"{float(v)!r}f" for v in flat]
        else:
            # C has no negative literals: -9223372036854775808 is minus a constant too big for any type
            items = [str(int(v)) if int(v) != -(2**63) else "(-9223372036854775807 - 1)" for v in flat]
        lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
        return ",\n    ".join(lines)


@dataclass
class Struct:
    name: str
    ctype: str
    fields: dict


@dataclass
class Context:
    """What lowerings use to name tensors and declare constants."""

    graph: Graph
    plan: Plan
    weights_arrays: dict[int, Array] = field(default_factory=dict)
    param_arrays: list[Array] = field(default_factory=list)
    packed_arrays: list[Array] = field(default_factory=list)  # weights in a kernel's own layout
    structs: list[Struct] = field(default_factory=list)
    headers: set[str] = field(default_factory=set)
    # the matrix-product kernels' filters in qute_gemm.h's int16 layout (their _w16_ variants)
    weights16: bool = False

    def ptr(self, tensor: int) -> str:
        t = self.graph.tensor(tensor)
        ctype = _CTYPES[t.dtype]
        if t.is_const:
            return self._weights(tensor).name
        return f"({ctype} *)(arena + {self.plan.offset[tensor]})"

    def scratch(self, op: Op) -> str:
        """The op's scratch block (its lowering's `scratch_bytes`), valid during this op only."""
        if op.index not in self.plan.scratch:
            raise CodegenError(f"{op.describe()}: its lowering uses a scratch buffer but asked for none (scratch_bytes)")
        return f"(void *)(arena + {self.plan.scratch[op.index]})"

    def weights(self, op: Op, position: int) -> str:
        return self._weights(op.inputs[position]).name

    def _weights(self, tensor: int) -> Array:
        if tensor not in self.weights_arrays:
            t = self.graph.tensor(tensor)
            self.weights_arrays[tensor] = Array(f"tensor{tensor}", _CTYPES[t.dtype], t.data, f"{t.name} {list(t.shape)}")
        return self.weights_arrays[tensor]

    def array(self, op: Op, role: str, values: np.ndarray) -> str:
        arr = Array(f"op{op.index}_{role}", _CTYPES[values.dtype.name], values)
        self.param_arrays.append(arr)
        return arr.name

    def packed_weights(self, op: Op, position: int, values: np.ndarray) -> str:
        """The op's constant input `position` re-laid out for its kernel (codegen/pack.py): declared
        with, and counted as, the weights; the tensor as stored is then not emitted unless
        another op asks for it."""
        t = self.graph.tensor(op.inputs[position])
        arr = Array(f"op{op.index}_filter", _CTYPES[values.dtype.name], values, f"{t.name} {list(t.shape)}, packed")
        self.packed_arrays.append(arr)
        return arr.name

    def struct(self, op: Op, ctype: str, **fields) -> str:
        for k, v in fields.items():
            # every field of the kernels' parameter structs is at most an int32_t
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and not -(2**31) <= int(v) < 2**31:
                raise CodegenError(f"{op.describe()}: parameter {k} = {int(v)} does not fit the kernel's int32_t")
        s = Struct(f"op{op.index}_params", ctype, fields)
        self.structs.append(s)
        return s.name


@dataclass
class Generated:
    header: str
    source: str
    arena_size: int  # bytes of the static arena: the inputs, every activation, the outputs and the ops' scratch
    weights_bytes: int
    params_bytes: int
    weights16: bool  # the matrix products' filters in the int16 layout (generate's weights16)
    output_order: list[int]
    headers: list[str]
    shape_notes: list[str] = field(default_factory=list)  # stored shapes that disagree with the inferred ones
    reference: str = "tflm"  # whose reference kernels the C equals: "tflm" or "litert-ref" (Graph.reference)
    kernels: dict[int, str] = field(default_factory=dict)  # op index -> the kernel it calls; ops that run no code are absent
    scratch: dict[int, int] = field(default_factory=dict)  # op index -> scratch bytes it asked for (inside arena_size)
    plan: Plan | None = None  # where every tensor and scratch block lives in the arena (of the folded graph)
    exits: list[int] = field(default_factory=list)  # output index (API order) of exit_0, exit_1, ... (codegen.stages)
    stage_ends: list[int] = field(default_factory=list)  # ops run once each stage is done (codegen.stages.stage_ends)


@contextlib.contextmanager
def _about(op: Op):
    """Names the op in an error raised by code that does not know it (quant.py's helpers)."""
    try:
        yield
    except CodegenError as e:
        if str(e).startswith(f"op {op.index} "):
            raise
        raise CodegenError(f"{op.describe()}: {e}") from None


def output_order(graph: Graph) -> list[int]:
    """Graph outputs in API order: by signature name (head_0, head_1, ...) when named, early exits
    (exit_0, exit_1, ...) after the rest; else as stored."""
    if graph.output_names and set(graph.output_names.values()) == set(graph.outputs):
        key = lambda name: (stages.is_exit(name), [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])  # noqa: E731
        return [graph.output_names[n] for n in sorted(graph.output_names, key=key)]
    return list(graph.outputs)


def plan_for(graph: Graph, lowerings: dict | None = None) -> Plan:
    """The memory plan of a folded graph, as generate() makes it: the lowerings say which ops alias
    their input (``alias``), may overwrite one (``inplace``) and need scratch (``scratch_bytes``)."""
    lowerings = lowerings or {op.index: op_registry.lowering_for(op) for op in graph.ops}
    aliases = {op.index for op in graph.ops if getattr(lowerings[op.index], "alias", False)}
    inplace = {op.index: lowerings[op.index].inplace for op in graph.ops if getattr(lowerings[op.index], "inplace", ())}
    scratch = {}
    for op in graph.ops:
        if (ask := getattr(lowerings[op.index], "scratch_bytes", None)) is not None:
            with _about(op):
                n = ask(op, graph)
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise CodegenError(f"{op.describe()}: scratch_bytes gave {n!r}; it must be an int >= 0")
            if n:
                scratch[op.index] = int(n)
    return plan(graph, output_order(graph), aliases, inplace, scratch)


def generate(graph: Graph, prefix: str = "qute_model", weights16: bool = False) -> Generated:
    """C for `graph`. weights16: the matrix products' filters in the int16 layout (twice their
    flash, fewer instructions on cores with SIMD; the kernels' _w16_ variants)."""
    graph = fold(graph)  # inferred shapes; static shape arithmetic and constant ops become constants
    lowerings = {op.index: op_registry.lowering_for(op) for op in graph.ops}
    for op in graph.ops:
        with _about(op):
            lowerings[op.index].check(op, graph)
    if not graph.inputs:
        raise CodegenError("the model has no inputs; the generated API takes at least one")
    for t in graph.inputs + graph.outputs:
        allowed = ("int8",) if t in graph.inputs else OUTPUT_TYPES
        if graph.tensor(t).dtype not in allowed:
            raise CodegenError(
                f"model {'input' if t in graph.inputs else 'output'} {graph.tensor(t).name} is "
                f"{graph.tensor(t).dtype}; the generator needs int8 inputs and int8 (or int16 softmax) outputs "
                "(full-integer quantization)"
            )
    order = output_order(graph)
    p = plan_for(graph, lowerings)
    ctx = Context(graph, p, weights16=weights16)
    calls = []
    kernels = {}
    for op in graph.ops:
        low = lowerings[op.index]
        if op.index in p.copy_ops:  # an alias whose output must not share its input's bytes
            src, dst = op.inputs[0], op.outputs[0]
            lines = [f"memcpy({ctx.ptr(dst)}, {ctx.ptr(src)}, {graph.tensor(dst).nbytes});"]
        else:
            if header := getattr(low, "header", None):
                ctx.headers.add(header)
            with _about(op):
                lines = low.emit(op, graph, ctx)
        if lines:
            calls.append((op.index, f"{op.index}: {op.opcode}", lines))
            kernels[op.index] = kernel_name(lines)

    def io(t):
        x = graph.tensor(t)
        scale, zp = x.qparams()
        return {"name": graph.output_label(t) if t in graph.outputs else x.name, "size": x.nbytes,
                "ctype": _CTYPES[x.dtype], "shape": list(x.shape), "scale": repr(float(np.float32(scale))) + "f", "zero_point": zp,
                "at": f"arena + {p.offset[t]}"}

    ends = stages.stage_ends(graph)
    starts = [0, *ends[:-1]]
    staged_calls = [[c for c in calls if lo <= c[0] < hi] for lo, hi in zip(starts, ends)]
    exits = [order.index(t) for t in stages.exit_outputs(graph)]
    env = {
        "stages": staged_calls,
        "exits": exits,
        "reference": graph.reference,
        "shape_notes": [n.replace("*/", "* /") for n in graph.shape_notes],  # tensor names inside a C comment
        "prefix": prefix,
        "guard": prefix.upper(),
        "arena_size": p.arena_size,
        "inputs": [io(t) for t in graph.inputs],
        "outputs": [io(t) for t in order],
        "headers": sorted(ctx.headers),
        "weights": list(ctx.weights_arrays.values()) + ctx.packed_arrays,
        "params": ctx.param_arrays,
        "structs": ctx.structs,
        "calls": calls,
    }
    weights_bytes = sum(a.nbytes for a in ctx.weights_arrays.values()) + sum(a.nbytes for a in ctx.packed_arrays)
    params_bytes = sum(a.nbytes for a in ctx.param_arrays)
    return Generated(
        header=_ENV.get_template("model.h.j2").render(env),
        source=_ENV.get_template("model.c.j2").render(env),
        arena_size=p.arena_size,
        weights_bytes=weights_bytes,
        params_bytes=params_bytes,
        weights16=weights16,
        output_order=order,
        headers=sorted(ctx.headers),
        shape_notes=list(graph.shape_notes),
        reference=graph.reference,
        kernels=kernels,
        scratch=dict(p.scratch_bytes),
        plan=p,
        exits=exits,
        stage_ends=ends,
    )


_KERNEL_CALL = re.compile(r"\b(qute_\w+)\s*\(")


def kernel_name(lines: list[str]) -> str:
    """The kernel an op's lines call: the first qute_ function called (the lines may declare a local first)."""
    m = _KERNEL_CALL.search("\n".join(lines))
    return m.group(1) if m else ""


def field_value(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    return str(int(v))


_ENV.filters["cvalue"] = field_value
