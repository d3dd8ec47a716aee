"""One lowering per TFLite op family: checks an op, computes its kernel parameters, emits its call.

A lowering is a class with:

- ``opcodes``: the builtin operator names it handles, each with the op versions it accepts;
- ``check(op, graph)``: raise CodegenError naming the op and what is supported;
- ``emit(op, graph, ctx)``: C statements (a list of strings) calling a kernel of ``firmware/``;
  constant arrays and parameter structs go through ``ctx`` so they are declared once, named after
  the op, and placed in flash;
- ``alias`` (optional, True): the op only reinterprets its input (RESHAPE and friends); the
  planner gives the output the input's bytes and nothing is emitted;
- ``inplace`` (optional): the input positions the output may overwrite (same size; the kernel
  reads element i before writing it); the planner uses it when this op is that input's last reader;
- ``scratch_bytes(op, graph) -> int`` (optional): bytes of working memory the kernel needs during
  this op only (im2col rows, int16 copies...); absent or 0 means none. ``codegen.emit.generate``
  asks every lowering before planning, and the planner (codegen/planner.py) places the block in the
  arena, aligned to 8 bytes, live at this op alone: it overlaps nothing the op reads or writes or
  anything live across it, and its contents are undefined on entry. In ``emit``,
  ``ctx.scratch(op)`` is a C expression for it, ``"(void *)(arena + OFFSET)"``; calling it for an
  op whose lowering asked for no scratch raises CodegenError.
"""

from __future__ import annotations

import importlib
import pkgutil

from codegen.ir import CodegenError, Graph, Op

REGISTRY: dict[str, object] = {}


def register(cls):
    inst = cls()
    for opcode in cls.opcodes:
        REGISTRY[opcode] = inst
    return cls


def lowering_for(op: Op):
    low = REGISTRY.get(op.opcode)
    if low is None:
        raise CodegenError(f"{op.describe()} is not supported; supported ops: {', '.join(sorted(REGISTRY))}")
    versions = low.opcodes[op.opcode]
    if op.version not in versions:
        raise CodegenError(
            f"{op.describe()}: version {op.version} is not supported; supported versions: {', '.join(map(str, versions))}"
        )
    return low


def check_dtypes(op: Op, graph: Graph, allowed=("int8",), inputs=None, outputs=True) -> None:
    idx = [op.inputs[i] for i in (inputs if inputs is not None else range(len(op.inputs)))]
    if outputs:
        idx += op.outputs
    for t in idx:
        if t < 0:
            continue
        tensor = graph.tensor(t)
        # constants too: a constant int32 where the kernel reads int8 would be passed as one
        if tensor.dtype not in allowed:
            raise CodegenError(
                f"{op.describe()}: tensor {t} ({tensor.name}) is {tensor.dtype}; supported: {', '.join(allowed)} "
                "(quantize the model to full int8)"
            )


def _load_all() -> None:
    # Every module of this package registers its lowerings when imported.

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_load_all()
