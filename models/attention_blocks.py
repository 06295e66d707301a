"""Small self-attention blocks built with ``onnx.helper``, shaped like the exporters' output.

:func:`attention_block` writes one multi-head self-attention block the way the TorchScript
exporter writes transformers' eager attention (BERT, ViT, GPT-2), with switches for the variants
the attention fusion has to recognize: biases, packed projections (MatMul + Split, GPT-2's Conv1D
Gemm), where the scale is applied, the mask form (transformers >= 4.48 "vmap" masks, classic
``(1 - mask) * min`` masks, GPT-2's classic causal buffer), dynamic or static shapes, and the
dtype. Inputs: ``x`` ``[batch, sequence, hidden]`` and, with a padding mask, ``attention_mask``
int64 ``[batch, sequence]``; output ``y`` ``[batch, sequence, hidden]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MASKS = ("none", "vmap", "additive")
CAUSAL = ("none", "vmap", "tril")
PACKING = ("none", "split", "conv1d")
SCALING = ("mul", "div", "qk", "q-before-reshape", "custom")


@dataclass
class _Builder:
    dtype: type
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, arr: np.ndarray | float | int | list[int] | list[float], base: str = "c") -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def fconst(self, arr: np.ndarray | float, base: str = "f") -> str:
        return self.const(np.asarray(arr, dtype=self.dtype), base)

    def iconst(self, arr: list[int] | int, base: str = "i") -> str:
        return self.const(np.asarray(arr, dtype=np.int64), base)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> str:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0]

    def op_n(self, op_type: str, inputs: list[str], n_out: int, **attrs: Any) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs


def attention_block(
    *,
    batch: int = 2,
    seq: int = 5,
    hidden: int = 16,
    heads: int = 2,
    layers: int = 1,
    bias: bool | tuple[bool, bool, bool] = True,
    packing: str = "none",
    scaling: str = "mul",
    mask: str = "none",
    causal: str = "none",
    dynamic: bool = True,
    shapes_from_split: bool = False,
    dtype: type = np.float32,
    seed: int = 0,
    weight_scale: float = 0.5,
) -> onnx.ModelProto:
    """``layers`` self-attention blocks in a row (see the module docstring); the mask is computed
    once and read by every layer, as exporters write it. ``shapes_from_split`` makes the head
    Reshapes read ``Shape`` of the split q/k and the output Reshape ``Shape`` of the transposed
    context, as GPT-2's export does. The last Reshape is named ``out_reshape``."""
    assert packing in PACKING and scaling in SCALING and mask in MASKS and causal in CAUSAL
    rng = np.random.default_rng(seed)
    b = _Builder(dtype)
    neg = float(np.finfo(dtype).min)
    bdim, sdim = ("batch", "sequence") if dynamic else (batch, seq)
    additive = None
    if mask == "vmap" or causal == "vmap":
        additive = _vmap_mask(b, mask == "vmap", causal == "vmap", neg)
    elif mask == "additive":
        additive = _additive_mask(b, neg)
    x = "x"
    for layer in range(layers):
        out = "y" if layer == layers - 1 else f"layer{layer}_out"
        _layer(
            b,
            rng,
            x,
            out,
            batch,
            seq,
            hidden,
            heads,
            bias,
            packing,
            scaling,
            causal,
            dynamic,
            shapes_from_split,
            additive,
            neg,
            weight_scale,
        )
        x = out

    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info("x", et, [bdim, sdim, hidden])]
    if mask != "none":
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [bdim, sdim]))
    graph = helper.make_graph(
        b.nodes, "attention", inputs, [helper.make_tensor_value_info("y", et, [bdim, sdim, hidden])], b.inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # value_info as the compiler's shape inference would give it (ranks, dtypes, static dims)
    return onnx.shape_inference.infer_shapes(model)


def _layer(
    b: _Builder,
    rng: np.random.Generator,
    x: str,
    out: str,
    batch: int,
    seq: int,
    hidden: int,
    heads: int,
    bias: bool | tuple[bool, bool, bool],
    packing: str,
    scaling: str,
    causal: str,
    dynamic: bool,
    shapes_from_split: bool,
    additive: str | None,
    neg: float,
    weight_scale: float,
) -> None:
    dtype = b.dtype
    d = hidden // heads
    biases = bias if isinstance(bias, tuple) else (bias, bias, bias)
    weights: list[np.ndarray] = [
        (rng.standard_normal((hidden, hidden)) * weight_scale / math.sqrt(hidden)).astype(dtype)
        for _ in range(3)
    ]
    bvecs: list[np.ndarray] = [(rng.standard_normal(hidden) * 0.5).astype(dtype) for _ in range(3)]
    if dynamic:
        shp = b.op("Shape", [x])
        ub = b.op("Unsqueeze", [b.op("Gather", [shp, b.iconst(0)], axis=0), b.iconst([0])])
        us = b.op("Unsqueeze", [b.op("Gather", [shp, b.iconst(1)], axis=0), b.iconst([0])])
        head_shape = b.op("Concat", [ub, us, b.iconst([-1]), b.iconst([d])], axis=0)
        out_shape = b.op("Concat", [ub, us, b.iconst([-1])], axis=0)
    else:
        head_shape, out_shape = b.iconst([batch, seq, -1, d]), b.iconst([batch, seq, -1])
        ub = us = ""

    static_back = [batch, seq, 3 * hidden]
    q, k, v = _projections(b, x, weights, bvecs, biases, packing, hidden, dynamic, ub, us, static_back)
    if scaling == "q-before-reshape":
        q = b.op("Mul", [q, b.fconst(1.0 / math.sqrt(d))])
    q_shape = (
        b.op("Concat", [_dims_of(b, q), b.iconst([-1]), b.iconst([d])], axis=0)
        if shapes_from_split
        else head_shape
    )
    k_shape = (
        b.op("Concat", [_dims_of(b, k), b.iconst([-1]), b.iconst([d])], axis=0)
        if shapes_from_split
        else head_shape
    )
    qt = b.op("Transpose", [b.op("Reshape", [q, q_shape])], perm=[0, 2, 1, 3])
    kt = b.op("Transpose", [b.op("Reshape", [k, k_shape])], perm=[0, 2, 3, 1])
    vt = b.op("Transpose", [b.op("Reshape", [v, k_shape])], perm=[0, 2, 1, 3])
    if scaling == "qk":
        qt = b.op("Mul", [qt, b.fconst(d**-0.25)])
        kt = b.op("Mul", [kt, b.fconst(d**-0.25)])
    scores = b.op("MatMul", [qt, kt])
    if scaling == "mul":
        scores = b.op("Mul", [scores, b.fconst(1.0 / math.sqrt(d))])
    elif scaling == "div":
        scores = b.op("Div", [scores, b.fconst(math.sqrt(d))])
    elif scaling == "custom":
        scores = b.op("Mul", [scores, b.fconst(0.3)])
    if causal == "tril":
        scores = _tril_where(b, x, scores, seq, dynamic, neg)
    if additive is not None:
        scores = b.op("Add", [scores, additive])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, vt])], perm=[0, 2, 1, 3])
    if shapes_from_split:
        out_shape = b.op("Concat", [_dims_of(b, ctx), b.iconst([-1])], axis=0)
    name = "out_reshape" if out == "y" else b.name("Reshape")
    b.nodes.append(helper.make_node("Reshape", [ctx, out_shape], [out], name=name))


