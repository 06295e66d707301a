"""The cost model: per-node and per-model MACs, FLOPs, parameters, weight bytes, activation
bytes, peak activation memory and a roofline latency estimate.

Counting rules (also in ``docs/COST_MODEL.md``):

* **Formulas** come from :mod:`onnxforge.kernels.costs`. An op without one counts zero and is
  listed under ``no_formula``; a node whose shapes could not be resolved counts zero and is
  listed under ``unresolved``. Nothing raises.
* **Weights** are the constant tensors nodes read (initializers, ``Constant`` node outputs,
  including those inside and captured by subgraphs), except int64/bool/string tensors, which
  are shape and index data. Each tensor counts once, on the first node (in execution order)
  that reads it, so per-node values add up to the totals. Every stored weight counts, in every
  branch of an ``If``.
* **Control flow**: an ``If`` counts the branch with more FLOPs (an upper bound; the other
  branch's nodes are listed with ``counted: false``); a ``Loop`` counts its body times the trip
  count when the trip-count input is a constant (early exits are ignored; otherwise once, and
  the assumption is recorded); a ``Scan`` counts its body once per scanned slice.
* **Activation bytes** of a node are the bytes of its non-constant inputs and of its outputs;
  the roofline adds the bytes of every weight it reads.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxforge.analysis.shapes import ShapeBindings, ShapeTable, bind_inputs
from onnxforge.cost.calibrate import BINARY_OPS, per_element_key
from onnxforge.cost.executed import branch_conditions, executed_model
from onnxforge.cost.memory import MemoryProfile, activation_peak, memory_order
from onnxforge.cost.probe import probe_types
from onnxforge.cost.roofline import NodeWork, TargetProfile, dtype_class, get_profile
from onnxforge.ir import Graph, Model, Node, Value
from onnxforge.ir.constants import constant_value, is_constant
from onnxforge.kernels.costs.linalg import conv_tap_fraction
from onnxforge.kernels.costs.registry import (
    MATMUL,
    MOVEMENT,
    CostCall,
    MissingShape,
    OpCost,
    TensorInfo,
    get_formula,
)

log = logging.getLogger(__name__)

_NOT_WEIGHTS = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.STRING}
_FREE_OPS = {"Constant"}  # folded into initializers by every runtime: no run-time cost


@dataclass
class NodeCost:
    """The cost of one node (per execution; ``runs`` executions per model run)."""

    name: str
    op_type: str
    domain: str
    graph: str
    macs: int = 0
    flops: int = 0
    params: int = 0
    weight_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    runs: int = 1
    counted: bool = True
    kind: str = "vector"
    status: str = "ok"  # ok | no_formula | unresolved
    note: str = ""
    est_ms: float = 0.0
    bound: str = ""
    weight_read_bytes: int = 0

    @property
    def op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain not in ("", "ai.onnx") else self.op_type

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (activations in and out plus weights read)."""
        moved = self.input_bytes + self.output_bytes + self.weight_read_bytes
        return self.flops / moved if moved else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op,
            "graph": self.graph,
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "arithmetic_intensity": round(self.intensity, 3),
            "runs": self.runs,
            "counted": self.counted,
            "est_latency_ms": round(self.est_ms, 6),
            "bound": self.bound,
            "status": self.status,
            "note": self.note,
        }


@dataclass
class CostTotals:
    """Model-level totals (``macs``/``flops``/latency count executions; weights count storage)."""

    macs: int = 0
    flops: int = 0
    params: int = 0
    weight_bytes: int = 0
    peak_activation_bytes: int = 0
    est_latency_ms: float = 0.0
    activation_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "est_latency_ms": round(self.est_latency_ms, 4),
            "activation_bytes": self.activation_bytes,
        }


