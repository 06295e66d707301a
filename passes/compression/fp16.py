"""float32 -> float16 conversion (for the cuda and tensorrt targets).

What the pass does, on the main graph:

* Every node is classified from its ONNX schema (at the model's opset):

  - **converted**: a standard-domain op whose float32 values are bound to type parameters that
    allow ``tensor(float16)``. All values bound to those parameters (inputs and outputs) become
    float16. Values at fixed-type positions (Resize ``scales`` is ``tensor(float)``) and at
    parameters without float16 (LayerNormalization's ``Mean``/``InvStdDev``) keep their type. A
    parameter bound to a single input and to no output (Shape's ``T``, Cast's ``T1``, Pow's
    exponent ``T1``) accepts either type: its input is read as it is, with no Cast.
  - **kept** in float32: ops in ``keep_ops``, nodes named in ``keep_nodes``, custom-domain ops
    and model-local functions, nodes with subgraphs (If/Loop/Scan: the whole node and its bodies
    stay float32), ops whose float output type is set by an attribute (EyeLike, Random*,
    Bernoulli, window functions), nodes with sequence/optional/map values, and, with
    ``overflow="keep"``, nodes reading a float32 constant that float16 cannot represent
    (``|x| > 65504``). Kept nodes read and produce exactly the types they had.
  - **sources**: ``Cast(to=FLOAT)`` and ``ConstantOfShape`` produce float16 (``to`` and
    ``value`` rewritten) when every reader of their output wants float16; constants
    (initializers and ``Constant`` nodes) are converted when read as float16.

* Boundaries: wherever a value's new type differs from what a reader needs, one ``Cast`` per
  (value, type) is inserted and shared by all such readers: around kept nodes, at fixed-float
  inputs, for values captured by kept If/Loop/Scan bodies (the Cast sits in the main graph), and
  at the model's inputs and outputs with ``keep_io_types`` (outputs keep their names: the
  producer's value is renamed and the Cast takes the output's name).

* Constants: one converted copy per tensor. A float32 constant read only as float16 is
  converted in place (same name); one read as both keeps its float32 data for the float32
  readers and gets one float16 copy (``<name>_fp16``) for the others; nothing is cast at run
  time. Nonzero magnitudes below ``min_positive`` become ``±min_positive`` (so an epsilon never
  becomes 0 or changes sign); ``min_positive=0`` gives plain IEEE rounding, which flushes
  magnitudes below 2**-25 to 0 (counted as ``flushed_to_zero``). Magnitudes above 65504 either
  keep their consumer in float32 (``overflow="keep"``, the default: no silent change of a
  weight) or are clipped to ±65504 (``overflow="clip"``, counted as ``clipped_values``).

* Idempotent: the Casts it inserts carry provenance ``fp16`` and are left alone, converted nodes
  no longer have float32 values, and kept nodes are kept again, so a second run changes nothing.

Not handled: activations that overflow float16 at run time (only constants are checked), and
conversion inside If/Loop/Scan bodies (kept float32 as a whole).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from onnxforge.analysis.shapes import InferredTypes
from onnxforge.ir import PROVENANCE_KEY, Graph, Model, Node, Value
from onnxforge.ir.constants import add_constant, constant_node_tensor, constant_value
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16
#: Largest finite float16.
FP16_MAX = 65504.0
#: Smallest positive (subnormal) float16, 2**-24.
FP16_MIN_SUBNORMAL = 2.0**-24
PROVENANCE = "fp16"
_RULE_KEY = PROVENANCE_KEY
_ANY = -1  # a reader that accepts either float type
_NON_TENSOR = -2  # sequence/optional/map values

#: Ops kept in float32 by default, and why:
#:
#: * ``Range``: the element count ``ceil((limit - start) / delta)`` and the values drift in
#:   float16 (integers are exact only up to 2048), so shapes can change.
#: * ``Resize``, ``Upsample``, ``GridSample``, ``RoiAlign``: sampling coordinates computed in
#:   float16 are off by whole pixels beyond 2048 (and Resize's ``scales`` must be float32).
#: * ``NonMaxSuppression``: box coordinates and IoU thresholds; float32-only kernels in
#:   onnxruntime.
#: * ``TopK``: float16 rounding creates ties that reorder the returned indices.
#: * ``CumSum``: running sums lose precision and overflow as the axis grows.
#: * ``ReduceSumSquare``, ``ReduceL2``, ``ReduceLogSumExp``, ``ReduceProd``: results grow with
#:   squares, products or exponentials of the inputs and overflow 65504 on ordinary activations.
#:
#: Not blocked, on purpose: ``Softmax`` and ``LayerNormalization`` (onnxruntime accumulates in
#: float32; LayerNormalization's ``stash_type`` is float32), ``ReduceMean``/``ReduceSum``
#: (bounded by the input range / by ``n * max``), ``Min``/``Max`` (exact in float16;
#: onnxruntime's list has them for kernels missing long ago), ``Exp``/``Pow`` (blocking one op of
#: a decomposed softmax or variance only moves the overflow to the Cast after it: fuse
#: LayerNormalization first, with the optimize pipeline).
DEFAULT_KEEP_OPS: tuple[str, ...] = (
    "Range",
    "Resize",
    "Upsample",
    "GridSample",
    "RoiAlign",
    "NonMaxSuppression",
    "TopK",
    "CumSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceProd",
)


@dataclass(frozen=True)
class Float16Options(PassOptions):
    #: Model inputs and outputs stay float32 (Casts at the boundary); False makes them float16.
    keep_io_types: bool = True
    #: Op types kept in float32 (standard domain; see :data:`DEFAULT_KEEP_OPS`).
    keep_ops: tuple[str, ...] = DEFAULT_KEEP_OPS
    #: Node names kept in float32 (main graph).
    keep_nodes: tuple[str, ...] = ()
    #: Nonzero constant magnitudes below this become ``±min_positive``; 0 disables (IEEE
    #: rounding: magnitudes below 2**-25 become 0). Otherwise at least 2**-24.
    min_positive: float = FP16_MIN_SUBNORMAL
    #: A float32 constant with ``|x| > 65504``: "keep" keeps its consumers in float32, "clip"
    #: clips it to ±65504 (counted in the ``clipped_values`` statistic).
    overflow: Literal["keep", "clip"] = "keep"

    def validate(self) -> None:
        for name in ("keep_ops", "keep_nodes"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError(f"{name} must be a tuple of strings, not {type(value).__name__}")
            items = tuple(value)
            if not all(isinstance(x, str) and x for x in items):
                raise ValueError(f"{name} must hold non-empty strings")
            object.__setattr__(self, name, items)  # lists from JSON/CLI become tuples
        if not isinstance(self.keep_io_types, bool):
            raise ValueError("keep_io_types must be a bool")
        mp = self.min_positive
        if not isinstance(mp, (int, float)) or isinstance(mp, bool) or not np.isfinite(mp):
            raise ValueError("min_positive must be a finite number")
        if mp != 0 and not FP16_MIN_SUBNORMAL <= mp <= FP16_MAX:
            raise ValueError(f"min_positive must be 0 or in [2**-24, 65504], not {mp}")
        if self.overflow not in ("keep", "clip"):
            raise ValueError(f"overflow must be 'keep' or 'clip', not {self.overflow!r}")


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------
@dataclass
class ConversionCounts:
    clipped: int = 0
    clamped_tiny: int = 0
    flushed_to_zero: int = 0


def overflows_float16(arr: np.ndarray) -> bool:
    """True if a finite value of ``arr`` lies beyond float16's range (|x| > 65504)."""
    a = np.asarray(arr)
    if a.size == 0 or a.dtype.kind != "f":
        return False
    mag = np.abs(a[np.isfinite(a)])
    return bool(mag.size and mag.max() > FP16_MAX)


