"""Layout chains: Transpose∘Transpose, Transposes folded into Gemm/MatMul, and chains of
Reshape/Flatten/Squeeze/Unsqueeze collapsed into one Reshape.

* ``Transpose(Transpose(x, p1), p2)`` → ``Transpose(x, p1[p2])`` (or ``x`` when that is the
  identity). The inner Transpose stays if something else reads it.
* ``Gemm(Transpose(a))`` → ``Gemm(a, transA=1)`` (likewise B); ``MatMul(Transpose(a), b)`` on 2-D
  operands → ``Gemm(a, b, transA=1)``.
* A Reshape-like op fed by another Reshape-like op → one ``Reshape`` from the chain's input to
  the last op's output shape. The target comes from a constant Reshape shape without ``0``
  entries, or from the inferred output shape: known dims as numbers, a symbolic dim that sits at
  the same position in the input as ``0`` (copy), and at most one other unknown as ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.matching import FLOAT_TYPES
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule

_RESHAPE_LIKE = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


@dataclass
class TransposeChainMatch(Match):
    #: The first Transpose's input.
    x: Value | None
    #: The composed permutation.
    perm: list[int]


class FuseTransposeChain(Rule[TransposeChainMatch]):
    """Two Transposes in a row → one (or none)."""

    name = "transpose-chain"
    summary = "Compose consecutive Transposes (drop the pair when they cancel)."
    anchors: ClassVar[tuple[str, ...]] = ("Transpose",)

    def match(self, node: Node, rc: RewriteContext) -> TransposeChainMatch:
        inner = rc.producer(node.input(0), "Transpose", "Transpose input")
        p1, p2 = inner.attr("perm"), node.attr("perm")
        if p1 is None or p2 is None:
            raise MatchFailed("a Transpose has no explicit perm")
        if len(p1) != len(p2):
            raise MatchFailed("perm lengths differ")
        composed = [int(p1[i]) for i in p2]
        nodes = [node]
        if rc.exclusive(inner.output(0), [node]):
            nodes.insert(0, inner)
        return TransposeChainMatch(node, nodes, inner.input(0), composed)

    def rewrite(self, m: TransposeChainMatch, rb: RewriteBuilder) -> Replacement:
        perm = m.perm
        if perm == list(range(len(perm))):
            return Replacement.outputs(m.anchor, m.x)
        t = rb.op("Transpose", [m.x], attrs={"perm": perm}, name=m.anchor.name)
        return Replacement.outputs(m.anchor, t)


def _transposed_2d(v: Value | None, rc: RewriteContext) -> Node | None:
    t = rc.maybe_producer(v, "Transpose")
    if t is None:
        return None
    perm = t.attr("perm")
    return t if perm is not None and list(perm) == [1, 0] else None


@dataclass
class TransposeIntoGemmMatch(Match):
    #: The 2-D Transposes feeding operand A and B (None where there is none).
    transpose_a: Node | None
    transpose_b: Node | None


class FuseTransposeIntoGemm(Rule[TransposeIntoGemmMatch]):
    """2-D Transposes feeding a Gemm (or a 2-D MatMul) become ``transA``/``transB``."""

    name = "transpose-into-gemm"
    summary = "Fold 2-D Transposes of Gemm/MatMul operands into transA/transB."
    anchors: ClassVar[tuple[str, ...]] = ("Gemm", "MatMul")

    def match(self, node: Node, rc: RewriteContext) -> TransposeIntoGemmMatch:
        ta, tb = _transposed_2d(node.input(0), rc), _transposed_2d(node.input(1), rc)
        if ta is None and tb is None:
            raise MatchFailed("no operand comes from a 2-D Transpose")
        if node.op_type == "MatMul":
            if rc.opset < 11:
                raise MatchFailed("a Gemm without bias needs opset 11")
            for v in node.inputs[:2]:
                s = v.shape() if v is not None else None
                if s is None or len(s) != 2:
                    raise MatchFailed("MatMul operands are not both known to be 2-D")
        nodes = [node]
        for t in (ta, tb):
            if t is not None and rc.exclusive(t.output(0), [node]) and t not in nodes:
                nodes.insert(0, t)
        return TransposeIntoGemmMatch(node, nodes, ta, tb)

    def rewrite(self, m: TransposeIntoGemmMatch, rb: RewriteBuilder) -> Replacement:
        node = m.anchor
        attrs = {k: node.attr(k) for k in node.attributes} if node.op_type == "Gemm" else {}
        a, b = node.input(0), node.input(1)
        if m.transpose_a is not None:
            a = m.transpose_a.input(0)
            attrs["transA"] = 1 - int(attrs.get("transA", 0))
        if m.transpose_b is not None:
            b = m.transpose_b.input(0)
            attrs["transB"] = 1 - int(attrs.get("transB", 0))
        inputs = [a, b, *node.inputs[2:]] if node.op_type == "Gemm" else [a, b]
        gemm = rb.op("Gemm", inputs, attrs=attrs, name=node.name)
        return Replacement.outputs(node, gemm)


def _target_from_shapes(x: Value, y: Value) -> list[int] | None:
    """A Reshape target taking ``x`` to ``y``'s (inferred) shape, or None."""
    xs, ys = x.shape(), y.shape()
    if xs is None or ys is None:
        return None
    target: list[int] = []
    unknown = 0
    for i, d in enumerate(ys):
        if isinstance(d, int):
            if d == 0:
                return None  # a literal 0 would mean "copy" without allowzero
            target.append(d)
        elif d is not None and i < len(xs) and xs[i] == d:
            target.append(0)
        else:
            unknown += 1
            target.append(-1)
    return target if unknown <= 1 else None


