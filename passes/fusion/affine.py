"""Constant scales and offsets folded into the weights and bias of Conv, Gemm and MatMul, and
MatMul + Add turned into Gemm.

* ``Mul(conv(x), c)`` with ``c`` constant per output channel (or a scalar): the weights and bias
  are scaled. ``Add(conv(x), c)``: ``c`` joins the bias. The same for Gemm (per column) and for
  MatMul with a constant 2-D weight (scales only: a MatMul has no bias).
* ``Add(MatMul(a, b), c)`` with ``a`` and ``b`` 2-D and ``c`` broadcasting to the product's
  shape without growing it → ``Gemm(a, b, c)``.

New tensors are created; a weight or bias read by other nodes is refused rather than copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.matching import channel_vector, require_float, split_const
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule


def _rank(v: Value | None) -> int | None:
    s = v.shape() if v is not None else None
    return None if s is None else len(s)


def _linear_layout(lin: Node, rc: RewriteContext, rewrites_weight: bool) -> tuple[np.ndarray, int, int]:
    """(weight, output rank, output-channel axis of the linear's output) with checks."""
    w = rc.require_const(lin.input(1), f"{lin.op_type} weight")
    if rewrites_weight:
        rc.require_exclusive(lin.input(1), [lin], f"{lin.op_type} weight")
    require_float(lin.input(1), f"{lin.op_type} weight")
    rank = _rank(lin.output(0))
    if rank is None:
        raise MatchFailed(f"rank of the {lin.op_type} output is unknown")
    if lin.op_type in ("Conv", "ConvTranspose"):
        return w, rank, 1
    if lin.op_type == "Gemm":
        return w, rank, 1
    if w.ndim != 2:
        raise MatchFailed("MatMul weight is not 2-D")
    return w, rank, rank - 1


def _out_channels(lin: Node, w: np.ndarray) -> int:
    if lin.op_type == "Conv":
        return int(w.shape[0])
    if lin.op_type == "ConvTranspose":
        return int(w.shape[1] * int(lin.attr("group", 1)))
    if lin.op_type == "Gemm":
        return int(w.shape[0] if int(lin.attr("transB", 0)) else w.shape[1])
    return int(w.shape[1])


def _scale_weight(lin: Node, w: np.ndarray, vec: np.ndarray) -> np.ndarray:
    w64 = w.astype(np.float64)
    if lin.op_type == "Conv":
        return w64 * vec.reshape((-1,) + (1,) * (w.ndim - 1))
    if lin.op_type == "ConvTranspose":
        groups = int(lin.attr("group", 1))
        c_in, per = w.shape[0], w.shape[1]
        idx = np.arange(c_in) // (c_in // groups)
        return w64 * vec.reshape(groups, per)[idx].reshape((c_in, per) + (1,) * (w.ndim - 2))
    if lin.op_type == "Gemm" and int(lin.attr("transB", 0)):
        return w64 * vec.reshape(-1, 1)
    return w64 * vec.reshape(1, -1)


@dataclass
class LinearFoldMatch(Match):
    """``Op(linear(x), c)`` with ``c`` one value per output channel."""

    #: The Conv, ConvTranspose, Gemm or MatMul.
    linear: Node
    weight: np.ndarray
    #: ``c`` as one float64 value per output channel.
    vector: np.ndarray
    #: Output channels.
    channels: int


class _FoldIntoLinear(Rule[LinearFoldMatch]):
    """Shared matching of ``Op(linear(x), c)``."""

    linear_ops: ClassVar[tuple[str, ...]] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    rewrites_weight: ClassVar[bool] = True

    def match(self, node: Node, rc: RewriteContext) -> LinearFoldMatch:
        y, c = split_const(node, rc)
        lin = rc.producer(y, self.linear_ops, f"{node.op_type} operand")
        rc.single_consumer(lin.output(0), "linear output")
        if c.dtype.kind != "f":
            raise MatchFailed(f"the {node.op_type} constant is not a float tensor")
        w, rank, axis = _linear_layout(lin, rc, self.rewrites_weight)
        n = _out_channels(lin, w)
        vec = channel_vector(c, rank, axis, n)
        if vec is None:
            raise MatchFailed(f"the constant of shape {list(c.shape)} is not one value per output channel")
        if lin.op_type == "Gemm":
            bias = lin.input(2)
            if bias is not None:
                cb = rc.require_const(bias, "Gemm bias")
                rc.require_exclusive(bias, [lin], "Gemm bias")
                if cb.size not in (1, n) or (cb.ndim == 2 and cb.shape[0] != 1):
                    raise MatchFailed("Gemm bias is not per column")
        elif lin.op_type != "MatMul" and lin.input(2) is not None:
            rc.require_const(lin.input(2), f"{lin.op_type} bias")
            rc.require_exclusive(lin.input(2), [lin], f"{lin.op_type} bias")
        return LinearFoldMatch(node, [lin, node], lin, w, vec.astype(np.float64), n)

    @staticmethod
    def _bias(lin: Node, rb: RewriteBuilder, n: int) -> np.ndarray:
        b = rb.const(lin.input(2)) if lin.op_type != "MatMul" else None
        if b is None:
            return np.zeros(n)
        b64 = np.broadcast_to(b.astype(np.float64).reshape(-1), (n,)).copy()
        if lin.op_type == "Gemm":
            b64 *= float(lin.attr("beta", 1.0))
        return b64

    @staticmethod
    def _emit(
        lin: Node, rb: RewriteBuilder, anchor: Node, w: np.ndarray | None, bias: np.ndarray | None, dtype: np.dtype
    ) -> Replacement:
        """The rewritten linear op (``w`` None: keep the original weight)."""
        new_w = lin.input(1) if w is None else rb.constant(w.astype(dtype), f"{lin.name or 'linear'}_folded_weight")
        attrs = {k: lin.attr(k) for k in lin.attributes}
        inputs: list[Value | None] = [lin.input(0), new_w]
        if bias is not None:
            inputs.append(rb.constant(bias.astype(dtype), f"{lin.name or 'linear'}_folded_bias"))
        if lin.op_type == "Gemm":
            attrs["beta"] = 1.0
        fused = rb.op(lin.op_type, inputs, attrs=attrs, name=lin.name)
        return Replacement.outputs(anchor, fused)


class FoldScaleIntoLinear(_FoldIntoLinear):
    """``Mul(Conv|ConvTranspose|Gemm|MatMul(x), per-channel constant)`` → scaled weights."""

    name = "fold-scale-into-linear"
    summary = "Fold a constant per-channel Mul after Conv/Gemm/MatMul into its weights and bias."
    anchors: ClassVar[tuple[str, ...]] = ("Mul",)

    def rewrite(self, m: LinearFoldMatch, rb: RewriteBuilder) -> Replacement:
        lin, vec = m.linear, m.vector
        w2 = _scale_weight(lin, m.weight, vec)
        has_bias = lin.op_type != "MatMul" and lin.input(2) is not None
        bias = self._bias(lin, rb, m.channels) * vec if has_bias else None
        return self._emit(lin, rb, m.anchor, w2, bias, m.weight.dtype)


class FoldOffsetIntoBias(_FoldIntoLinear):
    """``Add(Conv|ConvTranspose|Gemm(x), per-channel constant)`` → the bias absorbs it."""

    name = "fold-offset-into-bias"
    summary = "Fold a constant per-channel Add after Conv/ConvTranspose/Gemm into its bias."
    anchors: ClassVar[tuple[str, ...]] = ("Add",)
    linear_ops: ClassVar[tuple[str, ...]] = ("Conv", "ConvTranspose", "Gemm")
    rewrites_weight: ClassVar[bool] = False

    def match(self, node: Node, rc: RewriteContext) -> LinearFoldMatch:
        m = super().match(node, rc)
        lin = m.linear
        if lin.op_type == "Gemm":
            a_rank = _rank(lin.input(0))
            if a_rank != 2:
                raise MatchFailed("Gemm input rank unknown")
        return m

    def rewrite(self, m: LinearFoldMatch, rb: RewriteBuilder) -> Replacement:
        bias = self._bias(m.linear, rb, m.channels) + m.vector
        return self._emit(m.linear, rb, m.anchor, None, bias, m.weight.dtype)


@dataclass
class MatMulAddMatch(Match):
    matmul: Node
    #: The Add's other operand.
    bias: Value | None


class MatMulAddToGemm(Rule[MatMulAddMatch]):
    """``Add(MatMul(a, b), c)`` with 2-D ``a``, ``b`` → ``Gemm(a, b, c)``."""

    name = "matmul-add-to-gemm"
    summary = "Turn a 2-D MatMul followed by a bias Add into a Gemm."
    anchors: ClassVar[tuple[str, ...]] = ("Add",)
    min_opset = 11  # Gemm's bias broadcasts without the legacy attribute from opset 11 on

    def match(self, node: Node, rc: RewriteContext) -> MatMulAddMatch:
        a_in, b_in = node.input(0), node.input(1)
        mm = rc.maybe_producer(a_in, "MatMul")
        bias = b_in
        if mm is None or (rc.const(b_in) is None and rc.const(a_in) is not None):
            mm = rc.producer(b_in, "MatMul", "Add operand")
            bias = a_in
        rc.single_consumer(mm.output(0), "MatMul output")
        require_float(mm.input(0), "MatMul input")
        if _rank(mm.input(0)) != 2 or _rank(mm.input(1)) != 2:
            raise MatchFailed("MatMul operands are not both known to be 2-D")
        out = mm.output(0).shape()  # type: ignore[union-attr]
        bshape = bias.shape() if bias is not None else None
        if out is None or bshape is None:
            raise MatchFailed("shapes of the product or the bias are unknown")
        if len(bshape) > 2 or any(
            not (d == 1 or d == o) for d, o in zip(reversed(bshape), reversed(out))
        ):
            raise MatchFailed(f"bias of shape {list(bshape)} does not broadcast into the product {list(out)}")
        if node.output(0) is not None and node.output(0).shape() not in (None, out):  # type: ignore[union-attr]
            raise MatchFailed("the Add grows the product's shape")
        return MatMulAddMatch(node, [mm, node], mm, bias)

    def rewrite(self, m: MatMulAddMatch, rb: RewriteBuilder) -> Replacement:
        mm = m.matmul
        gemm = rb.op("Gemm", [mm.input(0), mm.input(1), m.bias], name=mm.name)
        return Replacement.outputs(m.anchor, gemm)


@dataclass
class FlattenedGemmMatch(Match):
    #: The input before flattening.
    x: Value | None
    #: The weight as [K, N] (transposed when the Gemm has transB).
    weight: np.ndarray
    bias: np.ndarray | None
    gemm: Node


class GemmOnFlattenedInput(Rule[FlattenedGemmMatch]):
    """``Reshape(Gemm(Reshape(x, [-1, K]), W, b), [..., N])`` that only flattens and restores
    the leading dims of ``x`` → ``MatMul(x, W) + b`` (GPT-2's Conv1D exports spell every
    projection this way, with dynamic shape computations around each Reshape)."""

    name = "gemm-on-flattened-input"
    summary = "Replace Reshape -> Gemm -> Reshape (flattening leading dims) by MatMul + Add."
    anchors: ClassVar[tuple[str, ...]] = ("Reshape",)

    def match(self, node: Node, rc: RewriteContext) -> FlattenedGemmMatch:
        gemm = rc.producer(node.input(0), "Gemm", "Reshape input")
        rc.single_consumer(gemm.output(0), "Gemm output")
        if int(gemm.attr("transA", 0)) or float(gemm.attr("alpha", 1.0)) != 1.0 or float(gemm.attr("beta", 1.0)) != 1.0:
            raise MatchFailed("Gemm has transA, alpha or beta")
        w = rc.require_const(gemm.input(1), "Gemm weight")
        if int(gemm.attr("transB", 0)):
            # A transposed copy of a weight other nodes read (an embedding tied to its LM
            # head) would untie it: twice the weights on disk.
            rc.require_exclusive(gemm.input(1), [gemm], "Gemm weight (read with transB)")
            w = w.T
        bias = rc.const(gemm.input(2)) if gemm.input(2) is not None else None
        if gemm.input(2) is not None and (bias is None or bias.ndim != 1):
            raise MatchFailed("Gemm bias is not a 1-D constant")
        flat = rc.producer(gemm.input(0), "Reshape", "Gemm input")
        x, y = flat.input(0), node.output(0)
        xs = x.shape() if x is not None else None
        ys = y.shape() if y is not None else None
        k, n = w.shape
        if xs is None or ys is None or len(xs) < 3 or len(ys) != len(xs):
            raise MatchFailed("ranks of the input and the restored output are not known to match")
        if xs[-1] != k or ys[-1] != n:
            raise MatchFailed("the Reshapes do not only flatten the leading dims")
        if any(d is None or d != e for d, e in zip(xs[:-1], ys[:-1])):
            raise MatchFailed("leading dims of the input and the output are not known to be equal")
        nodes = [gemm, node]
        if rc.exclusive(flat.output(0), [gemm]):
            nodes.insert(0, flat)
        return FlattenedGemmMatch(node, nodes, x, w, bias, gemm)

    def rewrite(self, m: FlattenedGemmMatch, rb: RewriteBuilder) -> Replacement:
        gemm = m.gemm
        w_v = gemm.input(1) if not int(gemm.attr("transB", 0)) else rb.constant(np.ascontiguousarray(m.weight), f"{gemm.name}_weight")
        out = rb.op("MatMul", [m.x, w_v], name=gemm.name)
        if m.bias is not None:
            out = rb.op("Add", [out, gemm.input(2)], name=f"{gemm.name}_bias")
        return Replacement.outputs(m.anchor, out)
