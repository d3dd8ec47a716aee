from __future__ import annotations

from codegen.ir import CodegenError, Graph, Op
from codegen.ops import register


@register
class Reshape:
    """Ops that only reinterpret their input's bytes: the output aliases the input."""

    opcodes = {"RESHAPE": (1, 2), "SQUEEZE": (1, 2), "EXPAND_DIMS": (1, 2)}
    alias = True

    def check(self, op: Op, g: Graph) -> None:
        src, dst = g.tensor(op.inputs[0]), g.tensor(op.outputs[0])
        if src.size != dst.size or src.dtype != dst.dtype:
            raise CodegenError(f"{op.describe()}: input and output differ in size or type")

    def emit(self, op: Op, g: Graph, ctx) -> list[str]:
        return []
