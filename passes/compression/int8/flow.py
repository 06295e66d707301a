"""Static int8 quantization of a (fused) model: calibrate, insert Q/DQ, measure, fall back.

0. MatMul inputs are smoothed (SmoothQuant, :mod:`onnxforge.passes.compression.int8.smoothing`): per-channel
   outliers move into the weights, exactly in float.
1. Per-channel weights need opset 13: a lower opset is raised and the conversion checked on
   real samples (:mod:`onnxforge.passes.cleanup.opset_upgrade`); if that fails, weights are per tensor.
2. :func:`onnxforge.passes.compression.int8.qdq.plan_qdq` picks nodes and tensors for the target;
   :func:`~onnxforge.calibration.collect.collect_ranges` calibrates those tensors, streaming.
3. :func:`~onnxforge.passes.compression.int8.qdq.apply_qdq` inserts Q/DQ into a copy of the model.
4. Errors are measured on samples that were not calibrated on (:mod:`onnxforge.calibration.budget`):
   up to ``eval_samples`` batches of ``eval_source`` when given, else every fifth calibration
   batch from the second (at most ``eval_samples``), held out of calibration. Measured: the
   SQNR of every quantized layer's output and of every model output against the float model
   (plus cosine), and, given labelled data or an evaluation function, accuracy (labelled rows
   that were calibrated on are left out). Non-finite outputs fail every bound. Where the model takes a padding mask
   (``attention_mask``), tensors shaped ``[batch, sequence, ...]`` are compared on the real
   positions only (:mod:`onnxforge.metrics.padding`).
5. With ``min_sqnr`` (dB, on the model outputs), ``min_cosine`` or ``max_accuracy_drop``
   (points, with an evaluation function), layers go back to float one at a time, most
   sensitive first, until the budget holds or nothing is left; the report names them. A
   layer's sensitivity is the output noise of the model with that layer alone quantized
   (:func:`sensitivity_ranking`): the noise a layer adds is amplified or damped by what follows,
   so its own SQNR drop is a poor guide (PP-OCR det: 30 layers in float by SQNR drop left cosine
   at 0.97; the two most sensitive by this ranking give 0.99).
6. Speed is part of correctness: the float and the int8 model are timed on onnxruntime (all
   optimizations, one thread, this machine); while int8 is not faster, weight-only layers and
   then the half of the quantized layers with the fewest MACs go back to float. Every figure
   of the report (cosine, SQNR, accuracy, speed-up) is then measured again on the model
   returned.
7. A budget still missed raises :class:`~onnxforge.calibration.budget.BudgetError` (a
   VerificationError) unless ``allow_budget_miss``: then the model is returned and the report
   says by how much it misses.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxforge.calibration.budget import Budget, BudgetError, Holdout, back_off, row_keys
from onnxforge.calibration.collect import ProgressCallback, batch_count, collect_ranges
from onnxforge.calibration.data import CalibrationSource
from onnxforge.calibration.sensitivity import sensitivity_ranking
from onnxforge.calibration.taps import tapped_model
from onnxforge.cost import analyze
from onnxforge.cost.roofline import H100
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import UsageError
from onnxforge.ir import Model, from_proto, to_proto
from onnxforge.metrics.padding import find_padding_mask
from onnxforge.metrics.sqnr import ErrorPairs
from onnxforge.passes.cleanup.dead_code import DeadCodeElimination
from onnxforge.passes.cleanup.opset_upgrade import raise_opset
from onnxforge.passes.cleanup.toposort import TopologicalSort
from onnxforge.passes.compression.int8.policy import TargetPolicy, policy_for
from onnxforge.passes.compression.int8.qdq import QdqPlan, apply_qdq, plan_qdq
from onnxforge.passes.compression.int8.smoothing import smooth_activations
from onnxforge.passmanager import PassContext
from onnxforge.tables import format_table

log = logging.getLogger(__name__)

#: An evaluation function: model → score in [0, 1] (e.g. accuracy on labelled data).
Evaluate = Callable[[onnx.ModelProto], float]


@dataclass
class LayerError:
    """SQNR of a quantized layer's output against the float model, and of its input: their
    difference (``drop``) is the damage the layer itself adds."""

    node: str
    op_type: str
    tensor: str
    sqnr_db: float
    input_sqnr_db: float = math.inf

    @property
    def added_noise(self) -> float:
        """Noise-to-signal power the layer adds (linear): ``10^(-out/10) - 10^(-in/10)``; +inf
        when its output has no SQNR (non-finite values) or is all noise and its input is not."""

        def power(db: float) -> float:
            return math.inf if math.isnan(db) or db == -math.inf else 10 ** (-db / 10) if db != math.inf else 0.0

        out, inp = power(self.sqnr_db), power(self.input_sqnr_db)
        if math.isinf(out):
            return 0.0 if math.isinf(inp) else math.inf
        return out - inp


@dataclass
class LabelledData:
    """Labelled evaluation data (``--eval-data``): model inputs by name, samples along axis 0,
    and the class ``labels``; scored by top-1 accuracy of the first output."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    name: str = "--eval-data"