@dataclass
class ReshapeChainMatch(Match):
    #: The chain's input.
    x: Value
    #: The one Reshape's target.
    target: list[int]


class FuseReshapeChain(Rule[ReshapeChainMatch]):
    """Reshape-like op fed by a Reshape-like op → one Reshape."""

    name = "reshape-chain"
    summary = "Collapse chains of Reshape/Flatten/Squeeze/Unsqueeze into one Reshape."
    anchors: ClassVar[tuple[str, ...]] = _RESHAPE_LIKE

    def match(self, node: Node, rc: RewriteContext) -> ReshapeChainMatch:
        inner = rc.producer(node.input(0), _RESHAPE_LIKE, f"{node.op_type} input")
        x, y = inner.input(0), node.output(0)
        if x is None or y is None:
            raise MatchFailed("missing input or output")
        if x.elem_type() not in FLOAT_TYPES:
            # Index and mask arithmetic is tiny; collapsing it would only hide patterns (the
            # attention mask chains) from the rules that read them.
            raise MatchFailed("the chain carries integer or boolean data, not activations")
        target: list[int] | None = None
        if node.op_type == "Reshape" and not int(node.attr("allowzero", 0)):
            shape = rc.const(node.input(1))
            if shape is not None and 0 not in shape.reshape(-1).tolist():
                target = [int(d) for d in shape.reshape(-1)]
        if target is None:
            target = _target_from_shapes(x, y)
        if target is None:
            raise MatchFailed("the chain's output shape is not known well enough for one Reshape")
        nodes = [node]
        if rc.exclusive(inner.output(0), [node]):
            nodes.insert(0, inner)
        return ReshapeChainMatch(node, nodes, x, target)

    def rewrite(self, m: ReshapeChainMatch, rb: RewriteBuilder) -> Replacement:
        x = m.x
        if x.static_shape() is not None and x.static_shape() == m.anchor.output(0).static_shape():  # type: ignore[union-attr]
            return Replacement.outputs(m.anchor, x)
        shape = rb.constant(np.asarray(m.target, dtype=np.int64), f"{m.anchor.name or 'reshape'}_shape")
        r = rb.op("Reshape", [x, shape], name=m.anchor.name)
        return Replacement.outputs(m.anchor, r)
