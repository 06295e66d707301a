"""Dependency-aware channel pruning that really shrinks the graph: :class:`PruneChannels`.

1. :func:`~onnxforge.passes.compression.pruning.dependency.find_groups` finds the channel
   groups (Conv → BN → activation → Conv chains, residual stages tied by their Adds, Concat
   offsets, depthwise convolutions, Flatten → Gemm, MatMul hidden units, attention heads).
2. Each prunable group's channels are scored: ``l1``/``l2`` norms of the producing rows times
   those of the reading columns (a channel whose incoming or outgoing weights vanish scores 0),
   ``bn`` (``|γ|`` of the BatchNormalizations in the group), or ``activation``: the output energy
   the reading layers lose, ``Σ ‖W[:, j]‖² · E[x_j²]`` from calibration statistics.
3. The lowest ``sparsity`` of every group are removed, the kept count rounded *up* to a multiple
   of ``multiple`` (8 by default: vector widths and GEMM tiles like it); every initializer,
   ``group`` attribute, Split size and literal Reshape dimension they touch is cut, so FLOPs,
   parameters and latency drop for real. Graph inputs and outputs keep their shapes.
4. With calibration data each layer that reads pruned channels is refitted by least squares to
   the original layer's outputs from the pruned model's inputs, in depth order
   (:mod:`~onnxforge.passes.compression.pruning.reconstruction`).
5. An accuracy budget prunes the groups the outputs are most sensitive to less
   (:func:`~onnxforge.passes.compression.pruning.flow.fit_budget`).

It is a functional pass; its report is ``ctx.records["prune"]``.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxforge.analysis.shapes import ShapeTable, bind_inputs
from onnxforge.calibration.budget import Budget
from onnxforge.errors import UsageError
from onnxforge.ir import Model, Node, Value, to_proto
from onnxforge.ir.constants import constant_value
from onnxforge.passes.compression.pruning.dependency import (
    ChannelGroup,
    find_groups,
    removed_entries,
    shape_pieces,
)
from onnxforge.passes.compression.pruning.flow import (
    BudgetOptions,
    Candidate,
    Copies,
    Measure,
    PruningData,
    costs,
    example_feed,
    fit_budget,
    level_fraction,
    measure_latency,
    open_data,
)
from onnxforge.passes.compression.pruning.layers import (
    Layer,
    describe_layer,
    find_layers,
    layer_label,
    set_input_constant,
)
from onnxforge.passes.compression.pruning.magnitude import parse_overrides
from onnxforge.passes.compression.pruning.reconstruction import solve_rows, toward
from onnxforge.passes.compression.pruning.report import REPORT_KEY, GroupPruning, PruningReport
from onnxforge.passes.compression.pruning.statistics import FeatureSpec, StatsCollector
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)

CHANNEL_SCORES = ("l1", "l2", "bn", "activation")


@dataclass(frozen=True)
class ChannelPruneOptions(PassOptions):
    """Options of :class:`PruneChannels` (``--pipeline prune --structured``).

    ``sparsity``: the fraction of each prunable group's channels removed. ``multiple``: kept
    channel counts are rounded up to a multiple of it (1: exact fractions). ``score``: ``l1``,
    ``l2``, ``bn``, ``activation`` (needs data); ``auto``: activation with data, else l2.
    ``reconstruct``: refit the layers reading pruned channels (needs data); ``sequential``: in
    depth order on the pruned model's activations. ``heads``: also prune attention heads (whole
    heads). ``overrides``: ``NAME=SPARSITY`` for groups whose producing layer matches NAME.
    ``exclude``: groups touching a layer matching one of these patterns stay whole. The budget,
    data and statistics options are those of :class:`~onnxforge.passes.compression.pruning.PruneOptions`.
    """

    sparsity: float = 0.5
    calibration: Any = None
    multiple: int = 8
    score: str = "auto"
    reconstruct: bool = True
    sequential: bool = True
    heads: bool = True
    overrides: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    levels: int = 4
    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    eval_inputs: Any = None
    allow_budget_miss: bool = False
    max_steps: int = 32
    padding_mask: str | None = "auto"
    damp: float = 0.01
    max_rows: int = 8192
    max_samples: int = 1024
    measure_latency: bool = True
    dims: Mapping[str, int] | None = None

    def validate(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")
        if self.score not in (*CHANNEL_SCORES, "auto"):
            raise ValueError(f"score must be one of auto, {', '.join(CHANNEL_SCORES)}, got {self.score!r}")
        if self.levels < 1 or self.max_steps < 0 or self.max_samples < 1 or self.max_rows < 1:
            raise ValueError("levels, max_samples and max_rows must be >= 1, max_steps >= 0")
        if not self.damp > 0:
            raise ValueError(f"damp must be > 0, got {self.damp}")
        parse_overrides(self.overrides)

    def budget_options(self) -> BudgetOptions:
        return BudgetOptions(
            calibration=self.calibration,
            min_cosine=self.min_cosine,
            min_sqnr=self.min_sqnr,
            max_accuracy_drop=self.max_accuracy_drop,
            eval_data=self.eval_data,
            eval_inputs=self.eval_inputs,
            allow_budget_miss=self.allow_budget_miss,
            max_steps=self.max_steps,
            padding_mask=self.padding_mask,
            max_samples=self.max_samples,
            dims=self.dims,
        )

    def resolved_score(self) -> str:
        if self.score != "auto":
            return self.score
        return "l2" if self.calibration is None else "activation"


class PruneChannels(Pass[ChannelPruneOptions]):
    """Remove whole channels (and attention heads) from dependency groups, shrinking every
    tensor, weight and shape they touch."""

    name = "prune-channels"
    summary = (
        "Remove the least important channels of dependency groups (residual, concat, depthwise, "
        "Flatten->Gemm, MLP units, attention heads), shrinking weights and shapes; least-squares repair with --calibration."
    )
    lossless = False
    in_place = False
    Options = ChannelPruneOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        pruned, report = prune_channels(model, self.options)
        ctx.records[REPORT_KEY] = report
        removed = sum(g.removed for g in report.groups)
        stats = {"pruned_groups": sum(1 for g in report.groups if g.removed), "removed_channels": removed}
        if not removed:
            return PassResult(False, stats)
        return PassResult(True, stats, model=pruned)


# ---------------------------------------------------------------------------------------------


def group_label(g: ChannelGroup) -> str:
    head = g.names[0] if g.sources else f"group {g.id}"
    return f"g{g.id}:{head}"


def _out_axis(node: Node) -> int:
    op = node.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if int(node.attr("transB", 0)) else 1
    return 1  # MatMul [K, N]


def _channel_norms(arr: np.ndarray, axis: int, start: int, block: int, size: int, order: int) -> np.ndarray:
    a = np.moveaxis(np.asarray(arr, np.float64), axis, 0)[start : start + size * block]
    a = a.reshape(size, -1)
    return np.abs(a).sum(axis=1) if order == 1 else np.sqrt(np.square(a).sum(axis=1))


def _normalized(x: np.ndarray) -> np.ndarray:
    m = float(np.mean(x))
    return x / m if m > 0 else x


def group_scores(g: ChannelGroup, score: str, sink_energy: Mapping[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Importance of each channel of ``g`` (module docstring), from the original weights."""
    order = 1 if score == "l1" else 2
    src = np.zeros(g.size)
    for node, edit in g.sources:
        w = constant_value(node.input(1))
        assert w is not None
        rows = _channel_norms(w, edit.axis, edit.start, edit.block, g.size, order)
        if order == 2:
            rows = rows**2
        for pe in g.params:  # the producer's bias: a zero row with a bias is a constant channel
            if pe.node is node and pe.index == 2:
                b = _channel_norms(constant_value(node.input(2)), pe.axis, pe.start, pe.block, g.size, order)  # type: ignore[arg-type]
                rows = rows + (b**2 if order == 2 else b)
        src += _normalized(np.sqrt(rows) if order == 2 else rows)
    if score == "bn":
        gammas = [
            np.abs(_channel_norms(constant_value(pe.node.input(1)), pe.axis, pe.start, pe.block, g.size, 1))  # type: ignore[arg-type]
            for pe in g.params
            if pe.node.op_type == "BatchNormalization" and pe.index == 1
        ]
        if gammas:
            return np.sum([_normalized(x) for x in gammas], axis=0)
    snk = np.zeros(g.size)
    for node, edit in g.sinks:
        energy = sink_energy.get((node.id, edit.start)) if score == "activation" else None
        if energy is not None:
            snk += _normalized(energy)
            continue
        w = constant_value(node.input(1))
        assert w is not None
        snk += _normalized(_channel_norms(w, edit.axis, edit.start, edit.block, g.size, order))
    if g.sources and g.sinks:
        return src * snk
    return src if g.sources else snk


