"""Concrete shapes for cost analysis: bind the model's dynamic input dimensions, run shape
inference, and give every value a :class:`~onnxforge.kernels.costs.TensorInfo`.

Users fix input shapes with ``NAME=1x3x224x224`` specs and symbolic dimensions with
``SYMBOL=N``. A dimension fixed by an input spec also binds its symbol (an input declared
``["batch", 3, "h", "w"]`` given as ``1x3x224x224`` binds ``batch=1``, ``h=w=224`` for every other
value that uses those symbols). Dimensions left open are assumed to be 1, and each assumption is
recorded so the report can say what was assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxforge.cost.probe import probe_types
from onnxforge.errors import UsageError
from onnxforge.ir import Model, Value
from onnxforge.ir.constants import constant_node_tensor, constant_value, is_constant
from onnxforge.kernels.costs.registry import TensorInfo

log = logging.getLogger(__name__)

#: The value an open dimension is assumed to have.
DEFAULT_DIM = 1


def parse_shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    """``"NAME=1x3x224x224"`` → ``("NAME", (1, 3, 224, 224))`` (``NAME=`` alone: a scalar)."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise UsageError(f"--shape expects NAME=D1xD2x..., got {text!r}")
    if dims.strip() == "":
        return name, ()
    try:
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
    except ValueError:
        raise UsageError(f"--shape {text!r}: dimensions must be integers like 1x3x224x224") from None
    if any(d < 0 for d in shape):
        raise UsageError(f"--shape {text!r}: dimensions must be >= 0")
    return name, shape


def parse_dim_spec(text: str) -> tuple[str, int]:
    """``"batch=8"`` → ``("batch", 8)``."""
    name, sep, val = text.partition("=")
    if not sep or not name or not val.strip().isdigit():
        raise UsageError(f"--dim expects SYMBOL=N, got {text!r}")
    return name, int(val)


@dataclass
class ShapeBindings:
    """The resolved input shapes, symbol values and the assumptions made to get them."""

    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)


def bind_inputs(
    model: Model,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    dims: Mapping[str, int] | None = None,
) -> ShapeBindings:
    """Resolve every main-graph input to a concrete shape.

    Raises :class:`UsageError` for a spec naming no input, or one whose rank or fixed
    dimensions contradict the declared shape.
    """
    shapes = dict(shapes or {})
    b = ShapeBindings(dims=dict(dims or {}))
    inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    by_name = {v.name: v for v in inputs}
    for name in shapes:
        if name not in by_name:
            raise UsageError(f"--shape names {name!r}, which is not a model input (inputs: {', '.join(by_name) or 'none'})")
    # First pass: learn symbols from the given shapes.
    for v in inputs:
        declared = v.shape()
        given = shapes.get(v.name)
        if given is None or declared is None:
            continue
        if len(declared) != len(given):
            raise UsageError(f"--shape {v.name}: rank {len(given)} given, the model declares rank {len(declared)} {_fmt(declared)}")
        for d, g in zip(declared, given):
            if isinstance(d, int) and d != g:
                raise UsageError(f"--shape {v.name}: {_fmt(given)} contradicts the declared shape {_fmt(declared)}")
            if isinstance(d, str):
                b.dims.setdefault(d, g)
    for v in inputs:
        if v.name in shapes:
            b.inputs[v.name] = shapes[v.name]
            continue
        declared = v.shape()
        if declared is None:
            if v.is_tensor_typed():
                b.assumptions.append(f"input {v.name!r} has no declared shape: treated as a scalar")
                b.inputs[v.name] = ()
            continue
        resolved = []
        for i, d in enumerate(declared):
            if isinstance(d, int):
                resolved.append(d)
            elif isinstance(d, str) and d in b.dims:
                resolved.append(b.dims[d])
            else:
                what = f"{d!r}" if isinstance(d, str) else "unknown"
                b.assumptions.append(f"input {v.name!r} dim {i} ({what}) assumed {DEFAULT_DIM}")
                if isinstance(d, str):
                    b.dims[d] = DEFAULT_DIM
                resolved.append(DEFAULT_DIM)
        b.inputs[v.name] = tuple(resolved)
    return b


