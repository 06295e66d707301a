"""Low-rank factorization of MatMul/Gemm weights as a pass: :class:`FactorizeLowRank`.

A constant weight ``W`` ``[K, N]`` becomes ``U`` ``[K, r]`` times ``V`` ``[r, N]``, and
``x @ W`` becomes ``(x @ U) @ V``: ``r (K + N)`` parameters and multiply-adds per row instead
of ``K N``. The op table's MatMul formula (``M K N`` MACs) makes the break-even rank
``K N / (K + N)``; ranks are fractions of it, so every factored layer is smaller and cheaper.

The factorization is the truncated SVD. With calibration data it is data-aware: it minimizes
the layer-output error ``||X (W - U V)||`` over the calibration inputs ``X`` instead of the
weight error, by the SVD of ``L^T W`` where ``L L^T`` is the inputs' (damped) Gram matrix; the
factors then undo the whitening.

Rank per layer: every layer starts at ``rank_ratio`` of its break-even rank; while the model
misses its budget (``min_cosine``, ``min_sqnr``, ``max_accuracy_drop``) the layer the outputs
are most sensitive to steps up a rank (``steps`` steps up to the break-even), then stays
unfactored (:func:`onnxforge.passes.compression.budgeted.fit_budget`). A weight read by several
nodes is factored once; each reader multiplies by the shared factors. Its report is
``ctx.records["low-rank"]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxforge.calibration.budget import Budget, BudgetError
from onnxforge.errors import UsageError
from onnxforge.ir import Model, Node, from_proto, to_proto
from onnxforge.ir.constants import add_constant, constant_value
from onnxforge.metrics.sqnr import worst
from onnxforge.passes.cleanup.dead_code import DeadCodeElimination
from onnxforge.passes.compression.budgeted import (
    CompressionData,
    OutputMeasure,
    collect_stats,
    fit_budget,
    reference_model,
)
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult
from onnxforge.tables import format_table

log = logging.getLogger(__name__)

REPORT_KEY = "low-rank"
PROVENANCE = "low-rank"
_FLOAT = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}


@dataclass(frozen=True)
class LowRankOptions(PassOptions):
    """Options of :class:`FactorizeLowRank`.

    ``rank_ratio``: the rank every layer starts at, as a fraction of its break-even rank
    ``K N / (K + N)``; ``steps``: ranks between it and the break-even the budget may step
    through before it leaves a layer unfactored. ``min_elements``: smaller weights stay.
    ``calibration``, ``min_cosine``, ``min_sqnr``, ``max_accuracy_drop`` with ``eval_data``,
    ``allow_budget_miss``, ``max_steps``, ``samples``, ``padding_mask``, ``dims``: as for
    weight sharing. ``data_aware``: minimize the layer-output error on the calibration data
    (needs it) rather than the weight error.
    """

    rank_ratio: float = 0.5
    steps: int = 3
    min_elements: int = 16384
    calibration: Any = None
    data_aware: bool = True
    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    max_steps: int = 64
    allow_budget_miss: bool = False
    samples: int = 64
    padding_mask: str | None = "auto"
    dims: Mapping[str, int] | None = None

    def validate(self) -> None:
        if not 0 < self.rank_ratio < 1:
            raise ValueError(f"rank_ratio must lie in (0, 1), got {self.rank_ratio}")
        if self.steps < 0 or self.min_elements < 1 or self.max_steps < 0:
            raise ValueError("steps and max_steps must be >= 0, min_elements >= 1")
        Budget(self.min_cosine, self.min_sqnr, self.max_accuracy_drop)


@dataclass
class FactoredLayer:
    """One weight in the report: shape ``[K, N]`` as multiplied, the rank it ended at (None:
    left whole), the break-even rank, the share of the (whitened) spectrum's energy kept, and
    parameters before and after."""

    name: str
    readers: str
    k: int
    n: int
    rank: int | None
    break_even: int
    energy: float = 1.0
    params_before: int = 0
    params_after: int = 0


@dataclass
class LowRankReport:
    data: str
    budget: str = "none"
    budget_data: str = ""
    layers: list[FactoredLayer] = field(default_factory=list)
    output_cosine: dict[str, float] = field(default_factory=dict)
    output_sqnr: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[float, float] | None = None
    stepped: list[str] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    budget_missed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def params_before(self) -> int:
        return sum(x.params_before for x in self.layers)

    @property
    def params_after(self) -> int:
        return sum(x.params_after for x in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "budget": self.budget,
            "budget_data": self.budget_data,
            "budget_missed": self.budget_missed,
            "layers": [vars(x) for x in self.layers],
            "output_cosine": self.output_cosine,
            "output_sqnr": self.output_sqnr,
            "accuracy": list(self.accuracy) if self.accuracy is not None else None,
            "stepped": self.stepped,
            "notes": self.notes,
        }

    def summary_lines(self) -> list[str]:
        rows = [
            [x.name, x.readers, f"{x.k}x{x.n}", "whole" if x.rank is None else str(x.rank), str(x.break_even), f"{x.energy:.4f}", str(x.params_before), str(x.params_after)]
            for x in self.layers
        ]
        out = [f"low rank: budget {self.budget}" + (f" on {self.budget_data}" if self.budget_data else "")]
        out += format_table(["weight", "read by", "K x N", "rank", "break-even", "energy", "params", "after"], rows, left=(1,))
        out.append(f"parameters: {self.params_before} -> {self.params_after}")
        if self.output_cosine:
            out.append(f"outputs: worst cosine {worst(self.output_cosine.values()):.5f}, worst SQNR {worst(self.output_sqnr.values()):.1f} dB")
        if self.accuracy is not None:
            out.append(f"accuracy: {self.accuracy[0] * 100:.2f}% -> {self.accuracy[1] * 100:.2f}%")
        out += [f"note: {n}" for n in self.notes]
        return out


@dataclass
class _Weight:
    name: str
    k: int
    n: int
    #: True when stored [N, K] (a Gemm with transB): the matrix multiplied is its transpose.
    transposed: bool
    activation: str | None
    readers: list[Node]


def find_weights(model: Model, min_elements: int) -> list[_Weight]:
    """Main-graph MatMul/Gemm weights a factorization may replace (every reader multiplies the
    same way), in graph order."""
    out: dict[str, _Weight] = {}
    bad: set[str] = set()
    graph = model.graph
    for node in graph.topological_order():
        if node.op_type not in ("MatMul", "Gemm") or not node.is_standard_domain():
            continue
        v = node.input(1)
        if v is None or v.graph is not graph or not v.is_constant() or v.is_graph_output():
            continue
        t = v.const
        if t is None or t.data_type not in _FLOAT or len(t.dims) != 2 or math.prod(t.dims) < min_elements:
            continue
        if node.op_type == "Gemm" and int(node.attr("transA", 0)):
            bad.add(v.name)
            continue
        transposed = node.op_type == "Gemm" and bool(int(node.attr("transB", 0)))
        k, n = (t.dims[1], t.dims[0]) if transposed else (t.dims[0], t.dims[1])
        w = out.get(v.name)
        if w is None:
            act = node.input(0)
            out[v.name] = _Weight(v.name, int(k), int(n), transposed, act.name if act is not None else None, [node])
        elif w.transposed != transposed:
            bad.add(v.name)
        else:
            w.readers.append(node)
    for name, w in out.items():
        users = {id(u) for u, _ in graph.initializers[name].uses()}
        if users != {id(r) for r in w.readers}:  # read by something else too: leave it whole
            bad.add(name)
    return [w for name, w in out.items() if name not in bad]


def break_even(k: int, n: int) -> int:
    """The rank at which ``U V`` costs what ``W`` costs (parameters and MACs)."""
    return (k * n) // (k + n)


class _Factors:
    """The (whitened) SVD of every weight, computed once; factors for any rank."""

    def __init__(self, model: Model, gram: Mapping[str, np.ndarray]) -> None:
        self._model = model
        self._gram = gram
        self._svd: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def matrix(self, w: _Weight) -> np.ndarray:
        arr = constant_value(self._model.graph.initializers[w.name])
        assert arr is not None
        return arr.T if w.transposed else arr

    def svd(self, w: _Weight) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        hit = self._svd.get(w.name)
        if hit is not None:
            return hit
        m = self.matrix(w).astype(np.float64)
        g = self._gram.get(w.activation or "")
        inv_lt = None
        if g is not None and g.shape == (w.k, w.k):
            damp = 1e-2 * float(np.trace(g)) / w.k + 1e-12
            try:
                lower = np.linalg.cholesky(g + damp * np.eye(w.k))
                inv_lt = np.linalg.inv(lower.T)
                m = lower.T @ m
            except np.linalg.LinAlgError:
                inv_lt = None
                m = self.matrix(w).astype(np.float64)
        p, s, qt = np.linalg.svd(m, full_matrices=False)
        hit = (p, s, qt, inv_lt)
        self._svd[w.name] = hit
        return hit

    def factors(self, w: _Weight, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(U [K, r], V [r, N], share of the spectrum's energy kept)."""
        p, s, qt, inv_lt = self.svd(w)
        root = np.sqrt(s[:rank])
        u = p[:, :rank] * root
        if inv_lt is not None:
            u = inv_lt @ u
        v = root[:, None] * qt[:rank]
        energy = float(np.square(s[:rank]).sum() / max(np.square(s).sum(), 1e-300))
        return u, v, energy


