"""onnxruntime contrib fusions (com.microsoft) for convolutions, Gemm, GELU and residual
layer normalization. Used only when the target is onnxruntime (``--target cpu|cuda``).

* ``FusedConv``: Conv followed by Relu, Sigmoid, Tanh, LeakyRelu, Clip or HardSigmoid.
* ``FusedGemm``: Gemm followed by Relu, Sigmoid, Tanh or LeakyRelu.
* ``Gelu`` / ``FastGelu``: a decomposed (or opset-20) GELU, erf / tanh form; with a constant
  1-D bias Add in front, ``BiasGelu`` / ``FastGelu(x, bias)``.
* ``SkipLayerNormalization``: ``LayerNormalization(a + b [+ bias])`` over the last axis of 3-D
  tensors; when the sum is also read elsewhere (pre-norm transformers carry it on as the
  residual stream), those readers take the op's fourth output.

Only float32 (and float16 for the transformer ops) is fused: the contrib kernels do not cover
other types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.activations import GeluParts, match_gelu
from onnxforge.passes.fusion.matching import elem_type, scalar
from onnxforge.rules import MS_DOMAIN, Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule

_F32 = onnx.TensorProto.FLOAT
_F16 = onnx.TensorProto.FLOAT16


def _require_types(v: Value | None, allowed: tuple[int, ...], what: str) -> None:
    et = elem_type(v)
    if et not in allowed:
        raise MatchFailed(f"{what} has element type {et}, the contrib kernel takes {allowed}")


def _activation(node: Node, rc: RewriteContext) -> tuple[str, list[float]]:
    return conv_activation(node, rc.const, rc.opset)


def conv_activation(node: Node, const: Callable[[Value | None], np.ndarray | None], opset: int) -> tuple[str, list[float]]:
    """The ``activation`` / ``activation_params`` attributes onnxruntime's fused convolutions
    (``FusedConv``, ``com.microsoft.nchwc::Conv``) take for activation ``node``; ``const`` reads
    constant inputs, ``opset`` is the default domain's version. Raises MatchFailed otherwise."""
    op = node.op_type
    if op in ("Relu", "Sigmoid", "Tanh"):
        return op, []
    if op == "LeakyRelu":
        return op, [float(node.attr("alpha", 0.01))]
    if op == "HardSigmoid":
        return op, [float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))]
    if op == "Clip":
        if opset < 11:
            lo, hi = node.attr("min"), node.attr("max")
        else:
            lo = scalar(const(node.input(1))) if node.input(1) is not None and node.input(1).name else None  # type: ignore[union-attr]
            hi = scalar(const(node.input(2))) if node.input(2) is not None and node.input(2).name else None  # type: ignore[union-attr]
            for i in (1, 2):
                v = node.input(i)
                if v is not None and v.name and const(v) is None:
                    raise MatchFailed("Clip bounds are not constants")
        f32 = np.finfo(np.float32)
        return "Clip", [float(f32.min if lo is None else lo), float(f32.max if hi is None else hi)]
    raise MatchFailed(f"{op} is not an activation FusedConv takes")


@dataclass
class ConvActivationMatch(Match):
    conv: Node
    #: FusedConv's ``activation`` and ``activation_params``.
    activation: str
    params: list[float]


class FuseConvActivation(Rule[ConvActivationMatch]):
    """Conv + activation → ``com.microsoft::FusedConv``."""

    name = "ort-fused-conv"
    summary = "Fuse Conv + Relu/Sigmoid/Tanh/LeakyRelu/Clip/HardSigmoid into com.microsoft FusedConv."
    anchors: ClassVar[tuple[str, ...]] = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid")

    def match(self, node: Node, rc: RewriteContext) -> ConvActivationMatch:
        conv = rc.producer(node.input(0), "Conv", "activation input")
        rc.single_consumer(conv.output(0), "Conv output")
        _require_types(conv.output(0), (_F32,), "Conv output")
        activation, params = _activation(node, rc)
        return ConvActivationMatch(node, [conv, node], conv, activation, params)

    def rewrite(self, m: ConvActivationMatch, rb: RewriteBuilder) -> Replacement:
        conv = m.conv
        attrs = {k: conv.attr(k) for k in conv.attributes}
        attrs["activation"] = m.activation
        if m.params:
            attrs["activation_params"] = m.params
        fused = rb.op("FusedConv", list(conv.inputs), domain=MS_DOMAIN, attrs=attrs, name=conv.name)
        return Replacement.outputs(m.anchor, fused)