def to_float16(
    arr: np.ndarray, *, min_positive: float = FP16_MIN_SUBNORMAL, counts: ConversionCounts | None = None
) -> np.ndarray:
    """``arr`` as float16: nonzero magnitudes below ``min_positive`` become ``±min_positive``,
    finite magnitudes above 65504 are clipped to ±65504, NaN and ±inf are kept."""
    a = np.array(arr, dtype=np.float32, copy=True)
    mag = np.abs(a)
    c = counts if counts is not None else ConversionCounts()
    if min_positive > 0:
        tiny = (mag > 0) & (mag < min_positive)
        n = int(np.count_nonzero(tiny))
        if n:
            a[tiny] = np.copysign(np.float32(min_positive), a[tiny])
            c.clamped_tiny += n
    big = np.isfinite(a) & (mag > FP16_MAX)
    n = int(np.count_nonzero(big))
    if n:
        a[big] = np.copysign(np.float32(FP16_MAX), a[big])
        c.clipped += n
    out = a.astype(np.float16)
    c.flushed_to_zero += int(np.count_nonzero((out == 0) & (a != 0)))
    return out


# --------------------------------------------------------------------------------------------
# Per-node plans
# --------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    kind: Literal["converted", "kept", "neutral", "source", "boundary", "constant"]
    reason: str = ""
    #: Per input index: FLOAT16, or _ANY, or None (its original type).
    input_wants: dict[int, int] = field(default_factory=dict)
    #: Output indexes that become float16.
    fp16_outputs: set[int] = field(default_factory=set)


