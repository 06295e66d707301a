"""What the budgeted compression passes share (weight sharing, low rank): calibration samples
and the held-out ones the budget is measured on, second moments of layer inputs, and the output
figures (cosine, SQNR, accuracy) of a candidate against the float model.

* :class:`CompressionData`: the calibration feeds (every fifth from the second held out of
  calibration, as int8 does), or seeded random feeds when no data is given (then nothing is
  calibrated and the budget is measured on random inputs; the reports say so); the padding mask
  input; labelled evaluation data for an accuracy budget.
* :func:`collect_stats`: per activation, ``sum x^T x`` over rows (the Gram matrix a MatMul/Gemm
  weight multiplies) or ``sum x^2`` per channel (a Conv's input), padding left out.
* :class:`OutputMeasure`: the float model's outputs on the held-out feeds, computed once, and
  each candidate's worst-sample cosine and pooled SQNR per output, plus accuracy.
* :func:`fit_budget`: the levels per layer that meet the budget (back_off, most sensitive layer
  first).
* :class:`KeepReference`: marks the model a pipeline's budget is measured against, so that
  pruning and weight sharing in one pipeline hold one budget together (:func:`reference_model`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx

from onnxforge.calibration.budget import Budget, Holdout, back_off
from onnxforge.calibration.data import model_inputs, open_calibration, synthetic
from onnxforge.calibration.sensitivity import sensitivity_ranking
from onnxforge.calibration.taps import tapped_model
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import UsageError
from onnxforge.ir import Model, to_proto
from onnxforge.metrics.padding import find_padding_mask, valid_positions
from onnxforge.metrics.sqnr import ErrorPairs
from onnxforge.passes.compression.int8.flow import LabelledData, classification_accuracy
from onnxforge.passmanager import Pass, PassContext, PassResult

#: How a layer reads its input activation: as rows of a matrix product, or by channel (Conv).
Reading = Literal["matmul", "conv"]


@dataclass
class ActivationStats:
    """Per activation: ``gram`` (sum of x^T x over rows, matmul readers) or ``channel`` (sum of
    x^2 per channel, conv readers), and the rows (positions) summed."""

    gram: dict[str, np.ndarray] = field(default_factory=dict)
    channel: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def mean_gram(self, name: str) -> np.ndarray | None:
        """``E[x^T x]`` of activation ``name`` (None when not collected)."""
        g = self.gram.get(name)
        return None if g is None else g / max(self.rows.get(name, 0), 1)


def collect_stats(
    proto: onnx.ModelProto, wanted: Mapping[str, Reading], feeds: Sequence[Mapping[str, np.ndarray]], mask: str | None
) -> ActivationStats:
    """Second moments of the activations ``wanted`` (name -> how they are read) over ``feeds``."""
    stats = ActivationStats()
    if not wanted or not feeds:
        return stats
    tapped, taps = tapped_model(proto, list(wanted))
    names = [n for n in wanted if n in taps]
    sess = OrtRunner().session(tapped)
    for feed in feeds:
        values = sess.run([taps[n] for n in names], dict(feed))
        m = np.asarray(feed[mask]) if mask is not None and mask in feed else None
        for name, x in zip(names, values):
            x = np.asarray(x)
            if not x.size or x.dtype.kind != "f":
                continue
            if wanted[name] == "matmul":
                k = x.shape[-1]
                rows = x.reshape(-1, k) if m is None else valid_positions(x, m).reshape(-1, k)
                r64 = rows.astype(np.float64)
                g = stats.gram.get(name)
                stats.gram[name] = r64.T @ r64 if g is None else g + r64.T @ r64
                stats.rows[name] = stats.rows.get(name, 0) + len(rows)
            elif x.ndim >= 3:
                c = x.shape[1]
                sq = np.square(np.moveaxis(x, 1, -1).reshape(-1, c).astype(np.float64)).sum(axis=0)
                prev = stats.channel.get(name)
                stats.channel[name] = sq if prev is None else prev + sq
                stats.rows[name] = stats.rows.get(name, 0) + x.size // c
    return stats


@dataclass
class CompressionData:
    """Calibration feeds (for statistics), held-out feeds (for the budget), labelled data."""

    calibration: list[dict[str, np.ndarray]]
    held: list[dict[str, np.ndarray]]
    real: bool
    description: str
    held_description: str
    mask: str | None
    labelled: LabelledData | None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        model: Model,
        calibration: Any,
        *,
        samples: int = 64,
        padding_mask: str | None = "auto",
        dims: Mapping[str, int] | None = None,
        eval_data: Any = None,
    ) -> CompressionData:
        """Read ``calibration`` (as int8 takes it; None: seeded random inputs) and ``eval_data``
        (a ``.npz`` of inputs plus ``labels``, or :class:`LabelledData`)."""
        inputs = model_inputs(model)
        real = calibration is not None
        if real:
            source = open_calibration(calibration, inputs=inputs, dims=dims)
        else:  # no data: the budget is measured on random inputs, nothing is calibrated
            source = synthetic(inputs, 4, 0, dims=dims)
        holdout = Holdout(every=5 if real else 0, limit=16)
        feeds = list(itertools.islice(holdout.route(source), samples))
        notes = []
        if not feeds and not holdout.held:
            raise UsageError("the calibration data holds no samples")
        held = holdout.held
        if real and held:
            held_description = f"{len(held)} held-out calibration sample(s) (every fifth from the second, not calibrated on)"
        elif real:
            held, held_description = feeds, f"the {len(feeds)} calibration sample(s) (too few to hold one out)"
            notes.append("the budget was measured on the calibration samples themselves: give at least two samples")
        else:
            held = feeds[:4]
            held_description = f"{len(held)} seeded random input(s) (no calibration data)"
        mask = find_padding_mask(padding_mask, [v.name for v in model.graph.inputs], held[0] if held else None)
        labelled = labelled_data(eval_data)
        if labelled is not None:
            held_description += f"; accuracy on the {len(labelled.labels)} labelled rows of the evaluation data"
        return cls(feeds if real else [], held, real, source.description, held_description, mask, labelled, notes)


def labelled_data(eval_data: Any) -> LabelledData | None:
    """``eval_data`` (a ``.npz`` path of model inputs plus ``labels``) as labelled data."""
    if eval_data is None:
        return None
    if isinstance(eval_data, LabelledData):
        return eval_data
    try:
        with np.load(eval_data) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"cannot read evaluation data {eval_data}: {e}") from None
    labels = arrays.pop("labels", None)
    if labels is None:
        raise UsageError(f"evaluation data {eval_data} has no 'labels' array")
    return LabelledData(arrays, labels)


class OutputMeasure:
    """Output cosine/SQNR of candidates against the float model on the held-out feeds, and
    top-1 accuracy on the labelled data."""

    def __init__(self, float_proto: onnx.ModelProto, data: CompressionData) -> None:
        self.outputs = [o.name for o in float_proto.graph.output]
        self.data = data
        #: Why the model could not be measured (random inputs it does not accept), or None.
        self.failed: str | None = None
        sess = OrtRunner().session(float_proto)
        try:
            self.reference = [sess.run(self.outputs, dict(f)) for f in data.held]
        except Exception as e:
            if data.real:
                raise
            self.reference = []
            self.failed = (
                f"the model does not run on seeded random inputs ({' '.join(str(e).split())[:160]}): "
                "give calibration data to measure the budget"
            )
        self.evaluate = (
            classification_accuracy(data.labelled.inputs, data.labelled.labels) if data.labelled is not None else None
        )
        self.float_accuracy = self.evaluate(float_proto) if self.evaluate is not None else None

    def figures(self, proto: onnx.ModelProto) -> tuple[dict[str, float], dict[str, float], tuple[float, float] | None]:
        """(worst cosine per output, SQNR per output, (float, candidate) accuracy or None)."""
        if self.failed is not None:
            acc_only = (self.float_accuracy, self.evaluate(proto)) if self.evaluate is not None and self.float_accuracy is not None else None
            return {}, {}, acc_only
        sess = OrtRunner().session(proto)
        pairs = ErrorPairs(self.data.mask)
        for feed, ref in zip(self.data.held, self.reference):
            for name, want, got in zip(self.outputs, ref, sess.run(self.outputs, dict(feed))):
                pairs.add(name, want, got, feed)
        cos = {o: pairs.worst_cosine(o) for o in self.outputs if o in pairs}
        sqnr = {o: pairs.sqnr(o) for o in self.outputs if o in pairs}
        acc = None
        if self.evaluate is not None and self.float_accuracy is not None:
            acc = (self.float_accuracy, self.evaluate(proto))
        return cos, sqnr, acc


@dataclass
class Fitted:
    """What :func:`fit_budget` settled on: the model, each layer's level (0: as compressed as
    asked), the layers that stepped back in order, the sensitivity ranking (when measured) and
    the model's figures."""

    model: Model
    settings: dict[str, int]
    stepped: list[str]
    sensitivity: list[tuple[str, float]]
    figures: tuple[dict[str, float], dict[str, float], tuple[float, float] | None]

    def misses(self, budget: Budget) -> list[str]:
        cos, sqnr, acc = self.figures
        return budget.misses(cos, sqnr, acc)