@dataclass
class GemmActivationMatch(Match):
    gemm: Node


class FuseGemmActivation(Rule[GemmActivationMatch]):
    """Gemm + activation → ``com.microsoft::FusedGemm``."""

    name = "ort-fused-gemm"
    summary = "Fuse Gemm + Relu/Sigmoid/Tanh/LeakyRelu into com.microsoft FusedGemm."
    anchors: ClassVar[tuple[str, ...]] = ("Relu", "Sigmoid", "Tanh", "LeakyRelu")

    def match(self, node: Node, rc: RewriteContext) -> GemmActivationMatch:
        gemm = rc.producer(node.input(0), "Gemm", "activation input")
        rc.single_consumer(gemm.output(0), "Gemm output")
        _require_types(gemm.output(0), (_F32,), "Gemm output")
        return GemmActivationMatch(node, [gemm, node], gemm)

    def rewrite(self, m: GemmActivationMatch, rb: RewriteBuilder) -> Replacement:
        gemm = m.gemm
        attrs = {k: gemm.attr(k) for k in gemm.attributes}
        attrs["activation"] = m.anchor.op_type
        if m.anchor.op_type == "LeakyRelu":
            attrs["activation_alpha"] = float(m.anchor.attr("alpha", 0.01))
        fused = rb.op("FusedGemm", list(gemm.inputs), domain=MS_DOMAIN, attrs=attrs, name=gemm.name)
        return Replacement.outputs(m.anchor, fused)


def _bias_of(x: Value, rc: RewriteContext) -> tuple[Node, Value, Value] | None:
    """``x = Add(y, bias)`` with a constant 1-D bias over the last axis: (add, y, bias)."""
    add = rc.maybe_producer(x, "Add")
    if add is None:
        return None
    for y, b in ((add.input(0), add.input(1)), (add.input(1), add.input(0))):
        arr = rc.const(b)
        ys = y.shape() if y is not None else None
        if arr is not None and arr.ndim == 1 and rc.const(y) is None and ys and ys[-1] == arr.shape[0]:
            assert y is not None and b is not None
            return add, y, b
    return None


@dataclass
class BiasGeluMatch(Match):
    #: The GELU's input (before the bias when a bias Add is fused too).
    x: Value
    bias: Value | None
    #: "none" (erf) or "tanh".
    approximate: str


class FuseBiasGelu(Rule[BiasGeluMatch]):
    """GELU (decomposed or opset-20 ``Gelu``), with an optional bias Add in front →
    ``com.microsoft`` Gelu / BiasGelu (erf) or FastGelu (tanh)."""

    name = "ort-gelu"
    summary = "Fuse [bias Add +] GELU into com.microsoft BiasGelu/Gelu/FastGelu."
    anchors: ClassVar[tuple[str, ...]] = ("Mul", "Gelu")

    def match(self, node: Node, rc: RewriteContext) -> BiasGeluMatch:
        if node.op_type == "Gelu":
            x = node.input(0)
            if x is None:
                raise MatchFailed("Gelu without input")
            parts = GeluParts(x, str(node.attr("approximate", "none")), [node])
        else:
            parts = match_gelu(node, rc)
        _require_types(parts.x, (_F32, _F16), "GELU input")
        nodes = list(parts.nodes)
        bias = _bias_of(parts.x, rc)
        if bias is not None and rc.exclusive(bias[0].output(0), nodes):
            add, y, b = bias
            nodes.append(add)
            return BiasGeluMatch(node, nodes, y, b, parts.approximate)
        return BiasGeluMatch(node, nodes, parts.x, None, parts.approximate)

    def rewrite(self, m: BiasGeluMatch, rb: RewriteBuilder) -> Replacement:
        x, bias = m.x, m.bias
        if m.approximate == "tanh":
            op = "FastGelu"
            inputs = [x] if bias is None else [x, bias]
        else:
            op = "Gelu" if bias is None else "BiasGelu"
            inputs = [x] if bias is None else [x, bias]
        g = rb.op(op, inputs, domain=MS_DOMAIN, name=m.anchor.name)
        return Replacement.outputs(m.anchor, g)


