"""No-op elimination: nodes whose output always equals one of their inputs.

Removed (standard domain only, each only when it provably returns its input unchanged, same
shape and element type):

* ``Identity``; ``Dropout`` in inference mode whose mask output is unused;
* ``Cast``/``CastLike`` to the input's own element type;
* ``Reshape`` to the input's static shape (``0`` and ``-1`` resolved as the op would, with
  ``allowzero``), ``Expand`` to a shape that does not grow the input, ``Transpose`` with the
  identity permutation, ``Slice`` selecting everything, ``Pad`` with all-zero pads,
  ``Squeeze`` with no/empty axes on a static shape without 1s, ``Unsqueeze`` with empty axes,
  ``Concat`` of a single input;
* ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1`` when broadcasting leaves ``x``'s
  shape and element type unchanged.

Signed zeros: ``x + (+0.0)`` maps ``-0.0`` to ``+0.0`` (and ``x - (-0.0)`` likewise), so removing
it can turn a ``+0.0`` output into ``-0.0``; the two compare equal, and onnxsim/onnxoptimizer
make the same choice. ``x + (-0.0)`` and ``x - (+0.0)`` are exact. Set
``preserve_signed_zero=True`` to remove only the exact forms.

Graph outputs keep their names: when the removed node's output is a graph output that its input
cannot take over (the input is a graph input, an initializer, another output or an outer-scope
value), :func:`onnxforge.ir.replace_all_uses_with` leaves an ``Identity`` in its place. Such an
Identity is what keeps the output distinct, so this pass never removes it (otherwise every run
would replace it with another one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxforge.ir import Model, Node, Value, bypass
from onnxforge.ir.constants import constant_value
from onnxforge.passes.cleanup.toposort import topological_order
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult


@dataclass(frozen=True)
class NoOpOptions(PassOptions):
    #: Keep ``x + (+0.0)`` and ``x - (-0.0)``, which turn ``-0.0`` into ``+0.0``.
    preserve_signed_zero: bool = False


def needs_identity(old: Value, new: Value) -> bool:
    """True when ``replace_all_uses_with(old, new)`` must insert an ``Identity`` to keep the name
    of the graph output ``old`` (mirrors the renaming rule in :mod:`onnxforge.ir.rewrite`)."""
    graph = old.graph
    if graph is None or not old.is_graph_output():
        return False
    can_rename = (
        new.graph is graph
        and new.producer is not None
        and new.producer.graph is graph
        and not new.is_graph_output()
        and not new.is_graph_input()
        and new.const is None
    )
    return not can_rename


def dropout_is_inference(node: Node, model: Model) -> bool:
    """True when a ``Dropout`` node runs in inference mode (its output is its input)."""
    opset = model.opset(node.domain) or 0
    if opset < 7:
        return bool(node.attr("is_test", 0))  # Dropout-1/6: training unless is_test is set
    if opset < 12:
        return True  # Dropout-7/10: inference only
    mode = node.input(2)
    if mode is None:
        return True
    value = constant_value(mode)
    return value is not None and value.size == 1 and not bool(value.reshape(-1)[0])


def _ints(v: Value | None) -> list[int] | None:
    """A constant input as a list of ints (None when absent or not constant)."""
    if v is None:
        return None
    arr = constant_value(v)
    if arr is None or arr.dtype.kind not in "iu":
        return None
    return [int(x) for x in arr.reshape(-1)]


def _broadcast_keeps(x_shape: tuple[int | str | None, ...] | None, c_shape: tuple[int, ...]) -> bool:
    """True when broadcasting a tensor of shape ``x_shape`` with one of ``c_shape`` yields
    ``x_shape`` (symbolic dims of ``x`` only face 1s)."""
    if x_shape is None or len(c_shape) > len(x_shape):
        return False
    for xd, cd in zip(x_shape[len(x_shape) - len(c_shape) :], c_shape):
        if cd == 1 or (isinstance(xd, int) and xd == cd):
            continue
        return False
    return True


# -- per-op checks: each returns the index of the input the output equals, or None --------------
Check = Callable[[Node, Model, NoOpOptions], "int | None"]


def _identity(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    return 0


def _dropout(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    return 0 if dropout_is_inference(node, model) else None


def _cast(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    src = node.input(0)
    to = node.attr("to")
    et = src.elem_type() if src is not None else None
    return 0 if et is not None and to is not None and et == to else None


def _cast_like(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    src, like = node.input(0), node.input(1)
    if src is None or like is None:
        return None
    et = src.elem_type()
    return 0 if et is not None and et == like.elem_type() else None


def _reshape(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    src = node.input(0)
    if src is None:
        return None
    shape = _ints(node.input(1)) if len(node.inputs) > 1 else node.attr("shape")
    in_shape = src.static_shape()
    if shape is None or in_shape is None:
        return None
    allowzero = bool(node.attr("allowzero", 0))
    out: list[int] = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                return None
            out.append(in_shape[i])
        else:
            out.append(int(d))
    infer = [i for i, d in enumerate(out) if d == -1]
    if len(infer) > 1 or any(d < -1 for d in out):
        return None
    if infer:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(in_shape, dtype=np.int64))
        if known <= 0 or total % known:
            return None  # 0-sized tensors make -1 ambiguous
        out[infer[0]] = total // known
    return 0 if tuple(out) == in_shape else None


def _expand(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    src = node.input(0)
    shape = _ints(node.input(1))
    if src is None or shape is None:
        return None
    return 0 if _broadcast_keeps(src.shape(), tuple(shape)) else None


def _transpose(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    perm = node.attr("perm")
    if perm is None:  # default: reverse the dimensions
        src = node.input(0)
        shape = src.shape() if src is not None else None
        return 0 if shape is not None and len(shape) <= 1 else None
    return 0 if list(perm) == list(range(len(perm))) else None


def _slice(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    src = node.input(0)
    if src is None:
        return None
    shape = src.shape()
    if shape is None:
        return None
    rank = len(shape)
    if (model.opset(node.domain) or 0) < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = _ints(node.input(1)), _ints(node.input(2))
        axes = _ints(node.input(3)) if node.input(3) is not None else None
        steps = _ints(node.input(4)) if node.input(4) is not None else None
        if (node.input(3) is not None and axes is None) or (node.input(4) is not None and steps is None):
            return None
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if len(axes) != len(starts) or len(steps) != len(starts) or len(set(axes)) != len(axes):
        return None
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1 or not 0 <= axis < rank:
            return None
        dim = shape[axis]
        if not isinstance(dim, int):
            return None
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        if start != 0 or end != dim:
            return None
    return 0


def _pad(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    if (model.opset(node.domain) or 0) >= 11:
        pads = _ints(node.input(1))
    else:
        pads = node.attr("pads", node.attr("paddings"))
    return 0 if pads is not None and all(p == 0 for p in pads) else None


def _axes(node: Node, model: Model, since_input: int) -> tuple[bool, list[int] | None]:
    """(known, axes) of Squeeze/Unsqueeze: axes moved from attribute to input at opset 13."""
    if (model.opset(node.domain) or 0) >= since_input:
        v = node.input(1)
        if v is None:
            return True, None
        axes = _ints(v)
        return axes is not None, axes
    return True, node.attr("axes")


def _squeeze(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    known, axes = _axes(node, model, 13)
    if not known or axes:
        return None
    # No (or empty) axes squeezes every 1: a no-op only on a static shape without 1s. (onnx's
    # shape inference reads empty axes as "squeeze nothing"; onnxruntime squeezes all 1s.)
    src = node.input(0)
    shape = src.static_shape() if src is not None else None
    return 0 if shape is not None and 1 not in shape else None


def _unsqueeze(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    known, axes = _axes(node, model, 13)
    return 0 if known and axes is not None and len(axes) == 0 else None


def _concat(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    return 0 if len(node.inputs) == 1 and node.input(0) is not None else None


_NEUTRAL = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1}


def _const_shape_and_type(v: Value) -> tuple[tuple[int, ...], int] | None:
    """Shape and element type of a constant without decoding an initializer's data."""
    if v.is_constant():
        assert v.const is not None
        return tuple(v.const.dims), v.const.data_type
    arr = constant_value(v)
    if arr is None:
        return None
    try:
        return arr.shape, helper.np_dtype_to_tensor_dtype(arr.dtype)
    except (KeyError, ValueError, TypeError):
        return None


