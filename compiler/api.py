"""The library entry point: :func:`compile`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnxforge import modelio
from onnxforge.cost.analysis import CostTotals
from onnxforge.equivalence import REORDER, assert_equivalent
from onnxforge.errors import VerificationError
from onnxforge.ir import Model, to_proto
from onnxforge.passmanager import (
    DumpInstrument,
    Instrument,
    Pass,
    PassContext,
    TimingInstrument,
    VerifyInstrument,
)
from onnxforge.pipelines import ORT_TARGETS, from_pass_names, get_pipeline
from onnxforge.report import ModelStats, Report

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    """The compiled model (``.model`` as a ModelProto, ``.ir`` as onnxforge IR) and its report."""

    ir: Model
    report: Report
    source: Path | None = None
    _proto: onnx.ModelProto | None = None

    @property
    def model(self) -> onnx.ModelProto:
        if self._proto is None:
            self._proto = to_proto(self.ir)
        return self._proto

    def save(
        self, path: str | os.PathLike[str], *, external_data: bool | None = None, check_runtime: bool = True
    ) -> Path:
        """Write the compiled model atomically (external data decided by size unless given).

        Never over the input model or a file it reads (:class:`~onnxforge.errors.UsageError`).
        With ``check_runtime`` (default) a model onnxruntime cannot load is not written when it
        can load the input (:class:`~onnxforge.errors.ModelError`); see
        :func:`onnxforge.modelio.check_runtime_loadable` for what is skipped to stay cheap.
        """
        return modelio.save(
            self.ir, path, source=self.source, external_data=external_data, check_runtime=check_runtime
        )


def compile(
    model: str | os.PathLike[str] | onnx.ModelProto | Model,
    pipeline: str | Pass | Sequence[Pass] = "optimize",
    *,
    target: str | None = None,
    passes: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    disable: Sequence[str] = (),
    verify: bool = False,
    verify_tolerance: tuple[float, float] = REORDER,
    verify_dims: Mapping[str, int] | None = None,
    check_ir: bool = False,
    dump_dir: str | os.PathLike[str] | None = None,
    instruments: Sequence[Instrument] = (),
    cost: bool = False,
    cost_target: str = "cpu",
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    quantization: QuantizationOptions | None = None,
) -> CompileResult:
    """Compile ``model`` (a path, a ModelProto or an IR Model) with a pipeline.

    ``pipeline`` is a registered name (``onnxforge passes`` lists them; default ``optimize``:
    lossless cleanup plus layer fusion) or pass objects built in code; ``target`` (``cpu``,
    ``cuda``, ``tensorrt``; None for portable output) selects target-specific rewrites; ``passes`` (names) overrides it with a custom sequence. ``options`` maps pass names to
    option values, e.g. ``{"constant-folding": {"size_limit": 1 << 20}}``. ``disable`` skips
    passes by name. With ``verify=True`` onnxruntime runs the original and the result on the same
    random feeds and :class:`~onnxforge.errors.VerificationError` is raised if outputs differ
    beyond ``verify_tolerance`` (rtol, atol). With ``cost=True`` the report carries the cost
    model's totals before and after (:func:`onnxforge.cost.analyze` at input ``shapes`` and
    symbolic ``verify_dims``, on the ``cost_target`` profile). The ``int8`` pipeline runs
    ``optimize`` and then static int8 quantization configured by ``quantization`` (calibration
    data is required; see :class:`QuantizationOptions`); its ``verify`` checks that every output
    keeps a cosine similarity of at least 0.99 on the calibration samples. A ModelProto passed
    in is never modified.
    """
    start = time.perf_counter()
    loaded = modelio.load(model)
    ir = loaded.model
    original = to_proto(ir) if verify else None
    before = ModelStats.of(ir)
    cost_before = _cost(ir, shapes, verify_dims, cost_target) if cost else None

    int8 = pipeline == "int8" and not passes
    if int8:
        pipe = get_pipeline("optimize", options, None if target in ORT_TARGETS else target)
        pipe_name = "int8" if target is None else f"int8 (target {target})"
    elif passes:
        pipe = from_pass_names(passes, options)
        pipe_name = "custom: " + ",".join(passes)
    elif isinstance(pipeline, str):
        pipe = get_pipeline(pipeline, options, target)
        pipe_name = pipeline if target is None else f"{pipeline} (target {target})"
    elif isinstance(pipeline, Pass):
        pipe, pipe_name = pipeline, pipeline.name
    else:
        from onnxforge.passmanager import Sequential

        pipe = Sequential(list(pipeline), name="custom")
        pipe_name = "custom"

    timing = TimingInstrument()
    inst: list[Instrument] = [timing, *instruments]
    if check_ir:
        inst.append(VerifyInstrument())
    if dump_dir is not None:
        inst.append(DumpInstrument(dump_dir))
    ctx = PassContext(instruments=inst, disabled=disable)
    log.info("running pipeline %s on %d nodes", pipe_name, before.nodes)
    ctx.run(pipe, ir)

    qreport = None
    if int8:
        ir, qreport = _quantize(ir, quantization or QuantizationOptions(), target)
    report = Report(pipe_name, before, ModelStats.of(ir), list(timing.per_pass.values()))
    report.rule_trace = ctx.records.get("rules")
    report.quantization = qreport
    if cost_before is not None:
        report.cost_target = cost_target
        report.cost_before = cost_before
        report.cost_after = _cost(ir, shapes, verify_dims, cost_target)
    if cost and (cost_before is None or report.cost_after is None):
        report.notes.append("cost estimate unavailable for this model (see the log)")
    result = CompileResult(ir, report, loaded.path)
    if verify and qreport is not None:
        low = {k: v for k, v in qreport.output_cosine.items() if v < 0.99}
        report.verified = not low
        if low:
            raise VerificationError(
                "int8 outputs drift: " + ", ".join(f"{k} cosine {v:.4f}" for k, v in low.items()) + " (< 0.99)"
            )
    elif verify:
        assert original is not None
        base = loaded.path.parent if loaded.path is not None else None
        try:
            assert_equivalent(
                original,
                result.model,
                rtol=verify_tolerance[0],
                atol=verify_tolerance[1],
                dims=verify_dims,
                before_dir=base,
                after_dir=base,
            )
        except VerificationError:
            report.verified = False
            raise
        except Exception as e:  # onnxruntime could not run one of the models
            raise VerificationError(f"verification could not run: {' '.join(str(e).split())[:300]}") from None
        report.verified = True
    report.seconds = time.perf_counter() - start
    return result


def _cost(
    ir: Model, shapes: Mapping[str, tuple[int, ...]] | None, dims: Mapping[str, int] | None, target: str
) -> CostTotals | None:
    """Cost totals for the report; None (with a warning) when the estimate itself fails, since
    a report extra must not fail a compilation. Bad shape specs still raise UsageError."""
    from onnxforge.cost import analyze
    from onnxforge.errors import UsageError

    log.info("estimating cost (%s profile)", target)
    try:
        return analyze(ir, shapes=shapes, dims=dims, target=target, reorder=False).totals
    except UsageError:
        raise
    except Exception as e:
        log.warning("cost estimate failed: %s: %s", type(e).__name__, e)
        return None


@dataclass
class QuantizationOptions:
    """Settings of the ``int8`` pipeline.

    ``calibration``: a ``.npz`` (arrays keyed by input name, samples along axis 0), a folder of
    ``.npz`` files, an onnxruntime ``CalibrationDataReader``, a list of feed dicts (input name
    -> array, one batch each), a :class:`~onnxforge.quantize.data.CalibrationSource`, or ``"synthetic"`` to calibrate on
    seeded random data (explicitly only; the report says so). ``method``: minmax, percentile,
    entropy or mse. ``exclude``: node names kept in float. ``min_sqnr`` (dB, every output) and
    ``max_accuracy_drop`` (points, with ``eval_data``: a ``.npz`` of inputs plus ``labels``)
    keep the most harmful layers in float until the budget holds; ``min_cosine`` (default 0.99,
    None to disable) does the same for every output's cosine similarity to the float model on
    the calibration samples. ``activation_products``: also quantize MatMuls of two activations
    (attention scores and context; little speed, real accuracy cost). ``speed_guard``: time
    fp32 and int8 on this machine and keep layers in float while int8 is not faster.
    ``smooth_alpha``: SmoothQuant migration strength for MatMul inputs (None: off). ``min_macs``: smaller layers
    stay float (int8 does not pay for them). ``padding_mask``: the input that marks padding
    (``"auto"``: an ``attention_mask`` input; None: off); errors of ``[batch, sequence, ...]``
    tensors are then measured on real positions only.
    """

    calibration: Any = None
    method: str = "minmax"
    per_channel: bool = True
    exclude: Sequence[str] = ()
    min_sqnr: float | None = None
    min_cosine: float | None = 0.99
    max_accuracy_drop: float | None = None
    eval_data: str | os.PathLike[str] | None = None
    activation_products: bool = False
    speed_guard: bool = True
    smooth_alpha: float | None = 0.7
    padding_mask: str | None = "auto"
    min_macs: int = 16384
    progress: Any = None
    dims: Mapping[str, int] | None = None


def _quantize(ir: Model, q: QuantizationOptions, target: str | None) -> tuple[Model, Any]:
    from onnxforge.errors import UsageError
    from onnxforge.quantize.data import model_inputs, open_calibration
    from onnxforge.quantize.static import classification_accuracy, quantize_static

    synthetic = isinstance(q.calibration, str) and q.calibration == "synthetic"
    source = open_calibration(
        None if synthetic else q.calibration, inputs=model_inputs(ir), allow_synthetic=synthetic, dims=q.dims
    )
    evaluate = None
    if q.eval_data is not None:
        import numpy as np

        try:
            with np.load(q.eval_data) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read evaluation data {q.eval_data}: {e}") from None
        labels = arrays.pop("labels", None)
        if labels is None:
            raise UsageError(f"evaluation data {q.eval_data} has no 'labels' array")
        evaluate = classification_accuracy(arrays, labels)
    elif q.max_accuracy_drop is not None:
        raise UsageError("--max-accuracy-drop needs labelled evaluation data (--eval-data); use --min-sqnr without labels")
    return quantize_static(
        ir,
        source,
        method=q.method,
        target=target,
        per_channel=q.per_channel,
        exclude=q.exclude,
        min_macs=q.min_macs,
        min_sqnr=q.min_sqnr,
        min_cosine=q.min_cosine,
        max_accuracy_drop=q.max_accuracy_drop,
        activation_products=q.activation_products,
        speed_guard=q.speed_guard,
        smooth_alpha=q.smooth_alpha,
        padding_mask=q.padding_mask,
        evaluate=evaluate,
        progress=q.progress,
    )
