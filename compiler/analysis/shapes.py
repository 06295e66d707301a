"""The shape analysis: types and shapes of every value, computed one way for every user.

Three views over one engine (onnx's shape inference with data propagation, run on an export of
the IR whose large initializers are data-less stubs, plus rounds of evaluating small shape
computations with the numpy kernels):

* :class:`InferredTypes`: the symbolic types inference gives every value (the
  ``shape-inference`` pass and the float16 conversion read it);
* :class:`ShapeTable` / :func:`bind_inputs`: concrete shapes at given input shapes (the cost
  model, which adds an onnxruntime probe for data-dependent shapes from the layer above);
* :class:`GenericShapes`: concrete shapes with every symbolic input dimension bound to a
  distinct prime, so that two values with equal concrete shapes have equal shapes for all
  inputs (the fusion rules ask this).

The analyses are cached by :class:`~onnxforge.passmanager.AnalysisManager` per model version:
``ctx.analyses.get(GenericShapes(), model)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxforge.errors import UsageError
from onnxforge.ir import Model, Node, Value, to_proto
from onnxforge.ir.constants import constant_node_tensor, constant_value, is_constant
from onnxforge.ir.onnx_inference import infer_shapes
from onnxforge.ir.proto_walk import graph_protos
from onnxforge.ir.tensor_data import is_external
from onnxforge.kernels.costs.registry import TensorInfo
from onnxforge.kernels.registry import KernelError, evaluate, get_kernel
from onnxforge.passmanager import Analysis, AnalysisManager

log = logging.getLogger(__name__)

_STRIPPED_LOCATION = "onnxforge-shape-inference-stripped-data"

#: Measures types of values inference cannot resolve: (model, input shapes, feeds) -> types by
#: name. The cost model passes an onnxruntime probe (onnxforge.cost.probe.probe_types).
Prober = Callable[[Model, Mapping[str, tuple[int, ...]], "Mapping[str, np.ndarray] | None"], "dict[str, onnx.TypeProto]"]


# -- symbolic types --------------------------------------------------------------------------


def reinferable(node: Node, functions: set[tuple[str, str]]) -> bool:
    """True when onnx knows the op's schema, so that its outputs' types can be recomputed."""
    if (node.domain, node.op_type) in functions:
        return False
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        return bool(onnx.defs.has(node.op_type, domain))
    except Exception:
        return False


def merge_types(inferred: onnx.TypeProto | None, old: onnx.TypeProto | None) -> onnx.TypeProto | None:
    """The inferred type, completed with the old one's details where the two agree (same tensor
    element type and rank) and inference knows less (no shape, unknown or generated ``unk__``
    dims). Conflicts go to the inferred type; no inferred type gives None."""
    if inferred is None or old is None:
        return inferred
    if not (inferred.HasField("tensor_type") and old.HasField("tensor_type")):
        return inferred
    it, ot = inferred.tensor_type, old.tensor_type
    if not it.elem_type or it.elem_type != ot.elem_type or not ot.HasField("shape"):
        return inferred
    result = onnx.TypeProto()
    result.CopyFrom(inferred)
    if not it.HasField("shape"):
        result.tensor_type.shape.CopyFrom(ot.shape)
        return result
    if len(it.shape.dim) != len(ot.shape.dim):
        return inferred
    for rd, od in zip(result.tensor_type.shape.dim, ot.shape.dim):
        if rd.HasField("dim_value"):
            continue
        if rd.HasField("dim_param") and not rd.dim_param.startswith("unk__"):
            continue
        if (od.HasField("dim_value") and od.dim_value >= 0) or od.HasField("dim_param"):
            rd.CopyFrom(od)  # (some exporters write -1 for "unknown": never copy that)
    return result


def export_for_inference(model: Model, max_data_bytes: int = 1024) -> onnx.ModelProto:
    """The model as a proto for onnx's shape inference, initializers larger than
    ``max_data_bytes`` replaced by data-less stubs (dtype and shape kept). The IR is unchanged:
    the stubs exist only in the exported proto."""

    def stubbed(v: Value) -> onnx.TensorProto:
        t = v.const
        assert t is not None
        if is_external(t) or v.const_nbytes() <= max_data_bytes:
            return t
        stub = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value=_STRIPPED_LOCATION)
        return stub

    return to_proto(model, value_info=True, initializer=stubbed)


def infer_types(
    model: Model,
    *,
    max_data_bytes: int = 1024,
    input_types: dict[str, onnx.TypeProto] | None = None,
    value_types: dict[str, onnx.TypeProto] | None = None,
    known_values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, onnx.TypeProto]:
    """Types that onnx's shape inference (data propagation on, non-strict) gives the values of
    every graph, by name, without modifying ``model``.

    The stored types of outputs of ops onnx knows are dropped before inference so that they are
    recomputed, not trusted. ``input_types`` replaces the declared types of main-graph inputs
    (to analyse the model at fixed input shapes); ``value_types`` are trusted types of
    values of any graph (e.g. measured ones) given to inference as value_info. Raises whatever
    onnx raises. ``known_values`` are computed data of main-graph values (shape computations):
    their consumers read them as initializers, so that data-dependent shapes resolve.
    """
    functions = model.function_keys()
    recomputed = {
        v.name
        for graph in model.graph.all_graphs()
        for node in graph
        if reinferable(node, functions)
        for v in node.outputs
        if v is not None and not v.is_graph_output()
    }
    proto = export_for_inference(model, max_data_bytes)
    for gp in graph_protos(proto.graph):
        kept = [vi for vi in gp.value_info if vi.name not in recomputed]
        del gp.value_info[:]
        gp.value_info.extend(kept)
    if input_types:
        for vi in proto.graph.input:
            if vi.name in input_types:
                vi.type.CopyFrom(input_types[vi.name])
        # Declared output shapes (often symbolic) would shadow what the fixed inputs give.
        produced = {v.name for node in model.graph for v in node.outputs if v is not None and reinferable(node, functions)}
        for vi in proto.graph.output:
            if vi.name in produced and vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
    if value_types:
        for gp in graph_protos(proto.graph):
            declared = {vi.name for vi in [*gp.input, *gp.output]}
            for n in gp.node:
                for name in n.output:
                    if name in value_types and name not in declared:
                        gp.value_info.add(name=name).type.CopyFrom(value_types[name])
    if known_values:
        _substitute_known(proto, known_values)
    result = infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)  # survives onnx's aborts
    inferred: dict[str, onnx.TypeProto] = {}
    for gp in graph_protos(result.graph):
        for vi in [*gp.input, *gp.output, *gp.value_info]:
            if vi.HasField("type"):
                inferred[vi.name] = vi.type
    return inferred


_KNOWN_SUFFIX = "__onnxforge_known"


def _substitute_known(proto: onnx.ModelProto, known: Mapping[str, np.ndarray]) -> None:
    """Point every consumer of a known value at an initializer holding its data."""
    used: set[str] = set()
    for gp in graph_protos(proto.graph):
        for n in gp.node:
            for i, name in enumerate(n.input):
                if name in known:
                    n.input[i] = name + _KNOWN_SUFFIX
                    used.add(name)
    for name in used:
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(known[name]), name + _KNOWN_SUFFIX))


@dataclass(frozen=True)
class TypeMap:
    """What :class:`InferredTypes` found: types by value name, or the error onnx raised."""

    types: dict[str, onnx.TypeProto]
    error: str | None = None


@dataclass(frozen=True)
class InferredTypes(Analysis):
    """Types onnx's shape inference gives every value of every graph, by name
    (:func:`infer_types`). When onnx rejects the model, ``error`` says why and ``types`` is
    empty."""

    name = "inferred-types"
    max_data_bytes: int = 1024

    def compute(self, model: Model, am: AnalysisManager) -> TypeMap:
        try:
            return TypeMap(infer_types(model, max_data_bytes=self.max_data_bytes))
        except Exception as e:  # onnx raises many kinds
            return TypeMap({}, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")


# -- concrete shapes -------------------------------------------------------------------------


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
    """The resolved input shapes, symbol values and the assumptions made to get them.

    Open input dims are resolved, in order, from ``--shape``/``--dim``, from sizes the model
    itself implies (:func:`implied_sizes`: ``implied``), as a batch of 1 (dim 0, or a symbol
    named like a batch: ``batch``), or not at all: ``missing`` lists the spatial/sequence dims
    nothing fixes. Those are bound to 1 so that shapes resolve, but every figure that depends
    on them is then meaningless (:attr:`complete` is False) and callers must not print it.
    """

    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    #: Labels (``x[0] ('batch')``) of dims assumed to be a batch of 1.
    batch: list[str] = field(default_factory=list)
    #: Label -> (size, where the model says so) for dims the model implies.
    implied: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: Labels of the size dims nothing fixed (bound to 1 only so that shapes resolve).
    missing: list[str] = field(default_factory=list)
    #: Input -> a ``--shape`` template for the missing dims (``x=1x3xHxW``).
    templates: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when no size-dependent dim was left open (a batch of 1 may be assumed)."""
        return not self.missing

    def missing_message(self) -> str:
        """One line naming the open dims and the flags that set them ("" when complete)."""
        if not self.missing:
            return ""
        named = sorted({m.split("'")[1] for m in self.missing if "'" in m})
        how = "set them with " + " ".join(f"--shape {t}" for t in self.templates.values())
        if named:
            how += " or " + " ".join(f"--dim {n}=N" for n in named)
        return f"input dims {', '.join(self.missing)} are not fixed by the model: {how}"

    def to_dict(self) -> dict[str, object]:
        return {
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "batch_assumed_1": list(self.batch),
            "implied": {k: {"size": v, "source": src} for k, (v, src) in self.implied.items()},
            "missing": list(self.missing),
        }


