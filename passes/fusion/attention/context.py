"""Stage: the attention output, from the anchor back to the Softmax.

``Reshape[B, S, H] (anchor) ← Transpose(0, 2, 1, 3) ← MatMul(probs, v) ← Softmax(last axis)``.
:func:`match_context` returns :class:`Context` or fails with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxforge.ir import Node
from onnxforge.passes.fusion.attention.operands import perm
from onnxforge.rules import MatchFailed, RewriteContext


@dataclass
class Context:
    """The nodes between the Softmax and the anchor Reshape."""

    #: Transpose of the context [B, N, S, d] back to [B, S, N, d].
    transpose: Node
    #: MatMul(probs, v).
    matmul: Node
    softmax: Node


def match_context(anchor: Node, rc: RewriteContext) -> Context:
    """The context computation closed by the Reshape ``anchor``."""
    ctx_t = rc.producer(anchor.input(0), "Transpose", "attention output Reshape input")
    if perm(ctx_t, 4) != (0, 2, 1, 3):
        raise MatchFailed(f"context Transpose perm is {list(perm(ctx_t, 4))}, not [0, 2, 1, 3]")
    ctx_mm = rc.producer(ctx_t.input(0), "MatMul", "context Transpose input")
    softmax = rc.producer(ctx_mm.input(0), "Softmax", "context MatMul left operand")
    axis = int(softmax.attr("axis", -1 if rc.opset >= 13 else 1))
    if axis not in (-1, 3):
        raise MatchFailed(f"Softmax axis is {axis}, not the last axis")
    return Context(ctx_t, ctx_mm, softmax)
