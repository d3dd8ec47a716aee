"""Runs a memory plan on an abstract arena, to check it without trusting the planner's own bookkeeping.

Every arena byte remembers which value it holds (a tensor, or an op's scratch). The model's inputs
are written first; then, op by op, the op's scratch is scribbled over, its inputs must still hold
their values, its outputs are written (over an input only where the op works in place), and the
scratch must not have landed on them. After the
last op every model output must still hold its value, and no two outputs may share a byte. An
alias op (a reshape) must give its output its input's bytes (unless the plan makes it copy).
"""

from __future__ import annotations

import numpy as np

from codegen.ir import Graph
from codegen.planner import SCRATCH_ALIGN, Plan


def check_plan(graph: Graph, p: Plan, alias_ops: set[int], output_order: list[int],
               inplace: dict[int, tuple[int, ...]] | None = None) -> None:
    """`inplace`: op index -> the input positions its output may overwrite (exactly, same bytes);
    any other output must share no byte with the op's inputs (kernels read and write as they go)."""
    def const(t: int) -> bool:
        return t < 0 or graph.tensor(t).is_const

    value = {t: t for t in range(len(graph.tensors)) if not const(t)}
    for op in graph.ops:  # a reshape's output holds the very value of its input
        if op.index in alias_ops and op.index not in p.copy_ops and not const(op.inputs[0]):
            value[op.outputs[0]] = value[op.inputs[0]]
    arena = np.full(p.arena_size, -1, np.int64)

    def span(t: int) -> tuple[int, int]:
        o = p.offset[t]
        assert o >= 0 and o + graph.tensor(t).nbytes <= p.arena_size, f"tensor {t} does not fit the arena"
        return o, o + graph.tensor(t).nbytes

    def write(t: int) -> None:
        lo, hi = span(t)
        arena[lo:hi] = value[t]

    def intact(t: int, when: str) -> None:
        lo, hi = span(t)
        assert np.all(arena[lo:hi] == value[t]), f"{when}: tensor {t} was overwritten"

    for t in graph.inputs:
        write(t)
    for t in graph.inputs:
        intact(t, "before op 0")
    for op in graph.ops:
        ins = [t for t in op.inputs if not const(t)]
        outs = [t for t in op.outputs if not const(t)]
        if op.index in alias_ops and op.index not in p.copy_ops:
            assert p.offset[op.outputs[0]] == p.offset[op.inputs[0]], f"op {op.index}: the alias has its own bytes"
            for t in ins:
                intact(t, f"op {op.index}")
            continue
        scratch = None
        if op.index in p.scratch:
            lo = p.scratch[op.index]
            scratch = (lo, lo + p.scratch_bytes[op.index])
            assert lo % SCRATCH_ALIGN == 0 and scratch[1] <= p.arena_size, f"op {op.index}: scratch at {scratch}"
            arena[scratch[0]:scratch[1]] = -2 - op.index
        for t in ins:
            intact(t, f"op {op.index} reads")
        for t in outs:
            lo, hi = span(t)
            same = {op.inputs[i] for i in (inplace or {}).get(op.index, ()) if i < len(op.inputs)}
            for i in ins:
                a, b = span(i)
                assert hi <= a or b <= lo or lo == hi or a == b or (i in same and (a, b) == (lo, hi)), \
                    f"op {op.index}: output {t} overlaps its input {i}"
            if scratch is not None:
                lo, hi = span(t)
                assert hi <= scratch[0] or scratch[1] <= lo or lo == hi, f"op {op.index}: scratch overlaps its output {t}"
            write(t)
    for t in output_order:
        intact(t, "after the last op")
    spans = sorted(span(t) for t in output_order if graph.tensor(t).nbytes)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, "two model outputs share bytes"