@dataclass
class QuantizationReport:
    """What static quantization did and what it costs in accuracy."""

    method: str
    target: str
    activation_type: str
    per_channel: bool
    data: str
    synthetic: bool
    notes: list[str] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)
    weight_only: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    kept_float: list[str] = field(default_factory=list)
    kept_for_speed: list[str] = field(default_factory=list)
    speedup: float | None = None
    layer_errors: list[LayerError] = field(default_factory=list)
    output_sqnr: dict[str, float] = field(default_factory=dict)
    output_cosine: dict[str, float] = field(default_factory=dict)
    accuracy: tuple[float, float] | None = None
    unfused: list[str] = field(default_factory=list)
    #: (layer, worst output SQNR in dB with that layer alone quantized), most sensitive first;
    #: measured only when an accuracy budget needed layers back in float.
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    #: Samples (batches) the ranges were calibrated on.
    calibration_samples: int = 0
    #: The budget's bounds, the data its figures (cosine, SQNR) were measured on, and the
    #: misses (empty when it holds).
    budget: str = "none"
    budget_data: str = ""
    budget_missed: list[str] = field(default_factory=list)
    #: The data the accuracy figures were measured on.
    accuracy_data: str = ""

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | str:
            return round(x, 3) if math.isfinite(x) else str(x)

        return {
            "method": self.method,
            "target": self.target,
            "activation_type": self.activation_type,
            "per_channel": self.per_channel,
            "calibration_data": self.data,
            "calibration_samples": self.calibration_samples,
            "synthetic_calibration": self.synthetic,
            "budget": {"bounds": self.budget, "data": self.budget_data, "missed": self.budget_missed},
            "quantized_nodes": self.quantized,
            "weight_only_nodes": self.weight_only,
            "skipped": self.skipped,
            "kept_in_float_for_accuracy": self.kept_float,
            "kept_in_float_for_speed": self.kept_for_speed,
            "measured_speedup": None if self.speedup is None else round(self.speedup, 3),
            "layer_sqnr_db": [
                {
                    "node": e.node,
                    "op_type": e.op_type,
                    "tensor": e.tensor,
                    "sqnr_db": num(e.sqnr_db),
                    "input_sqnr_db": num(e.input_sqnr_db),
                }
                for e in self.layer_errors
            ],
            "output_sqnr_db": {k: num(v) for k, v in self.output_sqnr.items()},
            "output_cosine": {k: round(v, 6) for k, v in self.output_cosine.items()},
            "layer_sensitivity_db": [{"node": n, "output_sqnr_db": num(v)} for n, v in self.sensitivity],
            "accuracy": None
            if self.accuracy is None
            else {"float": self.accuracy[0], "int8": self.accuracy[1], "data": self.accuracy_data},
            "unfused_qdq": self.unfused,
            "notes": self.notes,
        }

    def summary_lines(self, worst: int = 5) -> list[str]:
        lines = [
            f"int8 ({self.method} calibration on {self.data}; target {self.target}; activations {self.activation_type}; "
            f"weights {'per channel' if self.per_channel else 'per tensor'})",
            f"quantized {len(self.quantized)} layers, weight-only {len(self.weight_only)}, skipped {len(self.skipped)}, "
            f"kept in float for accuracy {len(self.kept_float)}",
            f"calibration: {self.calibration_samples} samples; budget ({self.budget}) and the figures below "
            f"measured on {self.budget_data}",
        ]
        for name, s in self.output_sqnr.items():
            lines.append(
                f"output {name}: SQNR {s:.1f} dB, cosine {self.output_cosine.get(name, float('nan')):.5f}"
            )
        if self.accuracy is not None:
            lines.append(
                f"accuracy: float {self.accuracy[0] * 100:.2f}%, int8 {self.accuracy[1] * 100:.2f}% on {self.accuracy_data}"
            )
        if self.budget_missed:
            lines.append("BUDGET MISSED: " + "; ".join(self.budget_missed))
        bad = sorted(self.layer_errors, key=lambda e: -e.added_noise)[:worst]
        if bad:
            lines.append("")
            lines += format_table(
                ["layers losing the most SQNR", "op", "input dB", "output dB"],
                [[e.node, e.op_type, f"{e.input_sqnr_db:.1f}", f"{e.sqnr_db:.1f}"] for e in bad],
            )
        if self.sensitivity:
            lines.append("")
            lines += format_table(
                ["most sensitive layers", "output dB with only it in int8"],
                [[n, f"{v:.1f}"] for n, v in self.sensitivity[:worst]],
            )
        if self.kept_float:
            lines.append("kept in float for accuracy: " + ", ".join(self.kept_float))
        if self.kept_for_speed:
            lines.append(f"kept in float for speed: {len(self.kept_for_speed)} small layer(s)")
        if self.speedup is not None:
            lines.append(
                f"measured speed-up over fp32 (onnxruntime, ORT_ENABLE_ALL, 1 thread, this machine): {self.speedup:.2f}x"
            )
        if self.unfused:
            lines.append(
                f"{len(self.unfused)} Q/DQ pair(s) the target will not fuse: " + ", ".join(self.unfused[:8])
            )
        if self.synthetic:
            lines.append("WARNING: calibrated on synthetic random data, not real inputs")
        lines += [f"note: {n}" for n in self.notes]
        return lines


