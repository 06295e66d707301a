"""The ``ort-attention`` rule: the stages put together, and the rewrite into
``com.microsoft::Attention`` (see the package docstring for the pattern)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.attention.context import match_context
from onnxforge.passes.fusion.attention.heads import K_PERM, Q_PERM, V_PERM, Head, match_head
from onnxforge.passes.fusion.attention.masks import MaskSpec, existing_mask_index
from onnxforge.passes.fusion.attention.scores import match_scores
from onnxforge.passes.fusion.attention.shapes import absorb_shape_readers, check_shapes
from onnxforge.rules import MS_DOMAIN, Match, MatchFailed, Replacement, RewriteBuilder, RewriteContext, Rule

log = logging.getLogger(__name__)

_TP = onnx.TensorProto
#: Element types the fused op is used for, with their numpy dtypes.
FLOAT_TYPES: dict[int, type] = {_TP.FLOAT: np.float32, _TP.FLOAT16: np.float16}


@dataclass
class QKV:
    """The three heads, in the order the fused op packs them."""

    q: Head
    k: Head
    v: Head

    def __iter__(self) -> Iterator[Head]:
        return iter((self.q, self.k, self.v))


@dataclass
class AttentionMatch(Match):
    #: The attention input (``[B, S, H_in]``), which every projection reads.
    x: Value
    heads: QKV
    num_heads: int
    head_size: int
    #: The product of every scalar factor on the way (q, k and the scores).
    scale: float
    mask: MaskSpec
    #: ``mask.source`` as int32 when the graph already has it (else the rewrite casts it).
    mask_index: Value | None
    #: numpy dtype of the input, weights and biases.
    dtype: type


def check_types(x: Value, heads: QKV) -> type:
    """The dtype of the input (of the weights when the input's is not annotated: MatMul and
    Gemm take one type for both); float32 or float16 only."""
    et = x.elem_type()
    if et is None:
        et = onnx.helper.np_dtype_to_tensor_dtype(heads.q.proj.weight.dtype)
    if et not in FLOAT_TYPES:
        raise MatchFailed(f"input dtype is {_TP.DataType.Name(et)}, not float32/float16")
    dtype = FLOAT_TYPES[et]
    for h in heads:
        if h.proj.weight.dtype != dtype or (h.proj.bias is not None and h.proj.bias.dtype != dtype):
            raise MatchFailed("weights or biases do not have the input's dtype")
    return dtype


class AttentionFusion(Rule[AttentionMatch]):
    """Exported multi-head self-attention → ``com.microsoft::Attention`` (see the package
    docstring for the patterns and the equivalence guaranteed)."""

    name = "ort-attention"
    summary = "Fuse exported BERT/ViT/GPT-2 self-attention into onnxruntime's Attention contrib op."
    anchors: ClassVar[tuple[str, ...]] = ("Reshape",)
    min_opset = 11

    def match(self, node: Node, rc: RewriteContext) -> AttentionMatch:
        context = match_context(node, rc)
        v_head = match_head(context.matmul.input(1), V_PERM, rc, "V", scalable=False)
        scores = match_scores(context.softmax.input(0), rc)
        q_head = match_head(scores.qk.input(0), Q_PERM, rc, "Q", scalable=True)
        k_head = match_head(scores.qk.input(1), K_PERM, rc, "K", scalable=True)
        heads = QKV(q_head, k_head, v_head)
        x = q_head.proj.x
        if any(h.proj.x is not x for h in heads):
            raise MatchFailed("Q, K and V are not projections of the same input")
        dtype = check_types(x, heads)
        num_heads, head_size = check_shapes(node, context, scores, list(heads), rc)
        scale = q_head.scale * k_head.scale * scores.scale
        if scale == 0.0:
            raise MatchFailed("the attention scale is zero")
        nodes = list(
            dict.fromkeys(
                [
                    node,
                    context.transpose,
                    context.matmul,
                    context.softmax,
                    *scores.nodes,
                    *(n for h in heads for n in h.nodes),
                ]
            )
        )
        nodes = absorb_shape_readers(nodes, node)
        source = scores.mask.source
        mask_index = existing_mask_index(source, rc) if source is not None else None
        return AttentionMatch(node, nodes, x, heads, num_heads, head_size, scale, scores.mask, mask_index, dtype)

    def rewrite(self, m: AttentionMatch, rb: RewriteBuilder) -> Replacement:
        weight: np.ndarray = np.concatenate([h.proj.weight for h in m.heads], axis=1).astype(m.dtype)
        bias: np.ndarray = np.concatenate(
            [h.proj.bias if h.proj.bias is not None else np.zeros(h.proj.weight.shape[1]) for h in m.heads]
        ).astype(m.dtype)
        base = m.anchor.name or "attention"
        inputs: list[Value | None] = [
            m.x,
            rb.constant(weight, f"{base}_qkv_weight"),
            rb.constant(bias, f"{base}_qkv_bias"),
        ]
        attrs: dict[str, object] = {"num_heads": int(m.num_heads)}
        if m.mask.source is not None:
            index = m.mask_index if m.mask_index is not None else _cast_mask_index(rb, m.mask.source)
            inputs.append(index)
        if m.mask.causal:
            attrs["unidirectional"] = 1
        if m.mask.fill is not None:
            attrs["mask_filter_value"] = float(m.mask.fill)
        scale = float(m.scale)
        if np.float32(scale) != np.float32(1.0 / math.sqrt(float(m.head_size))):
            attrs["scale"] = scale
        out = rb.op("Attention", inputs, domain=MS_DOMAIN, attrs=attrs, name=f"{base}_attention")
        log.debug("fused attention %s: %d heads of %d", base, m.num_heads, m.head_size)
        return Replacement.outputs(m.anchor, out)


def _cast_mask_index(rb: RewriteBuilder, source: Value) -> Value:
    """``Cast(source, int32)``, typed, which the next layers' fusions will find and share."""
    out = rb.op("Cast", [source], attrs={"to": _TP.INT32}, name=f"{source.name}_mask_index")
    shape = source.shape()
    out.type = onnx.helper.make_tensor_type_proto(_TP.INT32, None if shape is None else list(shape))
    return out
