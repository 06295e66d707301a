"""Raising a model's opset (per-channel quantization needs DequantizeLinear's ``axis``, opset
13) without trusting the conversion blindly.

The conversion is onnx's version converter on an exported copy; the result must pass the
checker and reproduce the original's outputs on real samples (relative error against the
output's scale at most ``tolerance``). onnxruntime's quantizer upgrades without that check and
collapses some models (PP-OCRv4 det: output cosine 0.10); here a conversion that changes the
outputs is refused and the caller falls back to per-tensor quantization.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx

from onnxforge.ir import Model, from_proto, to_proto

log = logging.getLogger(__name__)


def max_relative_error(ref: Mapping[str, Any], got: Mapping[str, Any]) -> float:
    """Largest ``|a - b| / max|a|`` over the outputs, by name (inf when names or shapes differ)."""
    worst = 0.0
    for name, a in ref.items():
        if name not in got:
            return float("inf")
        a64 = np.asarray(a, dtype=np.float64)
        b64 = np.asarray(got[name], dtype=np.float64)
        if a64.shape != b64.shape:
            return float("inf")
        if a64.size:
            scale = max(float(np.abs(a64).max()), 1e-12)
            worst = max(worst, float(np.abs(a64 - b64).max()) / scale)
    return worst


def raise_opset(model: Model, target: int, samples: Iterable[Mapping[str, np.ndarray]], *, tolerance: float = 1e-4) -> tuple[Model | None, str]:
    """A copy of ``model`` at default-domain opset ``target`` (or ``model`` itself when it is
    already there), checked on ``samples``; ``(None, reason)`` when the conversion fails or
    changes the outputs."""
    from onnxforge.equivalence import OrtRunner

    current = model.opset("") or 1
    if current >= target:
        return model, f"opset {current} already >= {target}"
    proto = to_proto(model, value_info=True)
    try:
        converted = onnx.version_converter.convert_version(proto, target)
        onnx.checker.check_model(converted)
    except Exception as e:
        return None, f"onnx's version converter failed: {str(e).splitlines()[0][:200]}"
    runner = OrtRunner()
    worst = 0.0
    checked = 0
    for feed in samples:
        try:
            ref = runner.run(proto, feed)
            got = runner.run(converted, feed)
        except Exception as e:
            return None, f"the converted model does not run: {str(e).splitlines()[0][:200]}"
        worst = max(worst, max_relative_error(ref, got))
        checked += 1
    if checked == 0:
        return None, "no samples to check the conversion on"
    if worst > tolerance:
        return None, f"conversion to opset {target} changes the outputs (relative error {worst:.2g})"
    log.info("raised the opset from %d to %d (checked on %d samples, error %.1e)", current, target, checked, worst)
    raised = from_proto(converted)
    raised.export_value_info = model.export_value_info
    raised.tensor_store = model.tensor_store
    return raised, f"opset raised from {current} to {target}"