def quantize_static(
    model: Model,
    source: CalibrationSource,
    *,
    method: str = "minmax",
    target: str | None = None,
    per_channel: bool = True,
    exclude: Iterable[str] = (),
    min_macs: int = 0,
    min_sqnr: float | None = None,
    min_cosine: float | None = None,
    max_accuracy_drop: float | None = None,
    activation_products: bool = False,
    evaluate: Evaluate | None = None,
    eval_data: LabelledData | None = None,
    eval_source: Iterable[Mapping[str, np.ndarray]] | None = None,
    holdout_every: int = 5,
    allow_budget_miss: bool = False,
    speed_guard: bool = True,
    smooth_alpha: float | None = 0.7,
    padding_mask: str | None = "auto",
    eval_samples: int = 16,
    sensitivity_samples: int = 8,
    max_fallback: int = 32,
    progress: ProgressCallback | None = None,
) -> tuple[Model, QuantizationReport]:
    """Quantize ``model`` (already optimized) to static int8 QDQ; see the module docstring.
    Returns the quantized model (a new IR) and the report.

    The budget (``min_sqnr``, ``min_cosine``, ``max_accuracy_drop`` with ``eval_data`` or
    ``evaluate``) is measured on ``eval_source`` (up to ``eval_samples`` feeds) or, without it,
    on every ``holdout_every``-th calibration feed from the second, which is then not calibrated
    on. Raises :class:`~onnxforge.calibration.budget.BudgetError` when the budget cannot be met,
    unless ``allow_budget_miss``."""
    policy = policy_for(target)
    report = QuantizationReport(
        method,
        target or "cpu",
        policy.activation_type,
        per_channel,
        source.description,
        bool(getattr(source, "synthetic", False)),
    )
    if evaluate is not None and eval_data is not None:
        raise UsageError("give either labelled evaluation data or an evaluation function, not both")
    has_accuracy = evaluate is not None or eval_data is not None
    budget = Budget(min_cosine, min_sqnr, max_accuracy_drop if has_accuracy else None)
    report.budget = budget.describe()
    # Data the budget is measured on, and rows of it calibration must not have read.
    eval_feeds = None if eval_source is None else [dict(f) for f in itertools.islice(iter(eval_source), eval_samples)]
    if eval_feeds is not None and not eval_feeds:
        raise UsageError("the evaluation inputs (--eval) hold no samples")
    eval_keys = [row_keys(f) for f in eval_feeds] if eval_feeds is not None else []
    label_keys = row_keys(eval_data.inputs) if eval_data is not None else []
    holdout = Holdout(
        every=0 if eval_feeds is not None else holdout_every,
        limit=eval_samples,
        watch={k for keys in eval_keys for k in keys} | set(label_keys),
    )
    # One pass over the data: the first calibration batches are kept (smoothing, opset checks,
    # timing) and then calibrated on with the rest (a reader without rewind() can be read only
    # once); held-out batches are set aside as the stream goes by.
    stream = holdout.route(source)
    samples = list(itertools.islice(stream, eval_samples))
    if not samples:
        raise UsageError("the calibration data holds no samples")
    mask = find_padding_mask(
        padding_mask, [v.name for v in model.graph.inputs], samples[0] if samples else None
    )
    if mask is not None:
        report.notes.append(f"errors measured on real positions only (padding masked by input {mask!r})")
    if policy.saturates:
        report.notes.append(
            "this CPU has no VNNI: onnxruntime's uint8 x int8 kernels add pairs of products into int16, so channels "
            "whose neighbouring weights could overflow it got a wider scale (per tensor: 7-bit weights); "
            "ONNXFORGE_INT8_REDUCE_RANGE=0 turns this off"
        )
    # The source's choice, kept through the copies below: exported shapes change which fusions
    # onnxruntime applies, and so how fast the int8 model is.
    export_value_info = model.export_value_info
    if per_channel and (model.opset("") or 1) < 13:
        raised, note = raise_opset(model, 13, samples[:4])
        report.notes.append(note)
        if raised is None:
            per_channel = False
            report.per_channel = False
            report.notes.append("weights quantized per tensor")
        else:
            model = raised
    if smooth_alpha:
        model = from_proto(to_proto(model, value_info=True))  # smoothing edits a copy
        n = smooth_activations(model, samples, smooth_alpha)
        if n:
            report.notes.append(
                f"smoothed {n} MatMul input(s) before quantizing (SmoothQuant, alpha {smooth_alpha})"
            )
    float_proto = to_proto(model, value_info=True)  # planning reads the value types
    plan = plan_qdq(
        model, policy, exclude=set(exclude), min_macs=min_macs, activation_products=activation_products
    )
    symmetric = policy.activation_type == "int8"
    expected = holdout.calibrated_of(batch_count(source))
    counted: ProgressCallback | None = progress
    if progress is not None and expected is not None:  # the batches left once held-out ones are set aside
        def counted(done: int, total: int | None, _report: ProgressCallback = progress) -> None:
            _report(done, expected)

    ranges_full = collect_ranges(
        float_proto,
        plan.calibrate,
        itertools.chain(samples, stream),
        method,
        symmetric=symmetric,
        progress=counted,
    )
    ranges = {k: (r.min, r.max) for k, r in ranges_full.items()}
    report.calibration_samples = holdout.calibrated
    held_out = _budget_samples(report, holdout, samples, eval_feeds, eval_keys)
    evaluate = _accuracy_function(report, evaluate, eval_data, label_keys, holdout.calibrated_keys)

    def build(skip: set[str], weight_only: bool = True) -> tuple[Model, QdqPlan]:
        q, p = _build(
            float_proto, policy, ranges, skip, min_macs, per_channel, activation_products, weight_only
        )
        q.export_value_info = export_value_info
        return q, p

    def figures(q_proto: onnx.ModelProto, q_plan: QdqPlan) -> tuple[Any, Any, Any, tuple[float, float] | None]:
        errors, out_sqnr, out_cos = measure(float_proto, q_proto, q_plan, held_out, mask)
        q_eval = evaluate(q_proto) if evaluate is not None else None
        accuracy = (float_eval, q_eval) if float_eval is not None and q_eval is not None else None
        return errors, out_sqnr, out_cos, accuracy

    excluded = set(exclude)
    float_eval = evaluate(float_proto) if evaluate is not None else None

    @dataclass
    class Candidate:
        model: Model
        plan: QdqPlan
        proto: onnx.ModelProto
        figures: tuple[Any, Any, Any, tuple[float, float] | None]

    built: list[Candidate] = []

    def candidate(settings: Mapping[str, int]) -> Candidate:
        # Level 1 of a layer is float: the budget loop keeps it out of int8.
        q, p = build(excluded | {name for name, level in settings.items() if level >= 1})
        proto = to_proto(q)
        built.append(Candidate(q, p, proto, figures(proto, p)))
        return built[-1]

    def candidate_misses(c: Candidate) -> list[str]:
        _, out_sqnr, out_cos, accuracy = c.figures
        return budget.misses(out_cos, out_sqnr, accuracy)

    def ranking() -> list[str]:
        quantized = [n.name or n.op_type for n in built[0].plan.compute]

        def build_only(layer: str, others: frozenset[str] = frozenset(excluded | set(quantized))) -> Model:
            return build(set(others - {layer}))[0]

        report.sensitivity = sensitivity_ranking(
            float_proto, quantized, held_out[:sensitivity_samples], mask, build_only, progress
        )
        return [n for n, _ in report.sensitivity]

    fitted = back_off(candidate, candidate_misses, ranking, levels=1, max_steps=max_fallback)
    excluded.update(fitted.stepped)
    report.kept_float.extend(fitted.stepped)
    chosen = fitted.candidate
    q_model, q_plan, q_proto = chosen.model, chosen.plan, chosen.proto
    errors, out_sqnr, out_cos, accuracy = chosen.figures
    if speed_guard:
        weight_only = True
        macs = _layer_macs(float_proto, samples[0])
        rebuilt = False
        for attempt in range(8):
            t_float, t_int8 = _latencies(float_proto, q_proto, samples[0])
            report.speedup = t_float / t_int8 if t_int8 > 0 else None
            if t_int8 <= t_float * 0.97:
                break
            done = [n.name or n.op_type for n in q_plan.compute if (n.name or n.op_type) not in excluded]
            if weight_only and q_plan.weight_only:
                weight_only = False  # weight-only DQ runs on every call: first thing to drop
                report.notes.append(
                    "int8 was not faster than fp32: weight-only layers went back to float first"
                )
            elif done and attempt < 6:
                done.sort(key=lambda n: macs.get(n, 0))
                drop = done[: max(1, len(done) // 2)]
                excluded.update(drop)
                report.kept_for_speed.extend(drop)
            elif done:  # halving did not get there: int8 does not pay on this model here
                excluded.update(done)
                report.kept_for_speed.extend(done)
            else:
                break
            q_model, q_plan = build(excluded, weight_only)
            q_proto = to_proto(q_model)
            rebuilt = True
        else:  # the last attempt rebuilt the model: time the one returned
            t_float, t_int8 = _latencies(float_proto, q_proto, samples[0])
            report.speedup = t_float / t_int8 if t_int8 > 0 else None
        if rebuilt:  # every figure of the model actually returned
            errors, out_sqnr, out_cos, accuracy = figures(q_proto, q_plan)
        left = [n for n in q_plan.compute if (n.name or n.op_type) not in excluded]
        if report.kept_for_speed and not left:
            report.notes.append(
                "int8 is not faster than fp32 on this machine: every layer kept in float (--no-speed-guard quantizes regardless)"
            )
        elif report.speedup is not None and report.speedup < 1.0 / 0.97:
            report.notes.append(
                f"int8 is not faster than fp32 on this machine ({report.speedup:.2f}x): the layers that remain quantized are "
                "kept for size, not speed"
            )
    report.quantized = [n.name or n.op_type for n in q_plan.compute if (n.name or n.op_type) not in excluded]
    report.weight_only = [n.name or n.op_type for n in q_plan.weight_only]
    if report.weight_only:
        report.notes.append(
            f"{len(report.weight_only)} layer(s) weight-only int8: the calibration data never computed their inputs "
            "(If branches it did not take, Loop/Scan bodies); calibrate with inputs that take a branch to quantize it fully"
        )
    report.skipped = {k: v for k, v in q_plan.skipped.items() if k not in report.kept_float}
    report.layer_errors = errors
    report.output_sqnr = out_sqnr
    report.output_cosine = out_cos
    report.accuracy = accuracy
    report.unfused = unfused_pairs(q_proto, policy)
    report.budget_missed = budget.misses(out_cos, out_sqnr, accuracy)
    if report.budget_missed:
        more = f" and {len(report.budget_missed) - 3} more" if len(report.budget_missed) > 3 else ""
        message = (
            f"int8 misses its accuracy budget ({budget.describe()}) on {report.budget_data}: "
            f"{'; '.join(report.budget_missed[:3])}{more}, with {len(report.kept_float)} layer(s) kept in float"
        )
        if not allow_budget_miss:
            raise BudgetError(
                message + "; --allow-budget-miss (allow_budget_miss=True) writes this model anyway", report, q_model
            )
        report.notes.append(message + " (allowed: the model is written anyway)")
    return q_model, report


def _budget_samples(
    report: QuantizationReport,
    holdout: Holdout,
    samples: list[dict[str, np.ndarray]],
    eval_feeds: list[dict[str, np.ndarray]] | None,
    eval_keys: list[list[bytes]],
) -> list[dict[str, np.ndarray]]:
    """The feeds the budget is measured on (never one that was calibrated on), and the
    report's words for them."""
    if eval_feeds is not None:
        clean = [f for f, keys in zip(eval_feeds, eval_keys) if not any(k in holdout.calibrated_keys for k in keys)]
        if not clean:
            raise UsageError(
                "every --eval sample is also a calibration sample: give inputs that were not calibrated on, "
                "or leave out --eval to hold out every fifth calibration sample"
            )
        dropped = len(eval_feeds) - len(clean)
        report.budget_data = f"{len(clean)} --eval sample(s)" + (
            f" ({dropped} of the {len(eval_feeds)} given were calibration samples: left out)" if dropped else ""
        )
        return clean
    if holdout.held:
        report.budget_data = (
            f"{len(holdout.held)} held-out calibration sample(s) (every {_ordinal(holdout.every)} from the second, "
            "not calibrated on)"
        )
        return holdout.held
    report.budget_data = f"the {len(samples)} calibration sample(s) (too few to hold one out)"
    report.notes.append(
        "the budget was measured on the calibration samples themselves: give at least two samples, or --eval inputs"
    )
    return samples


def _ordinal(n: int) -> str:
    return {2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


def _accuracy_function(
    report: QuantizationReport,
    evaluate: Evaluate | None,
    data: LabelledData | None,
    row_keys_: list[bytes],
    calibrated: set[bytes],
) -> Evaluate | None:
    """The accuracy function on labelled rows that were not calibrated on."""
    if data is None:
        if evaluate is not None:
            report.accuracy_data = "the given evaluation function"
        return evaluate
    n = len(data.labels)
    if len(row_keys_) != n:  # inputs disagree on axis 0: rows cannot be told apart
        report.accuracy_data = f"{n} {data.name} samples (not checked against the calibration samples)"
        return classification_accuracy(data.inputs, data.labels)
    keep = np.array([k not in calibrated for k in row_keys_], dtype=bool)
    kept = int(keep.sum())
    if kept == 0:
        raise UsageError(
            f"every {data.name} sample is also a calibration sample: accuracy must be measured on samples that were "
            "not calibrated on"
        )
    if kept == n:
        report.accuracy_data = f"{n} {data.name} samples (none calibrated on)"
        return classification_accuracy(data.inputs, data.labels)
    report.accuracy_data = f"{kept} of the {n} {data.name} samples ({n - kept} are calibration samples: left out)"
    return classification_accuracy({k: v[keep] for k, v in data.inputs.items()}, data.labels[keep])


def _build(
    float_proto: onnx.ModelProto,
    policy: TargetPolicy,
    ranges: Mapping[str, tuple[float, float]],
    excluded: set[str],
    min_macs: int,
    per_channel: bool,
    activation_products: bool,
    weight_only: bool = True,
) -> tuple[Model, QdqPlan]:
    q = from_proto(float_proto)
    plan = plan_qdq(q, policy, exclude=excluded, min_macs=min_macs, activation_products=activation_products)
    if not weight_only:
        plan.weight_only = []
    done = apply_qdq(q, plan, dict(ranges), policy, per_channel=per_channel)
    quantized = set(done.quantized)
    plan.compute = [n for n in plan.compute if (n.name or n.op_type) in quantized]
    plan.weight_only = [n for n in plan.weight_only if (n.name or n.op_type) not in quantized]
    ctx = PassContext()
    ctx.run(DeadCodeElimination(), q)
    ctx.run(TopologicalSort(), q)
    return q, plan


def measure(
    float_proto: onnx.ModelProto,
    q_proto: onnx.ModelProto,
    plan: QdqPlan,
    samples: Sequence[Mapping[str, np.ndarray]],
    padding_mask: str | None = None,
) -> tuple[list[LayerError], dict[str, float], dict[str, float]]:
    """SQNR of every quantized layer's output and input, and of every model output, over
    ``samples``, against the float model; every output's cosine similarity on the worst sample
    (NaN when an output is not finite where float's is).
    With
    ``padding_mask`` (an input name), tensors whose leading dimensions are that input's shape
    are compared where the mask is non-zero only."""
    layers = []
    for n in plan.compute:
        out, inp = n.output(0), _float_source(n.input(0))
        if out is not None and inp is not None:
            layers.append((n.name or n.op_type, n.op_type, out.name, inp.name))
    outputs = [o.name for o in float_proto.graph.output]
    graph_inputs = {i.name for i in float_proto.graph.input}
    names = [
        n
        for n in dict.fromkeys([*outputs, *(t for _, _, t, _ in layers), *(i for _, _, _, i in layers)])
        if n not in graph_inputs
    ]
    runner = OrtRunner()
    f_model, f_taps = tapped_model(float_proto, names)
    q_model, q_taps = tapped_model(q_proto, names)
    names = [
        n for n in names if n in f_taps and n in q_taps
    ]  # tensors inside Loop/Scan bodies are not measured
    f_sess = runner.session(f_model)
    q_sess = runner.session(q_model)
    acc = ErrorPairs(padding_mask)
    for feed in samples:
        f = f_sess.run([f_taps[n] for n in names], dict(feed))
        q = q_sess.run([q_taps[n] for n in names], dict(feed))
        for name, want, got in zip(names, f, q):
            acc.add(name, want, got, feed)
    errors = [
        LayerError(node, op, t, acc.sqnr(t), acc.sqnr(i) if i in acc else math.inf)
        for node, op, t, i in layers
        if t in acc
    ]
    out_sqnr = {o: acc.sqnr(o) for o in outputs if o in acc}
    out_cos = {o: acc.worst_cosine(o) for o in outputs if o in acc}
    return errors, out_sqnr, out_cos


def _layer_macs(float_proto: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """MACs of every node (by name) at the sample's input shapes, from the cost model."""
    try:
        ir = from_proto(float_proto)
        shapes = {k: tuple(np.asarray(v).shape) for k, v in feed.items()}
        report = analyze(ir, shapes=shapes, target=H100, probe=False, reorder=False)
    except Exception as e:  # the guard then drops layers in graph order
        log.debug("cost model unavailable for the speed guard: %s", e)
        return {}
    return {n.name: n.macs for n in report.nodes if n.name}


def _latencies(
    float_proto: onnx.ModelProto, q_proto: onnx.ModelProto, feed: Mapping[str, np.ndarray]
) -> tuple[float, float]:
    """Median seconds per call of the float and the quantized model (onnxruntime, all
    optimizations, one thread), measured interleaved for about a second."""
    runner = OrtRunner(optimize=True)
    sessions = [runner.session(float_proto), runner.session(q_proto)]
    for sess in sessions:
        for _ in range(3):
            sess.run(None, dict(feed))
    times: list[list[float]] = [[], []]
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0 or len(times[0]) < 5:
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, dict(feed))
            times[i].append(time.perf_counter() - t0)
        if len(times[0]) >= 200:
            break
    return statistics.median(times[0]), statistics.median(times[1])


def _float_source(v: Any) -> Any:
    """The float tensor behind a ``Q → DQ`` pair (``v`` itself otherwise)."""
    dq = v.producer if v is not None else None
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = dq.input(0).producer if dq.input(0) is not None else None
        if q is not None and q.op_type == "QuantizeLinear":
            return q.input(0)
    return v


def unfused_pairs(q_proto: onnx.ModelProto, policy: TargetPolicy) -> list[str]:
    """DequantizeLinear outputs read by ops the target does not run on integer kernels."""
    producers = {o: n for n in q_proto.graph.node for o in n.output}
    out = []
    for n in q_proto.graph.node:
        if n.op_type in policy.fused_ops or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i in n.input:
            p = producers.get(i)
            if p is not None and p.op_type == "DequantizeLinear" and _is_activation_dq(p, producers):
                out.append(f"{n.op_type} {n.name or i}")
                break
    return out


def _is_activation_dq(dq: onnx.NodeProto, producers: Mapping[str, onnx.NodeProto]) -> bool:
    src = producers.get(dq.input[0])
    return src is not None and src.op_type == "QuantizeLinear"


def classification_accuracy(
    inputs: Mapping[str, np.ndarray], labels: np.ndarray, *, batch: int = 256
) -> Evaluate:
    """An :data:`Evaluate` function: top-1 accuracy of the first output against ``labels``. A
    row with a non-finite value (NaN, +-Inf) counts as wrong (``argmax`` would pick it)."""

    def evaluate(model: onnx.ModelProto) -> float:
        runner = OrtRunner(optimize=True)
        sess = runner.session(model)
        first = sess.get_outputs()[0].name
        n = len(labels)
        correct = 0
        for start in range(0, n, batch):
            feed = {k: v[start : start + batch] for k, v in inputs.items()}
            want = labels[start : start + batch]
            logits = np.asarray(sess.run([first], feed)[0]).reshape(len(want), -1)
            finite = np.isfinite(logits).all(axis=1)
            correct += int(((logits.argmax(1) == want) & finite).sum())
        return correct / max(n, 1)

    return evaluate