def _dims_of(b: _Builder, v: str) -> str:
    """``Concat(Unsqueeze(Gather(Shape(v), 0)), Unsqueeze(Gather(Shape(v), 1)))``."""
    shp = b.op("Shape", [v])
    d0 = b.op("Unsqueeze", [b.op("Gather", [shp, b.iconst(0)], axis=0), b.iconst([0])])
    d1 = b.op("Unsqueeze", [b.op("Gather", [shp, b.iconst(1)], axis=0), b.iconst([0])])
    return b.op("Concat", [d0, d1], axis=0)


def _projections(
    b: _Builder,
    x: str,
    weights: list[np.ndarray],
    bvecs: list[np.ndarray],
    biases: tuple[bool, bool, bool],
    packing: str,
    hidden: int,
    dynamic: bool,
    ub: str,
    us: str,
    static_back: list[int],
) -> tuple[str, str, str]:
    if packing == "none":
        outs = []
        for i, (w, bv, has) in enumerate(zip(weights, bvecs, biases)):
            mm = b.op("MatMul", [x, b.fconst(w, "w")])
            # the bias first on K, as some exports write it
            outs.append(
                b.op("Add", [b.fconst(bv, "b"), mm] if i == 1 else [mm, b.fconst(bv, "b")]) if has else mm
            )
        return outs[0], outs[1], outs[2]
    w = np.concatenate(weights, axis=1)
    bv = np.concatenate([v if has else np.zeros_like(v) for v, has in zip(bvecs, biases)])
    if packing == "split":
        packed = b.op("Add", [b.op("MatMul", [x, b.fconst(w, "w")]), b.fconst(bv, "b")])
    else:  # GPT-2 Conv1D: Reshape(x, [-1, H]) → Gemm → Reshape [B, S, 3H]
        flat_shape = b.iconst([-1, hidden])
        if dynamic:
            last = b.op(
                "Squeeze",
                [
                    b.op("Slice", [b.op("Shape", [x]), b.iconst([-1]), b.iconst([2**63 - 1]), b.iconst([0])]),
                    b.iconst([0]),
                ],
            )
            flat_shape = b.op("Concat", [b.iconst([-1]), b.op("Unsqueeze", [last, b.iconst([0])])], axis=0)
        gemm = b.op("Gemm", [b.op("Reshape", [x, flat_shape]), b.fconst(w, "w"), b.fconst(bv, "b")])
        back = b.op("Concat", [ub, us, b.iconst([3 * hidden])], axis=0) if dynamic else b.iconst(static_back)
        packed = b.op("Reshape", [gemm, back])
    q, k, v = b.op_n("Split", [packed, b.iconst([hidden] * 3)], 3, axis=2)
    return q, k, v