#: Symbols that stand for "unknown" rather than a shared name: each such dim is its own unknown.
_ANONYMOUS = ("", "?", "-1", "None")
#: Words that mark a batch dimension in a symbol's name.
_BATCH_WORDS = ("batch", "bs", "n", "b", "num_batches", "batchsize", "batch_size")


def anonymous_symbol(sym: object) -> bool:
    """True for dims with no usable shared name (``?``, empty, onnx's generated ``unk__N``)."""
    return sym is None or (isinstance(sym, str) and (sym.strip() in _ANONYMOUS or sym.startswith("unk__")))


def dim_label(input_name: str, axis: int, sym: object) -> str:
    """``x[2]``, or ``input_ids[1] ('sequence')`` for a named dim."""
    return f"{input_name}[{axis}]" + ("" if anonymous_symbol(sym) else f" ({sym!r})")


def _is_batch(axis: int, rank: int, sym: object) -> bool:
    if isinstance(sym, str) and not anonymous_symbol(sym):
        low = sym.lower()
        if low in _BATCH_WORDS or "batch" in low:
            return True
        if axis == 0 and rank >= 2:  # generated names (p2o.DynamicDimension.0): position decides
            return not any(w in low for w in ("seq", "len", "time", "sample", "height", "width", "token", "frame"))
        return False
    return axis == 0 and rank >= 2


