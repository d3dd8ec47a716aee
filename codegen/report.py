"""What a generated model costs: per-op MACs and weights, the arena, and TFLite Micro's arena beside it."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field

import numpy as np

from codegen import tflm
from codegen.emit import Generated, generate
from codegen.fold import fold
from codegen.ir import CodegenError, Graph, Op
from codegen.reader import read_model
from codegen.validate import check_tflm, validate


@dataclass
class OpRow:
    index: int
    opcode: str
    inputs: list[tuple[int, ...]]
    output: tuple[int, ...]
    macs: int
    weight_bytes: int
    kernel: str = ""  # the firmware kernel its C calls ("" for an op that runs no code, e.g. a reshape)


@dataclass
class Report:
    ops: list[OpRow]
    weights_bytes: int  # constant tensors (flash)
    params_bytes: int  # precomputed multipliers/shifts (flash)
    arena_bytes: int  # the model's RAM: inputs, activations, outputs and kernels' scratch, in one arena
    io_bytes: int  # the model's input and output tensors: part of arena_bytes, not on top of it
    macs: int
    tflm: dict = field(default_factory=dict)  # TFLM's arena: total/head/tail bytes, when measurable
    shape_notes: list[str] = field(default_factory=list)  # stored shapes that disagree with the inferred ones
    reference: str = "tflm"  # whose reference kernels the C equals (codegen.ir.Graph.reference)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "shape_notes": list(self.shape_notes),
            "ops": [r.__dict__ for r in self.ops],
            "weights_bytes": self.weights_bytes,
            "params_bytes": self.params_bytes,
            "arena_bytes": self.arena_bytes,
            "io_bytes": self.io_bytes,
            "macs": self.macs,
            "tflm_arena": self.tflm,
        }

    def format(self) -> str:
        width = max([len("kernel")] + [len(r.kernel) for r in self.ops])
        lines = [f"{'#':>3}  {'op':<20} {'kernel':<{width}} {'output':<18} {'MACs':>12} {'weights':>10}"]
        for r in self.ops:
            lines.append(f"{r.index:>3}  {r.opcode:<20} {r.kernel or '-':<{width}} {str(list(r.output)):<18} "
                         f"{r.macs:>12,} {r.weight_bytes:>10,}")
        lines.append("")
        lines.append(f"weights {self.weights_bytes:,} B + parameters {self.params_bytes:,} B (flash); "
                     f"arena {self.arena_bytes:,} B (RAM; holds the inputs and outputs, {self.io_bytes:,} B); "
                     f"{self.macs:,} MACs")
        if self.tflm:
            lines.append(f"TFLite Micro for the same model: arena {self.tflm['total']:,} B "
                         f"(activations and I/O {self.tflm['head']:,} B, interpreter state {self.tflm['tail']:,} B)"
                         + (", planned on the wrong stored shapes" if self.shape_notes else ""))
        lines += shape_lines(self.shape_notes)
        return "\n".join(lines)


def shape_lines(notes: list[str]) -> list[str]:
    """What `qute-codegen report` and `qute verify` print about stored shapes that are wrong."""
    if not notes:
        return []
    return [f"stored shapes: {len(notes)} disagree with the ones inferred from the input, which are used;",
            "  TFLite Micro runs on the stored ones and cannot run this model, so the C follows LiteRT's reference kernels",
            *(f"  {n}" for n in notes)]


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
            kernel=gen.kernels.get(op.index, ""),
        ))
    io = sum(graph.tensor(t).nbytes for t in graph.inputs + graph.outputs)
    return Report(rows, gen.weights_bytes, gen.params_bytes, gen.arena_size, io, sum(r.macs for r in rows),
                  tflm_arena(tflite) if tflite is not None else {}, list(graph.shape_notes), graph.reference)


def tflm_arena(tflite: bytes) -> dict:
    """TFLite Micro's arena use for a model, read from its recording allocator.

    Empty if unavailable: no tflite-micro, or TFLM refuses the model (an op it lacks, a check of
    its Prepare). The model is validated first, and TFLM runs in a child process (codegen.tflm):
    if it crashes there, TFLMCrash says so.
    """

    if importlib.util.find_spec("tflite_micro") is None:
        return {}
    graph = read_model(bytes(tflite))
    validate(graph)
    try:
        check_tflm(graph)
    except CodegenError:  # well-formed, but TFLM would crash on it: nothing to measure
        return {}
    try:
        text = tflm.run(tflm.print_allocations, bytes(tflite), doing="measuring its arena", timeout=120)
    except tflm.TFLMCrash:
        raise
    except Exception:  # TFLM refused the model: it has no arena to report
        return {}
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
    return found if len(found) == 3 else {}
