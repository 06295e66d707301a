"""Stage: a projection split into heads.

From the value the scores (Q, K) or the context (V) MatMul reads, walk back through Transposes
(whose composition must be the expected perm) and, for Q and K, scalar Mul/Div (BART-style scaling
of q, split sqrt scaling of q and k), to the Reshape to ``[B, S, N, d]``, through more scalar
factors before it, to the projection (:mod:`.projections`). :func:`match_head` returns a
:class:`Head` or fails with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.attention.operands import MAX_CHAIN, perm, scale_factor
from onnxforge.passes.fusion.attention.projections import Projection, match_projection
from onnxforge.rules import MatchFailed, RewriteContext

#: How each head is laid out for its MatMul, from [B, S, N, d].
Q_PERM = (0, 2, 1, 3)
K_PERM = (0, 2, 3, 1)
V_PERM = (0, 2, 1, 3)


@dataclass
class Head:
    """A projection reshaped to heads: ``Reshape → [scalar Mul/Div]* → Transpose*``."""

    proj: Projection
    reshape: Node
    #: Product of the scalar factors on the way (1 for V).
    scale: float
    nodes: list[Node]
    #: Values after the Reshape with the perm taking [B, S, N, d] to their layout.
    laid_out: list[tuple[Value, tuple[int, ...]]]
    #: Values between the projection and the Reshape ([B, S, cols]).
    pre: list[Value]


def match_head(
    v: Value | None, want: tuple[int, ...], rc: RewriteContext, what: str, *, scalable: bool
) -> Head:
    """Walk back from the head value ``v`` to its Reshape through Transposes (composing to
    ``want``) and scalar Mul/Div (when ``scalable``), then to the projection."""
    chain: list[Node] = []
    scale = 1.0
    cur = v
    for _ in range(MAX_CHAIN):
        p = cur.producer if cur is not None else None
        if p is None or p.graph is not rc.graph:
            raise MatchFailed(f"{what} head comes from no node")
        if p.op_type == "Reshape" and p.is_standard_domain():
            break
        if p.op_type == "Transpose" and p.is_standard_domain():
            chain.append(p)
            cur = p.input(0)
            continue
        sf = scale_factor(p, rc, None, 4) if scalable else None
        if sf is None:
            raise MatchFailed(
                f"{what} head comes from {p.op_type}, not Transpose/Reshape"
                + (" or a scalar Mul/Div" if scalable else "")
            )
        chain.append(p)
        cur, f = sf
        scale *= f
    else:
        raise MatchFailed(f"{what} head chain is too long")
    reshape = p
    laid_out: list[tuple[Value, tuple[int, ...]]] = [(reshape.output(0), (0, 1, 2, 3))]  # type: ignore[list-item]
    acc: tuple[int, ...] = (0, 1, 2, 3)
    for n in reversed(chain):
        if n.op_type == "Transpose":
            tp = perm(n, 4)
            if sorted(tp) != [0, 1, 2, 3]:
                raise MatchFailed(f"{what} Transpose perm {list(tp)} is not a rank-4 permutation")
            acc = tuple(acc[i] for i in tp)
        laid_out.append((n.output(0), acc))  # type: ignore[arg-type]
    if acc != want:
        raise MatchFailed(f"{what} heads are transposed with {list(acc)}, not {list(want)}")
    pre: list[Value] = []
    pre_nodes: list[Node] = []
    cur = reshape.input(0)
    while scalable:
        p = cur.producer if cur is not None else None
        sf = scale_factor(p, rc, None, 3) if p is not None else None
        if sf is None:
            break
        pre.append(cur)  # type: ignore[arg-type]
        pre_nodes.append(p)  # type: ignore[arg-type]
        cur, f = sf
        scale *= f
    proj = match_projection(cur, rc, what)
    return Head(proj, reshape, scale, [reshape, *chain, *pre_nodes, *proj.nodes], laid_out, pre)
