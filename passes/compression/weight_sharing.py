"""Weight sharing by k-means codebooks (Deep Compression's second stage) as a pass: :class:`ShareWeights`.

Every weight large enough (a constant float tensor read as the weight of a ``MatMul``, ``Gemm``,
``Conv``, ``ConvTranspose`` or as the table of an axis-0 ``Gather``) gets its own codebook of
``2^bits`` centroids (:mod:`onnxforge.passes.compression.codebook`); a weight read by several
nodes (tied weights) gets one codebook that every reader decodes, so it stays one tensor.

With calibration data the clustering is data-aware: each weight counts in the k-means
objective by the second moment of the input channel it multiplies (measured on the
calibration samples), and with ``refine`` the centroids of MatMul/Gemm weights are then moved
to minimize the layer-output error on those samples (least squares over the centroids, the
post-training stand-in for the paper's retraining).

Bits per layer: every weight starts at ``bits``; while the model misses its budget
(``min_cosine``, ``min_sqnr`` on every output, ``max_accuracy_drop`` with labelled
``eval_data``), the weight the outputs are most sensitive to
(:func:`~onnxforge.calibration.sensitivity.sensitivity_ranking`) goes to 8 bits; when every
weight could have and the budget still misses, a second stage keeps the most sensitive ones float (:func:`~onnxforge.calibration.budget.back_off`). The budget is measured on
every fifth calibration sample from the second, held out of calibration, or on seeded random
inputs when no calibration data is given (the report says which). Its report, one row per
weight, is ``ctx.records["weight-sharing"]``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxforge.calibration.allocation import allocate_bits, noise_power
from onnxforge.calibration.budget import Budget, BudgetError
from onnxforge.calibration.sensitivity import sensitivity_ranking
from onnxforge.errors import UsageError
from onnxforge.ir import Graph, Model, Value, from_proto, to_proto
from onnxforge.ir.constants import constant_value
from onnxforge.metrics.sqnr import worst
from onnxforge.passes.cleanup.dead_code import DeadCodeElimination
from onnxforge.passes.compression.budgeted import (
    ActivationStats,
    CompressionData,
    OutputMeasure,
    collect_stats,
    fit_budget,
    reference_model,
)
from onnxforge.passes.compression.codebook import (
    MAX_BITS,
    MIN_BITS,
    Codebook,
    assign_with_error_feedback,
    can_pack_4bit,
    compact,
    emit_decode,
    emit_gather_decode,
    fit_codebook,
    refine_centroids,
    round_to_precision,
    store_codebook,
    weight_sqnr,
)
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult
from onnxforge.tables import format_table

log = logging.getLogger(__name__)

#: Key of ``PassContext.records`` holding the :class:`WeightSharingReport`.
REPORT_KEY = "weight-sharing"
#: Readers whose weight input a codebook may replace: op -> input index of the weight.
WEIGHT_INPUTS = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1, "Gather": 0}
_FLOAT = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


@dataclass(frozen=True)
class WeightSharingOptions(PassOptions):
    """Options of :class:`ShareWeights`.

    ``bits``: codebook size ``2^bits`` every weight starts at (2..8). ``keep_zero``: exact zeros
    (pruned weights) keep an exact 0 centroid. ``min_elements``: smaller weights stay float.
    ``calibration``: model inputs, as for int8 (a ``.npz``, a folder of ``.npz``, a list of
    feeds, a reader); None measures the budget on seeded random inputs and clusters by weight
    error alone. ``importance``/``refine``: the data-aware clustering and the centroid
    refinement (both need calibration data). ``min_cosine``/``min_sqnr``/``max_accuracy_drop``
    (with ``eval_data``: inputs plus ``labels``): the budget; None everywhere: no budget, every
    weight at ``bits``. ``max_steps``: bits added at most. ``allow_budget_miss``: return the best
    model when the budget cannot be met instead of failing. ``pack_4bit``: uint4 indices where
    the opset allows (21+), except for tables looked up by Gather (onnxruntime's Gather does
    not read uint4). ``channel_scales``: divide each output channel of a MatMul/Gemm/Conv
    weight (each column of an embedding table read only by Gather) by its largest magnitude
    before clustering and keep those scales (one float per channel): one codebook then serves
    channels of different ranges. ``error_feedback`` (with
    ``refine`` and calibration data): indices chosen input channel by input channel, each
    channel's rounding error compensated by the channels after it (GPTQ's update), before the
    centroids are refined. ``round_side_tensors``: the centroids, the per-channel scales and
    the biases of the shared layers' readers (Conv/ConvTranspose/Gemm input 2) rounded to
    float16 precision, still float32 in the model (relative error below 2^-11, inside what the budget measures):
    an entropy-coded archive stores them in about half the bytes. ``samples``: calibration
    samples read at most. ``padding_mask``: as
    for int8. ``dims``: symbolic dims for random inputs. ``mixed_bits``: ``bits`` is the mean
    instead of every weight's width: each weight's output noise at ``bits`` alone is measured
    (on the budget's held-out samples), and each weight gets from ``bits - 2`` to ``bits + 2``
    (within 2..8) so that the index bits in total stay ``bits`` per element and the predicted
    output noise is smallest (:func:`~onnxforge.calibration.allocation.allocate_bits`); the
    budget, if any, then steps from those widths.
    """

    bits: int = 4
    keep_zero: bool = True
    min_elements: int = 64
    calibration: Any = None
    importance: bool = True
    refine: bool = True
    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    max_steps: int = 64
    allow_budget_miss: bool = False
    pack_4bit: bool = True
    channel_scales: bool = True
    error_feedback: bool = True
    round_side_tensors: bool = True
    samples: int = 64
    padding_mask: str | None = "auto"
    dims: Mapping[str, int] | None = None
    mixed_bits: bool = False

    def validate(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {self.bits!r}")
        if self.min_elements < 1 or self.max_steps < 0 or self.samples < 1:
            raise ValueError("min_elements and samples must be >= 1, max_steps >= 0")
        Budget(self.min_cosine, self.min_sqnr, self.max_accuracy_drop)  # range checks


@dataclass
class SharedLayer:
    """One weight in the report: its readers, the bits it ended at (None: kept float), the
    centroids in use, the weight's SQNR against float, and bytes before and after."""

    name: str
    readers: str
    shape: tuple[int, ...]
    bits: int | None
    centroids: int = 0
    zeros: int = 0
    weight_sqnr_db: float = math.inf
    bytes_before: int = 0
    bytes_after: int = 0
    refined: bool = False


@dataclass
class WeightSharingReport:
    """What weight sharing did and what it cost in accuracy."""

    bits: int
    data: str
    budget: str = "none"
    budget_data: str = ""
    layers: list[SharedLayer] = field(default_factory=list)
    output_cosine: dict[str, float] = field(default_factory=dict)
    output_sqnr: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[float, float] | None = None
    stepped: list[str] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    budget_missed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(layer.bytes_after for layer in self.layers)

    @property
    def mean_bits(self) -> float:
        """Index bits per weight element over the shared weights (float weights count 32)."""
        total = sum(math.prod(layer.shape) for layer in self.layers)
        bits = sum(math.prod(layer.shape) * (layer.bits if layer.bits is not None else 32) for layer in self.layers)
        return bits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "data": self.data,
            "budget": self.budget,
            "budget_data": self.budget_data,
            "budget_missed": self.budget_missed,
            "layers": [
                {
                    "name": layer.name,
                    "readers": layer.readers,
                    "shape": list(layer.shape),
                    "bits": layer.bits,
                    "centroids": layer.centroids,
                    "zeros": layer.zeros,
                    "weight_sqnr_db": _finite(layer.weight_sqnr_db),
                    "bytes_before": layer.bytes_before,
                    "bytes_after": layer.bytes_after,
                    "refined": layer.refined,
                }
                for layer in self.layers
            ],
            "output_cosine": {k: _finite(v) for k, v in self.output_cosine.items()},
            "output_sqnr": {k: _finite(v) for k, v in self.output_sqnr.items()},
            "accuracy": list(self.accuracy) if self.accuracy is not None else None,
            "stepped": self.stepped,
            "notes": self.notes,
        }

    def summary_lines(self) -> list[str]:
        """The per-layer table and the figures, for the command line."""
        rows = [
            [
                layer.name,
                layer.readers,
                "x".join(map(str, layer.shape)),
                "float" if layer.bits is None else str(layer.bits),
                str(layer.centroids),
                f"{layer.weight_sqnr_db:.1f}",
                f"{layer.bytes_before}",
                f"{layer.bytes_after}",
            ]
            for layer in self.layers
        ]
        out = [f"weight sharing: {self.bits}-bit codebooks, budget {self.budget}" + (f" on {self.budget_data}" if self.budget_data else "")]
        out += format_table(["weight", "read by", "shape", "bits", "centroids", "SQNR dB", "bytes", "after"], rows, left=(1,))
        out.append(
            f"weights: {self.bytes_before} -> {self.bytes_after} bytes ({self.mean_bits:.2f} bits per weight), "
            f"{len(self.stepped)} bit(s) added by the budget"
        )
        if self.output_cosine:
            out.append(
                "outputs: worst cosine "
                f"{worst(self.output_cosine.values()):.5f}, worst SQNR {worst(self.output_sqnr.values()):.1f} dB"
            )
        if self.accuracy is not None:
            out.append(f"accuracy: {self.accuracy[0] * 100:.2f}% -> {self.accuracy[1] * 100:.2f}%")
        out += [f"note: {n}" for n in self.notes]
        return out


