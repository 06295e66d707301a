"""Stage: the attention scores, from the Softmax input back to the Q·K MatMul.

``Softmax ← [Add(., mask)] ← [Where(causal, ., fill)] ← [Mul|Div by scalar]* ← MatMul(q, k)``:
the masks are read by :mod:`.masks`, the scalar factors multiply into the scale.
:func:`match_scores` returns :class:`Scores` or fails with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.attention.masks import MaskSpec, match_causal_where, match_mask_add
from onnxforge.passes.fusion.attention.operands import MAX_CHAIN, scale_factor
from onnxforge.rules import MatchFailed, RewriteContext


@dataclass
class Scores:
    """The scores' MatMul, the product of the scalar factors after it, the masking, and the
    nodes and values between the MatMul and the Softmax (all ``[B, N, S, S]``)."""

    qk: Node
    scale: float
    mask: MaskSpec
    nodes: list[Node]
    values: list[Value]


def match_scores(v: Value | None, rc: RewriteContext) -> Scores:
    """The scores computing the Softmax input ``v``."""
    nodes: list[Node] = []
    values: list[Value] = []
    mask = MaskSpec()
    p = rc.producer(v, ("Add", "Where", "Mul", "Div", "MatMul"), "Softmax input")
    if p.op_type == "Add":
        v, mask = match_mask_add(p, rc)
        nodes.append(p)
        values.append(p.output(0))  # type: ignore[arg-type]
        p = rc.producer(v, ("Where", "Mul", "Div", "MatMul"), "masked scores")
    if p.op_type == "Where":
        v, causal_fill, tril = match_causal_where(p, rc)
        if mask.fill is not None and mask.fill != causal_fill:
            raise MatchFailed(f"the causal fill {causal_fill:g} differs from the padding fill {mask.fill:g}")
        mask.causal, mask.fill, mask.tril_slice = True, causal_fill, tril
        nodes.append(p)
        values.append(p.output(0))  # type: ignore[arg-type]
        p = rc.producer(v, ("Mul", "Div", "MatMul"), "causally masked scores")
    scale = 1.0
    for _ in range(MAX_CHAIN):
        if p.op_type == "MatMul":
            break
        sf = scale_factor(p, rc, None, 4)
        if sf is None:
            raise MatchFailed(f"scores are scaled by {p.op_type} with a non-scalar or non-constant operand")
        nodes.append(p)
        values.append(p.output(0))  # type: ignore[arg-type]
        v, f = sf
        scale *= f
        p = rc.producer(v, ("Mul", "Div", "MatMul"), "scores")
    nodes.append(p)
    values.append(p.output(0))  # type: ignore[arg-type]
    return Scores(p, scale, mask, nodes, values)