def bind_inputs(
    model: Model,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    dims: Mapping[str, int] | None = None,
    *,
    hints: bool = True,
) -> ShapeBindings:
    """Resolve every main-graph input to a concrete shape.

    ``hints``: use sizes the model implies (:func:`implied_sizes`) for dims no spec fixes.
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
            if isinstance(d, str) and not anonymous_symbol(d):
                b.dims.setdefault(d, g)
    open_dims = {
        (v.name, i)
        for v in inputs
        if v.name not in shapes
        for i, d in enumerate(v.shape() or ())
        if not isinstance(d, int) and not (isinstance(d, str) and d in b.dims)
    }
    implied = implied_sizes(model, open_dims) if hints and open_dims else {}
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
        template = []
        for i, d in enumerate(declared):
            named = isinstance(d, str) and not anonymous_symbol(d)
            if isinstance(d, int):
                resolved.append(d)
                template.append(str(d))
                continue
            if isinstance(d, str) and d in b.dims:  # (anonymous symbols only when a caller binds them)
                resolved.append(b.dims[d])
                template.append(str(b.dims[d]))
                continue
            label = dim_label(v.name, i, d)
            if (v.name, i) in implied:
                size, source = implied[(v.name, i)]
                b.implied[label] = (size, source)
                b.assumptions.append(f"input {label} = {size}, as the model implies ({source})")
                if named:
                    b.dims[str(d)] = size
                resolved.append(size)
                template.append(str(size))
                continue
            what = f"{d!r}" if isinstance(d, str) else "unknown"
            if _is_batch(i, len(declared), d):
                b.batch.append(label)
                b.assumptions.append(f"input {v.name!r} dim {i} ({what}) assumed {DEFAULT_DIM}")
                template.append(str(DEFAULT_DIM))
            else:
                b.missing.append(label)
                b.assumptions.append(f"input {v.name!r} dim {i} ({what}) unknown: bound to {DEFAULT_DIM} only to resolve shapes")
                template.append({2: "H", 3: "W"}.get(i, "N") if len(declared) == 4 else "N")
            if named:
                b.dims[str(d)] = DEFAULT_DIM
            resolved.append(DEFAULT_DIM)
        b.inputs[v.name] = tuple(resolved)
        if any(m.startswith(f"{v.name}[") for m in b.missing):
            b.templates[v.name] = f"{v.name}={'x'.join(template)}"
    return b


# -- sizes the model implies ------------------------------------------------------------------

#: Metadata keys that, by common convention, give a model's input size.
SIZE_METADATA_KEYS = ("input_shape", "input_size", "image_size", "img_size", "imgsz", "image_shape", "shape")
#: Ops whose output has their first input's shape (for following an input to a constraint).
_SAME_SHAPE = frozenset(
    {"Identity", "Cast", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Neg", "Abs", "Exp", "Log", "Sqrt",
     "Erf", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "BatchNormalization", "Dropout", "Round",
     "Floor", "Ceil", "Reciprocal", "Sign", "Not", "Softmax", "LogSoftmax", "InstanceNormalization"}
)
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "And", "Or", "Equal", "Greater", "Less", "Where"})


def implied_sizes(model: Model, open_dims: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
    """Sizes of open input dims that the model itself fixes: ``(input, axis) -> (size, source)``.

    Sources, first match wins:

    * metadata: a key of :data:`SIZE_METADATA_KEYS` (or ``<input>_shape``/``<input>.shape``)
      holding the full shape, or the spatial size (``[H, W]`` or one int for a square image)
      of a rank-4 input;
    * the graph: the input (or a value of its shape, through elementwise ops) meets a constant
      of full rank in a binary elementwise op (a fixed positional table), is concatenated with
      a tensor of fixed dims, or is reshaped to a constant target without ``-1``/``0`` while
      one dim is open (the element counts must match).
    """
    out: dict[tuple[str, int], tuple[int, str]] = {}
    inputs = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
    meta = {p.key.lower(): p.value for p in model.proto_shell.metadata_props}
    for name, v in inputs.items():
        declared: tuple[int | str | None, ...] = v.shape() or ()
        wanted = [i for i in range(len(declared)) if (name, i) in open_dims]
        if not wanted:
            continue
        for key in (f"{name.lower()}_shape", f"{name.lower()}.shape", *SIZE_METADATA_KEYS):
            sizes = _parse_ints(meta.get(key, ""))
            if not sizes:
                continue
            if len(sizes) == len(declared):
                axes = list(range(len(declared)))
            elif len(declared) == 4 and len(sizes) in (1, 2):
                channels_last = declared[3] in (1, 3, 4) and declared[1] not in (1, 3, 4)
                axes = [1, 2] if channels_last else [2, 3]
                sizes = sizes * 2 if len(sizes) == 1 else sizes
            else:
                continue
            for axis, size in zip(axes, sizes):
                if axis in wanted and size > 0:
                    out.setdefault((name, axis), (size, f"metadata {key!r}"))
        for axis, size, why in _graph_constraints(v, [i for i in wanted if (name, i) not in out]):
            out.setdefault((name, axis), (size, why))
    return out


def _parse_ints(text: str) -> list[int]:
    nums = re.findall(r"-?\d+", text)
    if not nums or len(nums) > 8 or len(text) > 64:
        return []
    return [int(n) for n in nums]


def _graph_constraints(inp: Value, wanted: list[int]) -> list[tuple[int, int, str]]:
    """(axis, size, reason) for open dims of ``inp`` fixed by a constraint on a value of its
    shape (followed through elementwise ops, at most 64 nodes)."""
    if not wanted:
        return []
    declared = inp.shape() or ()
    rank = len(declared)
    found: dict[int, tuple[int, str]] = {}
    frontier, seen = [inp], 0
    while frontier and seen < 64 and len(found) < len(wanted):
        v = frontier.pop()
        for node in v.consumers():
            seen += 1
            op = node.op_type if node.is_standard_domain() else ""
            if op in _SAME_SHAPE and node.inputs and node.inputs[0] is v and node.outputs:
                out0 = node.output(0)
                if out0 is not None:
                    frontier.append(out0)
                continue
            if op in _BINARY:
                for other in node.inputs:
                    if other is None or other is v:
                        continue
                    shape = other.shape() if is_constant(other) else None
                    if shape is None or len(shape) != rank:
                        continue
                    for axis in wanted:
                        d = shape[axis]
                        if isinstance(d, int) and d > 1 and axis not in found:
                            found[axis] = (d, f"{op} {node.name or ''} with a constant of shape {list(shape)}".replace("  ", " "))
                continue
            if op == "Concat":
                cat_axis = int(node.attr("axis", 0)) % max(rank, 1)
                for other in node.inputs:
                    if other is None or other is v:
                        continue
                    shape = other.shape()
                    if shape is None or len(shape) != rank:
                        continue
                    for axis in wanted:
                        d = shape[axis]
                        if axis != cat_axis and isinstance(d, int) and d > 0 and axis not in found:
                            found[axis] = (d, f"Concat {node.name or ''} with {other.name!r} of shape {list(shape)}")
                continue
            if op == "Reshape" and len(node.inputs) > 1 and node.inputs[0] is v:
                try:
                    target = constant_value(node.inputs[1]) if node.inputs[1] is not None else None
                except ValueError:
                    target = None
                if target is None or (target <= 0).any():
                    continue
                still = [a for a in wanted if a not in found]
                if len(still) != 1:
                    continue
                known = 1
                for i, d in enumerate(declared):
                    if i in found:
                        known *= found[i][0]
                    elif isinstance(d, int):
                        known *= d
                    elif i != still[0]:
                        known = 0  # another open dim (a batch) makes it unsolvable
                total = int(np.prod(target))
                if known and total % known == 0:
                    found[still[0]] = (total // known, f"Reshape {node.name or ''} to {target.tolist()}")
    return [(a, s, " ".join(why.split())) for a, (s, why) in found.items() if a in wanted]


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
        probe: Prober | None = None,
        feeds: Mapping[str, np.ndarray] | None = None,
    ) -> None:
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
        if probe is not None and self._unresolved(model):
            measured = probe(model, bindings.inputs, feeds)
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


#: Sizes given to symbolic input dimensions by :class:`GenericShapes` (distinct primes).
GENERIC_SIZES = (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47)


@dataclass(frozen=True)
class GenericShapes(Analysis):
    """Concrete shapes of the main graph's values when every symbolic input dimension takes a
    distinct generic size: two values with equal concrete shapes then have equal shapes for
    generic inputs, which symbolic inference cannot always tell (it may name one dim twice).
    The result is a :class:`ShapeTable`, or None when inference fails."""

    name = "generic-shapes"

    def compute(self, model: Model, am: AnalysisManager) -> ShapeTable | None:
        sizes = iter(GENERIC_SIZES)
        dims: dict[str, int] = {}
        for inp in model.graph.inputs:
            for d in inp.shape() or ():
                if isinstance(d, str) and d not in dims:
                    dims[d] = next(sizes, 53)
        try:
            return ShapeTable(model, bind_inputs(model, None, dims))
        except Exception as e:  # inference failed: no concrete shapes
            log.debug("generic shapes unavailable: %s", e)
            return None