def keep_count(size: int, block: int, fraction: float, multiple: int) -> int:
    """Channels kept when removing ``fraction`` of ``size``, rounded up so that the kept entries
    (``block`` per channel) are a multiple of ``multiple``; at least one step."""
    step = max(1, multiple // math.gcd(multiple, block))
    want = (1.0 - fraction) * size
    kept = max(step, math.ceil(want / step - 1e-9) * step)
    return min(size, kept)


@dataclass
class _Plan:
    """The channels removed per group at some levels."""

    removed: dict[int, np.ndarray] = field(default_factory=dict)
    #: (node position, input index) -> axis -> removed entries (for reconstruction's row map)
    entries: dict[tuple[int, int], dict[int, np.ndarray]] = field(default_factory=dict)


class _ChannelPruner:
    def __init__(
        self,
        copies: Copies,
        groups: list[ChannelGroup],
        scores: Mapping[int, np.ndarray],
        opts: ChannelPruneOptions,
        data: PruningData | None,
    ) -> None:
        self.copies = copies
        base = self.base = copies.base
        self.groups = {g.id: g for g in groups}
        self.scores = scores
        self.opts = opts
        self.data = data
        self.position = {n: i for i, n in enumerate(base.graph.nodes)}
        self.base_proto = copies.proto
        layers, _ = find_layers(base)
        self.depth = {la.node: la.depth for la in layers}
        self.layers = {la.node: la for la in layers}
        self.collector = (
            StatsCollector(data.samples, padding_mask=data.mask, max_rows=opts.max_rows)
            if data is not None and data.samples
            else None
        )

    def plan(self, fractions: Mapping[int, float]) -> _Plan:
        plan = _Plan()
        for gid, frac in fractions.items():
            g = self.groups[gid]
            kept = keep_count(g.size, g.block, frac, self.opts.multiple)
            if kept >= g.size:
                continue
            order = np.argsort(self.scores[gid], kind="stable")
            plan.removed[gid] = np.sort(order[: g.size - kept])
        for gid, rem in plan.removed.items():
            for pe in self.groups[gid].params:
                key = (self.position[pe.node], pe.index)
                axes = plan.entries.setdefault(key, {})
                e = removed_entries(pe.start, pe.block, rem)
                axes[pe.axis] = np.union1d(axes.get(pe.axis, np.zeros(0, np.int64)), e)
        return plan

    def build(self, fractions: Mapping[int, float], reconstruct: bool = True) -> Candidate[_Plan]:
        plan = self.plan(fractions)
        model = self.copies.new()
        _apply(model, self.groups, plan, self.position)
        if reconstruct and self.opts.reconstruct and self.collector is not None and plan.removed:
            self._reconstruct(model, plan)
        return Candidate(model, to_proto(model), plan)

    def _reconstruct(self, model: Model, plan: _Plan) -> None:
        assert self.collector is not None
        nodes = model.graph.nodes
        sinks: dict[Node, None] = {}
        for gid in plan.removed:
            for node, _ in self.groups[gid].sinks:
                sinks[node] = None
        by_depth: dict[int, list[Node]] = {}
        for node in sinks:
            by_depth.setdefault(self.depth.get(node, 0), []).append(node)
        base_nodes = self.base.graph.nodes
        for depth in sorted(by_depth):
            todo: list[tuple[Node, Layer, Layer, FeatureSpec, FeatureSpec]] = []
            for node in by_depth[depth]:
                cur = nodes[self.position[node]]
                now, _ = describe_layer(cur)
                orig = self.layers.get(base_nodes[self.position[node]])
                if now is None or orig is None or now.groups != 1:
                    continue
                s_now = FeatureSpec.of_node(now.name, cur, now.kernel, 1)
                s_orig = FeatureSpec.of_node(now.name, node, orig.kernel, 1)
                if s_now is not None and s_orig is not None:
                    todo.append((cur, now, orig, s_now, s_orig))
            if not todo:
                continue
            current = to_proto(model, value_info=True) if self.opts.sequential else None
            stats = self.collector.collect(
                current if current is not None else to_proto(model, value_info=True),
                [t[3] for t in todo],
                original=self.base_proto,
                original_specs=[t[4] for t in todo],
            )
            for cur, now, orig, spec, _ in todo:
                st = stats.get(spec.name)
                if st is None or st.cross is None:
                    continue
                self._refit(model, nodes, cur, now, orig, st.gram[0], st.cross[0], plan)

    def _refit(
        self,
        model: Model,
        nodes: list[Node],
        cur: Node,
        now: Layer,
        orig: Layer,
        gram: np.ndarray,
        cross: np.ndarray,
        plan: _Plan,
    ) -> None:
        """Least-squares refit of a reading layer to the original layer's kept outputs."""
        w0 = orig.to_matrix(orig.weight_array())[0]
        b0 = orig.bias.read() if orig.bias is not None else np.zeros(orig.out_channels)
        gone = plan.entries.get((self.position[orig.node], 1), {}).get(_out_axis(orig.node))
        rows = np.setdiff1d(np.arange(orig.out_channels), gone) if gone is not None else np.arange(orig.out_channels)
        waug = np.concatenate([w0[rows], b0[rows, None]], axis=1)
        d = now.features
        intercept = now.bias is not None or now.op_type in ("Conv", "Gemm")
        prior = now.to_matrix(now.weight_array())[0]  # the original weights of the kept columns
        if intercept:
            b_now = now.bias.read() if now.bias is not None else np.zeros(len(prior))
            h, b = toward(gram, waug @ cross.T, np.concatenate([prior, b_now[:, None]], axis=1), self.opts.damp)
        else:
            h, b = toward(gram[:d, :d], waug[:, :-1] @ cross[:d, :-1].T, prior, self.opts.damp)
        w = solve_rows(h, b)
        dtype = now.weight_array().dtype
        set_input_constant(model, cur, 1, now.from_matrix(w[:, :d][None], dtype))
        if not intercept:
            return
        bias = w[:, d]
        if now.bias is not None:
            bias_node = now.bias.node
            scale = now.bias.scale or 1.0
            set_input_constant(model, bias_node, now.bias.index, (bias / scale).reshape(now.bias.shape).astype(dtype))
        elif np.any(bias):
            graph = cur.graph
            assert graph is not None
            v = graph.add_initializer(f"{cur.name or cur.op_type}_bias", bias.astype(dtype))
            cur.set_inputs([*cur.inputs[:2], v])


def _apply(model: Model, groups: Mapping[int, ChannelGroup], plan: _Plan, position: Mapping[Node, int]) -> None:
    """Cut every tensor the plan's removed channels touch, in the copy ``model``."""
    nodes = model.graph.nodes
    for (pos, index), axes in plan.entries.items():
        node = nodes[pos]
        arr = constant_value(node.input(index))
        assert arr is not None
        for axis, entries in axes.items():
            arr = np.delete(arr, entries, axis=axis)
        set_input_constant(model, node, index, np.ascontiguousarray(arr))
    shape_cuts: dict[tuple[int, str, int], int] = {}
    for gid, rem in plan.removed.items():
        g = groups[gid]
        for node in g.depthwise:
            cur = nodes[position[node]]
            w = constant_value(cur.input(1))
            assert w is not None
            cur.set_attr("group", int(w.shape[0]))
        for edit in g.shapes:
            key = (position[edit.node], edit.kind, edit.position)
            shape_cuts[key] = shape_cuts.get(key, 0) + len(rem) * edit.block
        for v in g.members:
            twin = _twin_value(nodes, position, v)
            if twin is not None and not twin.is_graph_output():
                _strip_shape(twin)
    added = False
    for (pos, kind, where), cut in shape_cuts.items():
        node = nodes[pos]
        if kind == "split":
            _cut_split(model, node, where, cut)
        else:
            added |= _cut_reshape(model, node, where, cut)
    if added:
        model.graph.toposort()


def _twin_value(nodes: list[Node], position: Mapping[Node, int], v: Value) -> Value | None:
    p = v.producer
    if p is None or p not in position:
        return None
    return nodes[position[p]].output(v.index or 0)


def _strip_shape(v: Value) -> None:
    """Forget a value's stored shape (its channel count changed); shape inference puts the new
    one back."""
    t = v.type
    if t is None or not t.HasField("tensor_type"):
        return
    new = onnx.TypeProto()
    new.tensor_type.elem_type = t.tensor_type.elem_type
    v.type = new


def _cut_split(model: Model, node: Node, output: int, cut: int) -> None:
    sizes = node.attr("split", None)
    if sizes is not None:
        new = [int(x) for x in sizes]
        new[output] -= cut
        node.set_attr("split", new)
        return
    arr = np.array(constant_value(node.input(1)), np.int64).reshape(-1)
    arr[output] -= cut
    set_input_constant(model, node, 1, arr)


def _cut_reshape(model: Model, node: Node, position: int, cut: int) -> bool:
    """Shrink the literal ``position`` of a Reshape's target shape by ``cut``; a shape computed
    by a Concat gets a Concat of its own (returns True: the graph needs sorting)."""
    pieces = shape_pieces(node)
    assert pieces is not None
    if len(pieces) == 1 and pieces[0][1] is not None:
        arr = np.array(pieces[0][1], np.int64)
        arr[position] -= cut
        set_input_constant(model, node, 1, arr)
        return False
    graph = node.graph
    assert graph is not None
    inputs: list[Value | None] = []
    offset = 0
    for value, data, length in pieces:
        if data is not None and offset <= position < offset + length:
            arr = np.array(data, np.int64)
            arr[position - offset] -= cut
            inputs.append(graph.add_initializer(f"{node.name or 'reshape'}_shape_part", arr.reshape(np.shape(constant_value(value)))))
        else:
            inputs.append(value)
        offset += length
    concat = graph.add_node("Concat", inputs, attrs={"axis": 0}, name=f"{node.name or 'reshape'}_shape", provenance="prune-channels")
    node.set_input(1, concat.output(0))
    return True


def channel_shapes(model: Model, data: PruningData | None, dims: Mapping[str, int] | None) -> ShapeTable | None:
    """Concrete shapes the groups are traced with: at the first calibration batch's shapes, else
    with symbolic input dimensions at 1 for the first axis and 64 for the others (``dims``
    first); generic primes would not divide by convolution strides."""
    try:
        sample = (data.samples or data.held)[0] if data is not None and (data.samples or data.held) else None
        if sample is not None:
            given = {k: tuple(np.asarray(v).shape) for k, v in sample.items()}
            return ShapeTable(model, bind_inputs(model, given, dims))
        sym: dict[str, int] = dict(dims or {})
        for v in model.graph.inputs:
            for i, d in enumerate(v.shape() or ()):
                if isinstance(d, str) and d not in sym:
                    sym[d] = 1 if i == 0 else 64
        return ShapeTable(model, bind_inputs(model, None, sym))
    except Exception as e:  # a model onnx cannot infer: ranks come from declared types
        log.info("no concrete shapes for channel pruning: %s", e)
        return None


def prune_channels(
    model: Model, opts: ChannelPruneOptions, shapes: ShapeTable | None = None
) -> tuple[Model, PruningReport]:
    """Prune channel groups of ``model`` as ``opts`` say; returns a new model and the report."""
    start = time.perf_counter()
    score = opts.resolved_score()
    report = PruningReport(f"channels {opts.sparsity:.0%}", score, bool(opts.reconstruct and opts.calibration is not None))
    if score == "activation" and opts.calibration is None:
        raise UsageError("activation scores need calibration data (--calibration)")
    bopts = opts.budget_options()
    data = open_data(model, bopts, report)
    copies = Copies(model)
    model = copies.base
    if shapes is None:
        shapes = channel_shapes(model, data, opts.dims)
    groups = find_groups(model, shapes)
    overrides = parse_overrides(opts.overrides)
    fractions: dict[int, float] = {}
    reasons: dict[int, str] = {}
    for g in groups:
        names = g.names + g.sink_names
        if g.blocked is not None:
            reasons[g.id] = f"not prunable: {g.blocked}"
            continue
        if g.block > 1 and not opts.heads:
            reasons[g.id] = "not prunable: attention heads (heads=False)"
            continue
        if g.size < 2:
            reasons[g.id] = "not prunable: fewer than 2 channels"
            continue
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in opts.exclude):
            reasons[g.id] = "excluded by name"
            continue
        frac = opts.sparsity
        for pattern, value in overrides.items():
            if any(fnmatch.fnmatchcase(n, pattern) for n in g.names):
                frac = value
                reasons[g.id] = f"override {pattern}={value:g}"
        if frac > 0:
            fractions[g.id] = frac
    sink_energy = _sink_energy(model, groups, fractions, data, opts) if score == "activation" else {}
    scores = {gid: group_scores(next(g for g in groups if g.id == gid), score, sink_energy) for gid in fractions}
    pruner = _ChannelPruner(copies, [g for g in groups if g.id in fractions], scores, opts, data)
    labels = {group_label(g): g.id for g in groups if g.id in fractions}
    levels = opts.levels

    def build(settings: Mapping[str, int]) -> Candidate[_Plan]:
        return pruner.build({gid: level_fraction(fractions[gid], settings.get(lab, 0), levels) for lab, gid in labels.items()})

    def build_only(label: str) -> Model:
        gid = labels[label]
        return pruner.build({gid: fractions[gid]}, reconstruct=False).model

    measure = Measure(pruner.base_proto, data) if data is not None else None
    budget = Budget(opts.min_cosine, opts.min_sqnr, opts.max_accuracy_drop if data is not None and data.evaluate else None)
    fitted = fit_budget(build, list(labels), levels, measure, budget, build_only, report, bopts, "channel groups")
    cand = fitted.candidate
    for g in groups:
        rem = cand.detail.removed.get(g.id)
        kept = g.size - (len(rem) if rem is not None else 0)
        label = group_label(g)
        level = fitted.settings.get(label, 0)
        reason = reasons.get(g.id, "")
        if g.id in fractions and level:
            reason = (
                f"budget: asked {level_fraction(fractions[g.id], level, levels):.0%} instead of {fractions[g.id]:.0%}"
                if level < levels
                else "budget: kept whole (the outputs are too sensitive to it)"
            )
            if level < levels and kept == g.size:
                reason += f"; rounding up to a multiple of {opts.multiple} keeps all {g.size} channels"
        elif g.id in fractions and kept == g.size:
            reason = f"rounding up to a multiple of {opts.multiple} keeps all {g.size} channels"
        entry = GroupPruning(g.id, g.size, kept, g.names, g.sink_names, level, reason, g.block)
        if g.block > 1:
            entry.reason = (entry.reason + "; " if entry.reason else "") + f"attention heads of {g.block}"
        report.groups.append(entry)
    _fill_costs(report, model, cand.model, data, opts)
    report.seconds = time.perf_counter() - start
    return cand.model, report