def fit_budget(
    float_proto: onnx.ModelProto,
    layers: Sequence[str],
    top: int,
    build: Callable[[Mapping[str, int], str | None], Model],
    measure: OutputMeasure,
    budget: Budget,
    *,
    max_steps: int = 64,
    sensitivity_samples: int = 8,
) -> Fitted:
    """Every layer at level 0, then, while ``budget`` misses, the layer the outputs are most
    sensitive to one level up (``top``: exact) — :func:`~onnxforge.calibration.budget.back_off`
    with :func:`~onnxforge.calibration.sensitivity.sensitivity_ranking`. ``build(settings,
    only)`` makes a candidate (``only``: that layer alone compressed, for the ranking)."""
    sensitivity: list[tuple[str, float]] = []

    @dataclass
    class Candidate:
        model: Model
        figures: tuple[dict[str, float], dict[str, float], tuple[float, float] | None]

    def candidate(settings: Mapping[str, int]) -> Candidate:
        m = build(settings, None)
        return Candidate(m, measure.figures(to_proto(m)))

    def misses(c: Candidate) -> list[str]:
        cos, sqnr, acc = c.figures
        return budget.misses(cos, sqnr, acc)

    def ranking() -> list[str]:
        sensitivity.extend(
            sensitivity_ranking(
                float_proto, list(layers), measure.data.held[:sensitivity_samples], measure.data.mask,
                lambda layer: build({}, layer),
            )
        )
        return [n for n, _ in sensitivity]

    if measure.failed is not None and (budget.min_cosine is not None or budget.min_sqnr is not None):
        raise UsageError(measure.failed)
    if budget.empty:
        c = candidate({})
        return Fitted(c.model, {}, [], [], c.figures)
    fitted = back_off(candidate, misses, ranking, levels=top, max_steps=max_steps)
    return Fitted(fitted.candidate.model, dict(fitted.settings), list(fitted.stepped), sensitivity, fitted.candidate.figures)


