"""Channel dependency groups on the ONNX graph: which channels must be removed together.

A *group* is a set of channels that are one and the same in every tensor they flow through:
removing channel ``i`` of the group removes, everywhere at once, a row of every layer that
produces it (*sources*: Conv/ConvTranspose/Gemm/MatMul output channels), the matching entries of
every per-channel parameter on the way (BatchNormalization, biases, per-channel constants of
elementwise ops, depthwise convolutions), and a column block of every layer that reads it
(*sinks*: their input channels). Each tensor a group reaches is a *member* with a :class:`Slot`:
the axis carrying the channels, where the group's first channel starts on it, and how many
entries each channel spans (``block``: a channel of a Conv flattened into a Gemm spans ``H·W``
features; an attention head spans ``head_dim``).

A group grows from a source in both directions over every use and producer of each member:

* channel-preserving ops pass it on (activations, Cast/Identity/Dropout, pooling, Pad and Resize
  with nothing on the channel axis, Transpose (the axis moves), Softmax/LayerNormalization/
  reductions over other axes); BatchNormalization and InstanceNormalization slice their
  parameters;
* elementwise ops with broadcasting tie their operands: a residual ``Add``/``Mul`` of two
  activations puts both in the group (so a whole ResNet stage is one group), a constant operand
  is sliced where it has the channel axis;
* a depthwise convolution passes channels through (its weight, bias and ``group`` shrink);
* ``Concat`` along the axis puts the group at an offset of its output, ``Split`` maps offsets
  back; ``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze`` map the slot through the shapes (a
  channel becomes ``H·W`` features of a Flatten; ``[B, S, 384] → [B, S, 12, 32]`` needs whole
  heads, so the group is rebuilt with 32-entry channels: attention-head pruning), editing a
  literal channel count in a Reshape's shape constant;
* a MatMul of two activations ties the operands' shared axes (attention: the head axis of
  queries, keys, scores, values and context).

A group cannot be pruned (``blocked``, with the reason) when it reaches a graph input or output
(their shapes never change), a subgraph, a grouped (non-depthwise) convolution, a normalization
or softmax over the channels, an op the rules do not know, or a tensor twice with different
mappings. Each value and node is visited a bounded number of times per group: linear in graph
size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from onnxforge.analysis.shapes import ShapeTable
from onnxforge.ir import Model, Node, Value
from onnxforge.ir.constants import constant_value
from onnxforge.passes.compression.pruning.layers import layer_label

#: Ops that keep every axis of their first input and compute elementwise.
UNARY = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
        "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round",
        "Sin", "Cos", "Identity", "Cast", "Dropout", "Clip", "ThresholdedRelu", "Mish", "Sign", "Not", "IsNaN",
        "IsInf", "CastLike",
    }
)
#: Elementwise ops of several inputs, with broadcasting.
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater", "And", "Or"})
POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"})
REDUCES = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"}
)
RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


class Blocked(Exception):
    """The group cannot be pruned; the message says why."""


class Coarsen(Exception):
    """The group's channels must span ``factor`` entries of the source axis (attention heads)."""

    def __init__(self, factor: int) -> None:
        super().__init__(f"coarsen by {factor}")
        self.factor = factor


@dataclass(frozen=True)
class Slot:
    """Where a group's channels sit on a tensor: ``axis``; channel ``i`` spans entries
    ``[start + i·block, start + (i+1)·block)``."""

    axis: int
    start: int
    block: int


@dataclass(frozen=True)
class ParamEdit:
    """Input ``index`` of ``node`` (a constant) loses the group's removed channels along ``axis``."""

    node: Node
    index: int
    axis: int
    start: int
    block: int


@dataclass(frozen=True)
class ShapeEdit:
    """A literal dimension of a shape constant (input ``index`` of ``node``) at ``position``
    shrinks by ``block`` per removed channel; ``kind``: ``shape`` (Reshape and the constants its
    shape is concatenated from) or ``split`` (Split sizes: output ``position``)."""

    node: Node
    index: int
    position: int
    block: int
    kind: str = "shape"


@dataclass
class ChannelGroup:
    """One dependency group (module docstring). ``size``: its channels; ``block``: entries of
    the source axis per channel (1, or a head's width)."""

    id: int
    size: int
    block: int = 1
    members: dict[Value, Slot] = field(default_factory=dict)
    params: list[ParamEdit] = field(default_factory=list)
    shapes: list[ShapeEdit] = field(default_factory=list)
    #: (node, weight ParamEdit) of each producer of the channels and each reader of them.
    sources: list[tuple[Node, ParamEdit]] = field(default_factory=list)
    sinks: list[tuple[Node, ParamEdit]] = field(default_factory=list)
    depthwise: list[Node] = field(default_factory=list)
    blocked: str | None = None

    @property
    def names(self) -> list[str]:
        return [layer_label(n) for n, _ in self.sources]

    @property
    def sink_names(self) -> list[str]:
        return [layer_label(n) for n, _ in self.sinks]