def _arith(node: Node, model: Model, opts: NoOpOptions) -> int | None:
    if len(node.inputs) != 2 or node.input(0) is None or node.input(1) is None:
        return None
    op = node.op_type
    neutral = _NEUTRAL[op]
    orders = [(0, 1), (1, 0)] if op in ("Add", "Mul") else [(0, 1)]
    for xi, ci in orders:
        x, c = node.input(xi), node.input(ci)
        assert x is not None and c is not None
        meta = _const_shape_and_type(c)
        if meta is None:
            continue
        c_shape, c_type = meta
        x_type = x.elem_type()
        if x_type is not None and x_type != c_type:
            continue
        if not _broadcast_keeps(x.shape(), c_shape):
            continue
        arr = constant_value(c)
        if arr is None or not np.all(arr == neutral):
            continue
        if op in ("Add", "Sub") and opts.preserve_signed_zero and arr.dtype.kind not in "iub":
            if arr.dtype.kind == "c":
                continue
            negative = np.signbit(arr.astype(np.float64))
            # x + (-0.0) and x - (+0.0) are exact; x + (+0.0) and x - (-0.0) map -0.0 to +0.0.
            exact = bool(negative.all()) if op == "Add" else not bool(negative.any())
            if not exact:
                continue
        return xi
    return None


