"""What a generated model costs: per-op MACs and weights, the arena, and TFLite Micro's arena beside it."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

from codegen.emit import Generated, generate
from codegen.fold import fold
from codegen.ir import Graph, Op


@dataclass
class OpRow:
    index: int
    opcode: str
    inputs: list[tuple[int, ...]]
    output: tuple[int, ...]
    macs: int
    weight_bytes: int


@dataclass
class Report:
    ops: list[OpRow]
    weights_bytes: int  # constant tensors (flash)
    params_bytes: int  # precomputed multipliers/shifts (flash)
    arena_bytes: int  # activations (RAM)
    io_bytes: int  # the caller's input and output buffers (RAM, not in the arena)
    macs: int
    tflm: dict = field(default_factory=dict)  # TFLM's arena: total/head/tail bytes, when measurable

    def to_dict(self) -> dict:
        return {
            "ops": [r.__dict__ for r in self.ops],
            "weights_bytes": self.weights_bytes,
            "params_bytes": self.params_bytes,
            "arena_bytes": self.arena_bytes,
            "io_bytes": self.io_bytes,
            "macs": self.macs,
            "tflm_arena": self.tflm,
        }

    def format(self) -> str:
        lines = [f"{'#':>3}  {'op':<20} {'output':<18} {'MACs':>12} {'weights':>10}"]
        for r in self.ops:
            lines.append(f"{r.index:>3}  {r.opcode:<20} {str(list(r.output)):<18} {r.macs:>12,} {r.weight_bytes:>10,}")
        lines.append("")
        lines.append(f"weights {self.weights_bytes:,} B + parameters {self.params_bytes:,} B (flash); "
                     f"arena {self.arena_bytes:,} B + input/output buffers {self.io_bytes:,} B (RAM); {self.macs:,} MACs")
        if self.tflm:
            lines.append(f"TFLite Micro for the same model: arena {self.tflm['total']:,} B "
                         f"(activations and I/O {self.tflm['head']:,} B, interpreter state {self.tflm['tail']:,} B)")
        return "\n".join(lines)


def op_macs(op: Op, g: Graph) -> int:
    out = g.tensor(op.outputs[0]) if op.outputs else None
    if op.opcode == "CONV_2D":
        w = g.tensor(op.inputs[1])
        return out.size * int(np.prod(w.shape[1:]))
    if op.opcode == "DEPTHWISE_CONV_2D":
        w = g.tensor(op.inputs[1])
        return out.size * w.shape[1] * w.shape[2]
    if op.opcode == "FULLY_CONNECTED":
        w = g.tensor(op.inputs[1])
        return out.size * w.shape[1]
    return 0


def build_report(graph: Graph, tflite: bytes | None = None, gen: Generated | None = None) -> Report:
    graph = fold(graph)
    gen = gen or generate(graph)
    rows = []
    for op in graph.ops:
        consts = [t for t in op.inputs if t >= 0 and graph.tensor(t).is_const]
        rows.append(OpRow(
            index=op.index,
            opcode=op.opcode,
            inputs=[graph.tensor(t).shape for t in op.inputs if t >= 0 and not graph.tensor(t).is_const],
            output=graph.tensor(op.outputs[0]).shape if op.outputs else (),
            macs=op_macs(op, graph),
            weight_bytes=sum(graph.tensor(t).nbytes for t in consts),
        ))
    io = sum(graph.tensor(t).nbytes for t in graph.inputs + graph.outputs)
    return Report(rows, gen.weights_bytes, gen.params_bytes, gen.arena_size, io, sum(r.macs for r in rows),
                  tflm_arena(tflite) if tflite is not None else {})


def tflm_arena(tflite: bytes) -> dict:
    """TFLite Micro's arena use for a model, read from its recording allocator (empty if unavailable)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return {}
    ip = runtime.Interpreter.from_bytes(tflite)
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            ip.print_allocations()  # C++ output: capture the file descriptor, not sys.stderr
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
    return found if len(found) == 3 else {}
