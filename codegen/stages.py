"""Early exits: the op order that completes each exit as early as possible.

A model may name some of its outputs ``exit_0``, ``exit_1``, ... (by signature name, else tensor
name; `qute quantize --exits` writes them). Stage k is every op that ``exit_k`` needs and no
earlier stage ran; the last stage is everything else (the rest of the backbone and the heads).
Running the stages in turn computes what running the ops in file order does, and a run that stops
after stage k has ``exit_0`` .. ``exit_k`` complete. Within a stage the ops keep their file order
(a topological one), so an order that is already staged is left as it is.

A model without exit outputs is one stage: nothing moves.
"""

from __future__ import annotations

import re

from codegen.ir import CodegenError, Graph, Op

_EXIT = re.compile(r"exit_(\d+)")


def is_exit(name: str) -> bool:
    return _EXIT.fullmatch(name) is not None


def exit_outputs(graph: Graph) -> list[int]:
    """The tensors of exit_0, exit_1, ... in exit order; [] when no output is named exit_k."""
    found: dict[int, int] = {}
    for t in graph.outputs:
        m = _EXIT.fullmatch(graph.output_label(t))
        if m:
            found[int(m.group(1))] = t
    if sorted(found) != list(range(len(found))):
        names = ", ".join(f"exit_{k}" for k in sorted(found))
        raise CodegenError(f"model outputs {names}: exits must be numbered exit_0, exit_1, ... without gaps")
    return [found[k] for k in range(len(found))]


def _needs(ops: list[Op], tensor: int, producer: dict[int, int]) -> set[int]:
    """Positions (in `ops`) of every op the tensor depends on."""
    seen: set[int] = set()
    todo = [tensor]
    while todo:
        p = producer.get(todo.pop())
        if p is None or p in seen:
            continue
        seen.add(p)
        todo.extend(t for t in ops[p].inputs if t >= 0)
    return seen


def stage_positions(ops: list[Op], exits: list[int]) -> list[list[int]]:
    """Positions in `ops` of each stage's ops, one list per exit and one for the rest."""
    producer = {t: i for i, op in enumerate(ops) for t in op.outputs if t >= 0}
    done: set[int] = set()
    stages = []
    for t in exits:
        mine = _needs(ops, t, producer) - done
        stages.append(sorted(mine))
        done |= mine
    stages.append([i for i in range(len(ops)) if i not in done])
    return stages


def staged_order(ops: list[Op], graph: Graph) -> list[Op]:
    """`ops` (of `graph`) reordered stage by stage (indices unchanged: the caller renumbers)."""
    exits = exit_outputs(graph)
    if not exits:
        return list(ops)
    return [ops[i] for stage in stage_positions(ops, exits) for i in stage]


def stage_ends(graph: Graph) -> list[int]:
    """For a staged graph (folded): the number of ops run once stage k is done, for each exit k
    and then for the last stage (so the last value is len(graph.ops)). [len(ops)] without exits."""
    exits = exit_outputs(graph)
    stages = stage_positions(graph.ops, exits)
    ends, n = [], 0
    for k, stage in enumerate(stages):
        if stage and stage != list(range(n, n + len(stage))):
            raise CodegenError("the graph's ops are not in staged order (fold it first)")
        n += len(stage)
        ends.append(n)
    return ends