_ATTRIBUTE_TYPED_NOTE = "float output type set by an attribute"


def _elem_of(tp: onnx.TypeProto | None) -> int:
    if tp is None:
        return 0
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        return int(tp.tensor_type.elem_type)
    if which is None:
        return 0
    return _NON_TENSOR


def _retyped(tp: onnx.TypeProto | None, elem: int) -> onnx.TypeProto | None:
    if tp is None or not tp.HasField("tensor_type"):
        return None
    out = onnx.TypeProto()
    out.CopyFrom(tp)
    out.tensor_type.elem_type = elem
    return out


def _is_boundary_cast(node: Node) -> bool:
    return node.op_type == "Cast" and any(
        m.key == _RULE_KEY and m.value == PROVENANCE for m in node.metadata_props
    )


class _Converter:
    def __init__(self, model: Model, opts: Float16Options, ctx: PassContext) -> None:
        self.model = model
        self.graph: Graph = model.graph
        self.opts = opts
        self.ctx = ctx
        self.opset = model.opset("") or 1
        self.functions = model.function_keys()
        self.keep_ops = set(opts.keep_ops)
        self.keep_nodes = set(opts.keep_nodes)
        self.counts = ConversionCounts()
        self.stats: dict[str, float] = {}
        self.kept: dict[str, str] = {}
        self._schemas: dict[str, onnx.defs.OpSchema | None] = {}
        self._inferred: dict[str, onnx.TypeProto] = {}
        self.orig: dict[Value, int] = {}
        self.actual: dict[Value, int] = {}
        self._casts: dict[tuple[Value, int], Value] = {}

    # -- types ---------------------------------------------------------------------------------
    def _load_types(self) -> None:
        found = self.ctx.analyses.get(InferredTypes(), self.model)
        if found.error is not None:  # fall back to the stored types
            log.warning("fp16: type inference failed, using stored value types: %s", found.error)
        self._inferred = found.types
        for v in self.graph.values():
            if v.const is not None:
                self.orig[v] = int(v.const.data_type)
                continue
            elem = _elem_of(v.type) if v.is_graph_input() or v.is_graph_output() else 0
            if not elem:
                elem = _elem_of(self._inferred.get(v.name)) or _elem_of(v.type)
            self.orig[v] = elem
        self.actual = dict(self.orig)

    def _type_of(self, v: Value) -> onnx.TypeProto | None:
        if v.type is not None:
            return v.type
        if v.const is not None:
            tp = onnx.TypeProto()
            tp.tensor_type.elem_type = v.const.data_type
            tp.tensor_type.shape.SetInParent()
            for d in v.const.dims:
                tp.tensor_type.shape.dim.add().dim_value = d
            return tp
        return self._inferred.get(v.name)

    # -- classification ---------------------------------------------------------------------------
    def _schema(self, op_type: str) -> onnx.defs.OpSchema | None:
        if op_type not in self._schemas:
            try:
                self._schemas[op_type] = onnx.defs.get_schema(op_type, self.opset, "")
            except Exception:
                self._schemas[op_type] = None
        return self._schemas[op_type]

    def _has_float(self, node: Node) -> bool:
        return any(v is not None and self.orig.get(v) == FLOAT for v in (*node.inputs, *node.outputs))

    def _classify(self, node: Node) -> _Plan:
        if _is_boundary_cast(node):
            return _Plan("boundary", input_wants={0: _ANY})
        if (
            node.op_type == "Constant"
            and node.is_standard_domain()
            and constant_node_tensor(node) is not None
        ):
            return _Plan("constant")
        if not self._has_float(node):
            return _Plan("neutral")
        reason = self._keep_reason(node)
        if reason:
            return _Plan("kept", reason)
        if node.op_type == "Cast":
            return self._plan_cast(node)
        if node.op_type == "ConstantOfShape":
            return self._plan_constant_of_shape(node)
        return self._plan_by_schema(node)

    def _keep_reason(self, node: Node) -> str:
        if node.name and node.name in self.keep_nodes:
            return "keep_nodes"
        if node.has_subgraphs():
            return "control flow (subgraphs kept float32)"
        if not node.is_standard_domain() or (node.domain, node.op_type) in self.functions:
            return f"custom op ({node.domain or 'ai.onnx'}::{node.op_type})"
        if node.op_type in self.keep_ops:
            return "keep_ops"
        if any(v is not None and self.orig.get(v) == _NON_TENSOR for v in (*node.inputs, *node.outputs)):
            return "sequence/optional/map values"
        if self._schema(node.op_type) is None:
            return f"no schema for {node.op_type} at opset {self.opset}"
        return ""

    def _plan_cast(self, node: Node) -> _Plan:
        plan = _Plan("source", input_wants={0: _ANY})
        if int(node.attr("to", 0)) == FLOAT:
            plan.fp16_outputs = {0}  # tentatively: only if every reader wants float16
        return plan

    def _plan_constant_of_shape(self, node: Node) -> _Plan:
        t = node.attributes.get("value")
        data = numpy_helper.to_array(t.t) if t is not None and t.HasField("t") else np.zeros(1, np.float32)
        if data.dtype != np.float32:
            return _Plan("neutral")
        if overflows_float16(data) and self.opts.overflow == "keep":
            return _Plan("kept", "overflow (value beyond float16)")
        return _Plan("source", fp16_outputs={0})

    def _plan_by_schema(self, node: Node) -> _Plan:
        schema = self._schema(node.op_type)
        assert schema is not None
        allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in schema.type_constraints}
        # Bind every present input/output to its formal parameter's type string.
        bound: dict[str, list[tuple[str, int, Value]]] = {}
        heterogeneous: set[str] = set()
        for kind, formals, values in (
            ("in", schema.inputs, node.inputs),
            ("out", schema.outputs, node.outputs),
        ):
            for i, v in enumerate(values):
                if v is None:
                    continue
                if i < len(formals):
                    f = formals[i]
                elif formals and formals[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
                    f = formals[-1]
                else:
                    return _Plan("kept", f"more {kind}puts than the {node.op_type} schema allows")
                bound.setdefault(f.type_str, []).append((kind, i, v))
                if not f.is_homogeneous:
                    heterogeneous.add(f.type_str)
        plan = _Plan("neutral")
        for param, members in bound.items():
            if param not in allowed or "tensor(float16)" not in allowed[param]:
                continue  # fixed type or no float16: values keep their types
            if not any(self.orig.get(v) == FLOAT for _, _, v in members):
                continue
            ins = [(i, v) for kind, i, v in members if kind == "in"]
            outs = [i for kind, i, _ in members if kind == "out"]
            if not outs and len(ins) == 1:
                plan.input_wants[ins[0][0]] = _ANY  # a free parameter reads either type
                continue
            if param in heterogeneous:
                return _Plan("kept", "heterogeneous variadic float values")
            if not ins:
                return _Plan("kept", _ATTRIBUTE_TYPED_NOTE)
            for i, v in ins:
                if self.orig.get(v) in (FLOAT, 0):
                    plan.input_wants[i] = FLOAT16
            plan.fp16_outputs.update(outs)
            plan.kind = "converted"
        if plan.kind != "converted":
            return plan
        for i, want in plan.input_wants.items():
            v = node.input(i)
            if want != FLOAT16 or v is None:
                continue
            data = _const_float32(v)
            if data is not None and overflows_float16(data) and self.opts.overflow == "keep":
                return _Plan("kept", f"overflow ({v.name} has values beyond float16)")
        return plan

    # -- the rewrite ---------------------------------------------------------------------------
    def run(self) -> PassResult:
        if self.opset < 7:
            log.warning("fp16: opset %d is too old (Cast needs an integer 'to'): left unchanged", self.opset)
            return PassResult(False, {"skipped_old_opset": 1})
        self._load_types()
        graph = self.graph
        start = self.model.version
        plans = {node: self._classify(node) for node in graph}
        out_want = FLOAT if self.opts.keep_io_types else FLOAT16

        # Which type each reader needs: (reader, input index) or ("output", graph, position).
        wants: dict[Value, list[tuple[object, int, int]]] = {}

        def want(v: Value, reader: object, idx: int, w: int) -> None:
            wants.setdefault(v, []).append((reader, idx, w))

        for v in list(self.orig):
            for reader, idx in v.uses():
                if reader.graph is graph:
                    p = plans[reader]
                    if p.kind in ("converted", "neutral", "source", "boundary"):
                        w = p.input_wants.get(idx)
                        want(v, reader, idx, self.orig[v] if w is None else w)
                    else:
                        want(v, reader, idx, self.orig[v])
                else:  # read inside a (kept) subgraph body
                    want(v, reader, idx, self.orig[v])
        for node in graph:
            for sg in node.all_subgraphs():
                for g in sg.all_graphs():
                    for pos, v in enumerate(g.outputs):
                        if v in self.orig:
                            want(v, g, pos, self.orig[v])
        for pos, v in enumerate(graph.outputs):
            w = out_want if self.orig.get(v) == FLOAT else self.orig.get(v, 0)
            want(v, graph, pos, w)

        # Sources turn float16 only when every reader wants float16.
        for node, p in plans.items():
            if p.kind != "source" or not p.fp16_outputs:
                continue
            out = node.output(0)
            needs = [w for _, _, w in wants.get(out, [])] if out is not None else []
            if not (needs and all(w in (FLOAT16, _ANY) for w in needs) and FLOAT16 in needs):
                p.fp16_outputs = set()

        # New types of node outputs and graph inputs.
        for node, p in plans.items():
            for i in p.fp16_outputs:
                v = node.output(i)
                if v is not None and self.orig.get(v) in (FLOAT, 0):
                    self.actual[v] = FLOAT16
        if not self.opts.keep_io_types:
            for v in graph.inputs:
                if self.orig.get(v) == FLOAT:
                    self.actual[v] = FLOAT16

        # Nothing to do?
        constant_list = [v for v in self.orig if self._is_constant(v, plans)]  # model order
        constant_values = set(constant_list)
        pending = any(self.actual[v] != self.orig[v] for v in self.orig) or any(
            w not in (_ANY, self.actual[v]) for v, ws in wants.items() for _, _, w in ws
        )
        self._record(plans)
        if not pending:
            return PassResult(False, self.stats)

        # Retype converted values (graph inputs included) and rewrite sources.
        for v in self.orig:
            if self.actual[v] == FLOAT16 and self.orig[v] != FLOAT16 and v not in constant_values:
                if v.type is not None:
                    v.type = _retyped(v.type, FLOAT16)
                if v.const is not None:  # default value of a graph input
                    v.set_const(
                        to_float16(v.array(), min_positive=self.opts.min_positive, counts=self.counts)
                    )
                    self.stats["converted_initializers"] = self.stats.get("converted_initializers", 0) + 1
        for node, p in plans.items():
            if p.kind == "converted":
                self.stats["converted_nodes"] = self.stats.get("converted_nodes", 0) + 1
            if p.kind == "source" and p.fp16_outputs:
                if node.op_type == "Cast":
                    node.set_attr("to", FLOAT16)
                    self.stats["retyped_casts"] = self.stats.get("retyped_casts", 0) + 1
                else:  # ConstantOfShape
                    t = node.attributes.get("value")
                    data = numpy_helper.to_array(t.t) if t is not None else np.zeros(1, np.float32)
                    arr = to_float16(data, min_positive=self.opts.min_positive, counts=self.counts)
                    node.set_attr("value", numpy_helper.from_array(arr))
                self.stats["converted_nodes"] = self.stats.get("converted_nodes", 0) + 1

        # Constants: in place, or one copy per other type.
        for v in constant_list:
            if self.orig[v] == FLOAT:
                self._convert_constant(v, wants.get(v, []))

        # Everything else: one Cast per (value, type), shared by its readers.
        for v, ws in wants.items():
            if v in constant_values:
                continue
            for reader, idx, w in ws:
                if w == _ANY or w == self.actual[v]:
                    continue
                self._reroute(v, reader, idx, self._cast(v, w))

        graph.toposort()
        self._check_casts()
        self.stats.update(
            clipped_values=self.counts.clipped,
            clamped_tiny=self.counts.clamped_tiny,
            flushed_to_zero=self.counts.flushed_to_zero,
        )
        return PassResult(self.model.version != start, self.stats)

    def _is_constant(self, v: Value, plans: dict[Node, _Plan]) -> bool:
        if v.is_graph_input():
            return False
        if v.const is not None:
            return True
        p = v.producer
        return p is not None and p in plans and plans[p].kind == "constant"

    def _record(self, plans: dict[Node, _Plan]) -> None:
        kept = {n.name or f"{n.op_type}#{n.id}": p.reason for n, p in plans.items() if p.kind == "kept"}
        self.kept = kept
        self.stats["kept_nodes"] = len(kept)
        overflow = sum(1 for reason in kept.values() if reason.startswith("overflow"))
        if overflow:
            self.stats["kept_overflow"] = overflow
        self.ctx.records.setdefault("fp16", {})["kept"] = kept

    # -- constants -----------------------------------------------------------------------------
    def _convert_constant(self, v: Value, ws: list[tuple[object, int, int]]) -> None:
        need = {w for _, _, w in ws if w != _ANY}
        if FLOAT16 not in need:
            return
        is_output = any(isinstance(r, Graph) and r is self.graph for r, _, _ in ws)
        own = FLOAT16 if (is_output and not self.opts.keep_io_types) or need == {FLOAT16} else FLOAT
        data = _const_float32(v)
        assert data is not None
        if own == FLOAT16:
            if FLOAT in need:  # float32 readers get an exact copy of the original data
                copy = add_constant(self.graph, np.array(data, dtype=np.float32), f"{v.name}_fp32")
                self.stats["duplicated_constants"] = self.stats.get("duplicated_constants", 0) + 1
                for reader, idx, w in ws:
                    if w == FLOAT:
                        self._reroute(v, reader, idx, copy)
            self._set_constant(v, to_float16(data, min_positive=self.opts.min_positive, counts=self.counts))
            self.actual[v] = FLOAT16
        else:
            key = (v, FLOAT16)
            if key not in self._casts:
                arr = to_float16(data, min_positive=self.opts.min_positive, counts=self.counts)
                self._casts[key] = add_constant(self.graph, arr, f"{v.name}_fp16")
                self._count_bytes(data.size)
                self.stats["duplicated_constants"] = self.stats.get("duplicated_constants", 0) + 1
            for reader, idx, w in ws:
                if w == FLOAT16:
                    self._reroute(v, reader, idx, self._casts[key])

    def _set_constant(self, v: Value, arr: np.ndarray) -> None:
        self._count_bytes(arr.size)
        self.stats["converted_constants"] = self.stats.get("converted_constants", 0) + 1
        if v.const is not None:
            v.set_const(arr)
        else:
            node = v.producer
            assert node is not None
            node.attributes.clear()
            node.set_attr("value", numpy_helper.from_array(arr))
        if v.type is not None:
            v.type = _retyped(v.type, FLOAT16)

    def _count_bytes(self, n: int) -> None:
        self.stats["weight_bytes_after"] = self.stats.get("weight_bytes_after", 0) + 2 * n
        self.stats["weight_bytes_before"] = self.stats.get("weight_bytes_before", 0) + 4 * n

    # -- casts ---------------------------------------------------------------------------------
    def _cast(self, v: Value, to: int) -> Value:
        key = (v, to)
        out = self._casts.get(key)
        if out is not None:
            return out
        suffix = "fp16" if to == FLOAT16 else "fp32"
        node = self.graph.add_node(
            "Cast",
            [v],
            name=f"{v.name}_to_{suffix}",
            attrs={"to": to},
            output_names=[f"{v.name}_{suffix}"],
            provenance=PROVENANCE,
        )
        out = node.outputs[0]
        assert out is not None
        out.type = _retyped(self._type_of(v), to)
        self.orig[out] = self.actual[out] = to
        self._casts[key] = out
        self.stats["inserted_casts"] = self.stats.get("inserted_casts", 0) + 1
        return out

    def _reroute(self, v: Value, reader: object, idx: int, new: Value) -> None:
        if isinstance(reader, Node):
            reader.set_input(idx, new)
        elif isinstance(reader, Graph) and reader is self.graph:
            self._retarget_output(idx, v, new)
        elif isinstance(reader, Graph):
            reader.replace_output(idx, new)

    def _retarget_output(self, pos: int, old: Value, new: Value) -> None:
        """Graph output ``pos`` reads ``new`` under ``old``'s name (``old`` is renamed)."""
        graph = self.graph
        name, tp = old.name, old.type
        if new.const is not None or new.is_graph_input() or new.is_graph_output():
            # A Cast's output is a fresh intermediate value: anything else needs its own node.
            ident = graph.add_node("Identity", [new], name=f"{name}_keep", provenance=PROVENANCE)
            target = ident.outputs[0]
            assert target is not None
            self.orig[target] = self.actual[target] = self.actual[new]
        else:
            target = new
        if old.producer is not None or not old.is_graph_input():
            old.name = self.model.unique_name(f"{name}_{'fp16' if self.actual[old] == FLOAT16 else 'fp32'}")
            target.name = name
        target.type = _retyped(tp, self.actual[target]) if tp is not None else target.type
        target.doc_string, target.metadata_props = old.doc_string, list(old.metadata_props)
        old.type = _retyped(tp, self.actual[old]) if tp is not None else old.type
        graph.output_info.pop(pos, None)
        graph.replace_output(pos, target)

    def _check_casts(self) -> None:
        """Every Cast of the main graph produces the type its ``to`` says."""
        for node in self.graph:
            if node.op_type != "Cast":
                continue
            out = node.output(0)
            if out is None or out not in self.actual:
                continue
            to = int(node.attr("to", 0))
            if self.actual[out] in (FLOAT, FLOAT16) and self.actual[out] != to:
                raise AssertionError(
                    f"fp16: {node!r} casts to {to} but its output was typed {self.actual[out]}"
                )


def _const_float32(v: Value) -> np.ndarray | None:
    try:
        arr = constant_value(v)
    except ValueError:
        return None
    return arr if arr is not None and arr.dtype == np.float32 else None


class ConvertFloat16(Pass):
    """Converts float32 computation to float16, keeping the model's I/O types (by default),
    blocked ops, named nodes, control flow and custom ops in float32 with Casts between the
    regions. See the module docstring for the rules."""

    name = "fp16"
    summary = "Convert float32 to float16 (cuda/tensorrt), keeping I/O and sensitive ops in float32."
    Options = Float16Options
    lossless = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        assert isinstance(opts, Float16Options)
        return _Converter(model, opts, ctx).run()


__all__ = [
    "DEFAULT_KEEP_OPS",
    "FP16_MAX",
    "FP16_MIN_SUBNORMAL",
    "ConvertFloat16",
    "Float16Options",
    "overflows_float16",
    "to_float16",
]