@dataclass
class CostReport:
    """Everything :func:`analyze` found; ``to_dict()`` is the ``--json`` schema."""

    totals: CostTotals
    nodes: list[NodeCost]
    profile: TargetProfile
    bindings: ShapeBindings
    memory: MemoryProfile
    reordered_memory: MemoryProfile | None = None
    notes: list[str] = field(default_factory=list)
    #: Nodes of the graph onnxruntime executes, when the latency was estimated on it.
    executed_nodes: int | None = None

    def by_op_type(self) -> dict[str, dict[str, Any]]:
        """Totals per op type (counted executions), heaviest FLOPs first."""
        acc: dict[str, dict[str, Any]] = {}
        for n in self.nodes:
            row = acc.setdefault(
                n.op,
                {"count": 0, "macs": 0, "flops": 0, "params": 0, "weight_bytes": 0, "est_latency_ms": 0.0},
            )
            row["count"] += 1
            row["params"] += n.params
            row["weight_bytes"] += n.weight_bytes
            if n.counted:
                row["macs"] += n.macs * n.runs
                row["flops"] += n.flops * n.runs
                row["est_latency_ms"] += n.est_ms * n.runs
        for row in acc.values():
            row["est_latency_ms"] = round(row["est_latency_ms"], 4)
        return dict(sorted(acc.items(), key=lambda kv: (-kv[1]["flops"], -kv[1]["count"], kv[0])))

    def no_formula(self) -> dict[str, int]:
        return dict(Counter(n.op for n in self.nodes if n.status == "no_formula"))

    def unresolved(self) -> list[str]:
        return [n.name or n.op for n in self.nodes if n.status == "unresolved"]

    @property
    def complete(self) -> bool:
        """False when an input's spatial/sequence dim was left open (bound to 1 only so that
        shapes resolve): MACs, FLOPs, activation memory and latency are then not figures of any
        real input, and :func:`size_dependent` figures must not be shown."""
        return self.bindings.complete

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` schema. When :attr:`complete` is False the size-dependent figures are
        ``null`` and ``dims.missing`` names the dims to set; ``depends_on_assumed_dims`` lists
        the figures that rest on an assumed dim (a batch of 1, or a missing dim)."""
        assumed = bool(self.bindings.batch or self.bindings.missing)
        d: dict[str, Any] = {
            "total": _blank(self.totals.to_dict(), self.complete),
            "by_op_type": {k: _blank(v, self.complete) for k, v in self.by_op_type().items()},
            "nodes": [_blank(n.to_dict(), self.complete) for n in self.nodes],
            "complete": self.complete,
            "dims": self.bindings.to_dict(),
            "depends_on_assumed_dims": list(SIZE_DEPENDENT) if assumed else [],
            "memory": {
                "peak_activation_bytes": self.memory.peak_bytes,
                "peak_at_node": self.memory.peak_node,
                "live_at_peak": [{"name": k, "bytes": b} for k, b in self.memory.live_at_peak],
            },
            "target": self.profile.to_dict(),
            "inputs": {k: list(v) for k, v in self.bindings.inputs.items()},
            "assumptions": list(self.bindings.assumptions),
            "no_formula": self.no_formula(),
            "unresolved": self.unresolved(),
            "notes": list(self.notes),
        }
        if self.reordered_memory is not None:
            d["memory"]["reordered_peak_activation_bytes"] = self.reordered_memory.peak_bytes
        if not self.complete:
            d["memory"] = {k: None for k in d["memory"]}
            d["missing_dims"] = self.bindings.missing_message()
        return d


#: Figures that depend on input sizes (the rest, parameters and weight bytes, do not).
SIZE_DEPENDENT = (
    "macs", "flops", "peak_activation_bytes", "activation_bytes", "est_latency_ms", "input_bytes",
    "output_bytes", "arithmetic_intensity", "bound",
)


def _blank(d: dict[str, Any], complete: bool) -> dict[str, Any]:
    """``d`` with its size-dependent figures ``None`` unless ``complete``."""
    return d if complete else {k: (None if k in SIZE_DEPENDENT else v) for k, v in d.items()}


def _run_overhead_s(model: Model, profile: TargetProfile) -> float:
    """The fixed cost of one call: the profile's, plus the calibrated cost of each graph input
    and output beyond the first."""
    cal = profile.calibration
    if cal is None:
        return profile.run_overhead_s
    ios = len([v for v in model.graph.inputs if not v.is_initializer()]) + len(model.graph.outputs)
    return profile.run_overhead_s + max(ios - 2, 0) * cal.io_overhead


def _executed_latency_ms(
    model: Model,
    bindings: ShapeBindings,
    profile: TargetProfile,
    *,
    probe: bool,
    feeds: Mapping[str, np.ndarray] | None,
) -> tuple[float, int] | None:
    """(estimated ms, node count) of the graph onnxruntime executes for ``model``
    (:func:`onnxforge.cost.executed.executed_model`), at the same input shapes; None when
    onnxruntime cannot give it."""
    ran = executed_model(model)
    if ran is None:
        return None
    try:
        table = ShapeTable(ran, bindings, probe=probe_types if probe else None, feeds=feeds)
        walker = _Walker(ran, table, profile)
        if probe:  # the If branches that run on these inputs, not the costlier ones
            walker.conditions = branch_conditions(ran, bindings.inputs, feeds)
        walker.graph(ran.graph, "main", runs=1, counted=True)
    except Exception as e:  # the model's own graph still has its estimate
        log.info("cannot estimate onnxruntime's executed graph: %s: %s", type(e).__name__, e)
        return None
    ms = _run_overhead_s(ran, profile) * 1e3 + sum(n.est_ms * n.runs for n in walker.records if n.counted)
    return ms, len(ran.graph)


def analyze(
    model: Model,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    dims: Mapping[str, int] | None = None,
    target: str | TargetProfile = "cpu",
    reorder: bool = True,
    probe: bool = True,
    feeds: Mapping[str, np.ndarray] | None = None,
    executed: bool | None = None,
) -> CostReport:
    """Cost of ``model`` at the given input ``shapes`` / symbolic ``dims`` on ``target``.

    ``target`` is a profile name (``cpu``, ``h100``, ``a100``) or a :class:`TargetProfile`.
    The model is not modified. ``reorder`` also computes the peak of a greedy memory-saving
    execution order (:func:`onnxforge.cost.memory.memory_order`). ``probe`` lets shapes that
    static inference cannot find be measured with one onnxruntime run (:mod:`onnxforge.cost.probe`)
    on ``feeds`` (default: seeded random inputs of the bound shapes). ``executed`` (default: when
    the profile is calibrated, i.e. ``cpu``) estimates the total latency on the graph
    onnxruntime executes at ORT_ENABLE_ALL (:mod:`onnxforge.cost.executed`) rather than on the
    model's own nodes.
    """
    profile = target if isinstance(target, TargetProfile) else get_profile(target)
    if executed is None:
        executed = profile.calibration is not None
    bindings = bind_inputs(model, shapes, dims)
    table = ShapeTable(model, bindings, probe=probe_types if probe else None, feeds=feeds)
    walker = _Walker(model, table, profile)
    walker.graph(model.graph, "main", runs=1, counted=True)
    totals = CostTotals(est_latency_ms=_run_overhead_s(model, profile) * 1e3)
    for n in walker.records:
        totals.params += n.params
        totals.weight_bytes += n.weight_bytes
        if n.counted:
            totals.macs += n.macs * n.runs
            totals.flops += n.flops * n.runs
            totals.est_latency_ms += n.est_ms * n.runs
            totals.activation_bytes += (n.input_bytes + n.output_bytes) * n.runs
    size = walker.value_bytes
    mem = activation_peak(model.graph, size, subgraph_peak=walker.subgraph_peak)
    totals.peak_activation_bytes = mem.peak_bytes
    reordered = None
    if reorder:
        better = activation_peak(model.graph, size, memory_order(model.graph, size), walker.subgraph_peak)
        if better.peak_bytes < mem.peak_bytes:
            reordered = better
    report = CostReport(totals, walker.records, profile, bindings, mem, reordered, walker.notes)
    if executed:
        ran = _executed_latency_ms(model, bindings, profile, probe=probe, feeds=feeds)
        if ran is not None:
            totals.est_latency_ms, report.executed_nodes = ran
            report.notes.append(
                f"latency estimated on the {report.executed_nodes} nodes onnxruntime runs at ORT_ENABLE_ALL "
                f"(per-node figures are of the {len(model.graph)} nodes of the model)"
            )
    if table.probed:
        report.notes.append(f"shapes of {table.probed} value(s) measured with one onnxruntime run")
    if report.no_formula():
        report.notes.append("no cost formula (counted as zero): " + ", ".join(sorted(report.no_formula())))
    if report.unresolved():
        report.notes.append(f"{len(report.unresolved())} node(s) with unresolved shapes (counted as zero)")
    if not bindings.complete:
        log.info("size-dependent figures unavailable: %s", bindings.missing_message())
    return report


class _Walker:
    def __init__(self, model: Model, table: ShapeTable, profile: TargetProfile) -> None:
        self.model = model
        self.table = table
        self.profile = profile
        self.records: list[NodeCost] = []
        self.notes: list[str] = []
        self._weights_seen: set[Value] = set()
        self._sub_peaks: dict[Node, int] = {}
        #: Measured If conditions by value name (:func:`onnxforge.cost.executed.branch_conditions`).
        self.conditions: dict[str, bool] = {}
        #: Bytes of every weight initializer (weights beyond the cache stream in on each run).
        self.model_weight_bytes = sum(
            self.value_bytes(v) for g in model.graph.all_graphs() for v in g.initializers.values() if self._is_weight(v)
        )

    # -- shapes ---------------------------------------------------------------------------
    def value_bytes(self, v: Value) -> int:
        info = self.table.info(v)
        return info.nbytes if info is not None else 0

    def _is_weight(self, v: Value) -> bool:
        if not is_constant(v):
            return False
        info = self.table.info(v)
        return info is not None and info.elem_type not in _NOT_WEIGHTS

    # -- walking --------------------------------------------------------------------------
    def graph(self, graph: Graph, path: str, *, runs: int, counted: bool) -> int:
        """Record every node of ``graph``; returns the graph's FLOPs per execution."""
        flops = 0
        for node in graph.topological_order():
            rec = self.node(node, path, runs=runs, counted=counted)
            flops += rec.flops
            if node.has_subgraphs():
                flops += self.control_flow(node, path, runs=runs, counted=counted)
        return flops

    def control_flow(self, node: Node, path: str, *, runs: int, counted: bool) -> int:
        label = f"{path}/{node.name or node.op_type}"
        if node.op_type == "If" and node.is_standard_domain():
            branches = []
            for attr in ("then_branch", "else_branch"):
                g = node.subgraphs.get(attr)
                if g is None:
                    continue
                start = len(self.records)
                f = self.graph(g, f"{label}/{attr}", runs=runs, counted=counted)
                branches.append((f, start, len(self.records)))
            if not branches:
                return 0
            best = max(branches, key=lambda b: b[0])
            taken = self._known_condition(node)
            if taken is not None and len(branches) == 2:
                best = branches[0] if taken else branches[1]  # the condition follows from shapes/constants
            for f, start, end in branches:
                if (f, start, end) != best:
                    for rec in self.records[start:end]:
                        rec.counted = False
            return best[0]
        if node.op_type == "Loop" and node.is_standard_domain():
            trips = self._loop_trips(node)
            body = node.subgraphs.get("body")
            if body is None:
                return 0
            return trips * self.graph(body, f"{label}/body", runs=runs * trips, counted=counted)
        if node.op_type == "Scan" and node.is_standard_domain():
            steps = self._scan_steps(node)
            body = node.subgraphs.get("body")
            if body is None:
                return 0
            return steps * self.graph(body, f"{label}/body", runs=runs * steps, counted=counted)
        total = 0
        for attr, g in node.subgraphs.items():
            if isinstance(g, list):
                for i, sg in enumerate(g):
                    total += self.graph(sg, f"{label}/{attr}[{i}]", runs=runs, counted=counted)
            else:
                total += self.graph(g, f"{label}/{attr}", runs=runs, counted=counted)
        return total

    def _known_condition(self, node: Node) -> bool | None:
        """The value of an If's condition when constants and input shapes decide it (folded by
        the shape analysis), else None (the costlier branch is counted)."""
        cond = node.input(0)
        if cond is None:
            return None
        if cond.name in self.conditions and node.graph is self.model.graph:
            return self.conditions[cond.name]
        value = self.table.folded.get(cond.name)
        if value is None:
            try:
                value = constant_value(cond) if is_constant(cond) else None
            except ValueError:
                value = None
        if value is None or np.asarray(value).size != 1:
            return None
        return bool(np.asarray(value).reshape(-1)[0])

    def _loop_trips(self, node: Node) -> int:
        try:
            m = constant_value(node.input(0))
        except ValueError:
            m = None
        if m is not None and m.size == 1 and int(m.reshape(-1)[0]) >= 0:
            return int(m.reshape(-1)[0])
        self.notes.append(f"Loop {node.name!r}: trip count not constant, body counted once")
        return 1

    def _scan_steps(self, node: Node) -> int:
        n_scan = int(node.attr("num_scan_inputs", 0) or 0)
        body = node.subgraphs.get("body")
        n_state = len(body.inputs) - n_scan if isinstance(body, Graph) else 0
        axes = [int(a) for a in (node.attr("scan_input_axes") or [])] or [0] * n_scan
        if n_scan:
            info = self.table.info(node.input(n_state))
            if info is not None and info.rank:
                return info.shape[axes[0] % info.rank]
        self.notes.append(f"Scan {node.name!r}: scan length unknown, body counted once")
        return 1

    def subgraph_peak(self, node: Node) -> int:
        if node not in self._sub_peaks:
            peak = 0
            for g in _subgraphs(node):
                peak = max(peak, activation_peak(g, self.value_bytes, subgraph_peak=self.subgraph_peak).peak_bytes)
            self._sub_peaks[node] = peak
        return self._sub_peaks[node]

    def node(self, node: Node, path: str, *, runs: int, counted: bool) -> NodeCost:
        rec = NodeCost(node.name, node.op_type, node.domain, path, runs=runs, counted=counted)
        self.records.append(rec)
        infos_in: list[TensorInfo | None] = []
        infos_out = [self.table.info(v) for v in node.outputs]
        rec.output_bytes = sum(i.nbytes for i in infos_out if i is not None)
        weight_read = 0
        for i, v in enumerate(node.inputs):
            info = self.table.info(v)
            infos_in.append(info)
            if v is None or info is None:
                continue
            read = info.nbytes
            if i == 0 and node.op_type in _PARTIAL_READS and node.is_standard_domain():
                read = min(read, rec.output_bytes)  # only the selected rows are read
            if self._is_weight(v):
                weight_read += read
                if v not in self._weights_seen:
                    self._weights_seen.add(v)
                    rec.params += info.numel
                    rec.weight_bytes += info.nbytes
            elif not is_constant(v):
                rec.input_bytes += read
        rec.weight_read_bytes = weight_read
        if node.op_type in _FREE_OPS and node.is_standard_domain():
            rec.kind = MOVEMENT
            return rec
        if node.has_subgraphs() and node.op_type in ("If", "Loop", "Scan"):
            rec.kind = MOVEMENT
            rec.note = "cost counted in its subgraphs"
            self._estimate(rec, node)
            return rec
        formula = get_formula(node.op_type, node.domain)
        if formula is None:
            rec.status = "no_formula"
            rec.note = "no cost formula: counted as zero"
            self._estimate(rec, node)
            return rec
        rec.kind = formula.kind
        call = CostCall(
            node.op_type,
            node.domain,
            infos_in,
            infos_out,
            _attrs(node),
            self.model.opset(node.domain if node.domain != "ai.onnx" else "") or 21,
        )
        try:
            cost: OpCost = formula.fn(call)
        except MissingShape as e:
            rec.status = "unresolved"
            rec.note = str(e)
            cost = OpCost()
        except (ValueError, ZeroDivisionError, IndexError, TypeError) as e:
            rec.status = "unresolved"
            rec.note = f"formula failed: {type(e).__name__}: {e}"
            cost = OpCost()
        rec.macs, rec.flops = int(cost.macs), int(cost.flops)
        self._estimate(rec, node, infos_out)
        return rec

    def _estimate(self, rec: NodeCost, node: Node, infos_out: list[TensorInfo | None] | None = None) -> None:
        if _fused_qdq(node):
            # A runtime fuses Q/DQ pairs around integer kernels (QLinearConv, MatMulIntegerToFloat,
            # ...) and pre-packs dequantized weights: no separate pass over memory.
            rec.note = rec.note or "Q/DQ fused into the integer kernel by the runtime"
            rec.bound, rec.est_ms = "memory", 0.0
            return
        first = next((v for v in node.inputs if v is not None), None)
        first_info = self.table.info(first)
        # the shape table knows inferred and measured types (onnxruntime's optimized graph has none stored)
        cls = dtype_class(first_info.elem_type if first_info is not None else first.elem_type() if first is not None else None)
        moved = rec.input_bytes + rec.output_bytes + rec.weight_read_bytes
        if rec.kind == MATMUL and _dequantized_input(node):
            cls = "int8"  # the runtime runs this op on its int8 operands
            moved = (rec.input_bytes + rec.weight_read_bytes) // 4 + rec.output_bytes
        product = _product_shape(node, rec.macs, infos_out or []) if rec.kind == MATMUL else None
        flops = rec.flops
        if product is not None and product[0] == "depthwise":
            # direct depthwise kernels skip the taps in the padding (the calibration counts the same)
            fraction = self._tap_fraction(node, infos_out or [])
            if fraction < 1.0:
                flops -= int(2 * rec.macs * (1.0 - fraction))
                product = (product[0], product[1], product[2] * fraction, product[3])
        elements = sum(i.numel for i in (infos_out or []) if i is not None)
        binary = node.op_type in BINARY_OPS
        key = per_element_key(node.op_type, node.domain, binary and self._broadcasts(node, elements))
        work = NodeWork(
            node.op_type,
            rec.kind,
            cls,
            flops,
            moved,
            product,
            elements,
            per_element_key=key,
            weight_bytes=rec.weight_read_bytes,
            model_weight_bytes=self.model_weight_bytes,
        )
        seconds, rec.bound = self.profile.work_time(work)
        rec.est_ms = seconds * 1e3

    def _tap_fraction(self, node: Node, infos_out: list[TensorInfo | None]) -> float:
        """:func:`conv_tap_fraction` of a convolution node, 1.0 where a shape is unknown."""
        x = self.table.info(node.input(0)) if node.input(0) is not None else None
        w = self.table.info(node.input(1)) if node.input(1) is not None else None
        y = infos_out[0] if infos_out else None
        if x is None or w is None or y is None:
            return 1.0
        return conv_tap_fraction(x.shape, w.shape, y.shape, _attrs(node),
                                 channels_last=bool(node.attr("channels_last", 0)))  # fmt: skip

    def _broadcasts(self, node: Node, elements: int) -> bool:
        """Whether an input of ``node`` is smaller than its output (a bias or scale row)."""
        for v in node.inputs:
            info = self.table.info(v) if v is not None else None
            if info is not None and info.numel < elements:
                return True
        return False


#: Ops that read only the part of their first input they return (an embedding Gather reads the
#: rows of its tokens, not the 47 MB table: counting the table made MiniLM's Gather 1.9 ms).
_PARTIAL_READS = frozenset({"Gather", "GatherElements", "GatherND", "Slice"})

_CONV_OPS = frozenset({"Conv", "FusedConv", "ConvInteger", "QLinearConv", "NhwcConv", "ConvTranspose"})
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}


def _product_shape(node: Node, macs: int, infos_out: list[TensorInfo | None]) -> tuple[str, float, float, float] | None:
    """``(class, M, K, N)`` of a product node for the calibrated rates: convolutions by output
    pixels x (input channels x kernel) x output channels per group (depthwise and 1-D depthwise:
    pixels, kernel, channels), recurrent cells as one step's gate product, everything else as its output's
    rows x (MACs per output element) x columns."""
    out = infos_out[0] if infos_out else None
    if out is None or macs <= 0 or not out.numel:
        return None
    op = node.op_type
    if op in _CONV_OPS and out.rank >= 3:
        channels = out.shape[-1] if node.attr("channels_last", 0) else out.shape[1]
        group = int(node.attr("group", 1) or 1)
        pixels = out.numel // max(channels * out.shape[0], 1)  # per image: onnxruntime loops the batch
        k = macs / out.numel
        if group > 1 and group >= channels // 2:
            return ("depthwise1d" if out.rank == 3 else "depthwise"), float(pixels), k, float(channels)
        return ("conv1d" if out.rank == 3 else "conv"), float(pixels), k, float(max(channels // group, 1))
    if op in _GATES and out.rank == 4:  # Y: [seq, directions, batch, hidden]
        seq, dirs, batch, hidden = out.shape
        n = _GATES[op] * hidden
        steps = max(seq * dirs, 1)
        k = macs / (steps * max(batch, 1) * max(n, 1))
        if op == "LSTM":  # measured as its own class (onnxruntime's cell, not a plain product)
            return "recurrent", float(max(batch, 1)), k, float(n)
        return "gemm", float(max(batch, 1)), k, float(n)
    n = out.shape[-1] if out.rank >= 1 else 1
    m = out.shape[-2] if out.rank >= 2 else 1
    return "gemm", float(max(m, 1)), macs / out.numel, float(max(n, 1))


_INTEGER_KERNEL_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
_QDQ_NEIGHBOURS = _INTEGER_KERNEL_OPS | frozenset(
    {"Relu", "Clip", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Add", "Mul",
     "AveragePool", "GlobalAveragePool", "Concat", "QuantizeLinear", "DequantizeLinear"}
)


def _dequantized_input(node: Node) -> bool:
    """True when an input of ``node`` comes straight from a DequantizeLinear (QDQ format)."""
    return any(v is not None and v.producer is not None and v.producer.op_type == "DequantizeLinear" for v in node.inputs)


def _fused_qdq(node: Node) -> bool:
    """A QuantizeLinear/DequantizeLinear that a runtime folds into its neighbours: every
    reader of a DequantizeLinear (or the producer of a QuantizeLinear's input) runs on integer
    kernels or just moves data."""
    if not node.is_standard_domain():
        return False
    if node.op_type == "DequantizeLinear":
        out = node.output(0)
        users = out.consumers() if out is not None else []
        return bool(users) and all(u.op_type in _QDQ_NEIGHBOURS for u in users)
    if node.op_type == "QuantizeLinear":
        src = node.input(0)
        p = src.producer if src is not None else None
        return p is not None and p.op_type in _QDQ_NEIGHBOURS
    return False


def _subgraphs(node: Node) -> Iterator[Graph]:
    yield from node.all_subgraphs()


def _attrs(node: Node) -> dict[str, Any]:
    out = {}
    for name in node.attributes:
        try:
            out[name] = node.attr(name)
        except Exception:  # graph-valued or reference attributes: formulas do not read them
            continue
    return out