def _copy_type(t: onnx.TypeProto) -> onnx.TypeProto:
    c = onnx.TypeProto()
    c.CopyFrom(t)
    return c


_CHECKS: dict[str, Check] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Reshape": _reshape,
    "Expand": _expand,
    "Transpose": _transpose,
    "Slice": _slice,
    "Pad": _pad,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Add": _arith,
    "Sub": _arith,
    "Mul": _arith,
    "Div": _arith,
}


class NoOpElimination(Pass):
    """Removes nodes that return one of their inputs unchanged (see the module docstring)."""

    name = "noop-elimination"
    summary = "Remove Identity, inference Dropout, same-type Cast, identity Reshape/Transpose/Slice/Pad, x+0, x*1, ..."
    lossless = True
    Options = NoOpOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, NoOpOptions)
        counts: dict[str, int] = {}
        for graph in list(model.graph.all_graphs()):
            # Producers first, so that chains of no-ops collapse in one run.
            for node in topological_order(graph):
                if node.graph is not graph or not node.is_standard_domain():
                    continue
                check = _CHECKS.get(node.op_type)
                if check is None:
                    continue
                idx = check(node, model, opts)
                if idx is None:
                    continue
                src, out = node.input(idx), node.output(0)
                if src is None or out is None:
                    continue
                if any(v is not None and (v.num_uses() or v.is_graph_output()) for v in node.outputs[1:]):
                    continue  # e.g. Dropout's mask is read
                if node.op_type == "Identity" and needs_identity(out, src):
                    continue  # this Identity keeps a graph output's name distinct
                if src.type is None and out.type is not None and src.producer is not None and not src.is_graph_output():
                    src.type = _copy_type(out.type)  # the same value: keep what we knew about it
                bypass(node, idx)
                key = f"removed_{node.op_type.lower()}"
                counts[key] = counts.get(key, 0) + 1
        total = sum(counts.values())
        stats: dict[str, float] = {"removed_nodes": total, **counts}
        return PassResult(modified=total > 0, stats=stats)
