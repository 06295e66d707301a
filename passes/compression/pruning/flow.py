"""What every pruning pass shares: its calibration and held-out data, the budget loop, and the
figures of its report (output cosine/SQNR and accuracy on held-out data, FLOPs and parameters
from the cost model, measured latency).

Data, as int8 does it (:mod:`onnxforge.calibration.budget`): the calibration stream is read
once; every fifth batch from the second (at most 16) is held out of calibration and the budget
is measured on those, or on ``eval_inputs`` when given; accuracy (``eval_data``, labelled) on
rows that were not calibrated on. The calibration batches are kept in memory (at most
``max_samples``): sequential pruning reads them once per layer depth. Activations are never
kept (:mod:`~onnxforge.passes.compression.pruning.statistics`).

The budget (:func:`fit_budget`): the shared :func:`~onnxforge.calibration.budget.back_off` loop,
whose levels are pruning steps per layer or group (level 0: as pruned as asked; the top level:
not pruned), ranked by :func:`~onnxforge.calibration.sensitivity.sensitivity_ranking` (the
model with one layer alone pruned, output noise on held-out samples).
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import onnx

from onnxforge.calibration.budget import Budget, BudgetError, Holdout, back_off, row_keys
from onnxforge.calibration.data import model_inputs, open_calibration, synthetic
from onnxforge.calibration.sensitivity import sensitivity_ranking
from onnxforge.cost import analyze
from onnxforge.cost.roofline import H100
from onnxforge.equivalence import OrtRunner, random_feeds
from onnxforge.errors import UsageError
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.metrics.padding import find_padding_mask
from onnxforge.metrics.sqnr import ErrorPairs
from onnxforge.passes.compression.int8.flow import classification_accuracy
from onnxforge.passes.compression.pruning.report import PruningReport

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
Evaluate = Callable[[onnx.ModelProto], float]
C = TypeVar("C")


@dataclass(frozen=True)
class BudgetOptions:
    """The budget and data settings every pruning pass takes (see its options class)."""

    calibration: Any = None
    min_cosine: float | None = None
    min_sqnr: float | None = None
    max_accuracy_drop: float | None = None
    eval_data: Any = None
    eval_inputs: Any = None
    allow_budget_miss: bool = False
    max_steps: int = 32
    padding_mask: str | None = "auto"
    max_samples: int = 1024
    dims: Mapping[str, int] | None = None

    @property
    def has_budget(self) -> bool:
        return self.min_cosine is not None or self.min_sqnr is not None or self.max_accuracy_drop is not None


@dataclass
class PruningData:
    """Calibration batches (``samples``), the held-out batches the budget is measured on, the
    padding-mask input, and the accuracy function on labelled rows not calibrated on."""

    samples: list[Feed]
    held: list[Feed]
    mask: str | None = None
    evaluate: Evaluate | None = None


def open_data(model: Model, opts: BudgetOptions, report: PruningReport) -> PruningData | None:
    """The pass's data (module docstring); None without ``calibration``. Fills the report's
    words for it."""
    inputs = model_inputs(model)
    if opts.calibration is None:
        if not opts.has_budget:
            return None
        # No data to prune from, but a budget to hold: measured on --eval inputs or seeded random
        # inputs (cosine, SQNR) and on --eval-data (accuracy); scores stay magnitudes.
        if opts.eval_inputs is not None:
            held = [dict(f) for f in itertools.islice(iter(open_calibration(opts.eval_inputs, inputs=inputs, dims=opts.dims)), 16)]
            report.budget_data = f"{len(held)} --eval sample(s)"
        else:
            held = [dict(f) for f in synthetic(inputs, 4, 0, dims=opts.dims)]
            report.budget_data = f"{len(held)} seeded random input(s) (no calibration data)"
            report.notes.append("no calibration data: the budget's cosine/SQNR were measured on seeded random inputs")
        labelled = _labelled(opts.eval_data)
        if labelled is None and opts.max_accuracy_drop is not None:
            raise UsageError("--max-accuracy-drop needs labelled evaluation data (--eval-data)")
        mask = find_padding_mask(opts.padding_mask, [v.name for v in model.graph.inputs], held[0] if held else None)
        evaluate = classification_accuracy(*labelled) if labelled is not None else None
        if labelled is not None:
            report.accuracy_data = f"{len(labelled[1])} --eval-data samples"
        return PruningData([], held, mask, evaluate)
    random = isinstance(opts.calibration, str) and opts.calibration == "synthetic"
    source = open_calibration(None if random else opts.calibration, inputs=inputs, allow_synthetic=random, dims=opts.dims)
    report.data = source.description
    report.synthetic = bool(getattr(source, "synthetic", False))
    eval_feeds = None
    if opts.eval_inputs is not None:
        eval_source = open_calibration(opts.eval_inputs, inputs=inputs, dims=opts.dims)
        eval_feeds = [dict(f) for f in itertools.islice(iter(eval_source), 16)]
        if not eval_feeds:
            raise UsageError("the evaluation inputs (--eval) hold no samples")
    labelled = _labelled(opts.eval_data)
    eval_keys = [row_keys(f) for f in eval_feeds] if eval_feeds is not None else []
    label_keys = row_keys(labelled[0]) if labelled is not None else []
    holdout = Holdout(
        every=0 if eval_feeds is not None else 5,
        limit=16,
        watch={k for keys in eval_keys for k in keys} | set(label_keys),
    )
    stream = holdout.route(source)
    samples = list(itertools.islice(stream, opts.max_samples))
    if not samples:
        raise UsageError("the calibration data holds no samples")
    if next(stream, None) is not None:
        report.notes.append(f"calibrated on the first {len(samples)} batches only (max_samples)")
    report.calibration_samples = len(samples)
    if eval_feeds is not None:
        held = [f for f, keys in zip(eval_feeds, eval_keys) if not any(k in holdout.calibrated_keys for k in keys)]
        if not held:
            raise UsageError("every --eval sample is also a calibration sample: give inputs that were not calibrated on")
        report.budget_data = f"{len(held)} --eval sample(s)"
    elif holdout.held:
        held = holdout.held
        report.budget_data = f"{len(held)} held-out calibration sample(s) (every fifth from the second, not calibrated on)"
    else:
        held = samples[:16]
        report.budget_data = f"{len(held)} calibration sample(s) (too few to hold one out)"
        if opts.has_budget:
            report.notes.append("the budget was measured on calibration samples: give more samples, or --eval inputs")
    mask = find_padding_mask(opts.padding_mask, [v.name for v in model.graph.inputs], samples[0])
    if mask is not None:
        report.notes.append(f"statistics and errors on real positions only (padding masked by input {mask!r})")
    evaluate = None
    if labelled is not None:
        arrays, labels = labelled
        keys = row_keys(arrays)
        keep = np.array([k not in holdout.calibrated_keys for k in keys], bool) if len(keys) == len(labels) else None
        if keep is not None and not keep.any():
            raise UsageError("every --eval-data sample is also a calibration sample")
        if keep is not None and not keep.all():
            arrays = {k: v[keep] for k, v in arrays.items()}
            labels = labels[keep]
        report.accuracy_data = f"{len(labels)} --eval-data samples not calibrated on"
        evaluate = classification_accuracy(arrays, labels)
    elif opts.max_accuracy_drop is not None:
        raise UsageError("--max-accuracy-drop needs labelled evaluation data (--eval-data); use --min-cosine without labels")
    return PruningData(samples, held, mask, evaluate)


def _labelled(spec: Any) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    if spec is None:
        return None
    if isinstance(spec, tuple) and len(spec) == 2:
        return dict(spec[0]), np.asarray(spec[1])
    try:
        with np.load(spec) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read evaluation data {spec}: {e}") from None
    labels = arrays.pop("labels", None)
    if labels is None:
        raise UsageError(f"evaluation data {spec} has no 'labels' array")
    return arrays, labels


class Copies:
    """Independent copies of a model whose nodes sit at the same positions in ``graph.nodes``
    (built from one proto: ``Model.clone``'s deepcopy recurses as deep as the graph is long).
    Work on :attr:`base`, not on the model given, so that positions match."""

    def __init__(self, model: Model) -> None:
        self._store = model.tensor_store
        self._export = model.export_value_info
        self.proto = to_proto(model, value_info=True)
        self.base = self.new()

    def new(self) -> Model:
        m = from_proto(self.proto)
        m.tensor_store = self._store
        m.export_value_info = self._export
        return m


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Figures:
    cosine: dict[str, float]
    sqnr: dict[str, float]
    accuracy: tuple[float, float] | None = None


class Measure:
    """Figures of candidate models against the original on the held-out batches."""

    def __init__(self, original: onnx.ModelProto, data: PruningData) -> None:
        self.original = original
        self.data = data
        self.outputs = [o.name for o in original.graph.output]
        sess = OrtRunner().session(original)
        self.reference = [sess.run(self.outputs, dict(f)) for f in data.held]
        self.float_score = data.evaluate(original) if data.evaluate is not None else None

    def __call__(self, proto: onnx.ModelProto) -> Figures:
        sess = OrtRunner().session(proto)
        pairs = ErrorPairs(self.data.mask)
        for feed, ref in zip(self.data.held, self.reference):
            for name, want, got in zip(self.outputs, ref, sess.run(self.outputs, dict(feed))):
                pairs.add(name, np.asarray(want), np.asarray(got), feed)
        cos = {o: pairs.worst_cosine(o) for o in self.outputs if o in pairs}
        sq = {o: pairs.sqnr(o) for o in self.outputs if o in pairs}
        acc = None
        if self.data.evaluate is not None and self.float_score is not None:
            acc = (self.float_score, self.data.evaluate(proto))
        return Figures(cos, sq, acc)


@dataclass
class Candidate(Generic[C]):
    """A pruned model built for some levels, its proto, what it carries (``detail``: the
    pass's own bookkeeping) and its figures."""

    model: Model
    proto: onnx.ModelProto
    detail: C
    figures: Figures | None = None


@dataclass
class Fitted(Generic[C]):
    candidate: Candidate[C]
    settings: dict[str, int] = field(default_factory=dict)


def fit_budget(
    build: Callable[[Mapping[str, int]], Candidate[C]],
    names: Sequence[str],
    levels: Mapping[str, int] | int,
    measure: Measure | None,
    budget: Budget,
    build_only: Callable[[str], Model],
    report: PruningReport,
    opts: BudgetOptions,
    what: str,
) -> Fitted[C]:
    """Build the most pruned candidate and, while it misses ``budget`` on the held-out data,
    prune the most sensitive layer (group) one level less. Fills the report's budget figures;
    raises :class:`BudgetError` when the budget cannot be met unless ``allow_budget_miss``."""
    report.budget = budget.describe()
    if measure is None or budget.empty:
        cand = build({})
        if measure is not None:
            cand.figures = measure(cand.proto)
            _fill(report, cand.figures, budget)
        return Fitted(cand, {})

    def candidate(settings: Mapping[str, int]) -> Candidate[C]:
        c = build(settings)
        c.figures = measure(c.proto)
        return c

    def misses(c: Candidate[C]) -> list[str]:
        assert c.figures is not None
        return budget.misses(c.figures.cosine, c.figures.sqnr, c.figures.accuracy)

    def ranking() -> list[str]:
        report.sensitivity = sensitivity_ranking(
            measure.original, list(names), measure.data.held[:8], measure.data.mask, build_only
        )
        return [n for n, _ in report.sensitivity]

    fitted = back_off(candidate, misses, ranking, levels=levels, max_steps=opts.max_steps)
    report.stepped = list(fitted.stepped)
    cand = fitted.candidate
    assert cand.figures is not None
    _fill(report, cand.figures, budget)
    if report.budget_missed:
        message = (
            f"pruning misses its accuracy budget ({budget.describe()}) on {report.budget_data}: "
            f"{'; '.join(report.budget_missed[:3])}, with {len(set(fitted.stepped))} {what} pruned less"
        )
        if not opts.allow_budget_miss:
            raise BudgetError(message + "; --allow-budget-miss writes this model anyway", report, cand.model)
        report.notes.append(message + " (allowed: the model is written anyway)")
    return Fitted(cand, dict(fitted.settings))


def _fill(report: PruningReport, figures: Figures, budget: Budget) -> None:
    report.output_cosine = figures.cosine
    report.output_sqnr = figures.sqnr
    report.accuracy = figures.accuracy
    report.budget_missed = budget.misses(figures.cosine, figures.sqnr, figures.accuracy)


# -- cost and latency --------------------------------------------------------------------------


def example_feed(model: onnx.ModelProto, data: PruningData | None, dims: Mapping[str, int] | None) -> Feed:
    """A feed for cost and latency: the first calibration batch, else seeded random inputs."""
    if data is not None and data.samples:
        return dict(data.samples[0])
    return random_feeds(model, seed=0, dims=dims)


def costs(model: Model, feed: Mapping[str, np.ndarray]) -> tuple[int, int, dict[str, int]] | None:
    """(FLOPs, parameters, FLOPs per node name) from the cost model at the feed's shapes; None
    when the cost model cannot analyse the model (logged)."""
    try:
        shapes = {k: tuple(np.asarray(v).shape) for k, v in feed.items()}
        rep = analyze(model, shapes=shapes, target=H100, probe=False, reorder=False)
    except Exception as e:  # a report extra must not fail the pass
        log.info("cost model unavailable for the pruning report: %s", e)
        return None
    per = {n.name: n.flops * n.runs for n in rep.nodes if n.name and n.counted}
    return rep.totals.flops, rep.totals.params, per


def measure_latency(
    before: onnx.ModelProto, after: onnx.ModelProto, feed: Mapping[str, np.ndarray], seconds: float = 2.0
) -> tuple[float, float]:
    """Median milliseconds per run of both models (onnxruntime, all optimizations, one thread),
    interleaved with the starting model alternating, for about ``seconds``."""
    runner = OrtRunner(optimize=True)
    sessions = [runner.session(before), runner.session(after)]
    for s in sessions:
        for _ in range(2):
            s.run(None, dict(feed))
    times: list[list[float]] = [[], []]
    start = time.perf_counter()
    r = 0
    while (time.perf_counter() - start < seconds or r < 5) and r < 500:
        for k in range(2):
            i = (r + k) % 2
            t0 = time.perf_counter()
            sessions[i].run(None, dict(feed))
            times[i].append(time.perf_counter() - t0)
        r += 1
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def level_fraction(target: float, level: int, levels: int) -> float:
    """The pruning fraction at ``level`` of ``levels`` steps from ``target`` (level 0) to 0."""
    if level >= levels:
        return 0.0
    return target * (1.0 - level / levels)


__all__ = [
    "BudgetOptions",
    "Candidate",
    "Copies",
    "Figures",
    "Fitted",
    "Measure",
    "PruningData",
    "costs",
    "example_feed",
    "fit_budget",
    "level_fraction",
    "measure_latency",
    "open_data",
]
