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
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxforge.errors import ModelError
from onnxforge.ir.onnx_inference import inference_crash
from onnxforge.runtime.target import ExecutionMode, GraphOptimization, SessionConfig

_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}

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
    execution_mode: ExecutionMode = "sequential",
    config_entries: Mapping[str, str] | None = None,
    profile_prefix: str | os.PathLike[str] | None = None,
) -> ort.SessionOptions:
    """onnxruntime ``SessionOptions``. Graph optimizations are off by default: comparisons of
    our rewrites must not be hidden by onnxruntime's own fusions. ``threads`` 0 lets
    onnxruntime choose. ``external_initializers`` are arrays the session uses in place of the
    model's initializers of the same names (no copy into the model). ``config_entries`` are
    onnxruntime session config entries (``session.*``, ``ep.*``); ``profile_prefix`` turns
    onnxruntime's profiler on, writing ``PREFIX_<time>.json``. A deployment session's options
    come from its target's :class:`~onnxforge.runtime.target.SessionConfig`
    (:func:`deployment_options`)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = _LEVELS[optimization]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_threads
    so.execution_mode = _MODES[execution_mode]
    so.log_severity_level = log_level
    if optimized_model_path is not None:
        so.optimized_model_filepath = os.fspath(optimized_model_path)
    for key, value in (config_entries or {}).items():
        so.add_session_config_entry(key, str(value))
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = os.fspath(profile_prefix)
    if external_initializers:
        names = list(external_initializers)
        so.add_external_initializers(names, [device_array(external_initializers[n]) for n in names])
    return so


def deployment_options(config: SessionConfig, *, log_level: int = 3, **extra: Any) -> ort.SessionOptions:
    """The options of a session that runs a model as its target deploys it: ``config``'s
    threads, optimization level and execution mode (``extra``: other
    :func:`session_options` keywords, e.g. ``config_entries``, ``profile_prefix``)."""
    return session_options(
        optimization=config.optimization,
        threads=config.threads,
        inter_threads=config.inter_threads if config.execution_mode == "parallel" else 1,
        execution_mode=config.execution_mode,
        log_level=log_level,
        **extra,
    )


def device_array(array: np.ndarray) -> ort.OrtValue:
    """``array`` as an onnxruntime value (CPU), e.g. to hand one weight to many sessions."""
    return ort.OrtValue.ortvalue_from_numpy(array)


def open_session(
    data: bytes | str,
    options: ort.SessionOptions,
    providers: Sequence[tuple[str, Mapping[str, str]]] = CPU_ONLY,
) -> ort.InferenceSession:
    """``onnxruntime.InferenceSession`` over serialized bytes or a path. A model on which onnx's
    shape inference (which onnxruntime runs while opening it) would abort the process is refused
    (:class:`~onnxforge.errors.ModelError`) instead."""
    crash = inference_crash(data)
    if crash is not None:
        raise ModelError(
            f"onnxruntime cannot open this model: onnx's shape inference, which it runs, crashes on it ({crash}); "
            "a negative or inconsistent dimension?"
        )
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
