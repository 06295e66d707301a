"""Stage: the Q, K and V projections of the attention input.

A projection is ``MatMul(x, W) [+ b]`` with a constant 2-D weight and an optional constant bias
Add (either operand order), GPT-2's Conv1D ``Reshape(Gemm(Reshape(x, [-1, H]), W, b), [B, S,
cols])``, or the columns of one packed projection taken by a ``Split`` (or a ``Slice``) on the
last axis. :func:`match_projection` returns a :class:`Projection` or fails with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxforge.ir import Node, Value
from onnxforge.rules import MatchFailed, RewriteContext


@dataclass
class Conv1D:
    """GPT-2's packed Conv1D projection: the flattening Reshape, the Gemm and the Reshape back,
    whose targets the shape checks evaluate."""

    flatten: Node
    unflatten: Node
    gemm: Node
    #: Packed output columns.
    columns: int


@dataclass
class Projection:
    """One of q, k, v: ``x @ weight + bias`` produced as ``out`` (shape ``[B, S, cols]``)."""

    x: Value
    weight: np.ndarray
    bias: np.ndarray | None
    out: Value
    nodes: list[Node]
    #: Values of shape [B, S, n] (for the shape evaluation): (value, n).
    bs_values: list[tuple[Value, int]] = field(default_factory=list)
    #: The packed Conv1D path, when the projection comes from one.
    conv1d: Conv1D | None = None


def match_projection(v: Value | None, rc: RewriteContext, what: str) -> Projection:
    """The projection computing ``v`` (``what``: "Q", "K" or "V", for the reasons)."""
    p = v.producer if v is not None else None
    if p is not None and p.op_type == "Split" and p.is_standard_domain():
        assert v is not None
        return _split_projection(p, v, rc, what)
    if p is not None and p.op_type == "Slice" and p.is_standard_domain():
        assert v is not None
        return _slice_projection(p, v, rc, what)
    return _linear(v, rc, what)


def _linear(v: Value | None, rc: RewriteContext, what: str) -> Projection:
    """``MatMul(x, W) [+ b]`` or the Conv1D form ``Reshape(Gemm(Reshape(x), W, b))``."""
    p = rc.producer(v, ("Add", "MatMul", "Reshape"), f"{what} projection")
    if p.op_type == "Reshape":
        return _conv1d(p, rc, what)
    nodes: list[Node] = []
    bias: np.ndarray | None = None
    mm_out = v
    if p.op_type == "Add":
        mm_out, bias = _bias_add(p, rc, what)
        nodes.append(p)
    mm = rc.producer(mm_out, "MatMul", f"{what} projection")
    w = rc.require_const(mm.input(1), f"{what} weight")
    if w.ndim != 2:
        raise MatchFailed(f"{what} weight is {w.ndim}-D, not 2-D")
    x = mm.input(0)
    if x is None or rc.const(x) is not None:
        raise MatchFailed(f"{what} projection input is missing or constant")
    if bias is not None and bias.size != w.shape[1]:
        raise MatchFailed(f"{what} bias has {bias.size} values for {w.shape[1]} columns")
    nodes.append(mm)
    out, mm_value = v, mm.output(0)
    assert out is not None and mm_value is not None
    bs = [(mm_value, int(w.shape[1])), (out, int(w.shape[1]))]
    return Projection(x, w, bias, out, nodes, bs)


def _bias_add(add: Node, rc: RewriteContext, what: str) -> tuple[Value, np.ndarray]:
    a, b = add.input(0), add.input(1)
    for data, c in ((a, b), (b, a)):
        arr = rc.const(c)
        if arr is not None and data is not None and rc.const(data) is None:
            if arr.ndim > 3 or any(d != 1 for d in arr.shape[:-1]):
                raise MatchFailed(f"{what} bias of shape {list(arr.shape)} is not a vector")
            return data, arr.reshape(-1)
    raise MatchFailed(f"{what} bias is not a constant")


def _conv1d(unflat: Node, rc: RewriteContext, what: str) -> Projection:
    gemm = rc.producer(unflat.input(0), "Gemm", f"{what} projection Reshape input")
    flat = rc.producer(gemm.input(0), "Reshape", "Gemm input")
    if int(gemm.attr("transA", 0)):
        raise MatchFailed("Gemm has transA=1")
    w = rc.require_const(gemm.input(1), f"{what} weight")
    if w.ndim != 2:
        raise MatchFailed(f"{what} weight is not 2-D")
    if int(gemm.attr("transB", 0)):
        w = w.T
    w = w * np.asarray(gemm.attr("alpha", 1.0), dtype=w.dtype) if float(gemm.attr("alpha", 1.0)) != 1.0 else w
    bias = None
    if gemm.input(2) is not None:
        c = rc.require_const(gemm.input(2), f"{what} bias")
        if c.size != w.shape[1] or any(d != 1 for d in c.shape[:-1]):
            raise MatchFailed(f"{what} Gemm bias of shape {list(c.shape)} is not a [{w.shape[1]}] vector")
        beta = float(gemm.attr("beta", 1.0))
        bias = c.reshape(-1) * np.asarray(beta, dtype=c.dtype) if beta != 1.0 else c.reshape(-1)
    x = flat.input(0)
    if x is None or rc.const(x) is not None:
        raise MatchFailed(f"{what} projection input is missing or constant")
    out = unflat.output(0)
    assert out is not None
    cols = int(w.shape[1])
    return Projection(
        x, w, bias, out, [unflat, gemm, flat], [(out, cols)], conv1d=Conv1D(flat, unflat, gemm, cols)
    )


def _split_projection(split: Node, v: Value, rc: RewriteContext, what: str) -> Projection:
    packed = _linear(split.input(0), rc, f"packed {what}")
    cols = packed.weight.shape[1]
    axis = int(split.attr("axis", 0))
    if axis not in (-1, 2):
        raise MatchFailed(f"{what} Split axis is {axis}, not the last axis")
    sizes = rc.const(split.input(1)) if split.input(1) is not None else split.attr("split", None)
    outs = list(split.outputs)
    if sizes is None:
        if int(split.attr("num_outputs", len(outs))) != len(outs) or cols % len(outs):
            raise MatchFailed("Split sizes are not known")
        sizes = [cols // len(outs)] * len(outs)
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    if sum(sizes) != cols or len(sizes) != len(outs):
        raise MatchFailed(f"Split sizes {sizes} do not cover the {cols} packed columns")
    i = outs.index(v)
    start = sum(sizes[:i])
    return _columns(packed, v, start, start + sizes[i], split)


def _slice_projection(sl: Node, v: Value, rc: RewriteContext, what: str) -> Projection:
    packed = _linear(sl.input(0), rc, f"packed {what}")
    cols = packed.weight.shape[1]
    starts, ends = rc.const(sl.input(1)), rc.const(sl.input(2))
    axes, steps = rc.const(sl.input(3)), rc.const(sl.input(4))
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        raise MatchFailed(f"{what} Slice bounds are not constant")
    if axes is None or axes.reshape(-1).tolist() not in ([-1], [2]):
        raise MatchFailed(f"{what} Slice is not on the last axis")
    if steps is not None and steps.reshape(-1).tolist() != [1]:
        raise MatchFailed(f"{what} Slice step is not 1")
    rng = range(cols)[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]))]
    if len(rng) == 0:
        raise MatchFailed(f"{what} Slice is empty")
    return _columns(packed, v, rng.start, rng.stop, sl)


def _columns(packed: Projection, out: Value, start: int, stop: int, node: Node) -> Projection:
    bias = None if packed.bias is None else packed.bias[start:stop]
    bs = [*packed.bs_values, (out, stop - start)]
    return Projection(
        packed.x, packed.weight[:, start:stop], bias, out, [node, *packed.nodes], bs, conv1d=packed.conv1d
    )