@dataclass
class SkipLayerNormMatch(Match):
    input: Value
    skip: Value
    #: A constant 1-D bias added to ``input`` (fused as the op's bias input), or None.
    bias: Value | None
    #: The residual Add.
    add: Node
    #: The residual sum is also read elsewhere (or is a graph output): those readers take the
    #: fused op's fourth output and the Add is not part of the match.
    sum_readers: bool


class FuseSkipLayerNorm(Rule[SkipLayerNormMatch]):
    """``LayerNormalization(a + b [+ bias])`` on 3-D tensors → ``SkipLayerNormalization``."""

    name = "ort-skip-layer-norm"
    summary = "Fuse a residual Add (and a bias Add) + LayerNormalization into com.microsoft SkipLayerNormalization."
    anchors: ClassVar[tuple[str, ...]] = ("LayerNormalization",)

    def match(self, node: Node, rc: RewriteContext) -> SkipLayerNormMatch:
        x = node.input(0)
        shape = x.shape() if x is not None else None
        if shape is None or len(shape) != 3:
            raise MatchFailed("LayerNormalization input is not known to be 3-D")
        if int(node.attr("axis", -1)) not in (-1, 2):
            raise MatchFailed("LayerNormalization is not over the last axis")
        if any(o is not None for o in node.outputs[1:]):
            raise MatchFailed("LayerNormalization mean/inv-std outputs are used")
        _require_types(x, (_F32, _F16), "LayerNormalization input")
        gamma = rc.require_const(node.input(1), "LayerNorm scale")
        if gamma.ndim != 1:
            raise MatchFailed("LayerNorm scale is not 1-D")
        beta_v = node.input(2)
        if beta_v is not None and (rc.const(beta_v) is None or rc.const(beta_v).ndim != 1):  # type: ignore[union-attr]
            raise MatchFailed("LayerNorm bias is not a 1-D constant")
        add = rc.producer(x, "Add", "LayerNorm input")
        a, b = add.input(0), add.input(1)
        if a is None or b is None or rc.const(a) is not None or rc.const(b) is not None:
            raise MatchFailed("the residual Add has a constant operand")
        if a.shape() != b.shape() or a.shape() != shape:
            ca, cb = rc.concrete_shape(a), rc.concrete_shape(b)
            if ca is None or ca != cb:
                raise MatchFailed("the residual Add broadcasts (or its operand shapes are not known to match)")
        nodes = [node]
        inp, skip, bias_v, bias_add = a, b, None, None
        for cand, other in ((a, b), (b, a)):
            bias = _bias_of(cand, rc)
            if bias is not None and rc.exclusive(bias[0].output(0), [add]) and bias[0].input(0) is not other:
                bias_add, inp, bias_v = bias
                skip = other
                break
        total = add.output(0)
        assert total is not None
        sum_readers = bool([u for u in total.consumers() if u is not node]) or total.is_graph_output()
        if not sum_readers:
            nodes.append(add)
            if bias_add is not None:
                nodes.append(bias_add)
        elif bias_add is not None:
            # the sum is kept, so the bias Add is too: the fused op reads its output
            biased = bias_add.output(0)
            assert biased is not None
            inp, bias_v = biased, None
        return SkipLayerNormMatch(node, nodes, inp, skip, bias_v, add, sum_readers)

    def rewrite(self, m: SkipLayerNormMatch, rb: RewriteBuilder) -> Replacement:
        node = m.anchor
        inputs: list[Value | None] = [m.input, m.skip, node.input(1), node.input(2)]
        if m.bias is not None:
            if inputs[3] is None:
                et = node.input(1).elem_type() or _F32  # type: ignore[union-attr]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(et)
                inputs[3] = rb.constant(np.zeros_like(rb.const(node.input(1)), dtype=dtype), f"{node.name}_beta")
            inputs.append(m.bias)
        eps = float(node.attr("epsilon", 1e-5))
        if not m.sum_readers:
            sln = rb.op("SkipLayerNormalization", inputs, domain=MS_DOMAIN, attrs={"epsilon": eps}, name=node.name)
            return Replacement.outputs(node, sln)
        # outputs 1 and 2 (mean, inv std dev) are optional: left out
        out, _, _, total = rb.op_outputs(
            "SkipLayerNormalization", inputs, 4, keep=(0, 3), domain=MS_DOMAIN, attrs={"epsilon": eps}, name=node.name
        )
        return Replacement.outputs(node, out).also(m.add.output(0), total)
