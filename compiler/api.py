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
from onnxforge.pipelines import from_pass_names, get_pipeline
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

    def save(self, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
        """Write the compiled model atomically (external data decided by size unless given)."""
        return modelio.save(self.ir, path, source=self.source, external_data=external_data)


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
    symbolic ``verify_dims``, on the ``cost_target`` profile). A ModelProto passed in is never
    modified.
    """
    start = time.perf_counter()
    loaded = modelio.load(model)
    ir = loaded.model
    original = to_proto(ir) if verify else None
    before = ModelStats.of(ir)
    cost_before = _cost(ir, shapes, verify_dims, cost_target) if cost else None

    if passes:
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

    report = Report(pipe_name, before, ModelStats.of(ir), list(timing.per_pass.values()))
    report.rule_trace = ctx.records.get("rules")
    if cost_before is not None:
        report.cost_target = cost_target
        report.cost_before = cost_before
        report.cost_after = _cost(ir, shapes, verify_dims, cost_target)
    if cost and (cost_before is None or report.cost_after is None):
        report.notes.append("cost estimate unavailable for this model (see the log)")
    result = CompileResult(ir, report, loaded.path)
    if verify:
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
