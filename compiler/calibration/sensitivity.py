"""Which layers a model's outputs are most sensitive to, measured.

A layer's sensitivity is the output noise of the model with that layer alone compressed: the
noise a layer adds is amplified or damped by what follows, so its own error is a poor guide
(PP-OCR det: 30 layers in float by SQNR drop left cosine at 0.97; the two most sensitive by
this ranking give 0.99). Every lossy pass ranks its layers with it before backing off
(:func:`onnxforge.calibration.budget.back_off`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from onnxforge.calibration.collect import ProgressCallback
from onnxforge.calibration.shared_weights import SharedWeightSessions
from onnxforge.ir import Model, to_proto
from onnxforge.metrics.sqnr import ErrorPairs, worst
from onnxforge.progress import Stage, current_hook

log = logging.getLogger(__name__)


def sensitivity_ranking(
    float_proto: onnx.ModelProto,
    layers: Sequence[str],
    samples: Sequence[Mapping[str, np.ndarray]],
    padding_mask: str | None,
    build_only: Callable[[str], Model],
    progress: ProgressCallback | None = None,
    budget_s: float = 60.0,
) -> list[tuple[str, float]]:
    """``(layer, output SQNR dB)`` from the layer the model outputs are most sensitive to: for
    each layer, the model with that layer alone quantized (``build_only(layer)``) is run on
    ``samples`` and its outputs compared with the float model's; the worst output SQNR ranks it.
    When running every layer's model on every sample would take more than ``budget_s`` (from the
    float model's time per sample), fewer samples are used, never fewer than two."""
    sessions = SharedWeightSessions(float_proto)
    outputs = [o.name for o in float_proto.graph.output]
    f_sess = sessions.session(float_proto)
    start = time.perf_counter()
    ref = [f_sess.run(outputs, dict(feed)) for feed in samples]
    per_sample = (time.perf_counter() - start) / max(len(samples), 1)
    n = max(2, min(len(samples), int(budget_s / max(len(layers) * per_sample, 1e-9))))
    if n < len(samples):
        log.info(
            "sensitivity of %d layers measured on %d of %d samples (%.2f s per run)",
            len(layers),
            n,
            len(samples),
            per_sample,
        )
        samples, ref = samples[:n], ref[:n]
    noise: dict[str, float] = {}
    own = None
    if progress is None:  # report to the current hook (compile's), if any
        own = Stage(current_hook(), "sensitivity", "measuring layer sensitivity", unit="layers", total=len(layers))
        progress = own.start()
    else:
        restart = getattr(progress, "restart", None)
        if restart is not None:
            restart("measuring layer sensitivity", "layers")
    for i, layer in enumerate(layers):
        q_sess = sessions.session(to_proto(build_only(layer)))
        pairs = ErrorPairs(padding_mask)
        for feed, f in zip(samples, ref):  # one run per sample for all outputs
            for out, want, got in zip(outputs, f, q_sess.run(outputs, dict(feed))):
                pairs.add(out, want, got, feed)
        noise[layer] = worst(pairs.sqnr(o) for o in outputs if o in pairs)
        progress(i + 1, len(layers))
    if own is not None:
        own.close()
    # NaN (an output turned non-finite) is the most sensitive of all
    return sorted(noise.items(), key=lambda kv: -math.inf if math.isnan(kv[1]) else kv[1])
