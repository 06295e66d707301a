"""Collecting the value ranges of a model's tensors over calibration data.

:func:`collect_ranges` exposes the requested intermediate tensors as extra graph outputs of a copy
of the model and runs it on onnxruntime (CPU provider, graph optimizations off so that every
tensor exists as in the model, one intra-op thread unless told otherwise), one batch at a time.
Each batch's outputs update a running accumulator per tensor and are dropped before the next
batch is read:

* ``minmax`` keeps a running min/max per tensor;
* ``percentile``, ``entropy`` and ``mse`` keep an adaptive histogram per tensor (one pass, exact
  re-binning when the range grows; see :mod:`onnxforge.calibration.histogram`), from which
  :mod:`onnxforge.calibration.ranges` picks the range once the data is exhausted.

Memory: one batch's feed, that batch's requested tensors (the graph outputs onnxruntime
returns, alive together until the accumulators have seen them), onnxruntime's own working
memory, and per tensor a few scalars (minmax) or ``2 * num_bins`` int64 counts (histogram
methods). Nothing grows with the number of batches, so data readers are consumed lazily.

Graph inputs are ranged from the feeds; initializers (weights) from their data, once. Tensors
computed inside If branches are threaded out through their If nodes
(:mod:`onnxforge.calibration.taps`) and ranged over the batches that ran their branch; one whose
branch never ran gets no entry in the result (logged at INFO), nor does one inside a Loop/Scan
body. A name the model does not know at all is a :class:`~onnxforge.errors.UsageError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxforge.calibration.data import CalibrationSource, DataReader, from_reader
from onnxforge.calibration.histogram import RunningMinMax, StreamingHistogram
from onnxforge.calibration.ranges import METHODS, TensorRange, compute_range
from onnxforge.calibration.taps import tapped_model
from onnxforge.equivalence import OrtRunner
from onnxforge.errors import ModelError, UsageError
from onnxforge.ir.proto_walk import graph_protos, subgraphs
from onnxforge.runtime.session import create_session

log = logging.getLogger(__name__)

#: Called after every batch with (batches done, total batches or None when unknown).
ProgressCallback = Callable[[int, int | None], None]


def collect_ranges(
    model_proto: onnx.ModelProto,
    tensor_names: Iterable[str],
    source: CalibrationSource | DataReader | Iterable[Mapping[str, Any]],
    method: str = "minmax",
    *,
    num_bins: int = 2048,
    percentile: float = 99.99,
    symmetric: bool = False,
    bits: int = 8,
    progress: ProgressCallback | None = None,
    threads: int = 1,
    model_dir: str | os.PathLike[str] | None = None,
) -> dict[str, TensorRange]:
    """The calibrated range of each tensor in ``tensor_names`` over the feeds of ``source``.

    ``source`` is a :class:`~onnxforge.calibration.data.CalibrationSource`, an onnxruntime
    ``CalibrationDataReader`` (wrapped with :func:`~onnxforge.calibration.data.from_reader`), or any
    iterable of feed dicts; it is iterated once. ``method``: ``minmax``, ``percentile``,
    ``entropy`` or ``mse`` (see :mod:`onnxforge.calibration.ranges`). ``num_bins`` is the histogram
    resolution over ``[0, max|x|]``, ``percentile`` the percentage of values kept; ``symmetric``
    and ``bits`` (2..8) describe the quantization scheme the range is for (they change
    percentile, entropy and mse). ``threads``: onnxruntime intra-op threads (0: its default).
    ``model_dir`` is the model's folder when its weights are external data. ``progress`` is
    called after every batch. The model itself is not modified.
    """
    _check_options(method, num_bins, percentile, bits, threads)
    if not isinstance(source, CalibrationSource) and isinstance(source, DataReader):
        source = from_reader(source)
    names = list(dict.fromkeys(tensor_names))
    plan, tapped = _Plan.of(model_proto, names)
    stats: dict[str, RunningMinMax] = {n: _accumulator(method, num_bins) for n in plan.wanted}
    for name in plan.initializers:
        stats[name].add(_initializer_array(model_proto, name, model_dir))

    start = time.perf_counter()
    batches = _run_batches(tapped, plan, source, stats, progress, threads, model_dir)
    if batches == 0:
        raise UsageError("calibration data is empty: it yielded no batches")
    ranges = {}
    for n in plan.wanted:
        if n in plan.nested and stats[n].count == 0:
            log.info("tensor %r is in an If branch the calibration data never ran: not calibrated", n)
            continue
        ranges[n] = compute_range(stats[n], method, percentile=percentile, symmetric=symmetric, bits=bits)
    for name, r in ranges.items():
        if r.count == 0:
            log.warning("tensor %r had no finite values in the calibration data; its range is [0, 0]", name)
    log.info(
        "calibrated %d tensors with %s on %d batches in %.2f s",
        len(ranges), method, batches, time.perf_counter() - start,
    )
    return ranges


def _check_options(method: str, num_bins: int, percentile: float, bits: int, threads: int) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r} (choose {', '.join(METHODS)})")
    if not 2 <= bits <= 8:
        raise UsageError(f"bits must be between 2 and 8, got {bits}")
    if method != "minmax" and num_bins < 2 ** bits:
        raise UsageError(f"num_bins must be at least {2**bits} for {bits}-bit {method} calibration, got {num_bins}")
    if not 0 < percentile <= 100:
        raise UsageError(f"percentile must be in (0, 100], got {percentile}")
    if threads < 0:
        raise UsageError(f"threads must be 0 (onnxruntime's default) or more, got {threads}")


def _accumulator(method: str, num_bins: int) -> RunningMinMax:
    return RunningMinMax() if method == "minmax" else StreamingHistogram(num_bins)


# -- which tensor comes from where ------------------------------------------------------------


class _Plan:
    """Where each requested tensor's values come from."""

    def __init__(self) -> None:
        self.wanted: list[str] = []  # in the result, in request order
        self.inputs: list[str] = []  # graph inputs: read from the feed
        self.initializers: list[str] = []  # constants: read once from the model
        self.outputs: list[str] = []  # computed: exposed as graph outputs
        self.taps: list[str] = []  # the graph output carrying each of ``outputs``
        self.defaults: set[str] = set()  # inputs with an initializer default (may be left unfed)
        self.nested: set[str] = set()  # computed inside If branches: tapped out

    @classmethod
    def of(cls, model: onnx.ModelProto, names: Sequence[str]) -> tuple[_Plan, onnx.ModelProto]:
        """The plan, and the model to run: a copy whose outputs are the computed tensors (those
        inside If branches threaded out by :func:`~onnxforge.calibration.taps.tapped_model`), or
        ``model`` itself when nothing needs computing."""
        g = model.graph
        graph_inputs = {vi.name for vi in g.input}
        inits = {t.name for t in g.initializer}
        computed = {o for n in g.node for o in n.output if o}
        nested = _subgraph_names(g)
        plan = cls()
        for name in names:
            if name in graph_inputs:
                plan.inputs.append(name)
                if name in inits:
                    plan.defaults.add(name)
            elif name in inits:
                plan.initializers.append(name)
            elif name in computed:
                plan.outputs.append(name)
            elif name in nested:
                plan.outputs.append(name)
                plan.nested.add(name)
            else:
                raise UsageError(f"tensor {name!r} is not in the model")
            plan.wanted.append(name)
        if not plan.outputs:
            return plan, model
        tapped, taps = tapped_model(model, plan.outputs)
        for name in [n for n in plan.outputs if n not in taps]:
            log.info("tensor %r is inside a Loop/Scan body: not calibrated", name)
            plan.outputs.remove(name)
            plan.wanted.remove(name)
        plan.taps = [taps[n] for n in plan.outputs]
        return plan, tapped


