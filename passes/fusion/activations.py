"""Activations spelled out in elementwise ops, fused into one op.

* GELU, erf form: ``0.5 * x * (1 + Erf(x / sqrt(2)))`` (any association of the multiplies,
  ``/ sqrt 2`` or ``* 1/sqrt 2``); tanh form: ``0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715
  * x^3)))``, ``x^3`` as ``Pow(x, 3)`` or ``x * x * x``. → ``Gelu`` (opset ≥ 20, ``approximate``
  "none"/"tanh"). :func:`match_gelu` is shared with the onnxruntime rules (com.microsoft Gelu,
  FastGelu, BiasGelu work at any opset).
* ``Clip(x + 3, 0, 6) / 6`` (or ``* 1/6``) → ``HardSigmoid(alpha=1/6, beta=0.5)``, and
  ``x * HardSigmoid(x)`` with those parameters → ``HardSwish`` (opset ≥ 14).
* ``Exp(x - ReduceMax(x, a)) / ReduceSum(Exp(...), a)`` (the max subtraction optional) →
  ``Softmax(axis=a)`` (opset ≥ 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.matching import (
    other_input,
    reduce_axes,
    require_float,
    require_scalar,
    scalar,
    split_const,
)
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule, fail

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass
class GeluParts:
    x: Value
    approximate: str  # "none" | "tanh"
    nodes: list[Node]


def _half_and_product(end: Node, rc: RewriteContext) -> tuple[Value, Node, list[Node]]:
    """Peel ``0.5 * x * inner`` (any association) off ``end``: returns (x, the node producing
    ``1 + f(x)``, the Mul nodes)."""
    if end.op_type != "Mul":
        raise MatchFailed("GELU ends with a Mul")
    # Form A: Mul(Mul(x, inner), 0.5)   Form B: Mul(Mul(x, 0.5), inner)   Form C: Mul(x, Mul(inner, 0.5))
    a, b = end.input(0), end.input(1)
    half_const = None
    for v in (a, b):
        c = rc.const(v)
        if c is not None:
            half_const = v
    if half_const is not None:  # Form A: the outer Mul scales by 0.5
        require_scalar(rc.const(half_const), 0.5, "GELU outer factor")
        prod = rc.producer(other_input(end, half_const), "Mul", "GELU product")
        for x_cand, inner in ((prod.input(0), prod.input(1)), (prod.input(1), prod.input(0))):
            add = rc.maybe_producer(inner, "Add")
            if add is not None and x_cand is not None:
                return x_cand, add, [end, prod]
        raise MatchFailed("no 1 + f(x) factor")
    for half_v, inner in ((a, b), (b, a)):
        half = rc.maybe_producer(half_v, "Mul")
        add = rc.maybe_producer(inner, "Add")
        if half is not None and add is not None:
            try:
                x, c = split_const(half, rc)
            except MatchFailed:
                continue
            require_scalar(c, 0.5, "GELU half factor")
            return x, add, [end, half]
        if add is None:  # Form C: Mul(x, Mul(Add(...), 0.5))
            scaled = rc.maybe_producer(inner, "Mul")
            if scaled is not None and half_v is not None:
                try:
                    add_v, c = split_const(scaled, rc)
                except MatchFailed:
                    continue
                require_scalar(c, 0.5, "GELU half factor")
                return half_v, rc.producer(add_v, "Add", "GELU 1 + f(x)"), [end, scaled]
    raise MatchFailed("not of the form 0.5 * x * (1 + f(x))")


def match_gelu(end: Node, rc: RewriteContext) -> GeluParts:
    """Match a decomposed GELU (erf or tanh form) ending at the Mul ``end``."""
    x, add, nodes = _half_and_product(end, rc)
    f_v, one = split_const(add, rc)
    require_scalar(one, 1.0, "GELU offset")
    nodes.append(add)
    f = rc.producer(f_v, ("Erf", "Tanh"), "GELU f(x)")
    nodes.append(f)
    if f.op_type == "Erf":
        scale = rc.producer(f.input(0), ("Div", "Mul"), "Erf operand")
        xs, c = split_const(scale, rc)
        if xs is not x:
            raise MatchFailed("Erf does not read x / sqrt(2)")
        require_scalar(c, _SQRT2 if scale.op_type == "Div" else 1.0 / _SQRT2, "Erf scale")
        nodes.append(scale)
        require_float(x, "GELU input")
        return GeluParts(x, "none", nodes)
    # tanh form: Tanh(Mul(Add(x, Mul(Pow(x,3), 0.044715)), sqrt(2/pi)))
    outer = rc.producer(f.input(0), "Mul", "Tanh operand")
    inner_v, k = split_const(outer, rc)
    require_scalar(k, _SQRT_2_OVER_PI, "tanh-GELU scale", rtol=1e-3)
    s = rc.producer(inner_v, "Add", "tanh-GELU sum")
    cube_term = other_input(s, x) if x in s.inputs else fail("tanh-GELU sum does not read x")
    cm = rc.producer(cube_term, "Mul", "tanh-GELU cubic term")
    cube_v, coeff = split_const(cm, rc)
    require_scalar(coeff, 0.044715, "tanh-GELU coefficient")
    cube = rc.producer(cube_v, ("Pow", "Mul"), "x^3")
    extra: list[Node] = []
    if cube.op_type == "Pow":
        if cube.input(0) is not x or scalar(rc.const(cube.input(1))) != 3.0:
            raise MatchFailed("Pow is not x^3")
    else:
        sq_v = other_input(cube, x) if x in cube.inputs else fail("x^3 does not read x")
        sq = rc.producer(sq_v, "Mul", "x^2")
        if not (sq.input(0) is x and sq.input(1) is x):
            raise MatchFailed("x^2 is not x * x")
        extra.append(sq)
    nodes += [outer, s, cm, cube, *extra]
    require_float(x, "GELU input")
    return GeluParts(x, "tanh", nodes)


@dataclass
class GeluMatch(Match):
    gelu: GeluParts


class FuseGelu(Rule[GeluMatch]):
    """Decomposed GELU → ``Gelu`` (opset 20)."""

    name = "gelu"
    summary = "Fuse decomposed GELU (erf and tanh forms) into Gelu (opset >= 20)."
    anchors: ClassVar[tuple[str, ...]] = ("Mul",)
    min_opset = 20

    def match(self, node: Node, rc: RewriteContext) -> GeluMatch:
        parts = match_gelu(node, rc)
        return GeluMatch(node, parts.nodes, parts)

    def rewrite(self, m: GeluMatch, rb: RewriteBuilder) -> Replacement:
        g = rb.op("Gelu", [m.gelu.x], attrs={"approximate": m.gelu.approximate}, name=m.anchor.name)
        return Replacement.outputs(m.anchor, g)


def _clip_bounds(clip: Node, rc: RewriteContext) -> tuple[float | None, float | None]:
    if rc.opset < 11:
        return clip.attr("min"), clip.attr("max")
    lo = scalar(rc.const(clip.input(1))) if clip.input(1) is not None and clip.input(1).name else None  # type: ignore[union-attr]
    hi = scalar(rc.const(clip.input(2))) if clip.input(2) is not None and clip.input(2).name else None  # type: ignore[union-attr]
    return lo, hi


def _match_relu6_over_6(node: Node, rc: RewriteContext) -> tuple[Value, list[Node]]:
    """``Clip(x + 3, 0, 6) / 6`` (or ``* 1/6``) ending at ``node``: returns (x, nodes)."""
    clipped_v, c = split_const(node, rc)
    require_scalar(c, 6.0 if node.op_type == "Div" else 1.0 / 6.0, "hard-sigmoid divisor")
    clip = rc.producer(clipped_v, ("Clip",), "hard-sigmoid clip")
    lo, hi = _clip_bounds(clip, rc)
    if lo != 0.0 or hi != 6.0:
        raise MatchFailed(f"Clip bounds are ({lo}, {hi}), not (0, 6)")
    add = rc.producer(clip.input(0), "Add", "hard-sigmoid offset")
    x, three = split_const(add, rc)
    require_scalar(three, 3.0, "hard-sigmoid offset")
    require_float(x, "hard-sigmoid input")
    return x, [node, clip, add]


@dataclass
class UnaryMatch(Match):
    """A pattern computing one op of its input ``x``."""

    x: Value


class FuseHardSigmoid(Rule[UnaryMatch]):
    """``Clip(x + 3, 0, 6) / 6`` → ``HardSigmoid(alpha=1/6, beta=0.5)``."""

    name = "hard-sigmoid"
    summary = "Fuse Clip(x + 3, 0, 6) / 6 into HardSigmoid."
    anchors: ClassVar[tuple[str, ...]] = ("Div", "Mul")

    def match(self, node: Node, rc: RewriteContext) -> UnaryMatch:
        x, nodes = _match_relu6_over_6(node, rc)
        return UnaryMatch(node, nodes, x)

    def rewrite(self, m: UnaryMatch, rb: RewriteBuilder) -> Replacement:
        hs = rb.op("HardSigmoid", [m.x], attrs={"alpha": 1.0 / 6.0, "beta": 0.5}, name=m.anchor.name)
        return Replacement.outputs(m.anchor, hs)


class FuseHardSwish(Rule[UnaryMatch]):
    """``x * HardSigmoid(x)`` (alpha 1/6, beta 0.5) → ``HardSwish`` (opset ≥ 14)."""

    name = "hard-swish"
    summary = "Fuse x * HardSigmoid(x) into HardSwish."
    anchors: ClassVar[tuple[str, ...]] = ("Mul",)
    min_opset = 14

    def match(self, node: Node, rc: RewriteContext) -> UnaryMatch:
        for hs_v, x in ((node.input(0), node.input(1)), (node.input(1), node.input(0))):
            hs = rc.maybe_producer(hs_v, "HardSigmoid")
            if hs is not None and hs.input(0) is x and x is not None:
                alpha, beta = float(hs.attr("alpha", 0.2)), float(hs.attr("beta", 0.5))
                if not (math.isclose(alpha, 1.0 / 6.0, rel_tol=1e-5) and math.isclose(beta, 0.5, rel_tol=1e-6)):
                    raise MatchFailed(f"HardSigmoid(alpha={alpha:g}, beta={beta:g}) is not the HardSwish gate")
                return UnaryMatch(node, [hs, node], x)
        raise MatchFailed("no operand is HardSigmoid of the other")

    def rewrite(self, m: UnaryMatch, rb: RewriteBuilder) -> Replacement:
        return Replacement.outputs(m.anchor, rb.op("HardSwish", [m.x], name=m.anchor.name))


@dataclass
class SoftmaxMatch(Match):
    x: Value
    axis: int


class FuseSoftmax(Rule[SoftmaxMatch]):
    """``Exp(x - ReduceMax(x)) / ReduceSum(Exp(...))`` → ``Softmax`` (opset ≥ 13)."""

    name = "softmax"
    summary = "Fuse Exp / ReduceSum(Exp) (with or without the max subtraction) into Softmax."
    anchors: ClassVar[tuple[str, ...]] = ("Div",)
    min_opset = 13

    def match(self, node: Node, rc: RewriteContext) -> SoftmaxMatch:
        exp = rc.producer(node.input(0), "Exp", "Softmax numerator")
        total = rc.producer(node.input(1), "ReduceSum", "Softmax denominator")
        if total.input(0) is not exp.output(0):
            raise MatchFailed("the denominator does not sum the numerator")
        axes = reduce_axes(total, rc)
        if len(axes) != 1:
            raise MatchFailed("Softmax over more than one axis")
        nodes = [node, total, exp]
        x = exp.input(0)
        sub = rc.maybe_producer(x, "Sub")
        if sub is not None:
            mx = rc.maybe_producer(sub.input(1), "ReduceMax")
            if mx is not None and mx.input(0) is sub.input(0):
                if reduce_axes(mx, rc) != axes:
                    raise MatchFailed("the max and the sum reduce over different axes")
                nodes += [sub, mx]
                x = sub.input(0)
        require_float(x, "Softmax input")
        if x is None:
            raise MatchFailed("Softmax input is missing")
        return SoftmaxMatch(node, nodes, x, axes[0])

    def rewrite(self, m: SoftmaxMatch, rb: RewriteBuilder) -> Replacement:
        sm = rb.op("Softmax", [m.x], attrs={"axis": m.axis}, name=m.anchor.name)
        return Replacement.outputs(m.anchor, sm)