#: Key of ``PassContext.records`` holding the model a pipeline's budget is measured against.
REFERENCE_KEY = "compression-reference"


class KeepReference(Pass):
    """Records the model as it is now (``ctx.records["compression-reference"]``): the budgeted
    passes after it measure their budget against this model rather than their own input, so
    that a pipeline of several lossy passes (pruning, then weight sharing) holds one budget for
    all of them together. Changes nothing."""

    name = "keep-reference"
    summary = "Remember the model as it is: later budgeted compression passes measure against it."
    lossless = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        ctx.records[REFERENCE_KEY] = to_proto(model)
        return PassResult(False)


def reference_model(ctx: PassContext, own: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model a pass's budget is measured against: the pipeline's reference
    (:class:`KeepReference`) when it has the same inputs and outputs, else the pass's input;
    and words for the report."""
    ref = ctx.records.get(REFERENCE_KEY)

    def io(m: onnx.ModelProto) -> tuple[list[str], list[str]]:
        inits = {t.name for t in m.graph.initializer}
        return [i.name for i in m.graph.input if i.name not in inits], [o.name for o in m.graph.output]

    if isinstance(ref, onnx.ModelProto) and ref is not own and io(ref) == io(own):
        return ref, "the model before compression (the pipeline's reference: earlier lossy steps count too)"
    return own, "this pass's input"
