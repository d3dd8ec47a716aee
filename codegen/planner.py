"""Static memory plan: where every activation tensor, and every op's scratch block, lives in the arena.

- One arena holds every tensor that is not a constant, the model's inputs and outputs included
  (as in TensorFlow Lite Micro, whose arena holds its input and output tensors). A model input is
  live from before the first op (the caller writes it there) to its last reader; once that has
  run its bytes are reused, so a run destroys its inputs. A model output is live from the op that
  writes it to after the last op (the caller reads it there, until the next run).
- Ops that only reinterpret bytes (RESHAPE, SQUEEZE, EXPAND_DIMS) share their input's bytes: the
  tensors form one alias group, planned as one buffer. The one exception: when the input's group
  already holds a model output and the op's output is (or is reshaped into) another, the two
  outputs would share bytes, so the op gets its own buffer and copies its input (`Plan.copy_ops`).
- Elementwise ops (activations, ADD, MUL, int8 requantization) write over an input of the same
  size when this op is the last reader of that input's group: their kernels read element i
  before writing it. A dead model input may be overwritten that way; a model output never is
  (it lives to the end, so no op is its last reader).
- Scratch: `scratch` maps an op index to the bytes its kernel needs during that op only (a
  lowering's `scratch_bytes`, see codegen/ops/__init__.py). Each is a block live at that op
  alone, aligned to SCRATCH_ALIGN: it never overlaps anything the op reads or writes or anything
  live across it, and adds to the arena only if it raises the peak.
- Placement: buffers (groups of tensors sharing bytes, and scratch blocks) whose lifetimes (first
  write .. last read, in op order; -1 = before the first op, len(ops) = after the last) overlap
  never share bytes. A first-fit pass places each at the lowest offset that fits; it runs in a
  few orders (largest first, as TFLite Micro's GreedyMemoryPlanner does; in lifetime order;
  largest size x lifetime first) and keeps the smallest arena. Tensors are aligned to ALIGN bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from codegen.ir import CodegenError, Graph

ALIGN = 4
SCRATCH_ALIGN = 8


@dataclass
class Plan:
    # every non-constant tensor of the graph (model inputs and outputs too) -> its byte offset in the arena
    offset: dict[int, int]
    # bytes of the arena: every tensor and scratch block, at their peak
    arena_size: int
    # op index -> byte offset of its scratch block (a multiple of SCRATCH_ALIGN); ops without scratch are absent
    scratch: dict[int, int] = field(default_factory=dict)
    # op index -> the scratch bytes it asked for (its block is that, rounded up to SCRATCH_ALIGN)
    scratch_bytes: dict[int, int] = field(default_factory=dict)
    # alias ops whose output has its own bytes: they copy their input (see the module docstring)
    copy_ops: set[int] = field(default_factory=set)
    # group of tensors sharing bytes (aliases, in-place ops), by its root tensor -> (first op, last op)
    # it is live at; -1 = before op 0, len(ops) = after the last
    lifetimes: dict[int, tuple[int, int]] = field(default_factory=dict)
    # group (its root tensor) -> its tensors
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def plan(graph: Graph, output_order: list[int], alias_ops: set[int], inplace: dict[int, tuple[int, ...]] | None = None,
         scratch: dict[int, int] | None = None) -> Plan:
    """Plans a graph whose ops are final (folded, validated).

    `output_order` lists the graph output tensors in API order; `alias_ops` holds the indices of
    ops whose output aliases their first input; `inplace` maps an op index to the input positions
    its output may overwrite; `scratch` maps an op index to the scratch bytes it needs (0: none).
    """
    n_ops = len(graph.ops)
    inplace = inplace or {}
    outputs = set(output_order)
    need: dict[int, int] = {}
    for index, nbytes in (scratch or {}).items():
        if not 0 <= index < n_ops:
            raise CodegenError(f"scratch asked for op {index}; the graph has {n_ops} ops")
        if isinstance(nbytes, bool) or int(nbytes) != nbytes or nbytes < 0:
            raise CodegenError(f"{graph.ops[index].describe()}: scratch of {nbytes!r} bytes; it must be a whole number >= 0")
        if nbytes:
            need[index] = int(nbytes)

    def const(t: int) -> bool:
        return t < 0 or graph.tensor(t).is_const

    # alias groups: root -> members, tensor -> root
    root: dict[int, int] = {}
    members: dict[int, set[int]] = {}
    for t in [*graph.inputs, *output_order, *(t for op in graph.ops for t in op.inputs + op.outputs)]:
        if not const(t) and t not in root:
            root[t], members[t] = t, {t}

    def join(keep: int, drop: int) -> None:
        for m in members.pop(drop):
            root[m] = keep
            members[keep].add(m)

    copy_ops: set[int] = set()
    for op in graph.ops:
        if op.index not in alias_ops:
            continue
        src, dst = op.inputs[0], op.outputs[0]
        if const(src) or (members[root[src]] & outputs and members[root[dst]] & outputs):
            copy_ops.add(op.index)
        else:
            join(root[src], root[dst])

    life: dict[int, list[int]] = {}

    def touch(t: int, step: int) -> None:
        if const(t):
            return
        g = root[t]
        lo, hi = life.get(g, [step, step])
        life[g] = [min(lo, step), max(hi, step)]

    for t in graph.inputs:
        touch(t, -1)  # the caller writes it before the run
    for op in graph.ops:
        for t in op.inputs + op.outputs:
            touch(t, op.index)
    for t in output_order:
        touch(t, n_ops)  # the caller reads it after the run

    # In-place elementwise ops: the output's group joins that of an input which dies at this op.
    for op in graph.ops:
        positions = inplace.get(op.index, ())
        out = op.outputs[0] if op.outputs else -1
        if not positions or const(out) or op.index in alias_ops:
            continue
        for pos in positions:
            t = op.inputs[pos] if pos < len(op.inputs) else -1
            if const(t):
                continue
            g, o = root[t], root[out]
            # g dies here: no later op reads it and it holds no model output (those live to n_ops)
            if g == o or life[g][1] != op.index or graph.tensor(t).nbytes != graph.tensor(out).nbytes:
                continue
            lo, hi = life.pop(o)
            join(g, o)
            life[g] = [min(life[g][0], lo), max(life[g][1], hi)]
            break

    # buffers: (key, size, alignment, first, last); a key is ("t", root tensor) or ("s", op index)
    blocks = [(("t", g), _align(max(graph.tensor(m).nbytes for m in ms)), ALIGN, *life[g]) for g, ms in members.items()]
    blocks += [(("s", i), _align(n, SCRATCH_ALIGN), SCRATCH_ALIGN, i, i) for i, n in need.items()]
    at, arena = min((_place(sorted(blocks, key=order)) for order in _ORDERS), key=lambda r: r[1])

    offsets = {m: at[("t", g)] for g, ms in members.items() for m in ms}
    return Plan(
        offset=offsets,
        arena_size=arena,
        scratch={i: at[("s", i)] for i in sorted(need)},
        scratch_bytes={i: need[i] for i in sorted(need)},
        copy_ops=copy_ops,
        lifetimes={g: tuple(v) for g, v in life.items()},
        groups={g: tuple(sorted(ms)) for g, ms in members.items()},
    )


# Orders the greedy pass tries; the smallest arena wins (the first on a tie). Largest first is
# TFLite Micro's; in lifetime order is what a chain of ops with a big input needs (the input's
# bytes then go to the first buffers written after it dies).
_ORDERS = (
    lambda b: (-b[1], b[3], b[0]),  # largest first
    lambda b: (b[3], -b[1], b[0]),  # first written first
    lambda b: (-b[1] * (b[4] - b[3] + 1), b[3], b[0]),  # largest size x lifetime first
)


def _place(blocks: list) -> tuple[dict, int]:
    """First fit, in the given order: each block at the lowest aligned offset where it overlaps no
    block placed before it that is live at the same time. Returns (key -> offset, arena size)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    at: dict[tuple[str, int], int] = {}
    for key, size, align, lo, hi in blocks:
        busy = sorted((o, e) for o, e, first, last in placed if not (last < lo or hi < first))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = _align(max(offset, e), align)
        at[key] = offset
        placed.append((offset, offset + size, lo, hi))
    return at, max((e for _, e, _, _ in placed), default=0)