def apply_factors(model: Model, weights: list[_Weight], chosen: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Replace each weight in ``chosen`` by its factors in ``model`` (built from the same proto
    as the weights were found in: nodes are found again by name/position)."""
    graph = model.graph
    for w in weights:
        if w.name not in chosen:
            continue
        v = graph.initializers.get(w.name)
        if v is None or v.const is None:
            continue
        dtype = _FLOAT.get(v.const.data_type, np.float32)
        u, vt = chosen[w.name]
        u_v = add_constant(graph, u.astype(dtype), f"{w.name}_lowrank_U")
        v_v = add_constant(graph, vt.astype(dtype), f"{w.name}_lowrank_V")
        for node, idx in list(v.uses()):
            if idx != 1:
                continue
            x = node.input(0)
            mid = graph.add_node(
                "MatMul", [x, u_v], name=f"{node.name or w.name}_lowrank", output_names=[f"{w.name}_lowrank_x"], provenance=PROVENANCE
            ).output(0)
            if node.op_type == "MatMul":
                node.set_input(0, mid)
                node.set_input(1, v_v)
            else:  # Gemm(x, W, C) -> Gemm(x U, V, C), alpha and beta kept
                node.set_input(0, mid)
                node.set_input(1, v_v)
                if int(node.attr("transB", 0)):
                    node.set_attr("transB", 0)
        if not v.num_uses():
            graph.remove_initializer(v)
    graph.toposort()


class FactorizeLowRank(Pass[LowRankOptions]):
    """Low-rank (SVD) factorization of MatMul/Gemm weights, rank per layer within the budget."""

    name = "low-rank"
    summary = "SVD-factor MatMul/Gemm weights (data-aware with --calibration), rank per layer within the accuracy budget."
    lossless = False
    in_place = False
    Options = LowRankOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        weights = find_weights(model, opts.min_elements)
        data = CompressionData.open(
            model, opts.calibration, samples=opts.samples, padding_mask=opts.padding_mask, dims=opts.dims, eval_data=opts.eval_data
        )
        report = LowRankReport(data.description)
        report.notes.extend(data.notes)
        ctx.records[REPORT_KEY] = report
        if not weights:
            report.notes.append(f"no MatMul/Gemm weight of {opts.min_elements} elements or more")
            return PassResult(False, {"factored": 0})
        if opts.max_accuracy_drop is not None and data.labelled is None:
            raise UsageError("--max-accuracy-drop needs labelled evaluation data (eval_data: inputs plus 'labels')")
        float_proto = to_proto(model)
        gram: dict[str, np.ndarray] = {}
        if opts.data_aware and data.real:
            stats = collect_stats(float_proto, {w.activation: "matmul" for w in weights if w.activation}, data.calibration, data.mask)
            gram = {name: g for name in stats.gram if (g := stats.mean_gram(name)) is not None}
        factors = _Factors(model, gram)
        budget = Budget(opts.min_cosine, opts.min_sqnr, opts.max_accuracy_drop if data.labelled is not None else None)
        report.budget, report.budget_data = budget.describe(), data.held_description
        reference, against = reference_model(ctx, float_proto)
        report.budget_data += f"; against {against}"
        measure = OutputMeasure(reference, data)
        if measure.failed is not None:
            report.notes.append(measure.failed)
        by_name = {w.name: w for w in weights}

        def rank_at(w: _Weight, level: int) -> int | None:
            if level > opts.steps:
                return None
            be = break_even(w.k, w.n)
            frac = opts.rank_ratio + (1 - opts.rank_ratio) * level / (opts.steps + 1)
            r = max(1, int(frac * be))
            return r if r < be else None

        def build(settings: Mapping[str, int], only: str | None) -> Model:
            m = from_proto(float_proto)
            found = find_weights(m, opts.min_elements)
            chosen = {}
            for w in found:
                if only is not None and w.name != only:
                    continue
                r = rank_at(by_name[w.name], settings.get(w.name, 0))
                if r is not None:
                    u, v, _ = factors.factors(by_name[w.name], r)
                    chosen[w.name] = (u, v)
            apply_factors(m, found, chosen)
            DeadCodeElimination()(m)
            return m

        fitted = fit_budget(float_proto, list(by_name), opts.steps + 1, build, measure, budget, max_steps=opts.max_steps)
        report.stepped, report.sensitivity = fitted.stepped, fitted.sensitivity
        cos, sqnr, acc = fitted.figures
        report.output_cosine, report.output_sqnr, report.accuracy = cos, sqnr, acc
        for w in weights:
            r = rank_at(w, fitted.settings.get(w.name, 0))
            energy = factors.factors(w, r)[2] if r is not None else 1.0
            after = r * (w.k + w.n) if r is not None else w.k * w.n
            readers = ", ".join(n.name or n.op_type for n in w.readers)
            report.layers.append(FactoredLayer(w.name, readers, w.k, w.n, r, break_even(w.k, w.n), energy, w.k * w.n, after))
        report.budget_missed = fitted.misses(budget)
        if report.budget_missed:
            message = f"low rank misses its budget ({budget.describe()}) on {report.budget_data}: " + "; ".join(report.budget_missed[:3])
            if not opts.allow_budget_miss:
                raise BudgetError(message + "; allow_budget_miss writes this model anyway", report, fitted.model)
            report.notes.append(message + " (allowed: the model is written anyway)")
        factored = sum(1 for x in report.layers if x.rank is not None)
        stats_out = {
            "factored": factored,
            "params_before": report.params_before,
            "params_after": report.params_after,
            "rank_steps": len(report.stepped),
        }
        return PassResult(factored > 0, stats_out, model=fitted.model if factored else None)


__all__ = ["REPORT_KEY", "FactorizeLowRank", "LowRankOptions", "LowRankReport", "break_even"]
