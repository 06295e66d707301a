"""Decomposed layer normalization → ``LayerNormalization`` (opset ≥ 17).

The pattern, as PyTorch, Paddle and TensorFlow exporters spell it::

    mean = ReduceMean(x, axes)            d = Sub(x, mean)
    var  = ReduceMean(Pow(d, 2) | Mul(d, d), axes)
    std  = Sqrt(Add(var, eps))
    n    = Div(d, std) | Mul(d, Reciprocal(std))
    y    = Add(Mul(n, gamma), beta)       (gamma and beta optional, either operand order)

``axes`` must be the trailing axes (so they map onto LayerNormalization's ``axis``), ``eps`` a
scalar constant, gamma/beta constants that vary only along the normalized axes.
:func:`match_layer_norm` is shared with the onnxruntime rules (SkipLayerNormalization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.matching import (
    np_dtype,
    other_input,
    reduce_axes,
    require_float,
    scalar,
    split_const,
)
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule


@dataclass
class LayerNormParts:
    """What a decomposed layer normalization computes, and its nodes."""

    x: Value
    axis: int
    epsilon: float
    gamma: np.ndarray | None
    beta: np.ndarray | None
    nodes: list[Node]


def _trailing_axis(axes: list[int], rank: int | None) -> int:
    """The first of ``axes`` as a negative axis, when ``axes`` are the trailing axes."""
    if rank is not None:
        axes = [a - rank if a >= 0 else a for a in axes]
    axes = sorted(axes)
    if not axes or axes[-1] != -1 or axes != list(range(axes[0], 0)):
        raise MatchFailed(f"normalized axes {axes} are not the trailing axes")
    return axes[0]


def _affine(arr: np.ndarray, axis: int, what: str) -> np.ndarray:
    """``arr`` must vary only along the normalized (trailing ``-axis``) axes."""
    k = -axis
    if arr.ndim > k and any(d != 1 for d in arr.shape[: arr.ndim - k]):
        raise MatchFailed(f"{what} varies along axes that are not normalized")
    return arr.reshape(arr.shape[max(arr.ndim - k, 0) :])


def match_layer_norm(end: Node, rc: RewriteContext) -> LayerNormParts:
    """Match a decomposed layer normalization ending at ``end`` (Add of beta, Mul of gamma, or
    the Div/Mul normalizing step)."""
    nodes: list[Node] = []
    beta = gamma = None
    node = end
    if node.op_type == "Add":
        inner, b = split_const(node, rc)
        beta = b
        nodes.append(node)
        node = rc.producer(inner, ("Mul", "Div"), "LayerNorm beta operand")
    if node.op_type == "Mul" and (rc.const(node.input(0)) is not None or rc.const(node.input(1)) is not None):
        inner, g = split_const(node, rc)
        gamma = g
        nodes.append(node)
        node = rc.producer(inner, ("Div", "Mul"), "LayerNorm gamma operand")
    # normalizing step: Div(d, std) or Mul(d, Reciprocal(std))
    if node.op_type == "Div":
        d, std_v = node.input(0), node.input(1)
        std = rc.producer(std_v, "Sqrt", "LayerNorm divisor")
        nodes.append(node)
    elif node.op_type == "Mul":
        recip = rc.maybe_producer(node.input(1), "Reciprocal") or rc.producer(node.input(0), "Reciprocal", "LayerNorm scale")
        d = other_input(node, recip.output(0))  # type: ignore[arg-type]
        std = rc.producer(recip.input(0), "Sqrt", "LayerNorm reciprocal operand")
        nodes += [node, recip]
    else:
        raise MatchFailed("no normalizing Div/Mul")
    sub = rc.producer(d, "Sub", "LayerNorm centered value")
    x, mean_v = sub.input(0), sub.input(1)
    mean = rc.producer(mean_v, "ReduceMean", "LayerNorm mean")
    if mean.input(0) is not x or x is None:
        raise MatchFailed("the mean is not of the normalized input")
    add_eps = rc.producer(std.input(0), "Add", "LayerNorm sqrt operand")
    var_v, eps_arr = split_const(add_eps, rc)
    eps = scalar(eps_arr)
    if eps is None:
        raise MatchFailed("epsilon is not a scalar")
    var = rc.producer(var_v, "ReduceMean", "LayerNorm variance")
    sq = rc.producer(var.input(0), ("Pow", "Mul"), "LayerNorm squared deviation")
    if sq.op_type == "Pow":
        if sq.input(0) is not d or scalar(rc.const(sq.input(1))) != 2.0:
            raise MatchFailed("Pow is not the square of the centered value")
    elif not (sq.input(0) is d and sq.input(1) is d):
        raise MatchFailed("Mul is not the square of the centered value")
    axes = reduce_axes(mean, rc)
    if sorted(reduce_axes(var, rc)) != sorted(axes):
        raise MatchFailed("mean and variance reduce over different axes")
    shape = x.shape()
    axis = _trailing_axis(axes, len(shape) if shape is not None else None)
    require_float(x, "LayerNorm input")
    nodes += [std, add_eps, var, sq, sub, mean]
    g = _affine(gamma, axis, "gamma") if gamma is not None else None
    b = _affine(beta, axis, "beta") if beta is not None else None
    return LayerNormParts(x, axis, float(eps), g, b, nodes)


def normalized_shape(parts: LayerNormParts) -> tuple[int, ...]:
    """Static shape of the normalized axes (from the input or the affine parameters)."""
    shape = parts.x.shape()
    k = -parts.axis
    if shape is not None and all(isinstance(d, int) for d in shape[len(shape) - k :]):
        return tuple(int(d) for d in shape[len(shape) - k :])  # type: ignore[misc]
    for arr in (parts.gamma, parts.beta):
        if arr is not None and arr.ndim == k:
            return tuple(arr.shape)
    raise MatchFailed("the normalized shape is unknown")


def layer_norm_params(parts: LayerNormParts, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) broadcast to the normalized shape, in ``dtype``."""
    shape = normalized_shape(parts)
    gamma = np.ones(shape) if parts.gamma is None else np.broadcast_to(parts.gamma, shape)
    beta = np.zeros(shape) if parts.beta is None else np.broadcast_to(parts.beta, shape)
    return np.ascontiguousarray(gamma, dtype=dtype), np.ascontiguousarray(beta, dtype=dtype)


@dataclass
class LayerNormMatch(Match):
    layer_norm: LayerNormParts


class FuseLayerNorm(Rule[LayerNormMatch]):
    """Decomposed layer normalization → ``LayerNormalization``."""

    name = "layer-norm"
    summary = "Fuse decomposed layer normalization (ReduceMean/Sub/Pow/Sqrt/Div...) into LayerNormalization."
    anchors: ClassVar[tuple[str, ...]] = ("Add", "Mul", "Div")
    min_opset = 17

    def match(self, node: Node, rc: RewriteContext) -> LayerNormMatch:
        parts = match_layer_norm(node, rc)
        normalized_shape(parts)
        return LayerNormMatch(node, parts.nodes, parts)

    def rewrite(self, m: LayerNormMatch, rb: RewriteBuilder) -> Replacement:
        parts = m.layer_norm
        dtype = np_dtype(parts.x.elem_type() or 1)
        scale, bias = layer_norm_params(parts, dtype)
        base = m.anchor.name or "layernorm"
        ln = rb.op(
            "LayerNormalization",
            [parts.x, rb.constant(scale, f"{base}_scale"), rb.constant(bias, f"{base}_bias")],
            attrs={"axis": parts.axis, "epsilon": parts.epsilon},
            name=base,
        )
        return Replacement.outputs(m.anchor, ln)
