"""Symbolic evaluation of the small integer tensors that compute Reshape targets.

:class:`Dim` is an integer ``const + sum(coeff * symbol)``; :class:`ShapeInts` evaluates Shape,
Gather, Unsqueeze, Concat, Slice, Cast and arithmetic over such dims, so that a Reshape target can
be compared with ``[B, S, N, d]`` in terms of the attention input's ``B`` and ``S``. (To be
replaced by the shared shape analysis.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from onnxforge.ir import Node, Value
from onnxforge.rules import RewriteContext

_TP = onnx.TensorProto
_MAX_DEPTH = 24


@dataclass(frozen=True)
class Dim:
    """An integer ``const + sum(coeff * symbol)``: a dimension in the shape evaluation."""

    const: int = 0
    terms: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim(0, ((name, 1),))

    @staticmethod
    def of(d: int | str | None, name: str) -> Dim:
        """A known int dimension, else the symbol ``name``."""
        return Dim(d) if isinstance(d, int) else Dim.sym(name)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def __add__(self, other: Dim) -> Dim:
        acc = dict(self.terms)
        for k, c in other.terms:
            acc[k] = acc.get(k, 0) + c
        return Dim(self.const + other.const, tuple(sorted((k, c) for k, c in acc.items() if c)))

    def scaled(self, k: int) -> Dim:
        return Dim(self.const * k, tuple((s, c * k) for s, c in self.terms if c * k))

    def __sub__(self, other: Dim) -> Dim:
        return self + other.scaled(-1)

    def div_exact(self, k: int) -> Dim | None:
        if k == 0 or self.const % k or any(c % k for _, c in self.terms):
            return None
        return Dim(self.const // k, tuple((s, c // k) for s, c in self.terms))

    def __str__(self) -> str:
        parts = [f"{c}*{s}" if c != 1 else s for s, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts)


Dims = tuple[Dim | None, ...]


def format_dims(dims: Sequence[Dim | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class ShapeInts:
    """Symbolic evaluation of small integer tensors (shape computations).

    ``value(v)`` is ``(elements, is_scalar)`` with each element a :class:`Dim` or None (unknown),
    or None when ``v`` is not a 0-D/1-D integer computation this evaluator understands. Shapes
    of tensors come from :meth:`know` (the pattern's values, in terms of ``B``, ``S``, ...) or
    from fully static shape annotations.
    """

    def __init__(self, rc: RewriteContext) -> None:
        self.rc = rc
        self.known: dict[Value, Dims] = {}

    def know(self, v: Value | None, dims: Sequence[Dim | None]) -> None:
        if v is not None:
            self.known[v] = tuple(dims)

    def shape_of(self, v: Value | None) -> Dims | None:
        if v is None:
            return None
        if v in self.known:
            return self.known[v]
        s = v.shape()
        if s is None:
            return None
        return tuple(Dim(d) if isinstance(d, int) else None for d in s)

    def scalar(self, v: Value | None) -> Dim | None:
        r = self.value(v)
        if r is None or len(r[0]) != 1:
            return None
        return r[0][0]

    def value(self, v: Value | None, depth: int = 0) -> tuple[Dims, bool] | None:
        if v is None or depth > _MAX_DEPTH:
            return None
        c = self.rc.const(v)
        if c is not None:
            if c.dtype.kind not in "iu" or c.ndim > 1:
                return None
            return tuple(Dim(int(x)) for x in c.reshape(-1)), c.ndim == 0
        p = v.producer
        if p is None or not p.is_standard_domain():
            return None
        handler = getattr(self, f"_op_{p.op_type}", None)
        return None if handler is None else handler(p, depth + 1)

    def _op_Shape(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        dims = self.shape_of(p.input(0))
        if dims is None:
            return None
        start, end = int(p.attr("start", 0)), p.attr("end", None)
        return dims[start : (None if end is None else int(end))], False

    def _op_Gather(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        data = self.value(p.input(0), depth)
        idx = self.rc.const(p.input(1))
        if data is None or data[1] or idx is None or idx.ndim > 1 or int(p.attr("axis", 0)) != 0:
            return None
        n = len(data[0])
        picked: list[Dim | None] = []
        for i in idx.reshape(-1).tolist():
            if not -n <= i < n:
                return None
            picked.append(data[0][i])
        return tuple(picked), idx.ndim == 0

    def _op_Unsqueeze(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        axes = unsqueeze_axes(p, self.rc)
        if x is None or not x[1] or axes not in ([0], [-1]):
            return None
        return x[0], False

    def _op_Squeeze(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        if x is None or x[1] or len(x[0]) != 1:
            return None
        return x[0], True

    def _op_Concat(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        out: list[Dim | None] = []
        for v in p.inputs:
            x = self.value(v, depth)
            if x is None or x[1]:
                return None
            out.extend(x[0])
        return tuple(out), False

    def _op_Slice(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        params = [self.rc.const(p.input(i)) for i in range(1, 5)]
        if x is None or x[1] or params[0] is None or params[1] is None:
            return None
        if params[2] is not None and params[2].reshape(-1).tolist() not in ([0], [-1]):
            return None
        step = 1 if params[3] is None else int(params[3].reshape(-1)[0])
        start, end = int(params[0].reshape(-1)[0]), int(params[1].reshape(-1)[0])
        return x[0][slice(start, end, step)], False

    def _op_Cast(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        if int(p.attr("to", 0)) not in (_TP.INT64, _TP.INT32):
            return None
        return self.value(p.input(0), depth)

    def _op_Identity(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        return self.value(p.input(0), depth)

    def _binary(self, p: Node, depth: int) -> tuple[Dims, Dims, bool] | None:
        a, b = self.value(p.input(0), depth), self.value(p.input(1), depth)
        if a is None or b is None:
            return None
        xa, xb = a[0], b[0]
        if len(xa) == 1 and len(xb) != 1:
            xa = xa * len(xb)
        elif len(xb) == 1 and len(xa) != 1:
            xb = xb * len(xa)
        if len(xa) != len(xb):
            return None
        return xa, xb, a[1] and b[1]

    def _op_Add(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        return tuple(None if x is None or y is None else x + y for x, y in zip(r[0], r[1])), r[2]

    def _op_Sub(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        return tuple(None if x is None or y is None else x - y for x, y in zip(r[0], r[1])), r[2]

    def _op_Mul(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        out: list[Dim | None] = []
        for x, y in zip(r[0], r[1]):
            if x is not None and y is not None and y.is_const:
                out.append(x.scaled(y.const))
            elif x is not None and y is not None and x.is_const:
                out.append(y.scaled(x.const))
            else:
                out.append(None)
        return tuple(out), r[2]

    def _op_Div(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        out = [
            x.div_exact(y.const) if x is not None and y is not None and y.is_const else None
            for x, y in zip(r[0], r[1])
        ]
        return tuple(out), r[2]


def unsqueeze_axes(node: Node, rc: RewriteContext) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (input from opset 13, attribute before)."""
    if node.input(1) is not None:
        arr = rc.const(node.input(1))
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    axes = node.attr("axes", None)
    return None if axes is None else [int(a) for a in axes]