def _rank(v: Value, shapes: ShapeTable | None, depth: int = 0) -> int | None:
    """The rank of ``v``: from the shape table, the declared type, or (for elementwise and
    channel-preserving producers) its inputs' ranks."""
    info = shapes.info(v) if shapes is not None else None
    if info is not None:
        return info.rank
    s = v.shape()
    if s is not None:
        return len(s)
    p = v.producer
    if p is None or depth > 32 or not p.is_standard_domain():
        return None
    op = p.op_type
    if op in UNARY or op in ("BatchNormalization", "InstanceNormalization", "Resize", "Upsample", "Pad", "Softmax",
                             "LayerNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                             "Conv", "ConvTranspose", "Transpose", "Concat", "Split", "Slice"):
        x = p.input(0)
        return _rank(x, shapes, depth + 1) if x is not None else None
    if op in BINARY:
        ranks = [_rank(x, shapes, depth + 1) for x in p.inputs if x is not None]
        return None if any(r is None for r in ranks) else max(ranks)  # type: ignore[type-var]
    return None


def _dims(v: Value, shapes: ShapeTable | None) -> tuple[int, ...] | None:
    info = shapes.info(v) if shapes is not None else None
    if info is not None:
        return info.shape
    return v.static_shape()


def _const(v: Value | None) -> np.ndarray | None:
    try:
        return constant_value(v)
    except ValueError:
        return None


def _ints(node: Node, attr: str, index: int) -> list[int] | None:
    """An int-list operand given as an attribute (older opsets) or a constant input."""
    a = node.attr(attr, None)
    if a is not None:
        return [int(x) for x in a]
    if index < len(node.inputs) and node.input(index) is not None:
        arr = _const(node.input(index))
        return None if arr is None else [int(x) for x in np.asarray(arr).reshape(-1)]
    return None


class _Grower:
    """Grows one group from a source (module docstring); raises :class:`Blocked` or
    :class:`Coarsen`."""

    def __init__(self, group: ChannelGroup, shapes: ShapeTable | None, conv_weight_ok: set[Node]) -> None:
        self.g = group
        self.shapes = shapes
        self.todo: list[tuple[Value, Slot]] = []
        self.seen_nodes: set[tuple[int, int]] = set()
        self.conv_weight_ok = conv_weight_ok

    # -- bookkeeping ------------------------------------------------------------------------
    def add(self, v: Value | None, slot: Slot) -> None:
        if v is None:
            raise Blocked("an omitted tensor carries the channels")
        have = self.g.members.get(v)
        if have is not None:
            if have != slot:
                raise Blocked(f"{v.name!r} carries the channels twice with different layouts")
            return
        self.g.members[v] = slot
        self.todo.append((v, slot))

    def param(self, node: Node, index: int, axis: int, slot: Slot) -> ParamEdit:
        v = node.input(index)
        arr = _const(v)
        if arr is None or v is None or v.is_graph_input():
            raise Blocked(f"{layer_label(node)} input {index} is not a constant")
        axis = axis if axis >= 0 else arr.ndim + axis
        if not 0 <= axis < arr.ndim or arr.shape[axis] < slot.start + self.g.size * slot.block:
            raise Blocked(f"{layer_label(node)} input {index} does not cover the channels")
        edit = ParamEdit(node, index, axis, slot.start, slot.block)
        self.g.params.append(edit)
        return edit

    def grow(self, v: Value, slot: Slot) -> None:
        self.add(v, slot)
        while self.todo:
            value, s = self.todo.pop()
            if value.is_graph_output():
                raise Blocked(f"reaches the graph output {value.name!r} (its shape never changes)")
            if value.is_graph_input() or value.is_initializer():
                raise Blocked(f"reaches the graph input {value.name!r}")
            self.backward(value, s)
            for node, idx in value.uses():
                if node.graph is not value.graph:
                    raise Blocked(f"{value.name!r} is read inside a subgraph")
                self.forward(node, idx, value, s)

    # -- producers --------------------------------------------------------------------------
    def backward(self, v: Value, s: Slot) -> None:
        p = v.producer
        if p is None:
            raise Blocked(f"{v.name!r} has no producer")
        key = (p.id, -1 - (v.index or 0))
        if key in self.seen_nodes:
            return
        self.seen_nodes.add(key)
        if not p.is_standard_domain():
            raise Blocked(f"produced by {p.domain}::{p.op_type} {layer_label(p)}")
        op = p.op_type
        if op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and self._source(p, v, s):
            return
        if op == "Conv" and self._depthwise(p) and s.axis == 1:
            self._depthwise_edits(p, s)
            self.add(p.input(0), s)
            return
        self._through(p, v, s)

    def _through(self, p: Node, v: Value, s: Slot) -> None:
        """Map the channels of ``p``'s output ``v`` to its inputs (the forward visit from those
        inputs records parameters and checks the op)."""
        op = p.op_type
        if op in UNARY or op in POOLS or op in ("BatchNormalization", "InstanceNormalization", "Pad", "Resize", "Upsample",
                                                 "Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "LpNormalization",
                                                 "Slice", "PRelu"):
            self.add(p.input(0), s)
            return
        if op in BINARY:
            ro = _rank(v, self.shapes)
            if ro is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            for k, x in enumerate(p.inputs):
                if x is None or _const(x) is not None or (op == "Where" and k == 0):
                    continue
                r = _rank(x, self.shapes)
                dims = _dims(x, self.shapes)
                if r is None:
                    raise Blocked(f"{layer_label(p)}: unknown rank")
                axis = s.axis - (ro - r)
                if axis >= 0 and (dims is None or dims[axis] != 1):
                    self.add(x, Slot(axis, s.start, s.block))
            return
        if op == "Transpose":
            rank = _rank(v, self.shapes)
            perm = p.attr("perm", None)
            perm = list(perm) if perm is not None else (list(reversed(range(rank))) if rank is not None else None)
            if perm is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            self.add(p.input(0), Slot(perm[s.axis], s.start, s.block))
            return
        if op in RESHAPES:
            x = p.input(0)
            di, do = (_dims(x, self.shapes) if x is not None else None), _dims(v, self.shapes)
            if di is None or do is None:
                raise Blocked(f"{layer_label(p)}: unknown shapes")
            self.add(x, map_slot(do, di, s, self.g.size))
            return
        if op == "Concat":
            rank = _rank(v, self.shapes)
            if rank is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            axis = int(p.attr("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if axis != s.axis:
                for x in p.inputs:
                    if x is not None and _const(x) is None:
                        self.add(x, s)
                return
            lo, hi = s.start, s.start + self.g.size * s.block
            offset = 0
            for x in p.inputs:
                dims = _dims(x, self.shapes) if x is not None else None
                if dims is None or x is None:
                    raise Blocked(f"{layer_label(p)}: unknown sizes of its inputs")
                if offset <= lo and hi <= offset + dims[axis]:
                    if _const(x) is not None:
                        raise Blocked(f"{layer_label(p)} concatenates constant channels")
                    self.add(x, Slot(axis, lo - offset, s.block))
                    return
                offset += dims[axis]
            raise Blocked(f"{layer_label(p)} concatenates the channels from several inputs")
        if op == "Split":
            rank = _rank(v, self.shapes)
            if rank is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            axis = int(p.attr("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if axis != s.axis:
                self.add(p.input(0), s)
                return
            offset = 0
            for o in p.outputs[: v.index or 0]:
                dims = _dims(o, self.shapes) if o is not None else None
                if dims is None:
                    raise Blocked(f"{layer_label(p)}: unknown output sizes")
                offset += dims[axis]
            self.add(p.input(0), Slot(axis, s.start + offset, s.block))
            return
        if op == "MatMul":
            a, b = p.input(0), p.input(1)
            ro = _rank(v, self.shapes)
            ra = _rank(a, self.shapes) if a is not None else None
            rb = _rank(b, self.shapes) if b is not None else None
            if ro is None or ra is None or rb is None or a is None or b is None:
                raise Blocked(f"{layer_label(p)}: unknown ranks")
            if s.axis == ro - 2:
                self.add(a, Slot(ra - 2, s.start, s.block))
                return
            if s.axis == ro - 1:
                if _const(b) is not None:
                    raise Blocked(f"{layer_label(p)}: its weight is not a [K, N] matrix")
                self.add(b, Slot(rb - 1, s.start, s.block))
                return
            for x, r in ((a, ra), (b, rb)):
                axis = s.axis - (ro - r)
                dims = _dims(x, self.shapes)
                if axis >= 0 and (dims is None or dims[axis] != 1):
                    self.add(x, Slot(axis, s.start, s.block))
            return
        if op in REDUCES:
            x = p.input(0)
            rank = _rank(x, self.shapes) if x is not None else None
            axes = _ints(p, "axes", 1)
            if rank is None or not axes:
                raise Blocked(f"{layer_label(p)}: unknown reduction")
            axes = [a + rank if a < 0 else a for a in axes]
            if int(p.attr("keepdims", 1)):
                self.add(x, s)
                return
            kept = [a for a in range(rank) if a not in axes]
            self.add(x, Slot(kept[s.axis], s.start, s.block))
            return
        if op == "Gather":
            x, ind = p.input(0), p.input(1)
            rank = _rank(x, self.shapes) if x is not None else None
            r_ind = _rank(ind, self.shapes) if ind is not None else None
            if rank is None or r_ind is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            axis = int(p.attr("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if axis <= s.axis < axis + r_ind:
                raise Blocked(f"{layer_label(p)} gathers the channels")
            self.add(x, Slot(s.axis if s.axis < axis else s.axis - r_ind + 1, s.start, s.block))
            return
        if op in ("Expand", "Tile"):
            x = p.input(0)
            ro, r = _rank(v, self.shapes), (_rank(x, self.shapes) if x is not None else None)
            if ro is None or r is None:
                raise Blocked(f"{layer_label(p)}: unknown rank")
            self.add(x, Slot(s.axis - (ro - r), s.start, s.block))
            return
        raise Blocked(f"channels produced by {op} {layer_label(p)}, which the channel rules do not cover")

    def _source(self, p: Node, v: Value, s: Slot) -> bool:
        """Record ``p`` as a producer of the channels when its weight rows are them."""
        op = p.op_type
        w = _const(p.input(1))
        if w is None or (p.input(1) is not None and p.input(1).is_graph_input()):  # type: ignore[union-attr]
            return False
        if op in ("Conv", "ConvTranspose"):
            if s.axis != 1:
                raise Blocked(f"{layer_label(p)}: channels on a spatial axis")
            if int(p.attr("group", 1)) != 1:
                if op == "Conv" and self._depthwise(p):
                    return False
                raise Blocked(f"grouped convolution {layer_label(p)} (group={p.attr('group', 1)}) ties channels across groups")
            axis = 0 if op == "Conv" else 1
        elif op == "Gemm":
            if s.axis != 1:
                raise Blocked(f"{layer_label(p)}: channels on the batch axis")
            axis = 0 if int(p.attr("transB", 0)) else 1
        else:
            rank = _rank(v, self.shapes)
            if w.ndim != 2 or rank is None or s.axis != rank - 1:
                return False
            axis = 1
        edit = self.param(p, 1, axis, s)
        self.g.sources.append((p, edit))
        if op in ("Conv", "ConvTranspose") and p.input(2) is not None:
            self.param(p, 2, 0, s)
        if op == "Gemm" and p.input(2) is not None:
            self._broadcast_param(p, 2, 2, s)
        return True

    def _depthwise(self, p: Node) -> bool:
        w = _const(p.input(1))
        g = int(p.attr("group", 1))
        return w is not None and w.ndim >= 3 and g > 1 and w.shape[1] == 1 and w.shape[0] == g

    def _depthwise_edits(self, p: Node, s: Slot) -> None:
        self.param(p, 1, 0, s)
        if p.input(2) is not None:
            self.param(p, 2, 0, s)
        if p not in self.g.depthwise:
            self.g.depthwise.append(p)

    def _broadcast_param(self, node: Node, index: int, out_rank: int, s: Slot) -> None:
        """Slice a constant operand broadcast against an output of ``out_rank`` dims where it
        has the channel axis (dims of 1 broadcast and are left alone)."""
        arr = _const(node.input(index))
        if arr is None:
            raise Blocked(f"{layer_label(node)} input {index} is not a constant")
        axis = s.axis - (out_rank - arr.ndim)
        if axis < 0 or arr.shape[axis] == 1:
            return
        self.param(node, index, axis, s)

    # -- consumers --------------------------------------------------------------------------
    def forward(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        key = (n.id, idx)
        if key in self.seen_nodes:
            return
        self.seen_nodes.add(key)
        if not n.is_standard_domain():
            raise Blocked(f"consumed by {n.domain}::{n.op_type} {layer_label(n)}")
        if n.has_subgraphs():
            raise Blocked(f"consumed by {n.op_type} {layer_label(n)} (a node with subgraphs)")
        op = n.op_type
        if op == "Shape":
            return  # reads the shape only; what it computes follows the pruned shape
        if op == "Conv" and idx == 0:
            if self._depthwise(n):
                if s.axis != 1:
                    raise Blocked(f"{layer_label(n)}: channels on a spatial axis")
                self._depthwise_edits(n, s)
                self.add(n.output(0), s)
                return
            if int(n.attr("group", 1)) != 1:
                raise Blocked(f"grouped convolution {layer_label(n)} (group={n.attr('group', 1)}) ties channels across groups")
            if s.axis != 1:
                raise Blocked(f"{layer_label(n)}: channels on a spatial axis")
            self.g.sinks.append((n, self.param(n, 1, 1, s)))
            return
        if op == "ConvTranspose" and idx == 0:
            if int(n.attr("group", 1)) != 1 or s.axis != 1:
                raise Blocked(f"{layer_label(n)} is grouped or reads channels on a spatial axis")
            self.g.sinks.append((n, self.param(n, 1, 0, s)))
            return
        if op == "Gemm" and idx == 0:
            red = 0 if int(n.attr("transA", 0)) else 1
            if s.axis != red:
                raise Blocked(f"{layer_label(n)} reads the channels as rows")
            self.g.sinks.append((n, self.param(n, 1, 1 if int(n.attr("transB", 0)) else 0, s)))
            return
        if op == "MatMul":
            self._matmul(n, idx, v, s)
            return
        if op in UNARY or (op == "Dropout" and idx == 0):
            if idx != 0:
                if op in ("Clip", "CastLike") and _const(n.input(idx)) is not None:
                    return  # scalar bounds
                if op == "PRelu":
                    self._binary(n, idx, v, s)
                    return
                raise Blocked(f"{layer_label(n)} reads the channels as a parameter")
            if op == "PRelu":
                self._binary(n, idx, v, s)
                return
            self.add(n.output(0), s)
            return
        if op in BINARY:
            self._binary(n, idx, v, s)
            return
        if op in ("BatchNormalization", "InstanceNormalization"):
            if idx != 0 or s.axis != 1:
                raise Blocked(f"{layer_label(n)} normalizes along another axis")
            for k in range(1, 5 if op == "BatchNormalization" else 3):
                if n.input(k) is not None:
                    self.param(n, k, 0, s)
            if any(o is not None and o.num_uses() for o in n.outputs[1:]):
                raise Blocked(f"{layer_label(n)} exposes running statistics")
            self.add(n.output(0), s)
            return
        if op in POOLS:
            if s.axis != 1:
                raise Blocked(f"{layer_label(n)} pools the channel axis")
            if len(n.outputs) > 1 and n.output(1) is not None and n.output(1).num_uses():  # type: ignore[union-attr]
                raise Blocked(f"{layer_label(n)} exposes pooling indices")
            self.add(n.output(0), s)
            return
        if op == "Pad":
            pads = _ints(n, "pads", 1)
            rank = _rank(v, self.shapes)
            if pads is None or rank is None or len(pads) != 2 * rank or pads[s.axis] or pads[s.axis + rank]:
                raise Blocked(f"{layer_label(n)} pads the channel axis (or its pads are not constant)")
            if idx != 0:
                raise Blocked(f"{layer_label(n)} reads the channels as pads")
            self.add(n.output(0), s)
            return
        if op in ("Resize", "Upsample"):
            self._resize(n, idx, v, s)
            return
        if op in ("Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "LpNormalization"):
            self._normalized(n, idx, v, s)
            return
        if op in REDUCES:
            self._reduce(n, idx, v, s)
            return
        if op == "Transpose":
            rank = _rank(v, self.shapes)
            perm = n.attr("perm", None)
            perm = list(perm) if perm is not None else (list(reversed(range(rank))) if rank is not None else None)
            if perm is None:
                raise Blocked(f"{layer_label(n)}: unknown rank")
            self.add(n.output(0), Slot(perm.index(s.axis), s.start, s.block))
            return
        if op in RESHAPES:
            if idx != 0:
                raise Blocked(f"{layer_label(n)} reads the channels as a shape")
            self._reshape(n, v, s)
            return
        if op == "Concat":
            self._concat(n, idx, v, s)
            return
        if op == "Split":
            self._split(n, idx, v, s)
            return
        if op in ("Slice", "Gather", "Expand", "Tile") and idx == 0:
            self._other_axes(n, v, s)
            return
        raise Blocked(f"consumed by {op} {layer_label(n)}, which the channel rules do not cover")

    def _matmul(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        a, b, out = n.input(0), n.input(1), n.output(0)
        ra = _rank(a, self.shapes) if a is not None else None
        rb = _rank(b, self.shapes) if b is not None else None
        ro = _rank(out, self.shapes) if out is not None else None
        if ra is None or rb is None or ro is None or a is None or b is None or out is None:
            raise Blocked(f"{layer_label(n)}: unknown ranks")
        wb = _const(b) if idx == 0 else None
        if idx == 0 and wb is not None and wb.ndim == 2 and not b.is_graph_input():
            if s.axis != ra - 1:
                raise Blocked(f"{layer_label(n)} reads the channels as rows")
            self.g.sinks.append((n, self.param(n, 1, 0, s)))
            return
        if _const(a) is not None or _const(b) is not None:
            raise Blocked(f"{layer_label(n)}: a constant operand that is not a [K, N] weight")
        me, other = (a, b) if idx == 0 else (b, a)
        rm, r_other = (ra, rb) if idx == 0 else (rb, ra)
        if rm < 2 or r_other < 2:
            raise Blocked(f"{layer_label(n)}: vector MatMul")
        if idx == 0 and s.axis == rm - 1 or idx == 1 and s.axis == rm - 2:
            # the contraction axis: both operands lose the channels, the output does not have them
            self.add(other, Slot(r_other - 1 if idx == 1 else r_other - 2, s.start, s.block))
            return
        if idx == 0 and s.axis == rm - 2 or idx == 1 and s.axis == rm - 1:
            self.add(out, Slot(ro - (2 if idx == 0 else 1), s.start, s.block))
            return
        # a batch axis: tie the other operand's, if it has one of that size
        aligned = s.axis + (ro - rm)
        self.add(out, Slot(aligned, s.start, s.block))
        oa = aligned - (ro - r_other)
        dims = _dims(other, self.shapes)
        if oa >= 0 and (dims is None or dims[oa] != 1):
            self.add(other, Slot(oa, s.start, s.block))

    def _binary(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        out = n.output(0)
        ro = _rank(out, self.shapes) if out is not None else None
        rv = _rank(v, self.shapes)
        if ro is None or rv is None or out is None:
            raise Blocked(f"{layer_label(n)}: unknown ranks")
        aligned = s.axis + (ro - rv)
        if n.op_type == "Where" and idx == 0:
            raise Blocked(f"{layer_label(n)} selects with the channels")
        self.add(out, Slot(aligned, s.start, s.block))
        for k, other in enumerate(n.inputs):
            if k == idx or other is None or other is v:
                continue
            r_other = _rank(other, self.shapes)
            if r_other is None:
                raise Blocked(f"{layer_label(n)}: unknown rank of input {k}")
            axis = aligned - (ro - r_other)
            if axis < 0:
                continue
            dims = _dims(other, self.shapes)
            if dims is not None and dims[axis] == 1:
                continue
            if _const(other) is not None and not other.is_graph_input():
                self.param(n, k, axis, s)
            else:
                self.add(other, Slot(axis, s.start, s.block))

    def _resize(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        if idx != 0:
            raise Blocked(f"{layer_label(n)} reads the channels as sizes")
        if n.op_type == "Resize" and len(n.inputs) > 3 and n.input(3) is not None:
            raise Blocked(f"{layer_label(n)} resizes to explicit sizes")
        scales = _const(n.input(2) if n.op_type == "Resize" else n.input(1))
        if scales is None and n.op_type == "Upsample":
            scales = n.attr("scales", None)
        if scales is None or float(np.asarray(scales).reshape(-1)[s.axis]) != 1.0:
            raise Blocked(f"{layer_label(n)} scales the channel axis (or its scales are not constant)")
        self.add(n.output(0), s)

    def _normalized(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        rank = _rank(v, self.shapes)
        if rank is None or idx != 0:
            raise Blocked(f"{layer_label(n)}: unknown rank")
        axis = int(n.attr("axis", -1))
        axis = axis + rank if axis < 0 else axis
        op = n.op_type
        over = s.axis >= axis if op == "LayerNormalization" else s.axis == axis
        model = n.graph.model if n.graph is not None else None
        if op in ("Softmax", "LogSoftmax", "Hardmax") and model is not None and (model.opset("") or 13) < 13:
            over = s.axis >= axis  # before opset 13 these flatten from ``axis`` on
        if over:
            raise Blocked(f"{op} {layer_label(n)} normalizes over the channels")
        if any(o is not None and o.num_uses() for o in n.outputs[1:]):
            raise Blocked(f"{layer_label(n)} exposes its statistics")
        self.add(n.output(0), s)

    def _reduce(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        rank = _rank(v, self.shapes)
        axes = _ints(n, "axes", 1)
        if rank is None or idx != 0:
            raise Blocked(f"{layer_label(n)}: unknown rank")
        if axes is None or not axes:
            if int(n.attr("noop_with_empty_axes", 0)):
                self.add(n.output(0), s)
                return
            raise Blocked(f"{layer_label(n)} reduces every axis")
        axes = [a + rank if a < 0 else a for a in axes]
        if s.axis in axes:
            raise Blocked(f"{layer_label(n)} reduces over the channels")
        keep = int(n.attr("keepdims", 1))
        axis = s.axis if keep else s.axis - sum(1 for a in axes if a < s.axis)
        self.add(n.output(0), Slot(axis, s.start, s.block))

    def _other_axes(self, n: Node, v: Value, s: Slot) -> None:
        op = n.op_type
        rank = _rank(v, self.shapes)
        if rank is None:
            raise Blocked(f"{layer_label(n)}: unknown rank")
        if op == "Slice":
            axes = _ints(n, "axes", 3)
            starts = _ints(n, "starts", 1)
            if starts is None:
                raise Blocked(f"{layer_label(n)}: slice bounds are not constant")
            axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
            if s.axis in axes:
                raise Blocked(f"{layer_label(n)} slices the channels")
            self.add(n.output(0), s)
            return
        if op == "Gather":
            axis = int(n.attr("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if axis == s.axis:
                raise Blocked(f"{layer_label(n)} gathers channels")
            ind = n.input(1)
            r_ind = _rank(ind, self.shapes) if ind is not None else None
            if r_ind is None:
                raise Blocked(f"{layer_label(n)}: unknown rank")
            new = s.axis if s.axis < axis else s.axis + r_ind - 1
            self.add(n.output(0), Slot(new, s.start, s.block))
            return
        out = n.output(0)
        dims_in, dims_out = _dims(v, self.shapes), _dims(out, self.shapes) if out is not None else None
        if dims_in is None or dims_out is None:
            raise Blocked(f"{layer_label(n)}: unknown shapes")
        aligned = s.axis + len(dims_out) - len(dims_in)
        if dims_out[aligned] != dims_in[s.axis]:
            raise Blocked(f"{layer_label(n)} repeats the channels")
        self.add(out, Slot(aligned, s.start, s.block))

    def _reshape(self, n: Node, v: Value, s: Slot) -> None:
        out = n.output(0)
        di, do = _dims(v, self.shapes), _dims(out, self.shapes) if out is not None else None
        if di is None or do is None or out is None:
            raise Blocked(f"{layer_label(n)}: unknown shapes")
        mapped = map_slot(di, do, s, self.g.size)
        self.add(out, mapped)
        if n.op_type == "Reshape":
            self._shape_edit(n, di, mapped)

    def _shape_edit(self, n: Node, di: tuple[int, ...], mapped: Slot) -> None:
        """Record the edit of the literal channel count in the Reshape's target shape."""
        literal = _shape_literal(n, mapped.axis)
        if literal is None:
            raise Blocked(f"{layer_label(n)}: its target shape is computed (cannot shrink the channel count in it)")
        if literal == -1:
            return
        if literal == 0:
            if not int(n.attr("allowzero", 0)) and mapped.axis < len(di) and self.g.members.get(n.input(0)) == mapped:  # type: ignore[arg-type]
                return
            raise Blocked(f"{layer_label(n)} copies the channel count from its input at another axis")
        edit = ShapeEdit(n, 1, mapped.axis, mapped.block)
        if edit not in self.g.shapes:
            self.g.shapes.append(edit)

    def _concat(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        out = n.output(0)
        rank = _rank(v, self.shapes)
        if rank is None or out is None:
            raise Blocked(f"{layer_label(n)}: unknown rank")
        axis = int(n.attr("axis", 0))
        axis = axis + rank if axis < 0 else axis
        if axis != s.axis:
            for k, other in enumerate(n.inputs):
                if k != idx and other is not None:
                    if _const(other) is not None:
                        self.param(n, k, s.axis, s)
                    else:
                        self.add(other, s)
            self.add(out, s)
            return
        offset = 0
        for k in range(idx):
            dims = _dims(n.input(k), self.shapes) if n.input(k) is not None else None  # type: ignore[arg-type]
            if dims is None:
                raise Blocked(f"{layer_label(n)}: unknown sizes of its inputs")
            offset += dims[axis]
        self.add(out, Slot(axis, s.start + offset, s.block))

    def _split(self, n: Node, idx: int, v: Value, s: Slot) -> None:
        rank = _rank(v, self.shapes)
        if rank is None or idx != 0:
            raise Blocked(f"{layer_label(n)}: unknown rank")
        axis = int(n.attr("axis", 0))
        axis = axis + rank if axis < 0 else axis
        if axis != s.axis:
            for o in n.outputs:
                if o is not None:
                    self.add(o, s)
            return
        lo, hi = s.start, s.start + self.g.size * s.block
        offset = 0
        for k, o in enumerate(n.outputs):
            dims = _dims(o, self.shapes) if o is not None else None
            if dims is None or o is None:
                raise Blocked(f"{layer_label(n)}: unknown output sizes")
            size = dims[axis]
            if offset <= lo and hi <= offset + size:
                sizes_attr = n.attr("split", None)
                if sizes_attr is not None:
                    self.g.shapes.append(ShapeEdit(n, -1, k, s.block, "split"))
                elif len(n.inputs) > 1 and n.input(1) is not None:
                    if _const(n.input(1)) is None:
                        raise Blocked(f"{layer_label(n)}: split sizes are not constant")
                    self.g.shapes.append(ShapeEdit(n, 1, k, s.block, "split"))
                else:
                    raise Blocked(f"{layer_label(n)} splits evenly (the other parts would change)")
                self.add(o, Slot(axis, lo - offset, s.block))
                return
            offset += size
        raise Blocked(f"{layer_label(n)} splits the channels apart")


def map_slot(di: tuple[int, ...], do: tuple[int, ...], s: Slot, size: int) -> Slot:
    """The slot of ``s`` (on a tensor of shape ``di``) in the same data reshaped to ``do``;
    raises :class:`Coarsen` when a channel would cover part of an output entry, :class:`Blocked`
    when the channels do not map onto one output axis."""
    outer = math.prod(di[: s.axis])
    inner = math.prod(di[s.axis + 1 :])
    # the output axis where the same outer dims end
    b, acc = 0, 1
    while b < len(do) and acc < outer:
        acc *= do[b]
        b += 1
    while b < len(do) and acc == outer and do[b] == 1 and math.prod(do[b + 1 :]) >= inner * di[s.axis]:
        b += 1
    if acc != outer or b >= len(do):
        raise Blocked("a reshape mixes the channels with the axes before them")
    j = math.prod(do[b + 1 :])  # entries per step along output axis b
    chunk = s.block * inner
    if (chunk % j == 0) and (s.start * inner) % j == 0:
        if do[b] * j < (s.start + size * s.block) * inner:
            raise Blocked("a reshape splits the channels across axes")
        return Slot(b, s.start * inner // j, chunk // j)
    if j % inner == 0 and (j // inner) % s.block == 0 and (s.start * inner) % j == 0:
        raise Coarsen(j // inner // s.block)
    raise Blocked("a reshape splits channels unevenly")


def shape_pieces(n: Node) -> list[tuple[Value, np.ndarray | None, int]] | None:
    """The pieces of a Reshape's shape operand: ``[(value, constant data or None, length)]``
    (one constant, or the inputs of the Concat that computes it); None when unknown."""
    shape_v = n.input(1)
    if shape_v is None:
        return None
    arr = _const(shape_v)
    if arr is not None:
        return [(shape_v, np.asarray(arr).reshape(-1), int(np.asarray(arr).size))]
    p = shape_v.producer
    if p is None or p.op_type != "Concat":
        return None
    out: list[tuple[Value, np.ndarray | None, int]] = []
    for piece in p.inputs:
        if piece is None:
            return None
        val = _const(piece)
        length = int(np.asarray(val).size) if val is not None else _piece_len(piece)
        if length is None:
            return None
        out.append((piece, None if val is None else np.asarray(val).reshape(-1), length))
    return out


def _shape_literal(n: Node, position: int) -> int | None:
    """Entry ``position`` of a Reshape's target shape when it is a literal, else None."""
    pieces = shape_pieces(n)
    if pieces is None:
        return None
    offset = 0
    for _, val, length in pieces:
        if offset <= position < offset + length:
            return None if val is None else int(val[position - offset])
        offset += length
    return None


def _piece_len(v: Value) -> int | None:
    s = v.static_shape()
    if s is not None:
        return int(math.prod(s))
    p = v.producer
    if p is not None and p.op_type == "Unsqueeze":
        inner = p.input(0)
        if inner is not None and inner.shape() == ():
            return 1
        if inner is not None and inner.producer is not None and inner.producer.op_type == "Gather":
            idx = _const(inner.producer.input(1))
            if idx is not None and np.asarray(idx).ndim == 0:
                return 1
    return None


# ---------------------------------------------------------------------------------------------


def _source_out(node: Node, shapes: ShapeTable | None) -> tuple[Value, int, int] | None:
    """(output, channel axis, channel count) of a node that can start a group."""
    op = node.op_type
    out = node.output(0)
    w_val = node.input(1)
    w = _const(w_val)
    if out is None or w is None or w_val is None or w_val.is_graph_input() or not node.is_standard_domain():
        return None
    if op == "Conv" and w.ndim >= 3 and int(node.attr("group", 1)) == 1:
        return out, 1, int(w.shape[0])
    if op == "ConvTranspose" and w.ndim >= 3 and int(node.attr("group", 1)) == 1:
        return out, 1, int(w.shape[1])
    if op == "Gemm" and w.ndim == 2:
        return out, 1, int(w.shape[0] if int(node.attr("transB", 0)) else w.shape[1])
    if op == "MatMul" and w.ndim == 2:
        rank = _rank(out, shapes)
        if rank is None or rank < 2:
            return None
        return out, rank - 1, int(w.shape[1])
    return None


def find_groups(model: Model, shapes: ShapeTable | None, *, max_coarsen: int = 4) -> list[ChannelGroup]:
    """Every channel group of the main graph, from each source in topological order; groups that
    cannot be pruned carry ``blocked`` with the reason."""
    groups: list[ChannelGroup] = []
    covered: set[Value] = set()
    for node in model.graph.topological_order():
        src = _source_out(node, shapes)
        if src is None:
            continue
        out, axis, channels = src
        if out in covered:
            continue
        block = 1
        for _ in range(max_coarsen + 1):
            group = ChannelGroup(len(groups), channels // block, block)
            try:
                _Grower(group, shapes, set()).grow(out, Slot(axis, 0, block))
            except Coarsen as c:
                block *= c.factor
                if channels % block:
                    group.blocked = "attention heads do not divide the channels evenly"
                    break
                continue
            except Blocked as b:
                group.blocked = str(b)
            break
        else:
            group.blocked = "channel layout too deep to follow"
        covered.update(group.members)
        covered.add(out)
        groups.append(group)
    return groups


def removed_entries(slot_start: int, block: int, removed: np.ndarray) -> np.ndarray:
    """Entry indices a ParamEdit/Slot loses for the removed channel indices."""
    if removed.size == 0:
        return np.zeros(0, np.int64)
    base = slot_start + removed.astype(np.int64)[:, None] * block
    return (base + np.arange(block)[None, :]).reshape(-1)


def iter_edits(group: ChannelGroup) -> Iterator[ParamEdit]:
    yield from group.params


__all__ = [
    "Blocked",
    "ChannelGroup",
    "Coarsen",
    "ParamEdit",
    "ShapeEdit",
    "Slot",
    "find_groups",
    "map_slot",
    "removed_entries",
]
