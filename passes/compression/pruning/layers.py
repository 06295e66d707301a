"""The layers pruning works on: Conv, ConvTranspose, Gemm and MatMul nodes with a constant float
weight, seen as one ``[groups, rows, features]`` matrix each.

A layer's matrix has one row per output channel (per group) and one column per input feature
of its reduction: ``(input channel, kernel position)`` for a convolution, in that order, so that
the input channels of one kernel position are ``kernel`` columns apart; ``K`` for Gemm and
MatMul. Activation statistics (:mod:`~onnxforge.passes.compression.pruning.statistics`) use the
same column order, with one more column of ones for the bias (the *intercept*), which
reconstruction may change but never prunes.

:func:`find_layers` lists them and says, for each one pruning leaves alone, why: a weight shared
with other nodes or overridable at run time, a depthwise convolution, a layer under
``min_params`` weights, the first or last prunable layer, a name the user excluded.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxforge.ir import Model, Node, Value
from onnxforge.ir.constants import constant_value

#: Ops whose weight pruning reads, by kind.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

_FLOAT_TYPES = (np.float32, np.float64, np.float16)


@dataclass
class Bias:
    """Where a layer's bias lives: input ``index`` of ``node`` (the layer itself for Conv and
    Gemm, the Add after a MatMul), a vector of ``size`` entries once reshaped, times ``scale``
    (Gemm's ``beta / alpha``) in the layer's matrix units."""

    node: Node
    index: int
    shape: tuple[int, ...]
    scale: float = 1.0

    def read(self) -> np.ndarray:
        v = self.node.input(self.index)
        arr = constant_value(v)
        assert arr is not None
        return np.asarray(arr, np.float64).reshape(-1) * self.scale


@dataclass
class Layer:
    """One prunable node: its weight seen as ``[groups, rows, features]`` (module docstring)."""

    node: Node
    name: str
    weight: Value
    groups: int
    out_channels: int
    in_channels: int  # per group (K for Gemm/MatMul)
    kernel: tuple[int, ...]
    bias: Bias | None = None
    #: True when no other prunable layer feeds it (first) or reads what it computes (last).
    first: bool = False
    last: bool = False
    #: Depth in the chain of prunable layers: layers at equal depth do not feed each other.
    depth: int = 0
    skip: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def kernel_size(self) -> int:
        return math.prod(self.kernel) if self.kernel else 1

    @property
    def features(self) -> int:
        """Columns of the matrix (per group)."""
        return self.in_channels * self.kernel_size

    @property
    def rows(self) -> int:
        """Rows of the matrix per group."""
        return self.out_channels // self.groups

    @property
    def params(self) -> int:
        return self.groups * self.rows * self.features

    @property
    def depthwise(self) -> bool:
        return self.op_type in ("Conv", "ConvTranspose") and self.groups > 1 and self.in_channels == 1

    @property
    def activation(self) -> Value | None:
        """The layer's input activation."""
        return self.node.input(0)

    def weight_array(self) -> np.ndarray:
        arr = constant_value(self.node.input(1))
        assert arr is not None
        return np.asarray(arr)

    def to_matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as ``[groups, rows, features]`` (float64)."""
        g, r = self.groups, self.rows
        w = np.asarray(w, np.float64)
        op = self.op_type
        if op == "Conv":
            return w.reshape(g, r, -1)
        if op == "ConvTranspose":
            # [C_in, C_out/g, *k] -> [g, C_out/g, C_in/g * k] with columns (c_in, kernel)
            cin = w.shape[0] // g
            k = self.kernel_size
            m = w.reshape(g, cin, r, k).transpose(0, 2, 1, 3)
            return m.reshape(g, r, cin * k)
        if op == "Gemm" and int(self.node.attr("transB", 0)):
            return w.reshape(1, r, -1)
        return w.T.reshape(1, r, -1)  # Gemm (transB=0) and MatMul: [K, N]

    def from_matrix(self, m: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The weight tensor (in ``dtype``) holding the ``[groups, rows, features]`` matrix ``m``."""
        op = self.op_type
        shape = self.weight.shape() if self.weight.const is not None else None
        if op == "Conv":
            out = m.reshape(self.out_channels, self.in_channels, *self.kernel)
        elif op == "ConvTranspose":
            g, r, k = self.groups, self.rows, self.kernel_size
            out = m.reshape(g, r, self.in_channels, k).transpose(0, 2, 1, 3).reshape(g * self.in_channels, r, *self.kernel)
        elif op == "Gemm" and int(self.node.attr("transB", 0)):
            out = m.reshape(self.out_channels, -1)
        else:
            out = m.reshape(self.out_channels, -1).T
        if shape is not None:
            out = out.reshape(tuple(int(d) for d in shape))  # type: ignore[arg-type]
        return np.ascontiguousarray(out.astype(dtype))


def layer_label(node: Node) -> str:
    return node.name or f"{node.op_type}#{node.id}"


def _float_const(v: Value | None) -> np.ndarray | None:
    if v is None or not v.is_constant():
        return None  # Constant nodes are folded to initializers by the cleanup before pruning
    arr = v.array()
    return arr if arr.dtype in _FLOAT_TYPES else None


def describe_layer(node: Node) -> tuple[Layer | None, str | None]:
    """The layer ``node`` is, or why it is none (None, None: not a layer op at all)."""
    op = node.op_type
    if op not in LAYER_OPS or not node.is_standard_domain():
        return None, None
    w_val = node.input(1)
    w = _float_const(w_val)
    if w is None or w_val is None:
        return None, "its weight is not a float constant (computed, overridable at run time, or quantized)"
    label = layer_label(node)
    if op in ("Conv", "ConvTranspose"):
        if w.ndim < 3:
            return None, "weight of unexpected rank"
        g = int(node.attr("group", 1))
        if op == "Conv":
            out_c, in_c = int(w.shape[0]), int(w.shape[1])
        else:
            if w.shape[0] % g:
                return None, "weight does not match its group count"
            out_c, in_c = int(w.shape[1]) * g, int(w.shape[0]) // g
        if g < 1 or out_c % g:
            return None, "weight does not match its group count"
        layer = Layer(node, label, w_val, g, out_c, in_c, tuple(int(d) for d in w.shape[2:]))
        b = node.input(2)
        if b is not None:
            bias = _float_const(b)
            if bias is None or bias.size != out_c:
                return None, "its bias is not a float constant"
            layer.bias = Bias(node, 2, tuple(bias.shape))
        return layer, None
    if w.ndim != 2:
        return None, "weight is not a matrix (batched MatMul)"
    if op == "Gemm":
        if int(node.attr("transA", 0)) not in (0, 1):
            return None, "unexpected transA"
        trans_b = int(node.attr("transB", 0))
        n, k = (w.shape[0], w.shape[1]) if trans_b else (w.shape[1], w.shape[0])
        layer = Layer(node, label, w_val, 1, int(n), int(k), ())
        c = node.input(2)
        if c is not None:
            arr = _float_const(c)
            alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
            if arr is not None and arr.size == n and alpha != 0 and (arr.ndim == 1 or arr.shape[0] == 1):
                layer.bias = Bias(node, 2, tuple(arr.shape), beta / alpha)
            else:
                layer.notes.append("its bias C is not a per-output vector: reconstructed without an intercept")
        return layer, None
    # MatMul: x @ W with W [K, N]
    layer = Layer(node, label, w_val, 1, int(w.shape[1]), int(w.shape[0]), ())
    out = node.output(0)
    if out is not None and out.num_uses() == 1 and not out.is_graph_output():
        (add, idx), = out.uses()
        if add.op_type == "Add" and add.is_standard_domain():
            other = add.input(1 - idx)
            arr = _float_const(other)
            if arr is not None and arr.size == layer.out_channels and arr.shape[-1] == layer.out_channels:
                layer.bias = Bias(add, 1 - idx, tuple(arr.shape))
    return layer, None


@dataclass
class LayerFilter:
    """Which layers pruning leaves alone (see :class:`~onnxforge.passes.compression.pruning.PruneOptions`)."""

    exclude: Sequence[str] = ()
    skip_first: bool = True
    skip_last: bool = False
    skip_depthwise: bool = True
    min_params: int = 0

    def reason(self, layer: Layer) -> str | None:
        if any(fnmatch.fnmatchcase(layer.name, p) for p in self.exclude):
            return "excluded by name"
        if self.skip_depthwise and layer.depthwise:
            return "depthwise convolution (few weights per output, pruning them costs much accuracy)"
        if layer.params < self.min_params:
            return f"small layer ({layer.params} weights < min_params {self.min_params})"
        if self.skip_first and layer.first:
            return "first prunable layer (it sees the raw input; skip_first)"
        if self.skip_last and layer.last:
            return "last prunable layer (skip_last)"
        return None


def find_layers(model: Model, keep: LayerFilter | None = None) -> tuple[list[Layer], dict[str, str]]:
    """The main graph's prunable layers in topological order (those the filter keeps out have
    ``skip`` set), and the reasons other Conv/Gemm/MatMul nodes are not layers, by node name.
    Linear in graph size. Nodes inside subgraphs are left alone."""
    graph = model.graph
    order = graph.topological_order()
    layers: list[Layer] = []
    refused: dict[str, str] = {}
    by_node: dict[Node, Layer] = {}
    for node in order:
        layer, why = describe_layer(node)
        if layer is not None:
            layers.append(layer)
            by_node[node] = layer
        elif why is not None:
            refused[layer_label(node)] = why
    # A weight read by several nodes stays as it is: pruning it for one would change the others.
    for layer in layers:
        w = layer.weight
        if w.num_uses() > 1:
            layer.skip = "its weight is shared with other nodes"
        elif w.is_graph_output():
            layer.skip = "its weight is a graph output"
    _mark_chain(order, by_node)
    if keep is not None:
        for layer in layers:
            if layer.skip is None:
                layer.skip = keep.reason(layer)
    _unique_names(layers)
    return layers, refused


def _mark_chain(order: Iterable[Node], by_node: dict[Node, Layer]) -> None:
    """``first``/``last``/``depth`` of each layer from one forward and one backward sweep."""
    depth: dict[Value, int] = {}  # prunable layers on the longest path into a value
    nodes = list(order)
    for node in nodes:
        d_in = max((depth.get(v, 0) for v in node.inputs if v is not None), default=0)
        layer = by_node.get(node)
        if layer is not None:
            act = node.input(0)
            d_act = depth.get(act, 0) if act is not None else 0
            layer.first = d_act == 0
            layer.depth = d_act
            d_in = max(d_in, d_act + 1)
        for v in node.outputs:
            if v is not None and d_in:
                depth[v] = d_in
    feeds_layer: dict[Value, bool] = {}
    for node in reversed(nodes):
        layer = by_node.get(node)
        downstream = any(feeds_layer.get(v, False) for v in node.outputs if v is not None)
        if layer is not None:
            layer.last = not downstream
            downstream = True
        if downstream:
            for v in node.inputs:
                if v is not None:
                    feeds_layer[v] = True


def _unique_names(layers: list[Layer]) -> None:
    seen: dict[str, int] = {}
    for layer in layers:
        seen[layer.name] = seen.get(layer.name, 0) + 1
    for layer in layers:
        if seen[layer.name] > 1:
            layer.name = f"{layer.name}#{layer.node.id}"


def set_input_constant(model: Model, node: Node, index: int, data: np.ndarray) -> None:
    """Give input ``index`` of ``node`` the constant ``data``: in place when no other node reads
    the old constant, else as a new initializer for this node alone."""
    old = node.input(index)
    graph = node.graph
    assert graph is not None
    if old is not None and old.is_constant() and old.num_uses() == 1 and not old.is_graph_output():
        if old.name in graph.initializers:
            old.set_const(data)
            return
    base = old.name if old is not None else f"{node.name or node.op_type}_param"
    node.set_input(index, graph.add_initializer(base, data))


def dtype_of(layer: Layer) -> np.dtype:
    return np.dtype(layer.weight_array().dtype)


def nm_qualifies(layer: Layer, m: int) -> bool:
    """Whether ``layer``'s input channels split into whole groups of ``m``."""
    return layer.in_channels % m == 0


def tensorrt_sparse_eligible(layer: Layer) -> bool:
    """TensorRT's structured-sparsity kernels (Ampere and later) take a layer whose output
    channels are a multiple of 8 and input channels a multiple of 16 (the rule NVIDIA's ASP
    tool applies before pruning 2:4) and that is not grouped."""
    return layer.groups == 1 and layer.out_channels % 8 == 0 and layer.in_channels % 16 == 0


__all__ = [
    "LAYER_OPS",
    "Bias",
    "Layer",
    "LayerFilter",
    "describe_layer",
    "dtype_of",
    "find_layers",
    "layer_label",
    "nm_qualifies",
    "set_input_constant",
    "tensorrt_sparse_eligible",
]