def _range_at(b: _Builder, limit: str, axes: list[int]) -> str:
    r = b.op("Range", [b.iconst(0), limit, b.iconst(1)])
    for a in axes:  # one axis at a time, as the exporter writes it
        r = b.op("Unsqueeze", [r, b.iconst([a])])
    return r


def _vmap_mask(b: _Builder, padding: bool, causal: bool, neg: float) -> str:
    """transformers >= 4.48: ``Where(And(q_idx >= 0 [, kv_idx <= q_idx], padding), 0, min)``."""
    shp_x = b.op("Shape", ["x"])
    n_b = b.op("Gather", [shp_x, b.iconst(0)], axis=0)
    n_q = b.op("Gather", [shp_x, b.iconst(1)], axis=0)
    q_idx = _range_at(b, n_q, [0, 1, 3])
    cond = b.op("And", [b.const(np.ones((1,), dtype=bool)), b.op("GreaterOrEqual", [q_idx, b.iconst(0)])])
    if causal:
        kv_idx = _range_at(b, n_q, [0, 1, 2])
        cond = b.op("And", [cond, b.op("LessOrEqual", [kv_idx, q_idx])])
    if padding:
        m = b.op("Cast", ["attention_mask"], to=TensorProto.BOOL)
        shp_m = b.op("Shape", [m])
        n_kv = b.op("Gather", [shp_m, b.iconst(1)], axis=0)
        kv = _range_at(b, n_kv, [0, 1, 2])
        b_idx = _range_at(b, n_b, [1, 2, 3])
        index = b.op("Add", [kv, b.op("Mul", [b_idx, b.op("Gather", [shp_m, b.iconst([1])], axis=0)])])
        looked = b.op("Gather", [b.op("Flatten", [m], axis=2), index], axis=0)
        looked = b.op("Reshape", [b.op("Reshape", [looked, b.iconst([-1])]), b.op("Shape", [index])])
        cond = b.op("And", [cond, looked])
    return b.op("Where", [cond, b.fconst(0.0), b.fconst(neg)])


def _additive_mask(b: _Builder, neg: float) -> str:
    """Classic ``(1 - mask[:, None, None, :]) * min``."""
    m = b.op("Unsqueeze", [b.op("Unsqueeze", ["attention_mask", b.iconst([1])]), b.iconst([2])])
    return b.op("Mul", [b.op("Sub", [b.fconst(1.0), b.op("Cast", [m], to=_et(b))]), b.fconst(neg)])


def _tril_where(b: _Builder, x: str, scores: str, seq: int, dynamic: bool, neg: float) -> str:
    """Classic GPT-2: ``Where(bias[:, :, 0:S, 0:S], scores, min)`` with a bool tril buffer."""
    m = max(seq, 8)
    buf = b.const(np.tril(np.ones((m, m), dtype=bool)).reshape(1, 1, m, m), "causal_buffer")
    if dynamic:
        us = b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [x]), b.iconst(1)], axis=0), b.iconst([0])])
        ends = b.op("Concat", [us, us], axis=0)
    else:
        ends = b.iconst([seq, seq])
    cond = b.op("Slice", [buf, b.iconst([0, 0]), ends, b.iconst([2, 3])])
    return b.op("Where", [cond, scores, b.fconst(neg)])


def _et(b: _Builder) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(b.dtype))
