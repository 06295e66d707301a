"""Folding inference-mode BatchNormalization into the preceding Conv, ConvTranspose, Gemm or
MatMul with constant weights.

``BN(y) = (y - mean) * s + beta`` with ``s = scale / sqrt(var + eps)`` per channel, so the
producer's weights are scaled per output channel by ``s`` and its bias becomes
``(bias - mean) * s + beta``. Computed in float64, rounded once to the weight type. New weight
and bias tensors are created; a weight read by other nodes is refused rather than duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxforge.ir import Node
from onnxforge.passes.fusion.matching import require_float
from onnxforge.rules import Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule


def _bn_params(bn: Node, rc: RewriteContext) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) with BN(y) = y * s + t, in float64."""
    if int(bn.attr("training_mode", 0)) or sum(o is not None for o in bn.outputs) > 1:
        raise MatchFailed("BatchNormalization is in training mode")
    scale = rc.require_const(bn.input(1), "BN scale").astype(np.float64)
    beta = rc.require_const(bn.input(2), "BN bias").astype(np.float64)
    mean = rc.require_const(bn.input(3), "BN mean").astype(np.float64)
    var = rc.require_const(bn.input(4), "BN variance").astype(np.float64)
    eps = float(bn.attr("epsilon", 1e-5))
    if not (scale.ndim == beta.ndim == mean.ndim == var.ndim == 1):
        raise MatchFailed("BN parameters are not vectors")
    if not (scale.shape == beta.shape == mean.shape == var.shape):
        sizes = ", ".join(str(a.shape[0]) for a in (scale, beta, mean, var))
        raise MatchFailed(f"BN parameters differ in length ({sizes}): not a valid BatchNormalization")
    s = scale / np.sqrt(var + eps)
    return s, beta - mean * s


def _weights(node: Node, bn: Node, rc: RewriteContext, w_index: int = 1) -> np.ndarray:
    w = rc.require_const(node.input(w_index), f"{node.op_type} weight")
    rc.require_exclusive(node.input(w_index), [node], f"{node.op_type} weight")
    if node.input(2) is not None:
        rc.require_const(node.input(2), f"{node.op_type} bias")
        rc.require_exclusive(node.input(2), [node], f"{node.op_type} bias")
    require_float(node.input(w_index), f"{node.op_type} weight")
    return w


@dataclass
class ConvBatchNormMatch(Match):
    conv: Node
    #: The convolution's weight.
    weight: np.ndarray
    #: Per-channel ``s``, ``t`` with ``BN(y) = y * s + t`` (float64).
    scale: np.ndarray
    shift: np.ndarray
    group: int


class FuseConvBatchNorm(Rule[ConvBatchNormMatch]):
    """Conv / ConvTranspose followed by BatchNormalization → one Conv / ConvTranspose."""

    name = "conv-batchnorm"
    summary = "Fold BatchNormalization into the preceding Conv/ConvTranspose weights and bias."
    anchors: ClassVar[tuple[str, ...]] = ("BatchNormalization",)

    def match(self, node: Node, rc: RewriteContext) -> ConvBatchNormMatch:
        conv = rc.producer(node.input(0), ("Conv", "ConvTranspose"), "BN input")
        rc.single_consumer(conv.output(0), "conv output")
        w = _weights(conv, node, rc)
        s, t = _bn_params(node, rc)
        group = int(conv.attr("group", 1))
        if conv.op_type == "Conv":
            out_ch = w.shape[0]
        else:
            out_ch = w.shape[1] * group
        if s.shape[0] != out_ch:
            raise MatchFailed(f"BN has {s.shape[0]} channels, the convolution produces {out_ch}")
        return ConvBatchNormMatch(node, [conv, node], conv, w, s, t, group)

    def rewrite(self, m: ConvBatchNormMatch, rb: RewriteBuilder) -> Replacement:
        conv, w, s, t = m.conv, m.weight, m.scale, m.shift
        if conv.op_type == "Conv":
            w2 = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
        else:  # [C_in, C_out/group, k...]: output channel g * (C_out/group) + j
            c_in, per = w.shape[0], w.shape[1]
            groups = m.group
            sc = s.reshape(groups, per)
            idx = np.arange(c_in) // (c_in // groups)
            w2 = w.astype(np.float64) * sc[idx].reshape((c_in, per) + (1,) * (w.ndim - 2))
        b = rb.const(conv.input(2))
        b64 = b.astype(np.float64) if b is not None else np.zeros_like(s)
        bias = b64 * s + t
        dtype = w.dtype
        new_w = rb.constant(w2.astype(dtype), f"{conv.name or 'conv'}_bn_weight")
        new_b = rb.constant(bias.astype(dtype), f"{conv.name or 'conv'}_bn_bias")
        attrs = {k: conv.attr(k) for k in conv.attributes}
        fused = rb.op(conv.op_type, [conv.input(0), new_w, new_b], attrs=attrs, name=conv.name)
        return Replacement.outputs(m.anchor, fused)


