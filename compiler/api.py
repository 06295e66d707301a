"""The library entry point: :func:`compile`."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnxforge import modelio
from onnxforge.analysis.shapes import bind_inputs
from onnxforge.calibration.budget import Budget
from onnxforge.cost import analyze
from onnxforge.cost.analysis import CostReport
from onnxforge.equivalence import assert_equivalent, check_lossy, check_runtime_loadable
from onnxforge.errors import UsageError, VerificationError
from onnxforge.ir import Model, to_proto
from onnxforge.ir.tensor_data import TensorStore
from onnxforge.metrics.sqnr import worst
from onnxforge.passes.compression.int8 import REPORT_KEY as INT8_REPORT
from onnxforge.passes.compression.int8 import Int8Options, QuantizeInt8
from onnxforge.passes.compression.low_rank import REPORT_KEY as LOW_RANK_REPORT
from onnxforge.passes.compression.pruning import REPORT_KEY as PRUNE_REPORT
from onnxforge.passes.compression.weight_sharing import REPORT_KEY as SHARING_REPORT
from onnxforge.passes.lowering.packed_weights import REPORT_KEY as PACKED_REPORT
from onnxforge.passmanager import (
    DumpInstrument,
    Instrument,
    Pass,
    PassContext,
    ProgressInstrument,
    Sequential,
    TimingInstrument,
    VerifyInstrument,
)
from onnxforge.pipelines import Verification, from_pass_names, get_pipeline, verification_for
from onnxforge.progress import ProgressHook, Stage, reporting
from onnxforge.report import ModelStats, Report
from onnxforge.reporting.sketch import GraphSketch

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
        :func:`onnxforge.equivalence.check_runtime_loadable` for what is skipped to stay cheap.
        """
        source = self.source

        def loadable(proto: onnx.ModelProto, store: TensorStore | None) -> None:
            check_runtime_loadable(proto, source, store)

        return modelio.save(
            self.ir, path, source=source, external_data=external_data, before_write=loadable if check_runtime else None
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
    verify_tolerance: tuple[float, float] | None = None,
    verify_dims: Mapping[str, int] | None = None,
    check_ir: bool = False,
    dump_dir: str | os.PathLike[str] | None = None,
    instruments: Sequence[Instrument] = (),
    cost: bool = False,
    cost_target: str = "cpu",
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    quantization: Int8Options | None = None,
    progress: ProgressHook | None = None,
) -> CompileResult:
    """Compile ``model`` (a path, a ModelProto or an IR Model) with a pipeline.

    ``pipeline`` is a registered name (``onnxforge passes`` lists them; default ``optimize``:
    lossless cleanup plus layer fusion) or pass objects built in code; ``target`` (``cpu``,
    ``cuda``, ``tensorrt``; None for portable output) selects target-specific rewrites; ``passes`` (names) overrides it with a custom sequence. ``options`` maps pass names to
    option values, e.g. ``{"constant-folding": {"size_limit": 1 << 20}}``. ``disable`` skips
    passes by name. With ``verify=True`` the result is checked the way its pipeline declares
    (:class:`~onnxforge.pipelines.Verification`) and
    :class:`~onnxforge.errors.VerificationError` is raised when it fails: lossless pipelines run
    the original and the result on the same random feed, every output within
    ``verify_tolerance`` (rtol, atol; default 1e-4, 1e-5); ``fp16`` and ``int4`` hold every
    output's cosine and SQNR to their stated budget on seeded random feeds; ``report.verification``
    says which measure was used and what it gave. With ``cost=True`` the report carries the cost
    model's totals before and after (:func:`onnxforge.cost.analyze` at input ``shapes`` and
    symbolic ``verify_dims``, on the ``cost_target`` profile). The ``int8`` pipeline runs
    ``optimize`` and then static int8 quantization configured by ``quantization`` (calibration
    data is required; see :class:`QuantizationOptions`); a budget it cannot meet raises
    :class:`~onnxforge.calibration.budget.BudgetError` (a VerificationError) unless
    ``allow_budget_miss``; its ``verify`` checks the figures measured on the model returned, on
    samples that were not calibrated on, against the user's ``min_cosine``/``min_sqnr`` (0.99
    when neither is set). A ModelProto passed in is never modified. ``progress`` receives
    :class:`~onnxforge.progress.ProgressEvent` reports of loading (``"load"``), the pipeline
    (``"passes"``: one step per pass of the flattened pipeline) and int8 calibration
    (``"calibration"``, unless ``quantization.progress`` is set), and the lossy passes' sensitivity
    ranking (``"sensitivity"``) and budget loop (``"budget"``); nothing is printed.
    """
    start = time.perf_counter()
    loaded = modelio.load(model, progress=progress)
    ir = loaded.model
    original = to_proto(ir) if verify else None
    before = ModelStats.of(ir)
    sketch_before = GraphSketch.of(ir)
    with reporting(progress):  # a first use of the cpu profile measures it (about 20 s), with progress
        cost_before = _cost(ir, shapes, verify_dims, cost_target) if cost else None

    calibrating = None
    if quantization is not None:
        if progress is not None and quantization.progress is None:
            calibrating = Stage(progress, "calibration", "calibrating", unit="batches")
            quantization = dataclasses.replace(quantization, progress=calibrating)
        options = {**(options or {}), QuantizeInt8.name: quantization}
    if passes:
        pipe = from_pass_names(passes, options)
        pipe_name = "custom: " + ",".join(passes)
    elif isinstance(pipeline, str):
        pipe = get_pipeline(pipeline, options, target)
        pipe_name = pipeline if target is None else f"{pipeline} (target {target})"
    elif isinstance(pipeline, Pass):
        pipe, pipe_name = pipeline, pipeline.name
    else:
        pipe = Sequential(list(pipeline), name="custom")
        pipe_name = "custom"

    spec = verification_for(pipeline if isinstance(pipeline, str) and not passes else pipe)
    timing = TimingInstrument()
    inst: list[Instrument] = [timing, *instruments]
    if check_ir:
        inst.append(VerifyInstrument())
    if dump_dir is not None:
        inst.append(DumpInstrument(dump_dir))
    shown = ProgressInstrument(progress, pipe, disable) if progress is not None else None
    if shown is not None:
        inst.append(shown)
    ctx = PassContext(instruments=inst, disabled=disable)
    log.info("running pipeline %s on %d nodes", pipe_name, before.nodes)
    try:
        with reporting(progress):  # the lossy passes' sensitivity ranking and budget loop report too
            ir = ctx.run(pipe, ir).output(ir)
    finally:
        for stage in (calibrating, shown):
            if stage is not None:
                stage.close()
    qreport = ctx.records.get(INT8_REPORT)
    report = Report(pipe_name, before, ModelStats.of(ir), list(timing.per_pass.values()))
    report.rule_trace = ctx.records.get("rules")
    report.quantization = qreport
    report.compression = [ctx.records[k] for k in (SHARING_REPORT, LOW_RANK_REPORT, PACKED_REPORT) if k in ctx.records]
    report.pruning = ctx.records.get(PRUNE_REPORT)
    report.sketch_before, report.sketch_after = sketch_before, GraphSketch.of(ir)
    report.spans = list(timing.spans)
    if cost_before is not None:
        cost_after = _cost(ir, shapes, verify_dims, cost_target)
        report.cost_target = cost_target
        report.cost_before = cost_before.totals
        report.cost_nodes_before = cost_before.nodes
        if cost_after is not None:
            report.cost_after = cost_after.totals
            report.cost_nodes_after = cost_after.nodes
    if cost and (cost_before is None or report.cost_after is None):
        missing = bind_inputs(ir, shapes, verify_dims).missing_message()
        report.notes.append(f"cost estimate unavailable: {missing}" if missing else "cost estimate unavailable for this model (see the log)")
    result = CompileResult(ir, report, loaded.path)
    if verify and qreport is not None:
        _verify_int8(report, qreport, quantization or Int8Options(), spec)
    elif verify:
        assert original is not None
        base = loaded.path.parent if loaded.path is not None else None
        try:
            if spec.lossless:
                rtol, atol = verify_tolerance or (spec.rtol, spec.atol)
                report.verification = f"lossless: every output allclose (rtol {rtol:g}, atol {atol:g}) on a seeded random feed"
                assert_equivalent(
                    original,
                    result.model,
                    rtol=rtol,
                    atol=atol,
                    dims=verify_dims,
                    before_dir=base,
                    after_dir=base,
                )
            else:
                report.verification = f"{spec.describe()} on {spec.samples} seeded random feeds"
                figures = check_lossy(
                    original,
                    result.model,
                    min_cosine=spec.min_cosine,
                    min_sqnr=spec.min_sqnr,
                    samples=spec.samples,
                    dims=verify_dims,
                    before_dir=base,
                    after_dir=base,
                )
                report.verification += _worst_figures(figures.cosine, figures.sqnr)
        except VerificationError:
            report.verified = False
            raise
        except Exception as e:  # onnxruntime could not run one of the models
            raise VerificationError(f"verification could not run: {' '.join(str(e).split())[:300]}") from None
        report.verified = True
        if report.pruning is not None:
            _verify_pruned(report, report.pruning)
    report.seconds = time.perf_counter() - start
    return result


