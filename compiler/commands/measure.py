"""``compile --measure``: the input model and the compiled one timed on onnxruntime, interleaved
like ``bench --compare`` (:func:`onnxforge.runtime.bench.compare`), on inputs bound like
``analyze`` binds them (sizes the model implies, a batch of 1, ``--shape``/``--dim``). The
target is ``--target``'s (cpu when none; a target this machine cannot run falls back to cpu with
a warning). A model whose open height, width or sequence is not given is not timed: a note says
which flags to set, and the compilation still succeeds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from onnxforge import modelio
from onnxforge.analysis.shapes import bind_inputs
from onnxforge.commands.common import parse_dims, parse_shapes
from onnxforge.commands.inputs import run_feeds
from onnxforge.ir import Model
from onnxforge.report import MeasuredLatency, Report
from onnxforge.runtime.availability import resolve
from onnxforge.runtime.bench import compare
from onnxforge.runtime.target import TARGETS

log = logging.getLogger(__name__)

#: Seconds of interleaved timing (both models together).
SECONDS = 4.0


def measure(report: Report, source: Path, output: Path, model: Model, args: argparse.Namespace) -> None:
    """Time ``source`` and ``output`` and put the figures (or why not) in ``report``."""
    bindings = bind_inputs(model, parse_shapes(args.shape), parse_dims(args.dim))
    if not bindings.complete:
        report.notes.append(f"latency not measured: {bindings.missing_message()}")
        return
    feeds = run_feeds(modelio.read_proto(source), shapes=bindings.inputs, dims=bindings.dims)
    target = resolve(TARGETS[args.target or "cpu"], TARGETS["cpu"])
    log.info("timing %s and %s on %s", source.name, output.name, target.name)
    bench = compare([str(source), str(output)], target, [feeds, feeds], seconds=SECONDS, max_runs=400)
    before, after = bench.models
    ratio = bench.ratios[0]
    report.measured = MeasuredLatency(
        before.latency.p50_ms,
        after.latency.p50_ms,
        ratio.ci95,
        ratio.rounds,
        target.name,
        ", ".join(f"{k} {'x'.join(str(d) for d in v.shape)}" for k, v in feeds.items()),
    )
