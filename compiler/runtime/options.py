"""Session options and the single call that opens an onnxruntime session.

:func:`open_session` is the only place in onnxforge that calls ``onnxruntime.InferenceSession``
(a layer-contract test checks it). Code outside :mod:`onnxforge.runtime` uses
:func:`onnxforge.runtime.session.create_session`, which adds the target and the guards; the
measured choices in :mod:`onnxforge.runtime.choices` use this one directly, because the guards
themselves depend on them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

GraphOptimization = Literal["disable", "basic", "extended", "all"]

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

CPU_ONLY: tuple[tuple[str, dict[str, str]], ...] = (("CPUExecutionProvider", {}),)


def session_options(
    *,
    optimization: GraphOptimization = "disable",
    threads: int = 1,
    inter_threads: int = 1,
    log_level: int = 3,
    optimized_model_path: str | os.PathLike[str] | None = None,
    external_initializers: Mapping[str, np.ndarray] | None = None,
) -> ort.SessionOptions:
    """onnxruntime ``SessionOptions``. Graph optimizations are off by default: comparisons of
    our rewrites must not be hidden by onnxruntime's own fusions. ``threads`` 0 lets
    onnxruntime choose. ``external_initializers`` are arrays the session uses in place of the
    model's initializers of the same names (no copy into the model)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = _LEVELS[optimization]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_threads
    so.log_severity_level = log_level
    if optimized_model_path is not None:
        so.optimized_model_filepath = os.fspath(optimized_model_path)
    if external_initializers:
        names = list(external_initializers)
        so.add_external_initializers(names, [device_array(external_initializers[n]) for n in names])
    return so


def device_array(array: np.ndarray) -> ort.OrtValue:
    """``array`` as an onnxruntime value (CPU), e.g. to hand one weight to many sessions."""
    return ort.OrtValue.ortvalue_from_numpy(array)


def open_session(
    data: bytes | str,
    options: ort.SessionOptions,
    providers: Sequence[tuple[str, Mapping[str, str]]] = CPU_ONLY,
) -> ort.InferenceSession:
    """``onnxruntime.InferenceSession`` over serialized bytes or a path."""
    return ort.InferenceSession(data, options, providers=[(p, dict(o)) for p, o in providers])


def median_time(sess: Any, feeds: Mapping[str, Any], repeats: int) -> float:
    """Median seconds of ``repeats`` runs after one warm-up run."""
    sess.run(None, dict(feeds))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, dict(feeds))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