def _worst_figures(cosine: Mapping[str, float], sqnr: Mapping[str, float]) -> str:
    if not cosine:
        return ""
    return f": worst cosine {worst(cosine.values()):.5f}, worst SQNR {worst(sqnr.values()):.1f} dB"


def _verify_pruned(report: Report, preport: Any) -> None:
    """Pruning's --verify, after the check on random feeds: the pass's own budget on its
    held-out data (the figures of the model returned)."""
    if preport.budget == "none":
        return
    report.verification += f"; pruning budget ({preport.budget}) on {preport.budget_data}" + _worst_figures(
        preport.output_cosine, preport.output_sqnr
    )
    if preport.budget_missed:
        report.verified = False
        raise VerificationError(f"pruned outputs beyond the budget on {preport.budget_data}: " + "; ".join(preport.budget_missed[:3]))


def _verify_int8(report: Report, qreport: Any, q: Int8Options, spec: Verification) -> None:
    """int8's --verify: the figures measured on the model returned, on data that was not
    calibrated on, against the user's bounds (the pipeline's declared cosine when none)."""
    user = q.min_cosine is not None or q.min_sqnr is not None
    bounds = Budget(q.min_cosine, q.min_sqnr) if user else Budget(spec.min_cosine, spec.min_sqnr)
    source = "--min-cosine/--min-sqnr" if user else "the int8 pipeline's default"
    misses = bounds.misses(qreport.output_cosine, qreport.output_sqnr)
    report.verification = (
        f"lossy: {bounds.describe()} ({source}) on {qreport.budget_data}"
        + _worst_figures(qreport.output_cosine, qreport.output_sqnr)
    )
    report.verified = not misses
    if misses:
        raise VerificationError(f"int8 outputs beyond the verification budget on {qreport.budget_data}: " + "; ".join(misses[:3]))