def _sink_energy(
    model: Model,
    groups: Sequence[ChannelGroup],
    fractions: Mapping[int, float],
    data: PruningData | None,
    opts: ChannelPruneOptions,
) -> dict[tuple[int, int], np.ndarray]:
    """Per sink (node id, slot start) and channel: ``Σ_j∈channel ‖W[:, j]‖² · E[x_j²]``."""
    if data is None or not data.samples:
        return {}
    collector = StatsCollector(data.samples, padding_mask=data.mask, max_rows=opts.max_rows)
    proto = to_proto(model, value_info=True)
    sinks: dict[Node, None] = {}
    for g in groups:
        if g.id in fractions:
            for node, _ in g.sinks:
                sinks[node] = None
    specs = []
    layers: dict[str, Layer] = {}
    for node in sinks:
        la, _ = describe_layer(node)
        if la is None or la.groups != 1:
            continue
        spec = FeatureSpec.of(la)
        if spec is not None:
            specs.append(spec)
            layers[la.name] = la
    energy: dict[tuple[int, int], np.ndarray] = {}
    norms: dict[str, np.ndarray] = {}
    for i in range(0, len(specs), 16):
        got = collector.collect(proto, specs[i : i + 16])
        norms.update({k: np.diagonal(v.gram[0])[:-1] / max(v.rows, 1) for k, v in got.items()})
    for g in groups:
        if g.id not in fractions:
            continue
        for node, edit in g.sinks:
            la = layers.get(layer_label(node)) or next((x for x in layers.values() if x.node is node), None)
            if la is None or la.name not in norms:
                continue
            m = la.to_matrix(la.weight_array())[0]  # [rows, C*k]
            col = np.square(m).sum(axis=0) * norms[la.name]  # per feature
            per_channel = col.reshape(la.in_channels, la.kernel_size).sum(axis=1)  # per input entry
            sl = per_channel[edit.start : edit.start + g.size * edit.block].reshape(g.size, edit.block).sum(axis=1)
            energy[(node.id, edit.start)] = sl
    return energy


def _fill_costs(
    report: PruningReport, before: Model, after: Model, data: PruningData | None, opts: ChannelPruneOptions
) -> None:
    proto_before = to_proto(before)
    feed = example_feed(proto_before, data, opts.dims)
    cb, ca = costs(before, feed), costs(after, feed)
    if cb is not None and ca is not None:
        report.flops_before, report.params_before, _ = cb
        report.flops_after, report.params_after, _ = ca
    if opts.measure_latency:
        report.latency_ms = measure_latency(proto_before, to_proto(after), feed)
        report.latency_note = "onnxruntime CPU, ORT_ENABLE_ALL, 1 thread, ~2 s interleaved"


__all__ = ["CHANNEL_SCORES", "ChannelPruneOptions", "PruneChannels", "group_scores", "keep_count", "prune_channels"]
