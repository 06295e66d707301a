"""Seeded builders for small, realistic models shaped the way exporters write them.

Both builders return ``(model, feeds)``: an opset-17 float32 :class:`onnx.ModelProto` that passes
``onnx.checker.check_model(full_check=True)`` and a dict of inputs onnxruntime accepts. Exporter
waste (Identity, Dropout, shape arithmetic from ``Shape`` ops, Constant nodes, duplicated
initializers, no-op Casts) is included on purpose so cleanup passes have work to do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxforge.models.model_proto import make_model


class _GraphBuilder:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def _name(self, base: str) -> str:
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        name = self._name(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def const_node(self, name: str, arr: np.ndarray) -> str:
        out = self._name(name)
        self.nodes.append(
            helper.make_node(
                "Constant", [], [out], name=self._name("Constant"), value=numpy_helper.from_array(arr)
            )
        )
        return out

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs: Any) -> str:
        out = self._name(name or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self._name(op_type), **attrs))
        return out

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))


def _model(
    b: _GraphBuilder, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
) -> onnx.ModelProto:
    return make_model(b.nodes, name, inputs, outputs, b.initializers)


def small_cnn(seed: int = 0, batch: int = 1) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A small residual CNN classifier on ``[batch, 3, 32, 32]`` images with exporter waste.

    Graph (24 nodes): Identity → (Conv→BatchNormalization→Relu) ×2 with a residual Add → Dropout →
    MaxPool → a no-op Reshape whose target shape is computed by Shape→Gather→Unsqueeze→Concat
    from static dims (foldable; the Gather indices come from Constant nodes) →
    GlobalAveragePool → Flatten → Cast to float (a no-op) → Gemm → Softmax.
    The second BatchNormalization's mean is a duplicate of the first's (same bytes, two names);
    it is the only duplicated initializer.

    Returns the model (input ``input``, output ``probs`` ``[batch, 10]``) and seeded feeds.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    b = _GraphBuilder(rng)
    channels, classes = 8, 10

    x = b.op("Identity", ["input"], name="input_identity")
    h = x
    acts = []
    for i, cin in enumerate((3, channels), start=1):
        w = b.weight(f"conv{i}.weight", (channels, cin, 3, 3), math.sqrt(2.0 / (cin * 9)))
        bias = b.weight(f"conv{i}.bias", (channels,), 0.1)
        c = b.op(
            "Conv", [h, w, bias], name=f"conv{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]
        )
        scale = b.init(f"bn{i}.weight", rng.uniform(0.5, 1.5, channels).astype(np.float32))
        shift = b.init(f"bn{i}.bias", (rng.standard_normal(channels) * 0.1).astype(np.float32))
        if i == 1:
            mean_arr = (rng.standard_normal(channels) * 0.1).astype(np.float32)
        mean = b.init(f"bn{i}.running_mean", mean_arr)  # bn2 repeats bn1's bytes: a duplicate
        var = b.init(f"bn{i}.running_var", rng.uniform(0.5, 2.0, channels).astype(np.float32))
        n = b.op("BatchNormalization", [c, scale, shift, mean, var], name=f"bn{i}", epsilon=1e-5)
        h = b.op("Relu", [n], name=f"relu{i}")
        acts.append(h)
    r = b.op("Add", acts, name="residual")
    d = b.op("Dropout", [r], name="dropout")
    p = b.op("MaxPool", [d], name="pool", kernel_shape=[2, 2], strides=[2, 2])

    # The exporter's spelling of `p.reshape(p.size(0), p.size(1), 16, 16)`.
    shape = b.op("Shape", [p], name="pool_shape")
    dims = []
    axes = b.init("unsqueeze_axes", np.array([0], dtype=np.int64))
    for axis in (0, 1):
        idx = b.const_node(f"dim{axis}_index", np.array(axis, dtype=np.int64))
        g = b.op("Gather", [shape, idx], name=f"dim{axis}", axis=0)
        dims.append(b.op("Unsqueeze", [g, axes], name=f"dim{axis}_1d"))
    hw = b.init("pool_hw", np.array([16, 16], dtype=np.int64))
    target = b.op("Concat", [*dims, hw], name="pool_target_shape", axis=0)
    p = b.op("Reshape", [p, target], name="pool_reshaped")

    g = b.op("GlobalAveragePool", [p], name="gap")
    f = b.op("Flatten", [g], name="flat", axis=1)
    f = b.op("Cast", [f], name="flat_float", to=TensorProto.FLOAT)
    w = b.weight("fc.weight", (classes, channels), math.sqrt(1.0 / channels))
    bias = b.weight("fc.bias", (classes,), 0.1)
    logits = b.op("Gemm", [f, w, bias], name="logits", transB=1)
    b.nodes.append(helper.make_node("Softmax", [logits], ["probs"], name="Softmax", axis=1))

    model = _model(
        b,
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])],
    )
    feeds = {"input": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
    return model, feeds


def transformer_block(
    seed: int = 0,
    batch: int = 1,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    dynamic_batch: bool = False,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A BERT-style post-LayerNorm encoder layer spelled out the way ``torch.onnx`` exports it.

    Inputs: ``hidden_states`` float ``[batch, seq, hidden]`` and ``attention_mask`` int64
    ``[batch, seq]`` (1 = attend); output ``output`` ``[batch, seq, hidden]``. With
    ``dynamic_batch`` the batch dim is the symbol ``batch`` (``batch`` then only sizes the feeds).

    Spelled out: the extended mask (Unsqueeze, Cast, Sub from 1, Mul by -10000); Q/K/V as
    MatMul+Add; heads split by Reshape to a shape built from Shape→Gather→Unsqueeze→Concat (foldable
    when dims are static) and Transpose (K gets a second Transpose, unmerged); MatMul, Div by
    sqrt(d), Add mask, Softmax, MatMul; Transpose and Reshape back (shape again from Shape ops);
    output projection, residual Add; LayerNorm decomposed (ReduceMean, Sub, Pow, ReduceMean, Add
    eps, Sqrt, Div, Mul, Add); FFN with GELU decomposed through Erf (Div, Erf, Add 1, Mul, Mul 0.5);
    residual Add; LayerNorm; an Identity to the output. 88 nodes. As in real exports, small
    constants repeat under several names (Unsqueeze axes ``[0]``, each LayerNorm's eps and exponent).
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    if min(batch, seq, hidden, heads) < 1:
        raise ValueError("batch, seq, hidden and heads must be >= 1")
    rng = np.random.default_rng(seed)
    b = _GraphBuilder(rng)
    head_dim = hidden // heads
    ffn = 4 * hidden
    x = "hidden_states"

    def scalar(name: str, value: float) -> str:
        return b.init(name, np.array(value, dtype=np.float32))

    def linear(inp: str, name: str, n_in: int, n_out: int) -> str:
        w = b.weight(f"{name}.weight", (n_in, n_out), 1.0 / math.sqrt(n_in))
        bias = b.weight(f"{name}.bias", (n_out,), 0.02)
        return b.op("Add", [b.op("MatMul", [inp, w], name=f"{name}_matmul"), bias], name=name)

    def dim_1d(shape: str, axis: int, name: str) -> str:
        idx = b.const_node(f"{name}_index", np.array(axis, dtype=np.int64))
        g = b.op("Gather", [shape, idx], name=name, axis=0)
        return b.op(
            "Unsqueeze", [g, b.init(f"{name}_axes", np.array([0], dtype=np.int64))], name=f"{name}_1d"
        )

    def layer_norm(inp: str, name: str) -> str:
        mean = b.op("ReduceMean", [inp], name=f"{name}_mean", axes=[-1], keepdims=1)
        centered = b.op("Sub", [inp, mean], name=f"{name}_centered")
        sq = b.op("Pow", [centered, scalar(f"{name}.pow_exponent", 2.0)], name=f"{name}_squared")
        var = b.op("ReduceMean", [sq], name=f"{name}_var", axes=[-1], keepdims=1)
        var = b.op("Add", [var, scalar(f"{name}.eps", 1e-12)], name=f"{name}_var_eps")
        std = b.op("Sqrt", [var], name=f"{name}_std")
        normed = b.op("Div", [centered, std], name=f"{name}_normed")
        gamma = b.init(f"{name}.weight", (1.0 + rng.standard_normal(hidden) * 0.05).astype(np.float32))
        beta = b.init(f"{name}.bias", (rng.standard_normal(hidden) * 0.05).astype(np.float32))
        return b.op("Add", [b.op("Mul", [normed, gamma], name=f"{name}_scaled"), beta], name=name)

    # Extended attention mask: (1 - mask[:, None, None, :].float()) * -10000.
    m = b.op(
        "Unsqueeze", ["attention_mask", b.init("mask_axes", np.array([1, 2], dtype=np.int64))], name="mask_4d"
    )
    m = b.op("Cast", [m], name="mask_float", to=TensorProto.FLOAT)
    m = b.op("Sub", [scalar("mask_one", 1.0), m], name="mask_inverted")
    mask = b.op("Mul", [m, scalar("mask_min", -10000.0)], name="mask_additive")

    def split_heads(t: str, name: str) -> str:
        shape = b.op("Shape", [t], name=f"{name}_shape")
        bdim = dim_1d(shape, 0, f"{name}_batch")
        sdim = dim_1d(shape, 1, f"{name}_seq")
        tail = b.init(f"{name}_heads_dims", np.array([heads, head_dim], dtype=np.int64))
        target = b.op("Concat", [bdim, sdim, tail], name=f"{name}_target_shape", axis=0)
        r = b.op("Reshape", [t, target], name=f"{name}_split")
        return b.op("Transpose", [r], name=f"{name}_heads", perm=[0, 2, 1, 3])

    q = split_heads(linear(x, "query", hidden, hidden), "query")
    k = split_heads(linear(x, "key", hidden, hidden), "key")
    k = b.op("Transpose", [k], name="key_t", perm=[0, 1, 3, 2])
    v = split_heads(linear(x, "value", hidden, hidden), "value")

    scores = b.op("MatMul", [q, k], name="scores")
    scores = b.op("Div", [scores, scalar("attn_scale", math.sqrt(head_dim))], name="scores_scaled")
    scores = b.op("Add", [scores, mask], name="scores_masked")
    probs = b.op("Softmax", [scores], name="attn_probs", axis=-1)
    ctx = b.op("MatMul", [probs, v], name="context")
    ctx = b.op("Transpose", [ctx], name="context_t", perm=[0, 2, 1, 3])
    cshape = b.op("Shape", [ctx], name="context_shape")
    target = b.op(
        "Concat",
        [
            dim_1d(cshape, 0, "context_batch"),
            dim_1d(cshape, 1, "context_seq"),
            b.init("context_hidden", np.array([hidden], dtype=np.int64)),
        ],
        name="context_target_shape",
        axis=0,
    )
    ctx = b.op("Reshape", [ctx, target], name="context_merged")
    attn = linear(ctx, "attn_out", hidden, hidden)
    h1 = layer_norm(b.op("Add", [attn, x], name="attn_residual"), "attn_norm")

    f = linear(h1, "ffn_in", hidden, ffn)
    g = b.op("Div", [f, scalar("gelu_sqrt2", math.sqrt(2.0))], name="gelu_div")
    g = b.op("Erf", [g], name="gelu_erf")
    g = b.op("Add", [g, scalar("gelu_one", 1.0)], name="gelu_add")
    g = b.op("Mul", [f, g], name="gelu_mul")
    g = b.op("Mul", [g, scalar("gelu_half", 0.5)], name="gelu")
    f = linear(g, "ffn_out", ffn, hidden)
    out = layer_norm(b.op("Add", [f, h1], name="ffn_residual"), "ffn_norm")
    b.nodes.append(helper.make_node("Identity", [out], ["output"], name="output_identity"))

    bdim: int | str = "batch" if dynamic_batch else batch
    model = _model(
        b,
        "transformer_block",
        [
            helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [bdim, seq, hidden]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [bdim, seq]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [bdim, seq, hidden])],
    )
    attention_mask = np.ones((batch, seq), dtype=np.int64)
    for i in range(batch):  # right padding, different per row
        pad = int(rng.integers(0, max(1, seq // 4) + 1))
        if pad:
            attention_mask[i, seq - pad :] = 0
    feeds: dict[str, np.ndarray] = {
        "hidden_states": rng.standard_normal((batch, seq, hidden)).astype(np.float32),
        "attention_mask": attention_mask,
    }
    return model, feeds