#: Largest weights (bytes) for which compile's cost estimate uses the graph onnxruntime executes.
EXECUTED_MAX_BYTES = 64 << 20


def _cost(
    ir: Model, shapes: Mapping[str, tuple[int, ...]] | None, dims: Mapping[str, int] | None, target: str
) -> CostReport | None:
    """The cost model's report (totals and per node); None (with a warning) when the estimate
    itself fails, since a report extra must not fail a compilation. Bad shape specs still raise
    UsageError."""
    log.info("estimating cost (%s profile)", target)
    try:
        # onnxruntime's executed graph is written and read back per estimate (twice per compile):
        # seconds for a model of hundreds of MB, so large models are estimated on their own graph.
        weights = sum(v.const_nbytes() for v in ir.graph.initializers.values())
        executed = None if weights <= EXECUTED_MAX_BYTES else False
        report = analyze(ir, shapes=shapes, dims=dims, target=target, reorder=False, executed=executed)
        if not report.complete:  # totals at a height or sequence of 1 would be wrong figures
            log.warning("cost estimate unavailable: %s", report.bindings.missing_message())
            return None
        return report
    except UsageError:
        raise
    except Exception as e:
        log.warning("cost estimate failed: %s: %s", type(e).__name__, e)
        return None


#: The ``int8`` pipeline's settings (:class:`~onnxforge.passes.compression.int8.Int8Options`,
#: the options of the ``quantize-int8`` pass), under the name the library has always used.
QuantizationOptions = Int8Options