def _subgraph_names(g: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in g.node:
        for sub in subgraphs(node):
            for gp in graph_protos(sub):
                names.update(vi.name for vi in gp.input)
                names.update(t.name for t in gp.initializer)
                names.update(o for n in gp.node for o in n.output if o)
    return names


def _initializer_array(model: onnx.ModelProto, name: str, model_dir: str | os.PathLike[str] | None) -> np.ndarray:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    try:
        return numpy_helper.to_array(tensor, base_dir=str(model_dir) if model_dir else "")
    except Exception as e:  # onnx raises its checker's ValidationError for unreadable external data
        hint = " (pass model_dir, the model's folder)" if model_dir is None and tensor.external_data else ""
        raise ModelError(f"cannot read initializer {name!r}: {_short(e)}{hint}") from None


# -- running the model ------------------------------------------------------------------------


def exposed_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``outputs`` (main-graph tensors).

    Output types come from ``value_info`` when the model has them; otherwise they are left
    empty, which onnxruntime accepts (it infers them). Tensors inside If branches need
    :func:`~onnxforge.calibration.taps.tapped_model`, which names the outputs that carry them.
    """
    return tapped_model(model, outputs)[0]


def _session(model: onnx.ModelProto, threads: int, model_dir: str | os.PathLike[str] | None) -> Any:
    so = OrtRunner(threads=threads).options()
    if model_dir is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(Path(model_dir)))
    try:
        data = model.SerializeToString()
    except ValueError as e:  # protobuf's 2 GiB limit
        raise ModelError(f"cannot serialize the model for calibration: {' '.join(str(e).split())[:200]}") from None
    try:
        return create_session(data, options=so)
    except ModelError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load the model for calibration: {_short(e)}") from None


def _run_batches(
    model: onnx.ModelProto,
    plan: _Plan,
    source: Iterable[Mapping[str, Any]],
    stats: Mapping[str, RunningMinMax],
    progress: ProgressCallback | None,
    threads: int,
    model_dir: str | os.PathLike[str] | None,
) -> int:
    """Feed every batch through the model and the accumulators; returns the number of batches."""
    step = _BatchStep(model, plan, stats, threads, model_dir)
    total = _length(source)
    done = 0
    for feed in source:
        step(feed, done)  # the batch's outputs are released when this returns
        done += 1
        if progress is not None:
            progress(done, total)
    return done


class _BatchStep:
    """Runs one batch and hands its tensors to the accumulators, keeping nothing."""

    def __init__(
        self,
        model: onnx.ModelProto,
        plan: _Plan,
        stats: Mapping[str, RunningMinMax],
        threads: int,
        model_dir: str | os.PathLike[str] | None,
    ) -> None:
        self.plan = plan
        self.stats = stats
        self.session = _session(model, threads, model_dir) if plan.outputs else None
        self.feed_names = [i.name for i in self.session.get_inputs()] if self.session is not None else []
        self.required = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        self.defaults = {n: _initializer_array(model, n, model_dir) for n in plan.defaults}

    def __call__(self, feed: Mapping[str, Any], index: int) -> None:
        for name in self.plan.inputs:
            if name in feed:
                self.stats[name].add(np.asarray(feed[name]))
            elif name in self.defaults:
                self.stats[name].add(self.defaults[name])
            else:
                raise UsageError(f"calibration batch {index} has no data for input {name!r}")
        if self.session is None:
            return
        missing = [n for n in self.feed_names if n in self.required and n not in feed]
        if missing:
            raise UsageError(f"calibration batch {index} has no data for input(s) {', '.join(map(repr, missing))}")
        run_feed = {n: feed[n] for n in self.feed_names if n in feed}
        outputs = _run(self.session, self.plan.taps, run_feed, index)
        for name, value in zip(self.plan.outputs, outputs):
            self.stats[name].add(value)


def _run(session: Any, outputs: list[str], feed: dict[str, Any], batch: int) -> list[np.ndarray]:
    try:
        return list(session.run(outputs, feed))
    except Exception as e:
        err = UsageError if type(e).__name__ == "InvalidArgument" else ModelError
        raise err(f"calibration batch {batch}: onnxruntime failed: {_short(e)}") from None


def batch_count(source: object) -> int | None:
    """How many batches ``source`` holds (its ``num_batches`` or ``len``), None when unknown."""
    return _length(source)


def _length(source: object) -> int | None:
    n = getattr(source, "num_batches", None)
    if isinstance(n, int):
        return n
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.replace("[ONNXRuntimeError] : ", "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