@dataclass
class LinearBatchNormMatch(Match):
    #: The Gemm or MatMul.
    linear: Node
    weight: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    trans_b: bool
    #: The Gemm's constant bias (None without one, and for MatMul).
    bias: np.ndarray | None
    #: Output columns.
    columns: int


class FuseLinearBatchNorm(Rule[LinearBatchNormMatch]):
    """Gemm / MatMul with a constant 2-D weight, on a 2-D input, followed by
    BatchNormalization over its columns → one Gemm."""

    name = "linear-batchnorm"
    summary = "Fold BatchNormalization after Gemm/MatMul (2-D, constant weight) into a Gemm."
    anchors: ClassVar[tuple[str, ...]] = ("BatchNormalization",)
    min_opset = 11  # Gemm's bias broadcasts without the legacy attribute from opset 11 on

    def match(self, node: Node, rc: RewriteContext) -> LinearBatchNormMatch:
        lin = rc.producer(node.input(0), ("Gemm", "MatMul"), "BN input")
        rc.single_consumer(lin.output(0), "linear output")
        shape = lin.output(0).shape() if lin.output(0) is not None else None  # type: ignore[union-attr]
        if shape is None or len(shape) != 2:
            raise MatchFailed("the linear output is not known to be 2-D")
        a_shape = lin.input(0).shape() if lin.input(0) is not None else None  # type: ignore[union-attr]
        if a_shape is None or len(a_shape) != 2:
            raise MatchFailed("the linear input is not known to be 2-D")
        w = _weights(lin, node, rc)
        if w.ndim != 2:
            raise MatchFailed("weight is not 2-D")
        s, t = _bn_params(node, rc)
        trans_b = lin.op_type == "Gemm" and bool(int(lin.attr("transB", 0)))
        n = w.shape[0] if trans_b else w.shape[1]
        if s.shape[0] != n:
            raise MatchFailed(f"BN has {s.shape[0]} channels, the product has {n} columns")
        c = rc.const(lin.input(2)) if lin.op_type == "Gemm" else None
        if c is not None and c.size not in (1, n) and c.shape != (1, n):
            raise MatchFailed("Gemm bias is not per column")
        return LinearBatchNormMatch(node, [lin, node], lin, w, s, t, trans_b, c, n)

    def rewrite(self, m: LinearBatchNormMatch, rb: RewriteBuilder) -> Replacement:
        lin, w, s, t = m.linear, m.weight, m.scale, m.shift
        alpha = float(lin.attr("alpha", 1.0)) if lin.op_type == "Gemm" else 1.0
        beta = float(lin.attr("beta", 1.0)) if lin.op_type == "Gemm" else 1.0
        w2 = w.astype(np.float64) * (s.reshape(-1, 1) if m.trans_b else s.reshape(1, -1)) * alpha
        c = m.bias
        c64 = np.broadcast_to(c.astype(np.float64).reshape(-1), (m.columns,)) * beta if c is not None else 0.0
        bias = c64 * s + t
        new_w = rb.constant(w2.astype(w.dtype), f"{lin.name or 'linear'}_bn_weight")
        new_b = rb.constant(np.asarray(bias, dtype=np.float64).astype(w.dtype), f"{lin.name or 'linear'}_bn_bias")
        attrs = {"transB": 1} if m.trans_b else {}
        if lin.op_type == "Gemm" and int(lin.attr("transA", 0)):
            attrs["transA"] = 1
        fused = rb.op("Gemm", [lin.input(0), new_w, new_b], attrs=attrs, name=lin.name)
        return Replacement.outputs(m.anchor, fused)
