"""Static memory plan: where every activation tensor lives while the model runs.

- The caller's buffers hold the model's input and, when no later op reads them, its outputs: they
  never take arena space.
- Ops that only reinterpret bytes (RESHAPE, SQUEEZE, EXPAND_DIMS) share their input's bytes.
- Elementwise ops (activations, ADD, MUL, int8 requantization) write over an input of the same
  size when this op is that input's last reader: their kernels read element i before writing it.
- Everything else gets an offset in one arena. Tensors whose lifetimes (first write .. last read,
  in op order) overlap never share bytes; among the rest, a greedy pass places the largest buffers
  first at the lowest offset that fits, as TFLite Micro's GreedyMemoryPlanner does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codegen.ir import Graph

ALIGN = 4


@dataclass
class Plan:
    # tensor -> ("arena", byte offset) | ("input", i) | ("output", k)
    home: dict[int, tuple[str, int]]
    arena_size: int
    # (tensor, k): copy the tensor into outputs[k] after the last op
    copies: list[tuple[int, int]] = field(default_factory=list)
    lifetimes: dict[int, tuple[int, int]] = field(default_factory=dict)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(graph: Graph, output_order: list[int], alias_ops: set[int], inplace: dict[int, tuple[int, ...]] | None = None) -> Plan:
    """Plans a graph whose ops are final (folded, validated).

    `output_order` lists the graph output tensors in API order; `alias_ops` holds the indices of
    ops whose output aliases their first input; `inplace` maps an op index to the input positions
    its output may overwrite.
    """
    n_ops = len(graph.ops)
    parent: dict[int, int] = {}

    def find(t: int) -> int:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for op in graph.ops:
        if op.index in alias_ops:
            parent[find(op.outputs[0])] = find(op.inputs[0])

    # lifetimes per alias group
    life: dict[int, list[int]] = {}

    def touch(t: int, step: int) -> None:
        if t < 0 or graph.tensor(t).is_const:
            return
        g = find(t)
        lo, hi = life.get(g, [step, step])
        life[g] = [min(lo, step), max(hi, step)]

    for t in graph.inputs:
        touch(t, -1)
    for op in graph.ops:
        for t in op.inputs + op.outputs:
            touch(t, op.index)

    # In-place elementwise ops: the output joins the group of an input that dies at this op.
    pinned = set(graph.inputs) | set(output_order)
    for op in graph.ops:
        out = op.outputs[0] if op.outputs else -1
        if op.index not in (inplace or {}) or out < 0 or out in pinned:
            continue
        for pos in inplace[op.index]:
            t = op.inputs[pos] if pos < len(op.inputs) else -1
            if t < 0 or graph.tensor(t).is_const or t in pinned:
                continue
            g, o = find(t), find(out)
            members = {m for m in parent if find(m) == g} | {g}
            if life[g][1] != op.index or members & pinned or graph.tensor(t).nbytes != graph.tensor(out).nbytes:
                continue
            parent[o] = g
            life[g] = [min(life[g][0], life[o][0]), max(life[g][1], life[o][1])]
            del life[o]
            break

    groups: dict[int, list[int]] = {}
    for t in {t for op in graph.ops for t in op.inputs + op.outputs if t >= 0} | set(graph.inputs):
        if not graph.tensor(t).is_const:
            groups.setdefault(find(t), []).append(t)

    home: dict[int, tuple[str, int]] = {}
    copies: list[tuple[int, int]] = []
    arena_groups = []
    for g, members in groups.items():
        ins = [m for m in members if m in graph.inputs]
        outs = [m for m in members if m in output_order]
        if ins:
            where = ("input", graph.inputs.index(ins[0]))
        elif len(members) == 1 and outs and not graph.consumers(outs[0]):
            where = ("output", output_order.index(outs[0]))
        else:
            where = None
            arena_groups.append(g)
        for m in members:
            if where is not None:
                home[m] = where
        for o in outs:
            if where is None or where[0] != "output":
                copies.append((o, output_order.index(o)))
                life[g][1] = n_ops  # must survive until the final copy

    size = {g: _align(max(graph.tensor(m).nbytes for m in groups[g])) for g in arena_groups}
    order = sorted(arena_groups, key=lambda g: (-size[g], life[g][0], g))
    placed: list[tuple[int, int, int]] = []  # (offset, end, group)
    offsets: dict[int, int] = {}
    for g in order:
        lo, hi = life[g]
        busy = sorted((o, e) for o, e, other in placed if not (life[other][1] < lo or hi < life[other][0]))
        offset = 0
        for o, e in busy:
            if offset + size[g] <= o:
                break
            offset = max(offset, e)
        offsets[g] = offset
        placed.append((offset, offset + size[g], g))
    for g in arena_groups:
        for m in groups[g]:
            home[m] = ("arena", offsets[g])
    arena = max((e for _, e, _ in placed), default=0)
    return Plan(home, arena, sorted(copies, key=lambda c: c[1]), {g: tuple(v) for g, v in life.items()})