def _finite(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else round(x, 6)


# --------------------------------------------------------------------------------------------
# Which weights, and what the calibration data says about them
# --------------------------------------------------------------------------------------------
@dataclass
class _Weight:
    #: The weight's name, with ``@<graph index>`` for weights of subgraphs (If/Loop bodies).
    label: str
    name: str
    graph_index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    readers: list[str]
    #: Op types of the readers.
    kinds: list[str] = field(default_factory=list)
    #: The activation multiplied by this weight, and how the weight's elements map to its
    #: channels: ("matmul", axis of K in the weight), ("conv", groups), or None.
    activation: str | None = None
    layout: tuple[str, int] | None = None


def weight_value(model: Model, graph_index: int, name: str) -> Value | None:
    """The constant ``name`` of the ``graph_index``-th graph of ``model`` (``all_graphs`` order)."""
    graphs = list(model.graph.all_graphs())
    if graph_index >= len(graphs):
        return None
    return graphs[graph_index].initializers.get(name)


def find_weights(model: Model, min_elements: int) -> list[_Weight]:
    """The weights of ``model`` (every graph, subgraphs included) a codebook may replace."""
    out: dict[str, _Weight] = {}
    graphs = list(model.graph.all_graphs())
    index = {id(g): i for i, g in enumerate(graphs)}
    for graph in graphs:
        for node in graph.topological_order():
            idx = WEIGHT_INPUTS.get(node.op_type)
            if idx is None or not node.is_standard_domain():
                continue
            if node.op_type == "Gather" and int(node.attr("axis", 0)) != 0:
                continue
            if node.op_type == "Gemm" and int(node.attr("transA", 0)):
                continue
            v = node.input(idx)
            if v is None or v.graph is None or id(v.graph) not in index or not v.is_constant() or v.is_graph_output():
                continue
            t = v.const
            if t is None or t.data_type not in _FLOAT or math.prod(t.dims) < min_elements:
                continue
            gi = index[id(v.graph)]
            label = v.name if gi == 0 else f"{v.name}@{gi}"
            w = out.get(label)
            if w is None:
                w = out[label] = _Weight(label, v.name, gi, tuple(t.dims), np.dtype(_FLOAT[t.data_type]), [])
            w.readers.append(node.name or node.op_type)
            w.kinds.append(node.op_type)
            if w.activation is None and node.op_type != "Gather" and node.input(0) is not None:
                act = node.input(0)
                assert act is not None
                if node.op_type in ("MatMul", "Gemm") and len(w.shape) == 2:
                    k_axis = 1 if node.op_type == "Gemm" and int(node.attr("transB", 0)) else 0
                    w.activation, w.layout = act.name, ("matmul", k_axis)
                elif node.op_type == "Conv" and len(w.shape) >= 3:
                    w.activation, w.layout = act.name, ("conv", int(node.attr("group", 1)))
    return list(out.values())


def _mixed_bits(
    bits: int,
    names: Sequence[str],
    size: Mapping[str, int],
    float_proto: onnx.ModelProto,
    measure: OutputMeasure,
    build_only: Callable[[str], Model],
    report: WeightSharingReport,
    samples: int = 8,
) -> dict[str, int]:
    """Bits per weight with ``bits`` as the mean over ``names`` (see ``mixed_bits``), noted in
    ``report``; {} when the outputs cannot be measured."""
    if measure.failed is not None or not names:
        report.notes.append("mixed_bits: every weight at the asked bits (" + (measure.failed or "no weight to share") + ")")
        return {}
    ranked = sensitivity_ranking(float_proto, list(names), measure.data.held[:samples], measure.data.mask, build_only)
    choices = {}
    for n in names:
        top = min(MAX_BITS, bits + 2)
        while top > bits and (1 << top) >= size[n]:  # as many centroids as elements: no gain
            top -= 1
        choices[n] = range(max(MIN_BITS, bits - 2), top + 1)
    alloc = allocate_bits({n: noise_power(db) for n, db in ranked}, size, bits, choices)
    counts = Counter(alloc.values())
    mean = sum(size[n] * b for n, b in alloc.items()) / max(sum(size[n] for n in alloc), 1)
    report.notes.append(
        f"mixed_bits: {mean:.2f} bits per element on average, by measured sensitivity: "
        + ", ".join(f"{counts[b]} weight(s) at {b}" for b in sorted(counts))
    )
    return alloc


def bit_ladder(bits: int) -> list[int]:
    """The bits a weight can take under the budget: the asked ``bits``, then 8."""
    return [bits] + ([MAX_BITS] if bits < MAX_BITS else [])


def _scale_axis(w: _Weight) -> int | None:
    """The axis of a weight's per-channel codebook scales: the output channels of a
    MatMul/Gemm/Conv weight; the columns (hidden dimensions) of a 2-D table read only by
    ``Gather`` (each looked-up row is multiplied by them, so no scale has to be gathered);
    None (no scales) for a table also read by a MatMul, whose two readers want different axes."""
    if any(r.startswith("Gather") for r in w.kinds):
        return 1 if all(r.startswith("Gather") for r in w.kinds) and len(w.shape) == 2 else None
    if w.layout is None:
        return None
    kind, arg = w.layout
    return (1 - arg) if kind == "matmul" else 0


def _importance(w: _Weight, stats: ActivationStats) -> np.ndarray | None:
    """Per-element weights of the k-means objective (broadcastable to the weight), or None."""
    if w.activation is None or w.layout is None:
        return None
    kind, arg = w.layout
    rows = stats.rows.get(w.activation, 0)
    if not rows:
        return None
    if kind == "matmul":
        g = stats.gram.get(w.activation)
        if g is None or g.shape[0] != w.shape[arg]:
            return None
        h = np.diag(g) / rows
        return h[:, None] if arg == 0 else h[None, :]
    ch = stats.channel.get(w.activation)
    if ch is None:
        return None
    h = ch / rows
    out_ch, per_group = w.shape[0], w.shape[1]
    groups = max(arg, 1)
    if per_group * groups != h.size or out_ch % groups:
        return None
    idx = (np.arange(out_ch) // (out_ch // groups))[:, None] * per_group + np.arange(per_group)[None, :]
    return h[idx].reshape(out_ch, per_group, *([1] * (len(w.shape) - 2)))


# --------------------------------------------------------------------------------------------
# Building a candidate
# --------------------------------------------------------------------------------------------
class _Codebooks:
    """Codebooks by (weight, bits), fitted once."""

    def __init__(self, float_model: Model, weights: Sequence[_Weight], stats: ActivationStats, opts: WeightSharingOptions) -> None:
        self._model = float_model
        self._weights = {w.label: w for w in weights}
        self._stats = stats
        self._opts = opts
        self._cache: dict[tuple[str, int], tuple[Codebook, bool]] = {}

    def array(self, label: str) -> np.ndarray:
        w = self._weights[label]
        arr = constant_value(weight_value(self._model, w.graph_index, w.name))
        assert arr is not None
        return arr

    def get(self, name: str, bits: int) -> tuple[Codebook, bool]:
        """The codebook of weight ``name`` at ``bits``, and whether its centroids were refined."""
        key = (name, bits)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        w = self._weights[name]
        arr = self.array(name)
        imp = _importance(w, self._stats) if self._opts.importance else None
        cb = fit_codebook(
            arr, bits, keep_zero=self._opts.keep_zero, importance=imp,
            scale_axis=_scale_axis(w) if self._opts.channel_scales else None,
            scale_dtype=np.float16 if self._opts.round_side_tensors else None,
        )  # fmt: skip
        refined = False
        if self._opts.refine and w.layout is not None and w.layout[0] == "matmul" and w.activation is not None:
            g = self._stats.gram.get(w.activation)
            if g is not None and g.shape[0] == w.shape[w.layout[1]]:
                g = g / max(self._stats.rows.get(w.activation, 0), 1)
                if self._opts.error_feedback:
                    cb = assign_with_error_feedback(cb, arr, g, axis=w.layout[1])
                cb = refine_centroids(cb, arr, g, axis=w.layout[1])
                refined = True
        cb = compact(cb, np.float16 if self._opts.round_side_tensors else None)
        self._cache[key] = (cb, refined)
        return cb, refined


def apply_codebooks(model: Model, chosen: Mapping[tuple[int, str], Codebook], pack: bool) -> dict[tuple[int, str], int]:
    """Replace each weight in ``chosen`` (by graph index and name) by its codebook in ``model``,
    in place; returns the bytes each one takes now."""
    sizes: dict[tuple[int, str], int] = {}
    for (gi, name), cb in chosen.items():
        v = weight_value(model, gi, name)
        if v is None or v.const is None or v.graph is None:
            continue
        graph = v.graph
        dtype = np.dtype(_FLOAT.get(v.const.data_type, np.float32))
        stored = store_codebook(graph, cb, name, dtype, pack=pack and can_pack_4bit(graph) and not _row_gathered(v))
        sizes[(gi, name)] = stored.nbytes
        decoded: Value | None = None
        for node, i in list(v.uses()):
            if node.op_type == "Gather" and i == 0 and node.is_standard_domain() and int(node.attr("axis", 0)) == 0:
                emit_gather_decode(node.graph or graph, stored, node)
                continue
            if decoded is None:
                decoded = emit_decode(graph, stored, name, helper.make_tensor_type_proto(v.const.data_type, list(v.const.dims)))
            node.set_input(i, decoded)
        if not v.num_uses() and not v.is_graph_output():
            graph.remove_initializer(v)
    return sizes


def _row_gathered(v: Value) -> bool:
    """Whether a table's rows are looked up (``Gather`` axis 0 reads it): its indices then stay
    uint8, as onnxruntime's Gather does not take uint4 tensors."""
    return any(node.op_type == "Gather" and i == 0 for node, i in v.uses())


#: Readers whose input 2 is a bias.
BIAS_INPUTS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def round_biases(model: Model, chosen: Mapping[tuple[int, str], Codebook]) -> int:
    """Round the float32 biases of the readers of the weights in ``chosen`` to float16
    precision (see :func:`round_to_precision`), in place; returns how many changed. A bias
    shared with a reader of no chosen weight is left alone."""
    changed = 0
    for gi, name in chosen:
        v = weight_value(model, gi, name)
        if v is None:
            continue
        for node, i in v.uses():
            idx = BIAS_INPUTS.get(node.op_type)
            if idx is None or i != 1 or not node.is_standard_domain():
                continue
            b = node.input(idx)
            if b is None or b.const is None or b.const.data_type != onnx.TensorProto.FLOAT or b.is_graph_output():
                continue
            if any(u.op_type not in BIAS_INPUTS or j != BIAS_INPUTS[u.op_type] for u, j in b.uses()):
                continue
            arr = constant_value(b)
            if arr is None:
                continue
            rounded = round_to_precision(arr, np.float16)
            if not np.array_equal(rounded, arr):
                b.set_const(rounded)
                changed += 1
    return changed


def _finish(model: Model) -> None:
    for g in model.graph.all_graphs():
        g.toposort()
    DeadCodeElimination()(model)


# --------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------
class ShareWeights(Pass[WeightSharingOptions]):
    """Per-weight k-means codebooks in standard ONNX, bits per layer within an accuracy budget."""

    name = "weight-sharing"
    summary = "k-means codebooks (2^bits shared values per weight, uint8/uint4 indices + Gather decode), bits per layer within the budget."
    lossless = False
    in_place = False
    Options = WeightSharingOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        weights = find_weights(model, opts.min_elements)
        float_proto = to_proto(model)
        data = CompressionData.open(
            model, opts.calibration, samples=opts.samples, padding_mask=opts.padding_mask, dims=opts.dims, eval_data=opts.eval_data
        )
        report = WeightSharingReport(opts.bits, data.description)
        report.notes.extend(data.notes)
        ctx.records[REPORT_KEY] = report
        if not weights:
            report.notes.append(f"no weight of {opts.min_elements} elements or more is read by {', '.join(WEIGHT_INPUTS)}")
            return PassResult(False, {"shared_weights": 0})
        wanted = {w.activation: w.layout[0] for w in weights if w.activation is not None and w.layout is not None}
        stats = collect_stats(float_proto, wanted, data.calibration, data.mask)  # type: ignore[arg-type]
        books = _Codebooks(model, weights, stats, opts)
        budget = Budget(opts.min_cosine, opts.min_sqnr, opts.max_accuracy_drop if data.labelled is not None else None)
        if opts.max_accuracy_drop is not None and data.labelled is None:
            raise UsageError("--max-accuracy-drop needs labelled evaluation data (eval_data: inputs plus 'labels')")
        report.budget = budget.describe()
        report.budget_data = data.held_description
        reference, against = reference_model(ctx, float_proto)
        report.budget_data += f"; against {against}"
        measure = OutputMeasure(reference, data)
        if measure.failed is not None:
            report.notes.append(measure.failed)
        ladder = bit_ladder(opts.bits)
        names = [w.label for w in weights]
        where = {w.label: (w.graph_index, w.name) for w in weights}
        floated: set[str] = set()  # weights the second stage of the budget keeps float

        size = {w.label: math.prod(w.shape) for w in weights}

        base: dict[str, int] = {}  # a weight's bits at level 0 when they are not opts.bits (mixed_bits)

        def bits_at(level: int, name: str = "") -> int | None:
            if name in floated:
                return None
            b = base.get(name, ladder[0]) if level == 0 else ladder[min(level, len(ladder) - 1)]
            # as many centroids as elements: the codebook would only add bytes, the weight stays float
            return None if name and (1 << b) >= size.get(name, 1 << 30) else b

        def build_with(settings: Mapping[str, int], only: str | None, stage1: Mapping[str, int] | None) -> Model:
            m = from_proto(float_proto)
            chosen: dict[tuple[int, str], Codebook] = {}
            for name in names:
                if only is not None and name != only:
                    continue
                if stage1 is None:
                    b = bits_at(settings.get(name, 0), name)
                else:  # second stage: level 1 is float, level 0 what the first stage chose
                    b = None if settings.get(name, 0) >= 1 else bits_at(stage1.get(name, 0), name)
                if b is not None:
                    chosen[where[name]] = books.get(name, b)[0]
            if opts.round_side_tensors:
                round_biases(m, chosen)
            apply_codebooks(m, chosen, opts.pack_4bit)
            _finish(m)
            return m

        if opts.mixed_bits:
            base.update(_mixed_bits(opts.bits, [n for n in names if bits_at(0, n) is not None], size, float_proto, measure, lambda n: build_with({}, n, None), report))

        # The budget in two stages: weights step from the asked bits to 8, most sensitive first
        # (back_off takes a weight to its top level before it moves the next, so float comes
        # only in a second stage, once every weight could have had 8 bits).
        fitted = fit_budget(
            float_proto, names, len(ladder) - 1, lambda st, only: build_with(st, only, None), measure, budget,
            max_steps=opts.max_steps,
        )
        stepped = list(fitted.stepped)
        if fitted.misses(budget) and not budget.empty:
            first = dict(fitted.settings)
            second = fit_budget(
                float_proto, names, 1, lambda st, only: build_with(st, only, first), measure, budget,
                max_steps=max(0, opts.max_steps - len(stepped)),
            )
            floated.update(n for n, level in second.settings.items() if level >= 1)
            stepped += second.stepped
            fitted = second
            fitted.settings = first
            fitted.stepped = stepped
        settings = fitted.settings
        report.stepped, report.sensitivity = fitted.stepped, fitted.sensitivity
        chosen_model = fitted.model
        cos, sqnr, acc = fitted.figures
        report.output_cosine, report.output_sqnr, report.accuracy = cos, sqnr, acc
        for w in weights:
            b = bits_at(settings.get(w.label, 0), w.label)
            arr = books.array(w.label)
            before = int(arr.nbytes)
            if b is None:
                report.layers.append(SharedLayer(w.label, ", ".join(w.readers), w.shape, None, 0, int((arr == 0).sum()), math.inf, before, before))
                continue
            cb, refined = books.get(w.label, b)
            packed = opts.pack_4bit and b <= 4 and can_pack_4bit(model.graph) and not any(k == "Gather" for k in w.kinds)
            after = (cb.indices.size + 1) // 2 if packed else cb.indices.size
            after += (cb.centroids.size + (cb.scales.size if cb.scales is not None else 0)) * arr.dtype.itemsize
            report.layers.append(
                SharedLayer(w.label, ", ".join(w.readers), w.shape, b, cb.used, int((arr == 0).sum()), weight_sqnr(arr, cb), before, after, refined)
            )
        report.budget_missed = budget.misses(cos, sqnr, acc)
        if report.budget_missed:
            message = (
                f"weight sharing misses its budget ({budget.describe()}) on {report.budget_data}: "
                + "; ".join(report.budget_missed[:3])
            )
            if not opts.allow_budget_miss:
                raise BudgetError(message + "; allow_budget_miss writes this model anyway", report, chosen_model)
            report.notes.append(message + " (allowed: the model is written anyway)")
        shared = sum(1 for layer in report.layers if layer.bits is not None)
        stats_out = {
            "shared_weights": shared,
            "float_weights": len(report.layers) - shared,
            "weight_bytes_before": report.bytes_before,
            "weight_bytes_after": report.bytes_after,
            "bits_added": len(report.stepped),
        }
        log.info("weight-sharing: %d weight(s), %d -> %d bytes", shared, report.bytes_before, report.bytes_after)
        return PassResult(shared > 0, stats_out, model=chosen_model if shared else None)


def codebook_weights(graph: Graph) -> list[str]:
    """Names of the codebooks decoded in ``graph`` (for reports and tests)."""
    return [v.name for v in graph.initializers.values() if v.name.endswith("_codebook")]


__all__ = ["REPORT_KEY", "ShareWeights", "SharedLayer", "WeightSharingOptions", "WeightSharingReport", "apply_codebooks", "find_weights"]