def _fmt(shape: tuple[object, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _tensor_type(elem_type: int, shape: tuple[int, ...]) -> onnx.TypeProto:
    t = onnx.TypeProto()
    t.tensor_type.elem_type = elem_type
    t.tensor_type.shape.SetInParent()
    for d in shape:
        t.tensor_type.shape.dim.add().dim_value = d
    return t


class ShapeTable:
    """Concrete :class:`TensorInfo` for the values of a model at given input shapes."""

    def __init__(
        self,
        model: Model,
        bindings: ShapeBindings,
        *,
        probe: bool = True,
        feeds: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        from onnxforge.passes.shape_inference import infer_types

        self.bindings = bindings
        self._cache: dict[int, TensorInfo | None] = {}
        self._inferred: dict[str, onnx.TypeProto] = {}
        input_types = {}
        for v in model.graph.inputs:
            et = v.elem_type()
            if v.name in bindings.inputs and et:
                input_types[v.name] = _tensor_type(et, bindings.inputs[v.name])
        self._input_types = input_types
        # Static inference, then rounds of evaluating small integer tensors (Shape chains) with
        # the numpy kernels and handing them back to inference as constants.
        self.folded: dict[str, np.ndarray] = {}
        for _ in range(_FOLD_ROUNDS):
            try:
                self._inferred = infer_types(model, input_types=input_types, known_values=self.folded)
            except Exception as e:  # onnx rejects some models; fall back to declared types
                log.warning("shape inference failed, using declared shapes only: %s", e)
                break
            self._cache.clear()
            new = fold_shape_values(model, self.info, self.folded)
            if not new:
                break
            self.folded.update(new)
        self.probed = 0
        if probe and self._unresolved(model):
            measured = probe_types(model, bindings.inputs, feeds)
            if measured:
                self.probed = len(measured)
                self._cache.clear()
                try:
                    self._inferred = infer_types(
                        model, input_types=input_types, value_types=measured, known_values=self.folded
                    )
                except Exception as e:
                    log.warning("shape inference with measured shapes failed: %s", e)
                for name, typ in measured.items():
                    self._inferred[name] = typ

    def _unresolved(self, model: Model) -> bool:
        """True when some tensor computed by a node of any graph has no concrete shape."""
        for node in model.graph.walk():
            if node.op_type == "Constant":
                continue
            for v in node.outputs:
                if v is not None and self.info(v) is None and (v.type is None or v.type.HasField("tensor_type")):
                    return True
        return False

    def info(self, v: Value | None) -> TensorInfo | None:
        """Shape and element type of ``v`` with every dimension known, else None."""
        if v is None:
            return None
        hit = self._cache.get(v.id, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        info = self._resolve(v)
        self._cache[v.id] = info
        return info

    def _resolve(self, v: Value) -> TensorInfo | None:
        if v.const is not None:
            return TensorInfo(tuple(int(d) for d in v.const.dims), v.const.data_type)
        p = v.producer
        if p is not None and p.op_type == "Constant" and p.is_standard_domain():
            t = constant_node_tensor(p)
            if t is not None:
                return TensorInfo(tuple(int(d) for d in t.dims), t.data_type)
        typ = self._input_types.get(v.name) if v.is_graph_input() else None
        if typ is None:
            typ = self._inferred.get(v.name, v.type)
        if typ is None or not typ.HasField("tensor_type") or not typ.tensor_type.HasField("shape"):
            return None
        tt = typ.tensor_type
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param in self.bindings.dims:
                dims.append(self.bindings.dims[d.dim_param])
            else:
                return None
        return TensorInfo(tuple(dims), tt.elem_type or (v.elem_type() or 0))


_MISS = object()
_FOLD_ROUNDS = 4
#: Largest tensor (elements) evaluated while folding shape computations.
_FOLD_LIMIT = 1024


def fold_shape_values(
    model: Model, info: Callable[[Value], TensorInfo | None], known: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Values of small tensors of the main graph that can be computed from shapes and
    constants alone (``Shape``/``Size`` of tensors with known shapes, then any op with a numpy
    kernel over such values), excluding those already in ``known``. Linear in graph size."""
    from onnxforge.kernels.registry import KernelError, evaluate, get_kernel

    values: dict[Value, np.ndarray] = {}
    new: dict[str, np.ndarray] = {}
    opset = model.opset("") or 21

    def data(v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        if v in values:
            return values[v]
        if v.name in known:
            return known[v.name]
        if is_constant(v):
            t = info(v)
            if t is not None and t.numel <= _FOLD_LIMIT:
                try:
                    arr = constant_value(v)
                except ValueError:  # data that does not match its dims: leave it alone
                    return None
                if arr is not None:
                    values[v] = arr
                    return arr
        return None

    for node in model.graph.topological_order():
        outs = [o for o in node.outputs if o is not None]
        if not outs or not node.is_standard_domain() or node.has_subgraphs() or node.op_type == "Constant":
            continue
        if all(o.name in known or is_constant(o) for o in outs):
            continue
        result: list[np.ndarray] | None = None
        if node.op_type in ("Shape", "Size"):
            t = info(node.inputs[0]) if node.inputs else None
            if t is None:
                continue
            if node.op_type == "Size":
                result = [np.array(t.numel, np.int64)]
            else:
                dims = np.array(t.shape, np.int64)
                start, end = node.attr("start", 0), node.attr("end", None)
                result = [dims[start:end] if end is not None else dims[start:]]
        else:
            if get_kernel(node.op_type, "", opset) is None:
                continue
            inputs = [data(v) for v in node.inputs]
            if any(a is None for a, v in zip(inputs, node.inputs) if v is not None):
                continue
            try:
                attrs = {k: node.attr(k) for k in node.attributes}
                result = evaluate(node.op_type, inputs, attrs, opset=opset, num_outputs=len(node.outputs))
            except KernelError:
                continue
        for o, arr in zip(node.outputs, result):
            if o is None or arr.size > _FOLD_LIMIT:
                continue
            values[o] = arr
            if o.name not in known:
                new[o.name] = arr
    return new
