"""Unstructured and N:M pruning of Conv/ConvTranspose/Gemm/MatMul weights: :class:`PruneMagnitude`.

Without data, weights are zeroed by magnitude (per layer, per output row, or one threshold over
all layers). With calibration data (:mod:`~onnxforge.passes.compression.pruning.statistics`):

* scores are activation-aware (``|W|·‖x‖``, Wanda) or second-order (OBS with row updates,
  SparseGPT), :mod:`~onnxforge.passes.compression.pruning.scores`;
* the kept weights and the bias are refitted by least squares so that each layer reproduces the
  original layer's outputs (:mod:`~onnxforge.passes.compression.pruning.reconstruction`);
* layers are pruned in order of depth, each one on the inputs the already pruned layers before
  it produce (``sequential``), so each repairs the error upstream as well as its own;
* an accuracy budget (``min_cosine``, ``min_sqnr``, ``max_accuracy_drop``) measured on held-out
  data prunes the layers the outputs are most sensitive to less, a quarter of their target at a
  time (``levels``), until it holds.

N:M (``n_m=(2, 4)``) keeps ``n`` of every ``m`` consecutive input channels at each output channel
and kernel position, the layout TensorRT's sparse kernels read; layers whose input channels are
not a multiple of ``m`` stay dense. Graph inputs, outputs and every shape are unchanged: only
weight values (and biases, when reconstructing) change. The report is ``ctx.records["prune"]``.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxforge.calibration.allocation import allocate_levels, noise_power
from onnxforge.calibration.budget import Budget
from onnxforge.calibration.sensitivity import sensitivity_ranking
from onnxforge.errors import UsageError
from onnxforge.ir import Model, Node, to_proto
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
    LayerFilter,
    find_layers,
    nm_qualifies,
    set_input_constant,
    tensorrt_sparse_eligible,
)
from onnxforge.passes.compression.pruning.reconstruction import (
    masked_least_squares,
    solve_rows,
    sparsegpt,
    toward,
)
from onnxforge.passes.compression.pruning.report import REPORT_KEY, LayerPruning, PruningReport
from onnxforge.passes.compression.pruning.scores import (
    SCORES,
    THRESHOLDS,
    global_sparsities,
    importance,
    nm_holds,
    nm_mask,
    unstructured_mask,
)
from onnxforge.passes.compression.pruning.statistics import (
    FeatureSpec,
    InputStats,
    StatsCollector,
    plan_groups,
)
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult

log = logging.getLogger(__name__)


def parse_n_m(text: str) -> tuple[int, int] | None:
    """``"2:4"`` → ``(2, 4)``; ``"none"``/``""`` → None."""
    raw = text.strip().lower()
    if raw in ("", "none", "off"):
        return None
    n, sep, m = raw.replace(",", ":").partition(":")
    try:
        pair = (int(n), int(m))
    except ValueError:
        raise ValueError(f"{text!r} is not N:M (e.g. 2:4)") from None
    if not sep or not 0 < pair[0] < pair[1]:
        raise ValueError(f"{text!r} is not N:M with 0 < N < M (e.g. 2:4)")
    return pair


def parse_overrides(items: Any) -> dict[str, float]:
    """``("conv1=0.3", "layer.*=0")`` → ``{"conv1": 0.3, "layer.*": 0.0}`` (patterns match layer
    names, fnmatch-style; the last match wins)."""
    out: dict[str, float] = {}
    if isinstance(items, Mapping):
        items = [f"{k}={v}" for k, v in items.items()]
    for item in items or ():
        name, sep, value = str(item).rpartition("=")
        if not sep or not name:
            raise ValueError(f"override {item!r} is not NAME=SPARSITY")
        try:
            s = float(value)
        except ValueError:
            raise ValueError(f"override {item!r}: {value!r} is not a number") from None
        if not 0 <= s < 1:
            raise ValueError(f"override {item!r}: sparsity must lie in [0, 1)")
        out[name] = s
    return out


#: :func:`auto_damp` between these: SparseGPT's 1% where rows far outnumber features, up to 11%
#: where there are as many features as rows or more.
DAMP_MIN, DAMP_RANGE = 0.01, 0.1


def auto_damp(features: int, rows: int) -> float:
    """The damping of a layer with ``features`` inputs seen on ``rows`` calibration rows:
    ``0.01 + 0.1 * min(1, features / rows)``. SparseGPT's 1% assumes far more rows than features
    (hundreds of thousands of tokens for a few thousand); MiniLM calibrated on 32 sentences has
    about 400 token rows for 384- and 1536-wide inputs, a rank-deficient Gram matrix whose
    undamped directions the row updates overfit: its held-out embedding cosine at 50% rose
    from 0.866 to 0.903-0.906 at damp 0.1-0.3 on either half of its sentences, while the digits
    CNN (tens of thousands of rows per convolution feature) lost up to 0.6 points at damp 0.1
    with activation scores and least squares."""
    return DAMP_MIN + DAMP_RANGE * min(1.0, features / max(rows, 1))


@dataclass(frozen=True)
class PruneOptions(PassOptions):
    """Options of :class:`PruneMagnitude` (``--pipeline prune``).

    ``sparsity``: the fraction of each pruned layer's weights set to zero (ignored with
    ``n_m``). ``n_m``: N:M sparsity, e.g. ``(2, 4)`` (``--n-m 2:4``). ``calibration``: data as for
    int8 (a ``.npz``, a folder of them, a reader, a list of feeds, ``"synthetic"``); without it
    scores are magnitudes and nothing is reconstructed. ``score``: ``magnitude``, ``activation``
    (``|W|·‖x‖``) or ``second-order`` (SparseGPT); ``auto``: activation with data, else
    magnitude. ``reconstruct``: refit kept weights and biases by least squares (needs data).
    ``sequential``: prune layers in depth order on the already pruned model's activations.
    ``threshold``: ``row`` (the same count per output channel), ``layer``, or ``global`` (one
    threshold over all layers' normalised scores); ``auto``: row with data, else layer.
    ``overrides``: ``NAME=SPARSITY`` per layer (fnmatch patterns). ``exclude``: layer names
    (patterns) left dense. ``skip_first``/``skip_last``: leave the first/last prunable layers
    dense; ``skip_depthwise``: depthwise convolutions; ``min_params``: smaller layers.
    ``min_cosine``/``min_sqnr``/``max_accuracy_drop`` (with ``eval_data``): the budget on
    held-out data; layers the outputs are most sensitive to step back ``1/levels`` of their
    target at a time (at most ``max_steps`` steps); a budget still missed fails unless
    ``allow_budget_miss``. ``damp``: diagonal damping of the Gram matrices (fraction of their
    mean); None: :func:`auto_damp`, more where a layer has few calibration rows per input
    feature. ``max_rows``: rows of statistics per layer. ``memory_mb``: statistics held at
    once. ``measure_latency``: time both models for the report. ``allocate`` (unstructured, with
    data): ``sparsity`` becomes the mean over the layers it applies to: each layer alone is
    pruned (activation-aware scores, or magnitudes with ``score="magnitude"``; no
    reconstruction) at ``sparsity`` and 0.1 and 0.2 either side, the output noise is
    measured on the held-out samples, and each layer gets the sparsity that keeps the same
    number of zeros in total with the least summed noise
    (:func:`~onnxforge.calibration.allocation.allocate_levels`).
    """

    sparsity: float = 0.5
    calibration: Any = None
    n_m: tuple[int, int] | None = None
    score: str = "auto"
    reconstruct: bool = True
    sequential: bool = True
    threshold: str = "auto"
    overrides: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_first: bool = True
    skip_last: bool = False
    skip_depthwise: bool = True
    min_params: int = 1024
    levels: int = 4
    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    eval_inputs: Any = None
    allow_budget_miss: bool = False
    max_steps: int = 32
    padding_mask: str | None = "auto"
    damp: float | None = None
    max_rows: int = 8192
    max_samples: int = 1024
    memory_mb: int = 512
    measure_latency: bool = True
    dims: Mapping[str, int] | None = None
    allocate: bool = False

    def validate(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity}")
        if self.n_m is not None:
            n_m = tuple(self.n_m)
            if len(n_m) != 2 or not 0 < int(n_m[0]) < int(n_m[1]):
                raise ValueError(f"n_m must be (N, M) with 0 < N < M, got {self.n_m}")
        if self.score not in (*SCORES, "auto"):
            raise ValueError(f"score must be one of auto, {', '.join(SCORES)}, got {self.score!r}")
        if self.threshold not in (*THRESHOLDS, "auto"):
            raise ValueError(f"threshold must be one of auto, {', '.join(THRESHOLDS)}, got {self.threshold!r}")
        if self.levels < 1 or self.max_steps < 0 or self.min_params < 0 or self.max_samples < 1 or self.max_rows < 1:
            raise ValueError("levels, max_samples and max_rows must be >= 1; max_steps and min_params >= 0")
        if self.damp is not None and not self.damp > 0:
            raise ValueError(f"damp must be > 0, got {self.damp}")
        parse_overrides(self.overrides)

    @classmethod
    def parse_value(cls, name: str, raw: str) -> Any:
        if name == "n_m":
            return parse_n_m(raw)
        return super().parse_value(name, raw)

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
        return "magnitude" if self.calibration is None else "activation"

    def resolved_threshold(self) -> str:
        if self.threshold != "auto":
            return self.threshold
        return "layer" if self.resolved_score() == "magnitude" else "row"


class PruneMagnitude(Pass[PruneOptions]):
    """Unstructured or N:M weight pruning, activation-aware with least-squares repair when given
    calibration data, within an accuracy budget."""

    name = "prune"
    summary = (
        "Zero the least important Conv/Gemm/MatMul weights (unstructured or N:M); with --calibration: "
        "activation-aware scores, least-squares repair, budget on held-out data."
    )
    lossless = False
    in_place = False
    Options = PruneOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        pruned, report = prune_weights(model, self.options)
        ctx.records[REPORT_KEY] = report
        changed = any(la.sparsity > 0 and la.target > 0 for la in report.layers)
        stats = {
            "pruned_layers": sum(1 for la in report.layers if la.target > 0),
            "zeroed_weights": sum(int(round(la.params * la.sparsity)) for la in report.layers if la.target > 0),
        }
        if not changed:
            return PassResult(False, stats)
        return PassResult(True, stats, model=pruned)


# ---------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------


@dataclass
class _Weights:
    weight: np.ndarray
    bias: np.ndarray | None  # [out] in the layer's matrix units (None: left as it is)


@dataclass
class _Built:
    weights: dict[str, _Weights] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)


class _Pruner:
    """Builds pruned copies of ``base`` for per-layer sparsities (module docstring)."""

    def __init__(self, copies: Copies, layers: list[Layer], opts: PruneOptions, data: PruningData | None) -> None:
        self.copies = copies
        base = self.base = copies.base
        self.layers = layers
        self.by_name = {la.name: la for la in layers}
        self.opts = opts
        self.data = data
        self.score = opts.resolved_score()
        self.threshold = opts.resolved_threshold()
        self.nm = tuple(opts.n_m) if opts.n_m is not None else None
        self.base_proto = copies.proto
        self.position = {n: i for i, n in enumerate(base.graph.nodes)}
        self.specs = {la.name: FeatureSpec.of(la) for la in layers}
        self.collector = (
            StatsCollector(data.samples, padding_mask=data.mask, max_rows=opts.max_rows)
            if data is not None and data.samples
            else None
        )
        self.cache: dict[tuple[Any, ...], _Weights] = {}
        #: layers whose statistics had fewer calibration rows than inputs: name -> (rows, inputs)
        self.thin: dict[str, tuple[int, int]] = {}

    @property
    def needs_stats(self) -> bool:
        return self.collector is not None and (self.score != "magnitude" or self.opts.reconstruct)

    def build(self, sparsity: Mapping[str, float]) -> Candidate[_Built]:
        model = self.copies.new()
        nodes = model.graph.nodes
        built = _Built(sparsity=dict(sparsity))
        active = [la for la in self.layers if sparsity.get(la.name, 0.0) > 0]
        # Sequential statistics pay where weights are refitted (reconstruction, second-order):
        # norms alone barely move, and each depth costs a pass over the data.
        sequential = self.sequential
        batches = plan_groups(active, sequential, self.opts.memory_mb << 20)
        upstream = _upstream_signatures(active, sparsity) if sequential else {}
        for batch in batches:
            keys = {la.name: (la.name, sparsity[la.name], upstream.get(la.depth)) for la in batch}
            todo = [la for la in batch if keys[la.name] not in self.cache]
            stats: dict[str, InputStats] = {}
            if todo and self.needs_stats:
                assert self.collector is not None
                specs = [s for la in todo if (s := self.specs[la.name]) is not None]
                current = to_proto(model, value_info=True) if sequential else self.base_proto
                cross = self.base_proto if (self.opts.reconstruct and sequential) else None
                stats = self.collector.collect(current, specs, original=cross)
            for la in todo:
                self.cache[keys[la.name]] = self._prune(la, sparsity[la.name], stats.get(la.name))
            for la in batch:
                w = self.cache[keys[la.name]]
                built.weights[la.name] = w
                _write(model, nodes, self.position, la, w)
        return Candidate(model, to_proto(model), built)

    @property
    def sequential(self) -> bool:
        return self.opts.sequential and self.needs_stats and (self.opts.reconstruct or self.score == "second-order")

    def _prune(self, layer: Layer, sparsity: float, st: InputStats | None) -> _Weights:
        w0 = layer.to_matrix(layer.weight_array())
        g, rows, d = w0.shape
        norms = st.norms() if (st is not None and self.score == "activation") else None
        if st is None or (self.score != "second-order" and not self.opts.reconstruct):
            return _Weights(w0 * self._mask(layer, importance(w0, norms), sparsity), None)
        intercept = layer.bias is not None or layer.op_type in ("Conv", "Gemm")
        b0 = layer.bias.read().reshape(g, rows, 1) if layer.bias is not None else np.zeros((g, rows, 1))
        waug = np.concatenate([w0, b0], axis=2)
        dim = d + 1 if intercept else d
        mask = self._mask(layer, importance(w0, norms), sparsity) if self.score != "second-order" else None
        out = np.empty((g, rows, d + 1))
        for gi in range(g):
            h_raw = st.gram[gi][:dim, :dim]
            wg = waug[gi][:, :dim]
            if st.cross is not None:
                b = waug[gi] @ st.cross[gi][:dim, :].T  # W0 X0ᵀX (the original layer's outputs)
                if not intercept:
                    b = waug[gi][:, :d] @ st.cross[gi][:d, :d].T
            else:
                b = wg @ h_raw
            if st.rows < d:
                self.thin[layer.name] = (st.rows, d)
            h, b = toward(h_raw, b, wg, self.opts.damp if self.opts.damp is not None else auto_damp(d, st.rows))
            if self.score == "second-order":
                start = solve_rows(h, b) if st.cross is not None else wg
                prunable = np.arange(dim) < d
                w_new, keep = self._sparsegpt(layer, start, h, sparsity, prunable)
                if self.opts.reconstruct:
                    w_new = masked_least_squares(w_new, keep, h, b)
            else:
                assert mask is not None
                keep = np.concatenate([mask[gi], np.ones((rows, dim - d), bool)], axis=1)
                w_new = masked_least_squares(wg, keep, h, b) if self.opts.reconstruct else wg * keep
            out[gi, :, :dim] = w_new
            if not intercept:
                out[gi, :, d] = 0.0
        weights = out[:, :, :d]
        return _Weights(weights, out[:, :, d].reshape(-1) if intercept else None)

    def _mask(self, layer: Layer, scores: np.ndarray, sparsity: float) -> np.ndarray:
        if self.nm is not None:
            return nm_mask(scores, self.nm[0], self.nm[1], layer.kernel_size)
        threshold = "layer" if self.threshold == "global" else self.threshold
        return unstructured_mask(scores, sparsity, threshold)

    def _sparsegpt(
        self, layer: Layer, w: np.ndarray, h: np.ndarray, sparsity: float, prunable: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.nm is None:
            return sparsegpt(w, h, sparsity, prunable)
        # Columns in (kernel position, channel) order, so that N:M groups are consecutive.
        d = layer.features
        perm = np.arange(d).reshape(layer.in_channels, layer.kernel_size).T.reshape(-1)
        perm = np.concatenate([perm, np.arange(d, w.shape[1])])
        inv = np.argsort(perm)
        wp, keep = sparsegpt(w[:, perm], h[np.ix_(perm, perm)], sparsity, prunable[perm], nm=self.nm)
        return wp[:, inv], keep[:, inv]


def _upstream_signatures(layers: list[Layer], sparsity: Mapping[str, float]) -> dict[int, int]:
    """Per depth, a digest of the sparsities of every layer at a smaller depth: a layer pruned
    sequentially depends on those (its cached result is reused while they stay). Linear."""
    out: dict[int, int] = {}
    digest = 0
    by_depth: dict[int, list[tuple[str, float]]] = {}
    for la in layers:
        by_depth.setdefault(la.depth, []).append((la.name, sparsity.get(la.name, 0.0)))
    for depth in sorted(by_depth):
        out[depth] = digest
        digest = hash((digest, tuple(sorted(by_depth[depth]))))
    return out


def _write(model: Model, nodes: list[Node], position: Mapping[Node, int], layer: Layer, w: _Weights) -> None:
    """Write pruned weights (and the refitted bias) into the copy ``model`` (``nodes``: its nodes,
    in the original's order; ``position``: the original's node positions)."""
    node = nodes[position[layer.node]]
    dtype = layer.weight_array().dtype
    set_input_constant(model, node, 1, layer.from_matrix(w.weight, dtype))
    if w.bias is None:
        return
    if layer.bias is not None:
        bias_node = nodes[position[layer.bias.node]]
        scale = layer.bias.scale or 1.0
        arr = (w.bias / scale).reshape(layer.bias.shape).astype(dtype)
        set_input_constant(model, bias_node, layer.bias.index, arr)
        return
    if not np.any(w.bias):
        return
    graph = node.graph
    assert graph is not None
    b = graph.add_initializer(f"{node.name or node.op_type}_bias", w.bias.astype(dtype))
    node.set_inputs([*node.inputs[:2], b])


def prune_weights(model: Model, opts: PruneOptions) -> tuple[Model, PruningReport]:
    """Prune ``model``'s weights as ``opts`` say; returns a new model and the report. ``model``
    is not modified."""
    start = time.perf_counter()
    score = opts.resolved_score()
    nm = tuple(opts.n_m) if opts.n_m is not None else None
    method = f"{nm[0]}:{nm[1]} sparsity" if nm else f"unstructured {opts.sparsity:.0%}"
    report = PruningReport(method, score, bool(opts.reconstruct and opts.calibration is not None))
    if opts.calibration is None and score != "magnitude":
        raise UsageError(f"{score} scores need calibration data (--calibration)")
    bopts = opts.budget_options()
    data = open_data(model, bopts, report)
    copies = Copies(model)
    model = copies.base
    keep = LayerFilter(opts.exclude, opts.skip_first, opts.skip_last, opts.skip_depthwise, opts.min_params)
    layers, refused = find_layers(model, keep)
    report.refused = refused
    overrides = parse_overrides(opts.overrides)
    target: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for la in layers:
        s = 1.0 - nm[0] / nm[1] if nm else opts.sparsity
        for pattern, value in overrides.items():
            if fnmatch.fnmatchcase(la.name, pattern):
                s = 0.0 if nm and value == 0 else (s if nm else value)
                if s < (1.0 - nm[0] / nm[1] if nm else opts.sparsity):
                    reasons[la.name] = f"override {pattern}={value:g}"
        if la.skip is not None:
            s, reasons[la.name] = 0.0, la.skip
        elif nm and s > 0 and not nm_qualifies(la, nm[1]):
            s, reasons[la.name] = 0.0, f"{la.in_channels} input channels are not a multiple of {nm[1]}: left dense"
        target[la.name] = s
    pruner = _Pruner(copies, layers, opts, data)
    if opts.resolved_threshold() == "global" and not nm:
        target = _global_targets(pruner, layers, target, opts, overrides)
        for la in layers:
            if la.skip is None and target[la.name] < opts.sparsity and la.name not in reasons:
                reasons[la.name] = "global threshold: its weights score higher than other layers'"
    if report.reconstruction and not pruner.needs_stats:
        report.reconstruction = False
    names = [la.name for la in layers if target[la.name] > 0]
    levels = 1 if nm else opts.levels

    def build(settings: Mapping[str, int]) -> Candidate[_Built]:
        return pruner.build({n: level_fraction(target[n], settings.get(n, 0), levels) for n in names})

    first: list[Candidate[_Built]] = []

    def build_recorded(settings: Mapping[str, int]) -> Candidate[_Built]:
        c = build(settings)
        if not first:
            first.append(c)
        return c

    def build_only(name: str) -> Model:
        one = copies.new()
        la = pruner.by_name[name]
        _write(one, one.graph.nodes, pruner.position, la, first[0].detail.weights[name])
        return one

    measure = Measure(pruner.base_proto, data) if data is not None else None
    if opts.allocate:
        _allocate(pruner, copies, layers, target, reasons, measure, opts, nm is not None, report)
    budget = Budget(opts.min_cosine, opts.min_sqnr, opts.max_accuracy_drop if data is not None and data.evaluate else None)
    fitted = fit_budget(build_recorded, names, levels, measure, budget, build_only, report, bopts, "layers")
    cand = fitted.candidate
    for la in layers:
        level = fitted.settings.get(la.name, 0)
        w = cand.detail.weights.get(la.name)
        arr = w.weight if w is not None else la.to_matrix(la.weight_array())
        sp = float(np.count_nonzero(arr == 0)) / max(arr.size, 1)
        reason = reasons.get(la.name, "")
        if level:
            reason = (
                f"budget: pruned {level_fraction(target[la.name], level, levels):.0%} instead of {target[la.name]:.0%}"
                if level < levels
                else "budget: left dense (the outputs are too sensitive to it)"
            )
        entry = LayerPruning(la.name, la.op_type, la.params, target[la.name], sp, level, reason)
        if nm:
            entry.nm_layout = w is not None and level < levels and nm_holds(arr, nm[0], nm[1], la.kernel_size)
            entry.tensorrt_sparse = bool(entry.nm_layout) and tensorrt_sparse_eligible(la)
        report.layers.append(entry)
    if nm:
        n_ok = sum(1 for e in report.layers if e.nm_layout)
        n_trt = sum(1 for e in report.layers if e.tensorrt_sparse)
        report.notes.append(
            f"{n_ok} layer(s) hold the {nm[0]}:{nm[1]} layout along input channels; {n_trt} of them also fit TensorRT's "
            "sparse kernels (output channels a multiple of 8, input channels a multiple of 16, not grouped)"
        )
    if pruner.thin:
        rows = min(r for r, _ in pruner.thin.values())
        widest = max(d for _, d in pruner.thin.values())
        report.notes.append(
            f"calibration: {len(pruner.thin)} layer(s) saw fewer calibration rows than they have inputs (as few as "
            f"{rows:,} rows, up to {widest:,} inputs), so their repair is underdetermined and leans on damping: more "
            "calibration data (rows: tokens, pixels or batch rows) prunes them better"
        )
    _fill_costs(report, model, cand.model, layers, data, opts)
    report.seconds = time.perf_counter() - start
    return cand.model, report


def _allocate(
    pruner: _Pruner,
    copies: Copies,
    layers: list[Layer],
    target: dict[str, float],
    reasons: dict[str, str],
    measure: Measure | None,
    opts: PruneOptions,
    nm: bool,
    report: PruningReport,
) -> None:
    """Spread ``opts.sparsity`` over the layers by measured sensitivity (``allocate``), in
    ``target`` and ``reasons``."""
    free = [la for la in layers if la.name not in reasons and target[la.name] == opts.sparsity > 0]
    why = (
        "N:M fixes every layer's sparsity" if nm
        else "it needs calibration data" if measure is None
        else "the global threshold sets the sparsities" if opts.resolved_threshold() == "global"
        else "fewer than 2 layers to share" if len(free) < 2
        else ""
    )  # fmt: skip
    if why or measure is None:
        report.notes.append(f"allocate: every layer at the asked sparsity ({why})")
        return
    # a level is the fraction of weights kept, in hundredths: its cost is elements x level
    base = round((1 - opts.sparsity) * 100)
    steps = [base + d for d in (-20, -10, 0, 10, 20) if 5 <= base + d <= 100]
    table: dict[str, dict[int, float]] = {la.name: {} for la in free}
    norms = _input_norms(pruner, free, opts)  # Wanda's scores where the pass scores by data
    for level in steps:

        def only(name: str, level: int = level) -> Model:
            one = copies.new()
            la = pruner.by_name[name]
            m = la.to_matrix(la.weight_array())
            keep = unstructured_mask(importance(m, norms.get(name)), 1 - level / 100, "row")
            _write(one, one.graph.nodes, pruner.position, la, _Weights(m * keep, None))
            return one

        ranked = sensitivity_ranking(measure.original, [la.name for la in free], measure.data.held[:8], measure.data.mask, only)
        for name, db in ranked:
            table[name][level] = noise_power(db)
    alloc = allocate_levels(table, {la.name: la.params for la in free}, base)
    for la in free:
        target[la.name] = 1 - alloc[la.name] / 100
        if alloc[la.name] > base:
            reasons[la.name] = f"allocate: pruned {target[la.name]:.0%} (sensitive; others pruned more)"
    zeros = sum(la.params * target[la.name] for la in free) / max(sum(la.params for la in free), 1)
    report.notes.append(
        f"allocate: {len(free)} layers pruned {min(target[la.name] for la in free):.0%} to "
        f"{max(target[la.name] for la in free):.0%} by measured sensitivity, {zeros:.1%} of their weights in all"
    )


def _input_norms(pruner: _Pruner, layers: list[Layer], opts: PruneOptions) -> dict[str, np.ndarray]:
    """``‖x_j‖`` of each layer's inputs in the unpruned model (``[groups, d]``, by name), for
    activation-aware scores; {} when scores are magnitudes or there is no data."""
    norms: dict[str, np.ndarray] = {}
    if pruner.score == "magnitude" or pruner.collector is None:
        return norms
    specs = [s for la in layers if (s := pruner.specs[la.name]) is not None]
    for batch in plan_groups([la for la in layers if pruner.specs[la.name] is not None], False, opts.memory_mb << 20):
        names = {la.name for la in batch}
        got = pruner.collector.collect(pruner.base_proto, [s for s in specs if s.name in names])
        norms.update({k: v.norms() for k, v in got.items()})
    return norms


def _global_targets(
    pruner: _Pruner, layers: list[Layer], target: dict[str, float], opts: PruneOptions, overrides: Mapping[str, float]
) -> dict[str, float]:
    """Per-layer sparsities from one threshold over all free layers' scores."""
    free = [la for la in layers if target[la.name] > 0 and not any(fnmatch.fnmatchcase(la.name, p) for p in overrides)]
    norms = _input_norms(pruner, free, opts)
    scores = {la.name: importance(la.to_matrix(la.weight_array()), norms.get(la.name)) for la in free}
    fixed = {la.name: target[la.name] for la in layers if la.name not in scores}
    return {**target, **global_sparsities(scores, opts.sparsity, {k: v for k, v in fixed.items() if k in scores})}


def _fill_costs(
    report: PruningReport,
    before: Model,
    after: Model,
    layers: list[Layer],
    data: PruningData | None,
    opts: PruneOptions,
) -> None:
    proto_before = to_proto(before)
    feed = example_feed(proto_before, data, opts.dims)
    cb, ca = costs(before, feed), costs(after, feed)
    if cb is not None and ca is not None:
        report.flops_before, report.params_before, per = cb
        report.flops_after, report.params_after, _ = ca
        saved = 0
        for la, entry in zip(layers, report.layers):
            entry.flops = per.get(la.node.name, 0)
            saved += int(entry.flops * entry.sparsity)
        report.effective_flops_after = report.flops_after - saved
    total = sum(la.params for la in layers)
    zeros_before = sum(int(np.count_nonzero(la.weight_array() == 0)) for la in layers)
    zeros_after = sum(int(round(e.sparsity * e.params)) for e in report.layers)
    if report.params_before is not None:
        others = report.params_before - total
        report.nonzero_params_before = others + total - zeros_before
        report.nonzero_params_after = others + total - zeros_after
    if opts.measure_latency:
        ms = measure_latency(proto_before, to_proto(after), feed)
        report.latency_ms = ms
        report.latency_note = "onnxruntime CPU, ORT_ENABLE_ALL, 1 thread, ~2 s interleaved; dense kernels do not skip zeros"


__all__ = ["PruneMagnitude", "PruneOptions", "parse_n_m", "parse_overrides", "prune_weights"]
